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


@pytest.mark.parametrize("params", [{"k": 0}, {"shrink": -1.0}, {"alpha": 1.5}, {"feature_weighting": "bm15"},
                                    {"prediction": "mean"}])
def test_bad_hyperparameters_are_rejected(blocks, params):
    with pytest.raises(ValueError, match=next(iter(params))):
        ItemKNN(**params).fit(blocks)


# feature weighting and prediction ---------------------------------------------------------------------------------
def three_users() -> sp.csr_matrix:
    """Users {0, 1}, {0, 1, 2}, {1, 2} over 6 items (3, 4, 5 unused): idf = log 2, log 1.5, log 2."""
    rows, cols = [0, 0, 1, 1, 1, 2, 2], [0, 1, 0, 1, 2, 1, 2]
    return sp.csr_matrix((np.ones(7, np.float32), (rows, cols)), shape=(3, 6))


def test_tfidf_weighs_every_user_by_their_idf():
    a2, b2 = np.log(2.0) ** 2, np.log(1.5) ** 2  # squared idf of users 0 and 2, and of user 1
    x = itemknn_module.weigh_features(three_users(), "tfidf", np.ones(6, np.float32))
    s = itemknn_module.item_similarity(x, k=6, shrink=0.0).toarray()
    # items 0 and 1 share users 0 and 1; item 1 also has user 2: cosine of (a, b) with (a, b, a)
    assert s[0, 1] == pytest.approx(np.sqrt((a2 + b2) / (2 * a2 + b2)), rel=1e-5)
    assert s[0, 1] != pytest.approx(2 / np.sqrt(6), rel=1e-3)  # the unweighted cosine


def test_bm25_saturates_by_item_length_and_weighs_by_idf():
    a2, b2 = np.log(2.0) ** 2, np.log(1.5) ** 2
    lengths = np.array([2, 3, 2, 0, 0, 0]) / (7 / 6)  # column sums over their mean
    norm = 1 - 0.75 + 0.75 * lengths
    np.testing.assert_allclose(itemknn_module.bm25_length_norm(three_users()), norm, rtol=1e-6)
    tf = 2.2 / (1.2 * norm + 1.0)  # (K1 + 1) v / (K1 L_i + v) at v = 1
    x = itemknn_module.weigh_features(three_users(), "bm25", norm.astype(np.float32))
    np.testing.assert_allclose(x.toarray()[1, :3], np.log(1.5) * tf[:3], rtol=1e-6)
    s = itemknn_module.item_similarity(x, k=6, shrink=1.0).toarray()
    dot = tf[0] * tf[1] * (a2 + b2)
    assert s[0, 1] == pytest.approx(dot / (tf[0] * tf[1] * np.sqrt((a2 + b2) * (2 * a2 + b2)) + 1.0), rel=1e-5)


def test_counts_are_damped_by_the_term_weights():
    x = sp.csr_matrix(np.array([[4.0, 0.0], [9.0, 1.0]], np.float32))
    norm = np.array([2.0, 0.5], np.float32)
    np.testing.assert_allclose(itemknn_module.weigh_terms(x, "tfidf", norm).toarray(), [[2, 0], [3, 1]], rtol=1e-6)
    bm25 = itemknn_module.weigh_terms(x, "bm25", norm).toarray()
    np.testing.assert_allclose(bm25, [[4 * 2.2 / (2.4 + 4), 0], [9 * 2.2 / (2.4 + 9), 2.2 / (0.6 + 1)]], rtol=1e-6)


def test_bm25_weighs_the_history_at_scoring(blocks):
    model = ItemKNN(k=10, feature_weighting="bm25").fit(blocks)
    tf = 2.2 / (1.2 * model.length_norm_ + 1.0)
    h = Histories.from_lists([[0, 4, 8]], blocks.n_items)
    s = model.similarity_.toarray()
    np.testing.assert_allclose(model.score(h)[0], tf[[0, 4, 8]] @ s[[0, 4, 8]], rtol=1e-5)


def test_average_makes_every_score_a_weighted_average_of_the_neighbours(blocks):
    model = ItemKNN(k=10, prediction="average").fit(blocks)
    sums = np.asarray(model.similarity_.sum(axis=0)).ravel()
    np.testing.assert_allclose(sums[sums > 0], 1.0, rtol=1e-5)
    everything = Histories.from_lists([list(range(blocks.n_items))], blocks.n_items)
    np.testing.assert_allclose(model.score(everything)[0][sums > 0], 1.0, rtol=1e-5)


def test_average_bias_centres_the_average_on_the_item_means(blocks):
    plain = ItemKNN(k=10, prediction="average").fit(blocks)
    model = ItemKNN(k=10, prediction="average_bias").fit(blocks)
    means = np.asarray(blocks.csr(binary=True).mean(axis=0)).ravel()
    s = plain.similarity_.toarray()
    h = Histories.from_lists([[0, 4, 8], [1]], blocks.n_items)
    want = (h.matrix.toarray() - means) @ s + means  # sum_i S[i, j] (h_i - m_i) + m_j
    np.testing.assert_allclose(model.score(h), want, atol=1e-5)


def test_bundles_without_weighting_state_load_as_before(blocks):
    model = ItemKNN(k=10).fit(blocks)
    arrays, meta = model._get_state()
    old = {k: arrays[k] for k in ("indptr", "indices", "data")}
    loaded = ItemKNN(k=10)
    loaded._set_state(old, meta)
    h = Histories.from_lists([[0, 4, 8]], blocks.n_items)
    np.testing.assert_allclose(loaded.score(h), model.score(h), atol=1e-6)


class TestItemKNNWeightedAverage(RecommenderContract):
    def make_model(self):
        return ItemKNN(k=20, shrink=1.0, feature_weighting="bm25", prediction="average_bias")
