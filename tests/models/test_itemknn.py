import numpy as np
import pytest
import scipy.sparse as sp

from genrec.data.interactions import Histories
from genrec.models import ItemKNN
from genrec.models import itemknn as itemknn_module
from tests.models.contract import RecommenderContract


class TestItemKNN(RecommenderContract):
    def make_model(self):
        return ItemKNN(k=20, shrink=1.0)


def naive_similarity(x: np.ndarray, shrink: float, alpha: float = 0.5) -> np.ndarray:
    """S[i, j] = x_i . x_j / (|x_i|^(2 alpha) |x_j|^(2 (1 - alpha)) + shrink), one pair at a time."""
    n = x.shape[1]
    s = np.zeros((n, n))
    for i in range(n):
        for j in range(n):
            if i != j:
                dot = x[:, i] @ x[:, j]
                s[i, j] = dot / ((x[:, i] @ x[:, i]) ** alpha * (x[:, j] @ x[:, j]) ** (1 - alpha) + shrink)
    return s


def random_binary(n_users=50, n_items=25, density=0.25, seed=0) -> np.ndarray:
    return (np.random.default_rng(seed).random((n_users, n_items)) < density).astype(np.float64)


def test_similarity_is_cosine_with_shrinkage():
    x = random_binary()
    got = itemknn_module.item_similarity(sp.csr_matrix(x), k=x.shape[1], shrink=3.0).toarray()
    np.testing.assert_allclose(got, naive_similarity(x, 3.0), atol=1e-6)


def test_similarity_is_the_same_when_built_in_many_blocks(monkeypatch):
    monkeypatch.setattr(itemknn_module, "BLOCK_FLOATS", 50)  # 2 columns per block
    x = random_binary(seed=2)
    got = itemknn_module.item_similarity(sp.csr_matrix(x), k=x.shape[1], shrink=0.0).toarray()
    np.testing.assert_allclose(got, naive_similarity(x, 0.0), atol=1e-6)


def test_asymmetric_cosine_uses_alpha():
    x = random_binary(seed=4)
    got = itemknn_module.item_similarity(sp.csr_matrix(x), k=x.shape[1], shrink=1.0, alpha=0.8).toarray()
    np.testing.assert_allclose(got, naive_similarity(x, 1.0, alpha=0.8), atol=1e-6)


def test_pruning_keeps_the_k_most_similar_items_per_column():
    x = random_binary(n_users=200, density=0.4, seed=1)
    full = naive_similarity(x, 2.0)
    pruned = itemknn_module.item_similarity(sp.csr_matrix(x), k=5, shrink=2.0).toarray()
    assert (np.count_nonzero(pruned, axis=0) == 5).all()
    for j in range(x.shape[1]):
        kept = np.flatnonzero(pruned[:, j])
        np.testing.assert_allclose(pruned[kept, j], full[kept, j], atol=1e-6)
        assert full[kept, j].min() >= np.sort(full[:, j])[-5] - 1e-9


def test_scores_are_the_history_times_the_similarity(blocks):
    model = ItemKNN(k=10).fit(blocks)
    h = Histories.from_lists([[0, 4, 8], []], blocks.n_items)
    s = model.similarity_.toarray()
    np.testing.assert_allclose(model.score(h), np.vstack([s[[0, 4, 8]].sum(0), np.zeros(blocks.n_items)]), atol=1e-6)


def test_values_are_used_when_not_binary(blocks):
    ones = ItemKNN(k=10, binary=True).fit(blocks).similarity_
    rated = ItemKNN(k=10, binary=False).fit(blocks).similarity_
    assert (ones != rated).nnz > 0


@pytest.mark.parametrize("params", [{"k": 0}, {"shrink": -1.0}, {"alpha": 1.5}])
def test_bad_hyperparameters_are_rejected(blocks, params):
    with pytest.raises(ValueError, match=next(iter(params))):
        ItemKNN(**params).fit(blocks)
