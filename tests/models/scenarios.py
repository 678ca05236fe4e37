"""Data and checks that several model test files share: four taste groups of users (tests.conftest's
block_interactions), sequences that walk a fixed cycle, and items left with a single training event."""

from __future__ import annotations

import numpy as np
import pandas as pd

from genrec.data.interactions import Histories, Interactions
from genrec.data.splits import split_leave_one_out, split_strong_generalization
from genrec.evaluation.evaluate import evaluate
from genrec.models import Popularity
from tests.conftest import block_interactions


def blocks_split():
    """400 users in 4 taste groups, 50 held out: enough targets that the popularity margin means something."""
    return split_strong_generalization(block_interactions(n_users=400), n_heldout=50, seed=1)


def assert_fold_in_follows_taste_group(model, split):
    """A user the model never saw, with five items of taste group 0, gets mostly group-0 items."""
    group = split.train.item_ids.raw % 4  # block_interactions puts raw item i in taste group i % 4
    history = np.flatnonzero(group == 0)[:5]
    recs = model.recommend(Histories.from_lists([history], split.train.n_items), k=5)
    assert (group[recs.items[0]] == 0).mean() >= 0.8


def cyclic_sequences(n_users: int = 300, n_items: int = 100, seed: int = 0) -> Interactions:
    """Every user walks a fixed random cycle over the items from a random start for 6..20 steps: the next item
    is fully determined by the last one, while every item is about equally popular."""
    rng = np.random.default_rng(seed)
    cycle = rng.permutation(n_items)
    lengths = rng.integers(6, 21, n_users)
    users = np.repeat(np.arange(n_users), lengths)
    steps = np.arange(len(users)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    items = cycle[(np.repeat(rng.integers(0, n_items, n_users), lengths) + steps) % n_items]
    frame = pd.DataFrame({"user": users, "item": items, "t": steps})
    return Interactions.from_frame(frame, timestamp="t", source="cyclic")


def beats_popularity_on_cycles(model, min_hr: float = 0.9) -> None:
    split = split_leave_one_out(cyclic_sequences())
    model.fit(split.train, split.validation)
    ours = evaluate(model, split.test, ks=(10,), metrics=("hr", "ndcg"), train=split.train)
    pop = evaluate(Popularity().fit(split.train), split.test, ks=(10,), metrics=("hr", "ndcg"), train=split.train)
    assert ours["hr@10"] >= min_hr and ours["hr@10"] >= 3 * pop["hr@10"], (ours.summary, pop.summary)
    assert ours["ndcg@10"] >= 3 * pop["ndcg@10"]


def cold_item_split():
    """Block data where one item of each taste group (raw ids 56..59) keeps a single training event."""
    data = block_interactions(n_users=400)
    cold = data.item_ids.index([56, 57, 58, 59])
    split = split_strong_generalization(data, n_heldout=50, seed=1)
    train = split.train
    rows = np.flatnonzero(np.isin(train.items, cold))
    _, first = np.unique(train.items[rows], return_index=True)
    keep = ~np.isin(train.items, cold)
    keep[rows[first]] = True
    return train.select(keep), split.test.histories, cold


def own_group_cold_item_first(model, histories, cold, attrs) -> float:
    """Share of users for whom the cold item of their own taste group scores highest among the cold items."""
    groups = attrs["category"].to_numpy()
    own = [pd.Series(groups[histories.sequence(u)]).mode()[0] for u in range(histories.n_users)]
    best = cold[np.argmax(model.score(histories)[:, cold], axis=1)]
    return float(np.mean(groups[best] == np.array(own)))
