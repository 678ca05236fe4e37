"""Most-popular: every user gets the items with the most distinct users in training.

The floor every personalised model must clear. Scores are the same for every user (history items are
excluded by `recommend`), so fold-in is trivial.
"""

from __future__ import annotations

import numpy as np

from genrec.data.interactions import Histories, Interactions
from genrec.models.base import Recommender, register


@register("popularity")
class Popularity(Recommender):
    def __init__(self, by: str = "users"):
        """by: 'users' counts distinct users per item; 'interactions' counts events (repeats included)."""
        self.by = by

    def fit(self, train: Interactions, validation=None) -> Popularity:
        if self.by not in ("users", "interactions"):
            raise ValueError(f"by must be 'users' or 'interactions', got {self.by!r}")
        if self.by == "users":
            counts = train.item_popularity()
        else:
            counts = np.bincount(train.items, minlength=train.n_items)
        self.item_counts_ = counts.astype(np.float32)
        self.n_items_ = train.n_items
        return self

    def score(self, histories: Histories) -> np.ndarray:
        self._check_fitted(histories)
        return np.broadcast_to(self.item_counts_, (histories.n_users, self.n_items_))

    def _get_state(self):
        return {"item_counts": self.item_counts_}, {}

    def _set_state(self, arrays, meta):
        self.item_counts_ = arrays["item_counts"]
