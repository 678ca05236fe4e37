import numpy as np
import pytest
import scipy.sparse as sp

from genrec.data.interactions import Histories
from genrec.models import EASE
from genrec.models import ease as ease_module
from tests.models.contract import RecommenderContract


class TestEASE(RecommenderContract):
    def make_model(self):
        return EASE(l2=10.0)


def dense_ease(x: np.ndarray, l2: float) -> np.ndarray:
    """Steck's closed form, straight from the paper, in float64."""
    p = np.linalg.inv(x.T @ x + l2 * np.eye(x.shape[1]))
    b = np.eye(x.shape[1]) - p / np.diag(p)[None, :]
    np.fill_diagonal(b, 0.0)
    return b


def random_binary(n_users=80, n_items=30, density=0.2, seed=0) -> np.ndarray:
    return (np.random.default_rng(seed).random((n_users, n_items)) < density).astype(np.float64)


def test_weights_match_a_dense_numpy_solve():
    x = random_binary()
    got = ease_module.ease_weights(sp.csr_matrix(x), l2=5.0)
    assert got.dtype == np.float32 and got.flags.c_contiguous
    np.testing.assert_allclose(got, dense_ease(x, 5.0), atol=1e-4)


def test_weights_match_when_computed_in_many_blocks(monkeypatch):
    monkeypatch.setattr(ease_module, "BLOCK_FLOATS", 64)  # 2 rows per block on 30 items
    monkeypatch.setattr(ease_module, "LAPACK_BLOCK", 4)
    x = random_binary(seed=3)
    np.testing.assert_allclose(ease_module.ease_weights(sp.csr_matrix(x), 2.0), dense_ease(x, 2.0), atol=1e-4)


@pytest.mark.parametrize("block_floats", [1 << 25, 64])
def test_weights_match_with_fewer_users_than_items_through_woodbury(monkeypatch, block_floats):
    monkeypatch.setattr(ease_module, "BLOCK_FLOATS", block_floats)  # 64: 1 row per block on 45 items
    x = random_binary(n_users=25, n_items=45, density=0.3, seed=5)
    np.testing.assert_allclose(ease_module.ease_weights(sp.csr_matrix(x), 3.0), dense_ease(x, 3.0), atol=1e-4)


def test_diagonal_is_zero(blocks):
    model = EASE(l2=10.0).fit(blocks)
    assert np.all(np.diag(model.weights_) == 0.0)


def test_scores_are_the_binary_history_times_the_weights(blocks):
    model = EASE(l2=10.0).fit(blocks)
    h = Histories.from_lists([[0, 4, 8], [1]], blocks.n_items, values=[[5.0, 3.0, 1.0], [2.0]])
    expected = (model.weights_[[0, 4, 8]].sum(0), model.weights_[1])
    np.testing.assert_allclose(model.score(h), np.vstack(expected), atol=1e-6)


def test_larger_l2_shrinks_the_weights(blocks):
    small = EASE(l2=1.0).fit(blocks).weights_
    large = EASE(l2=1000.0).fit(blocks).weights_
    assert np.abs(large).sum() < np.abs(small).sum()


def test_non_positive_l2_is_rejected(blocks):
    with pytest.raises(ValueError, match="l2"):
        EASE(l2=0.0).fit(blocks)


@pytest.mark.parametrize("n", [1, 7, 33])
def test_blocked_in_place_inversion_matches_numpy(monkeypatch, n):
    monkeypatch.setattr(ease_module, "LAPACK_BLOCK", 3)  # recurse a few levels, with odd halves
    rng = np.random.default_rng(n)
    a = rng.random((n + 5, n)).astype(np.float32)
    spd = a.T @ a + np.eye(n, dtype=np.float32)
    expected = np.linalg.inv(spd.astype(np.float64))
    got = ease_module._invert_spd_in_place(spd.copy())
    np.testing.assert_allclose(got, expected, atol=2e-4 * np.abs(expected).max())


def test_inversion_names_the_failing_row_when_not_positive_definite():
    a = np.eye(4, dtype=np.float32)
    a[2, 2] = -1.0
    with pytest.raises(ValueError, match="not positive definite"):
        ease_module._invert_spd_in_place(a)
