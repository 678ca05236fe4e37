"""evaluate(): full ranking with history items excluded, users without targets skipped, popularity from
`train`, and the data-imbalance view (user-activity and item-popularity buckets), on hand-made holdouts."""

from __future__ import annotations

import math

import numpy as np
import pytest

from genrec.data.interactions import IdMap, Interactions
from genrec.evaluation.evaluate import evaluate, item_popularity_groups
from tests.evaluation.fixed import FixedScores, holdout, ranking_scores


def test_history_items_are_excluded_from_the_ranking():
    # the model likes items 0 and 1 best, but they are in the history: item 2 (the target) comes first
    h = holdout([[0, 1]], [[2]], 6)
    model = FixedScores(ranking_scores([[0, 1, 2, 3]], 6)).fit()
    results = evaluate(model, h, ks=(1, 3))
    assert results["recall@1"] == 1.0 and results["ndcg@1"] == 1.0 and results["mrr@3"] == 1.0
    assert results["precision@3"] == pytest.approx(1 / 3)


def test_users_without_targets_are_skipped():
    # user 1 has no target: the means are over users 0 (hit at rank 1) and 2 (miss), not over all three
    h = holdout([[], [], []], [[0], [], [5]], 6)
    scores = ranking_scores([[0, 1], [4, 3], [1, 2]], 6)
    results = evaluate(FixedScores(scores).fit(), h, ks=(2,))
    assert results.n_users == 2
    assert results.per_user["recall@2"].tolist() == [1.0, 0.0]
    assert results["recall@2"] == pytest.approx(0.5)
    assert results["hr@2"] == pytest.approx(0.5)
    # nor do the skipped user's recommendations (items 3 and 4) count towards coverage
    assert results["coverage@2"] == pytest.approx(3 / 6)  # items 0, 1, 2


def test_unknown_metric_is_named():
    h = holdout([[]], [[0]], 3)
    with pytest.raises(ValueError, match="'recal'"):
        evaluate(FixedScores(np.zeros((1, 3), np.float32)).fit(), h, metrics=("recal",))


# popularity and item buckets ---------------------------------------------------------------------------------
N_ITEMS = 10


@pytest.fixture
def train() -> Interactions:
    """Item i is used by 9 - i of 9 training users: popularity 9, 8, ..., 0."""
    users = np.concatenate([np.arange(9 - i) for i in range(N_ITEMS)])
    items = np.concatenate([np.full(9 - i, i) for i in range(N_ITEMS)])
    return Interactions(users, items, None, None, IdMap(np.arange(9), "user"), IdMap(np.arange(N_ITEMS), "item"))


@pytest.fixture
def bucket_case():
    """With shares (0.2, 0.3, 0.5) of 10 items: head {0, 1}, mid {2, 3, 4}, tail {5, ..., 9}.
    User 0 wants 0 (head), 5 and 6 (tail), and gets [0, 5]. User 1 (history [1]) wants 2 (mid), gets [2, 3]."""
    h = holdout([[], [1]], [[0, 5, 6], [2]], N_ITEMS)
    scores = ranking_scores([[0, 5], [1, 2, 3]], N_ITEMS)
    return h, FixedScores(scores).fit()


def test_item_popularity_groups_split_by_share(train):
    groups = item_popularity_groups(train.item_popularity().astype(float), (0.2, 0.3, 0.5))
    assert groups.tolist() == [0, 0, 1, 1, 1, 2, 2, 2, 2, 2]


def test_item_buckets_count_only_the_targets_in_the_bucket(train, bucket_case):
    h, model = bucket_case
    results = evaluate(model, h, ks=(2,), train=train)
    assert results["recall@2"] == pytest.approx((2 / 3 + 1) / 2)
    b = results.item_buckets.set_index("bucket")
    assert b.index.tolist() == ["head", "mid", "tail"]
    assert b["items"].tolist() == [2, 3, 5]
    assert b["users_with_targets"].tolist() == [1, 1, 1]
    assert b.loc["head", "recall@2"] == pytest.approx(1.0)  # user 0: head target 0 found
    assert b.loc["mid", "recall@2"] == pytest.approx(1.0)  # user 1: mid target 2 found
    assert b.loc["tail", "recall@2"] == pytest.approx(1 / 2)  # user 0: tail targets {5, 6}, 5 found
    d2 = 1 / math.log2(3)
    assert b.loc["tail", "ndcg@2"] == pytest.approx(d2 / (1 + d2))  # hit at rank 2, IDCG over 2 tail targets
    # recommendations [0, 5] and [2, 3]: one head, two mid, one tail
    assert b["rec_share@2"].tolist() == pytest.approx([1 / 4, 2 / 4, 1 / 4])


def test_popularity_comes_from_train_when_given(train, bucket_case):
    h, model = bucket_case
    with_train = evaluate(model, h, ks=(2,), train=train)
    pop = np.array([9, 4, 7, 6])  # training popularity of the recommended items 0, 5, 2, 3
    assert with_train["arp@2"] == pytest.approx(pop.mean())
    assert with_train["novelty@2"] == pytest.approx(np.mean(-np.log2(pop / 9)))  # 9 training users
    # without train, popularity is counted in the holdout histories: only item 1 (never recommended) has any
    without = evaluate(model, h, ks=(2,))
    assert without["arp@2"] == 0.0
    groups = without.item_buckets.set_index("bucket")
    assert groups.loc["head", "users_with_targets"] == 1  # head is now items {1, 0}: user 0's target 0


# user-activity buckets ---------------------------------------------------------------------------------------
def bucket_results(lengths: list[int], n_buckets: int, seed: int = 0):
    """One held-out user per history length, each with one target; a random ranking."""
    rng = np.random.default_rng(seed)
    n_items = max(lengths) + 30
    histories = [list(range(n)) for n in lengths]
    targets = [[int(rng.integers(max(lengths), n_items))] for _ in lengths]
    scores = rng.random((len(lengths), n_items)).astype(np.float32)
    return evaluate(FixedScores(scores).fit(), holdout(histories, targets, n_items), ks=(5, 20),
                    n_user_buckets=n_buckets)


def test_user_buckets_by_history_length():
    results = bucket_results([1, 2, 3, 4, 5, 6, 7, 8], n_buckets=4)
    ub = results.user_buckets
    assert ub["bucket"].tolist() == ["1-1 items", "2-3 items", "4-5 items", "6-8 items"]
    assert ub["users"].tolist() == [1, 2, 2, 3]


@pytest.mark.parametrize("seed", range(5))
def test_user_buckets_partition_the_users(seed):
    rng = np.random.default_rng(seed)
    lengths = rng.choice([1, 1, 1, 2, 3, 5, 8, 13], size=int(rng.integers(1, 40))).tolist()
    results = bucket_results(lengths, n_buckets=int(rng.integers(1, 6)), seed=seed)
    ub = results.user_buckets
    assert ub["users"].sum() == results.n_users == len(lengths)
    ranges = [tuple(map(int, b.split()[0].split("-"))) for b in ub["bucket"]]
    assert all(lo <= hi for lo, hi in ranges)
    assert all(hi < next_lo for (_, hi), (next_lo, _) in zip(ranges, ranges[1:])), "buckets must not overlap"
    for key in ("recall@20", "ndcg@5"):
        weighted = (ub["users"] * ub[key]).sum() / ub["users"].sum()
        assert weighted == pytest.approx(results[key], abs=1e-12)
