"""A model with fixed scores and hand-made holdouts, for the evaluation tests."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from genrec.data.interactions import Histories
from genrec.data.splits import Holdout
from genrec.models.base import Recommender


class FixedScores(Recommender):
    """Row u of `scores` for the user whose raw id is u, whatever the history."""

    def __init__(self, scores: np.ndarray | None = None):
        self.scores = scores

    def fit(self, train=None, validation=None):
        self.n_items_ = self.scores.shape[1]
        return self

    def score(self, histories: Histories) -> np.ndarray:
        return self.scores[np.asarray(histories.user_ids, dtype=np.int64)]


def ranking_scores(rankings: list[list[int]], n_items: int) -> np.ndarray:
    """Scores that rank each user's listed items first, in the listed order, then the rest by index."""
    scores = np.tile(-np.arange(n_items, dtype=np.float32), (len(rankings), 1)) - n_items
    for u, items in enumerate(rankings):
        scores[u, items] = np.arange(len(items), 0, -1, dtype=np.float32)
    return scores


def distinct_scores(rng: np.random.Generator, n_users: int, n_items: int) -> np.ndarray:
    """Random float32 scores without ties inside a row, so every ranking is unique."""
    return np.argsort(rng.random((n_users, n_items)), axis=1).astype(np.float32) / n_items


def holdout(histories: list[list[int]], targets: list[list[int]], n_items: int) -> Holdout:
    rows = [u for u, items in enumerate(targets) for _ in items]
    cols = [i for items in targets for i in items]
    t = sp.csr_matrix((np.ones(len(cols), np.float32), (rows, cols)), shape=(len(targets), n_items))
    users = np.arange(len(histories))
    return Holdout(Histories.from_lists(histories, n_items, user_ids=users), t, users, "hand-made")
