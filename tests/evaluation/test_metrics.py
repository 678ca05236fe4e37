"""Top-K metrics: hand-computed values for every metric, the edge cases, and properties on random data."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from genrec.evaluation import metrics as M

PROPERTY = settings(max_examples=50, deadline=None)


def csr(rows: list[list[int]], n_items: int) -> sp.csr_matrix:
    """Binary (n_users, n_items) targets from per-user item lists."""
    r = [u for u, items in enumerate(rows) for _ in items]
    c = [i for items in rows for i in items]
    return sp.csr_matrix((np.ones(len(c), np.float32), (r, c)), shape=(len(rows), n_items))


# Two users, ten items. User 0 ranks [3, 1, 7, 5] and wants {1, 5, 9}: hits at ranks 2 and 4.
# User 1 ranks [2, 0, 4, 6] and wants {2}: a hit at rank 1.
TOPK = np.array([[3, 1, 7, 5], [2, 0, 4, 6]])
TARGETS = csr([[1, 5, 9], [2]], 10)
D2, D3, D4 = (1 / math.log2(r + 1) for r in (2, 3, 4))  # discount at rank r: 1 / log2(r + 1)


@pytest.fixture
def hits():
    return M.hit_matrix(TOPK, TARGETS)


def metric(name: str, hits: np.ndarray, k: int) -> np.ndarray:
    return M.RANKING_METRICS[name](hits, M.n_relevant(TARGETS), k)


def test_hit_matrix_marks_relevant_ranks(hits):
    assert hits.tolist() == [[False, True, False, True], [True, False, False, False]]


@pytest.mark.parametrize(
    "name, k, expected",
    [
        ("recall", 2, [1 / 3, 1.0]),  # hits / |relevant|
        ("recall", 4, [2 / 3, 1.0]),
        ("recall_liang", 2, [1 / 2, 1.0]),  # hits / min(k, |relevant|)
        ("recall_liang", 4, [2 / 3, 1.0]),
        ("ndcg", 1, [0.0, 1.0]),
        ("ndcg", 2, [D2 / (1 + D2), 1.0]),  # IDCG over min(2, 3) = 2 hits
        ("ndcg", 4, [(D2 + D4) / (1 + D2 + D3), 1.0]),  # IDCG over min(4, 3) = 3 hits
        ("hr", 1, [0.0, 1.0]),
        ("hr", 2, [1.0, 1.0]),
        ("mrr", 1, [0.0, 1.0]),
        ("mrr", 4, [1 / 2, 1.0]),
        ("map", 4, [(1 / 2 + 2 / 4) / 3, 1.0]),  # precision at each hit, over min(4, 3)
        ("map", 2, [(1 / 2) / 2, 1.0]),
        ("precision", 1, [0.0, 1.0]),
        ("precision", 4, [2 / 4, 1 / 4]),
    ],
)
def test_ranking_metric_by_hand(hits, name, k, expected):
    np.testing.assert_allclose(metric(name, hits, k), expected, rtol=1e-12)


def test_ndcg_discount_is_log2_of_rank_plus_one():
    # one relevant item, found at rank 3: DCG = 1 / log2(4) = 0.5, IDCG = 1
    h = M.hit_matrix(np.array([[0, 1, 2]]), csr([[2]], 3))
    np.testing.assert_allclose(M.ndcg_at_k(h, np.array([1.0]), 3), [0.5])


def test_user_without_relevant_items_scores_zero_everywhere():
    topk = np.array([[0, 1, 2]])
    targets = csr([[]], 5)
    h = M.hit_matrix(topk, targets)
    assert not h.any()
    for name, fn in M.RANKING_METRICS.items():
        out = fn(h, M.n_relevant(targets), 3)
        assert out.tolist() == [0.0], name
        assert np.isfinite(out).all(), name


def test_padding_is_never_a_hit_even_next_to_the_previous_users_last_item():
    # user 0 wants the catalogue's last item (4); user 1's padding -1 would alias that key in a flat index
    topk = np.array([[-1, -1], [-1, 0]])
    targets = csr([[4], [0]], 5)
    assert M.hit_matrix(topk, targets).tolist() == [[False, False], [False, True]]
    # padding in the first row cannot alias anything either
    assert M.hit_matrix(np.array([[-1, 4]]), csr([[4]], 5)).tolist() == [[False, True]]


def test_k_larger_than_the_list():
    # two recommendations, both hits, three relevant items, K = 5
    h = M.hit_matrix(np.array([[0, 1]]), csr([[0, 1, 2]], 6))
    n_rel = np.array([3.0])
    np.testing.assert_allclose(M.recall_at_k(h, n_rel, 5), [2 / 3])
    np.testing.assert_allclose(M.recall_liang_at_k(h, n_rel, 5), [2 / 3])
    np.testing.assert_allclose(M.ndcg_at_k(h, n_rel, 5), [(1 + D2) / (1 + D2 + D3)])
    np.testing.assert_allclose(M.precision_at_k(h, n_rel, 5), [2 / 5])
    np.testing.assert_allclose(M.map_at_k(h, n_rel, 5), [2 / 3])
    np.testing.assert_allclose(M.mrr_at_k(h, n_rel, 5), [1.0])
    np.testing.assert_allclose(M.hr_at_k(h, n_rel, 5), [1.0])


def test_hit_matrix_accepts_unsorted_target_indices():
    t = sp.csr_matrix((np.ones(3, np.float32), np.array([7, 2, 5]), np.array([0, 3])), shape=(1, 8))
    assert not t.has_sorted_indices
    assert M.hit_matrix(np.array([[5, 2, 0, 7]]), t).tolist() == [[True, True, False, True]]


# beyond accuracy ----------------------------------------------------------------------------------------------
def test_coverage_counts_distinct_items_over_the_catalogue():
    assert M.coverage(np.array([[0, 1], [1, 2], [2, -1]]), 5) == pytest.approx(3 / 5)
    assert M.coverage(np.full((2, 2), -1), 5) == 0.0


def test_novelty_is_mean_self_information():
    popularity = np.array([4, 2, 1, 0])  # users per item among 4 users
    # items 0 and 1: -log2(4/4) = 0, -log2(2/4) = 1
    assert M.novelty(np.array([[0, 1]]), popularity, 4) == pytest.approx(0.5)
    # item 2: -log2(1/4) = 2; padding ignored
    assert M.novelty(np.array([[2, -1], [1, 0]]), popularity, 4) == pytest.approx((2 + 1 + 0) / 3)
    assert M.novelty(np.full((1, 2), -1), popularity, 4) == 0.0


def test_average_popularity_is_mean_popularity_of_recommended_items():
    popularity = np.array([10, 6, 1, 0])
    assert M.average_popularity(np.array([[0, 1], [2, -1]]), popularity) == pytest.approx((10 + 6 + 1) / 3)


def test_gini_by_hand():
    # every item recommended equally often
    assert M.gini(np.array([[0, 1], [2, 3]]), 4) == pytest.approx(0.0)
    # counts [0, 0, 1, 3]: sum |x_i - x_j| / (2 n^2 mean) = 20 / 32
    assert M.gini(np.array([[3, 3], [3, 2]]), 4) == pytest.approx(20 / 32)
    # one item only: (n - 1) / n, which tends to 1 with the catalogue size
    assert M.gini(np.array([[1], [1]]), 4) == pytest.approx(3 / 4)
    assert M.gini(np.full((2, 2), -1), 4) == 0.0


def test_long_tail_coverage_by_hand():
    popularity = np.array([10, 5, 3, 1, 0])  # head_share 0.2 of 5 items: item 0 is the head
    assert M.long_tail_coverage(np.array([[0, 1], [0, 3]]), popularity) == pytest.approx(2 / 4)
    assert M.long_tail_coverage(np.array([[0, -1]]), popularity) == 0.0
    # a larger head: items 0 and 1 (round(0.4 * 5) = 2); tail {2, 3, 4}
    assert M.long_tail_coverage(np.array([[1, 2]]), popularity, head_share=0.4) == pytest.approx(1 / 3)
    # the head is round(head_share * n) items: round(0.2 * 8) = 2 items, so the tail is items 2..7
    assert M.long_tail_coverage(np.array([[1, 2]]), np.arange(8)[::-1]) == pytest.approx(1 / 6)


# properties on random data -----------------------------------------------------------------------------------
@st.composite
def rankings(draw, pad: bool = True):
    """(topk, targets): distinct recommended items per user, -1 padding at the end of some lists."""
    n_users = draw(st.integers(1, 8))
    n_items = draw(st.integers(1, 30))
    width = draw(st.integers(1, n_items))
    density = draw(st.floats(0.0, 1.0))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    topk = np.argsort(rng.random((n_users, n_items)), axis=1)[:, :width]
    if pad:
        short = rng.integers(0, width + 1, n_users)
        topk[np.arange(width)[None, :] >= short[:, None]] = -1
    targets = sp.csr_matrix((rng.random((n_users, n_items)) < density).astype(np.float32))
    return topk, targets


def naive_hits(topk: np.ndarray, targets: sp.csr_matrix) -> np.ndarray:
    dense = targets.toarray() > 0
    return np.array([[i >= 0 and bool(dense[u, i]) for i in row] for u, row in enumerate(topk)], dtype=bool)


@PROPERTY
@given(rankings())
def test_hit_matrix_equals_set_membership(data):
    topk, targets = data
    np.testing.assert_array_equal(M.hit_matrix(topk, targets), naive_hits(topk, targets))


@PROPERTY
@given(rankings(), st.integers(1, 35))
def test_ranking_metrics_lie_in_unit_interval(data, k):
    topk, targets = data
    h, n_rel = M.hit_matrix(topk, targets), M.n_relevant(targets)
    for name, fn in M.RANKING_METRICS.items():
        out = fn(h, n_rel, k)
        assert out.shape == (len(topk),), name
        assert ((out >= 0) & (out <= 1 + 1e-12)).all(), (name, out)


@PROPERTY
@given(rankings())
def test_recall_is_non_decreasing_in_k(data):
    topk, targets = data
    h, n_rel = M.hit_matrix(topk, targets), M.n_relevant(targets)
    curve = np.stack([M.recall_at_k(h, n_rel, k) for k in range(1, topk.shape[1] + 3)], axis=1)
    assert (np.diff(curve, axis=1) >= 0).all()
    hr = np.stack([M.hr_at_k(h, n_rel, k) for k in range(1, topk.shape[1] + 3)], axis=1)
    assert (np.diff(hr, axis=1) >= 0).all()


@PROPERTY
@given(st.integers(1, 8), st.integers(1, 25), st.integers(0, 2**32 - 1))
def test_ndcg_is_one_when_the_relevant_items_come_first(n_users, n_items, seed):
    rng = np.random.default_rng(seed)
    relevant = [list(rng.permutation(n_items)[: rng.integers(1, n_items + 1)]) for _ in range(n_users)]
    targets = csr(relevant, n_items)
    rest = [[i for i in rng.permutation(n_items) if i not in set(r)] for r in relevant]
    topk = np.array([list(rng.permutation(r)) + o for r, o in zip(relevant, rest)])
    h, n_rel = M.hit_matrix(topk, targets), M.n_relevant(targets)
    for k in range(1, n_items + 1):
        np.testing.assert_allclose(M.ndcg_at_k(h, n_rel, k), 1.0, rtol=1e-12)
        np.testing.assert_allclose(M.recall_liang_at_k(h, n_rel, k), 1.0, rtol=1e-12)
        np.testing.assert_allclose(M.map_at_k(h, n_rel, k), 1.0, rtol=1e-12)


@PROPERTY
@given(rankings(), st.integers(1, 35), st.integers(0, 2**32 - 1))
def test_permuting_users_does_not_change_means(data, k, seed):
    topk, targets = data
    perm = np.random.default_rng(seed).permutation(len(topk))
    h, n_rel = M.hit_matrix(topk, targets), M.n_relevant(targets)
    hp, n_rel_p = M.hit_matrix(topk[perm], targets[perm]), M.n_relevant(targets[perm])
    for name, fn in M.RANKING_METRICS.items():
        assert fn(hp, n_rel_p, k).mean() == pytest.approx(fn(h, n_rel, k).mean(), abs=1e-12), name
    n_items = targets.shape[1]
    assert M.coverage(topk[perm], n_items) == M.coverage(topk, n_items)
    assert M.gini(topk[perm], n_items) == pytest.approx(M.gini(topk, n_items), abs=1e-12)
