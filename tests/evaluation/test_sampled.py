"""Sampled metrics: labelled keys, negatives drawn only outside history and targets (without replacement, in
proportion to popularity when asked), the classic one-positive-among-N definition checked user by user, equality
with full ranking when every item is a candidate, and results that depend on the seed but not the batch size."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from genrec.evaluation.evaluate import evaluate
from genrec.evaluation.sampled import evaluate_sampled, sample_negatives
from tests.evaluation.fixed import FixedScores, distinct_scores, holdout, ranking_scores


def random_holdout(seed: int, n_users: int, n_items: int, max_targets: int = 3):
    """Users with random histories (0-5 items) and 1..max_targets targets outside them, and tie-free scores."""
    rng = np.random.default_rng(seed)
    histories, targets = [], []
    for _ in range(n_users):
        items = rng.permutation(n_items)
        n_hist = int(rng.integers(0, min(6, n_items - max_targets) + 1))
        histories.append(sorted(items[:n_hist].tolist()))
        targets.append(sorted(items[n_hist: n_hist + int(rng.integers(1, max_targets + 1))].tolist()))
    return holdout(histories, targets, n_items), FixedScores(distinct_scores(rng, n_users, n_items)).fit()


def test_keys_are_labelled_with_the_scheme():
    h, model = random_holdout(0, 20, 50)
    uni = evaluate_sampled(model, h, n_negatives=10, ks=(5, 10), metrics=("hr", "ndcg"))
    assert sorted(uni.summary) == ["uni10:hr@10", "uni10:hr@5", "uni10:ndcg@10", "uni10:ndcg@5"]
    pop = evaluate_sampled(model, h, n_negatives=100, sampling="popularity", ks=(10,), metrics=("mrr",))
    assert list(pop.summary) == ["pop100:mrr@10"] and "100 popularity negatives" in pop.protocol
    assert "uni10:hr@10" in uni.user_buckets.columns and len(uni.item_buckets) == 0


def test_hand_computed_ranking_among_the_drawn_negatives():
    # only items 1 and 3 have popularity, so popularity sampling of 2 negatives draws exactly {1, 3}; the model
    # ranks 0 > 1 > 2 > 3 > 4 > 5; user 0's target 4 then comes third among {1, 3, 4}, user 1's target 2 second
    # among {1, 2, 3} (item 0 is in user 1's history and is not a candidate anyway)
    h = holdout([[5], [0]], [[4], [2]], 6)
    model = FixedScores(ranking_scores([[0, 1, 2, 3, 4, 5]] * 2, 6)).fit()

    class Popularity:
        def item_popularity(self):
            return np.array([0, 7, 0, 2, 0, 0])

    r = evaluate_sampled(model, h, n_negatives=2, sampling="popularity", ks=(1, 2, 3), metrics=("hr", "ndcg", "mrr"),
                         train=Popularity())
    assert r["pop2:hr@1"] == 0.0 and r["pop2:hr@2"] == 0.5 and r["pop2:hr@3"] == 1.0
    assert r["pop2:ndcg@3"] == pytest.approx((1 / math.log2(4) + 1 / math.log2(3)) / 2)
    assert r["pop2:mrr@3"] == pytest.approx((1 / 3 + 1 / 2) / 2)


def test_one_positive_among_n_matches_the_classic_definition_user_by_user():
    """Leave-one-out style: HR@10 = [rank < 10], NDCG@10 = 1 / log2(rank + 2), rank = the number of sampled
    negatives the model scores above the target, computed here with the same draw."""
    h, model = random_holdout(1, 200, 300, max_targets=1)
    r = evaluate_sampled(model, h, n_negatives=100, ks=(10,), metrics=("hr", "ndcg"), seed=7, batch_size=1000)
    excluded = (h.histories.binary() + h.targets).tocsr()
    negatives = sample_negatives(excluded, 100, None, np.random.default_rng(7))
    hr, ndcg = [], []
    for u in range(len(h)):
        target = h.targets[u].indices[0]
        scores = model.scores[u]
        rank = int((scores[negatives[u]] > scores[target]).sum())
        hr.append(rank < 10)
        ndcg.append(1 / math.log2(rank + 2) if rank < 10 else 0.0)
    assert r["uni100:hr@10"] == pytest.approx(np.mean(hr), abs=1e-12)
    assert r["uni100:ndcg@10"] == pytest.approx(np.mean(ndcg), abs=1e-9)
    assert r["uni100:hr@10"] > 0.05  # 11 candidates of 101 in the top 10 by chance: about 0.1


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), n_users=st.integers(1, 30), n_items=st.integers(5, 60),
       sampling=st.sampled_from(["uniform", "popularity"]))
def test_with_every_item_a_candidate_sampled_equals_full_ranking(seed, n_users, n_items, sampling):
    h, model = random_holdout(seed, n_users, n_items)
    metrics = ("hr", "ndcg", "recall", "mrr", "map", "precision")
    full = evaluate(model, h, ks=(1, 5), metrics=metrics)
    # popularity from a table where every item has a user, so every item can be drawn
    train = type("Everyone", (), {"item_popularity": lambda self: np.arange(1, n_items + 1)})()
    sampled = evaluate_sampled(model, h, n_negatives=n_items, sampling=sampling, ks=(1, 5), metrics=metrics,
                               train=train)
    label = f"{sampling[:3]}{n_items}"
    for key, value in full.summary.items():
        if key.split("@")[0] in metrics:
            assert sampled[f"{label}:{key}"] == pytest.approx(value, abs=1e-12), key


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(1, 40))
def test_sampled_hit_rate_is_never_below_full_ranking(seed, n):
    """Removing candidates can only move a target up, user by user."""
    h, model = random_holdout(seed, 25, 50)
    full = evaluate(model, h, ks=(5,), metrics=("hr", "recall"))
    sampled = evaluate_sampled(model, h, n_negatives=n, ks=(5,), metrics=("hr", "recall"), seed=seed)
    for m in ("hr", "recall"):
        assert np.all(sampled.per_user[f"uni{n}:{m}@5"] >= full.per_user[f"{m}@5"] - 1e-12)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), n_users=st.integers(1, 20), n_items=st.integers(1, 40), n=st.integers(1, 45))
def test_negatives_are_distinct_allowed_items_and_as_many_as_possible(seed, n_users, n_items, n):
    rng = np.random.default_rng(seed)
    excluded = sp.random(n_users, n_items, density=0.3, random_state=rng, format="csr")
    weights = rng.integers(0, 3, n_items).astype(float)  # a third of the items can never be drawn
    negatives = sample_negatives(excluded, n, weights, rng)
    for u in range(n_users):
        drawn = negatives[u][negatives[u] >= 0]
        allowed = set(np.flatnonzero(weights > 0)) - set(excluded[u].indices)
        assert len(set(drawn)) == len(drawn) == min(n, len(allowed))
        assert set(drawn) <= allowed
        assert np.all(negatives[u][len(drawn):] == -1)  # padding comes last


def test_popularity_sampling_draws_items_in_proportion_to_their_weight():
    weights = np.array([1.0, 2.0, 3.0, 4.0, 0.0])
    excluded = sp.csr_matrix((20_000, 5))
    first = sample_negatives(excluded, 1, weights, np.random.default_rng(0))[:, 0]
    share = np.bincount(first, minlength=5) / len(first)
    assert np.allclose(share, weights / weights.sum(), atol=0.01), share


def test_the_same_seed_gives_the_same_figures_whatever_the_batch_size_and_another_seed_others():
    h, model = random_holdout(3, 90, 200)
    a = evaluate_sampled(model, h, n_negatives=20, seed=5, batch_size=512)
    b = evaluate_sampled(model, h, n_negatives=20, seed=5, batch_size=7)
    c = evaluate_sampled(model, h, n_negatives=20, seed=6, batch_size=512)
    assert a.summary == b.summary
    assert all(np.array_equal(a.per_user[k], b.per_user[k]) for k in a.per_user)
    assert not all(np.array_equal(a.per_user[k], c.per_user[k]) for k in a.per_user)


@pytest.mark.parametrize("kwargs, message", [
    ({"sampling": "zipf"}, "sampling must be one of uniform, popularity"),
    ({"n_negatives": 0}, "n_negatives must be at least 1"),
    ({"metrics": ("coverage",)}, "unknown sampled metric 'coverage'"),
])
def test_bad_arguments_are_named(kwargs, message):
    h, model = random_holdout(0, 3, 10)
    with pytest.raises(ValueError, match=message):
        evaluate_sampled(model, h, **kwargs)
