import numpy as np
import pytest

from genrec.data.interactions import Histories
from genrec.models import BPR, IALS
from tests.models.contract import RecommenderContract


class TestIALS(RecommenderContract):
    def make_model(self):
        return IALS(factors=16, regularization=0.1, iterations=10)


class TestBPR(RecommenderContract):
    def make_model(self):
        return BPR(factors=16, learning_rate=0.05, iterations=50)


def direct_least_squares(item_factors, confidence_row, regularization):
    """x_u = (Y^T C_u Y + reg I)^-1 Y^T C_u p_u with dense C_u (1 off the history) and p_u (1 on it)."""
    y = item_factors.astype(np.float64)
    c = np.ones(len(y))
    p = np.zeros(len(y))
    items = confidence_row.indices
    c[items] = confidence_row.data
    p[items] = 1.0
    a = y.T @ (c[:, None] * y) + regularization * np.eye(y.shape[1])
    return np.linalg.solve(a, y.T @ (c * p))


def test_ials_fold_in_is_the_exact_least_squares_solve(blocks):
    model = IALS(factors=8, regularization=0.5, alpha=10.0, iterations=5).fit(blocks)
    h = Histories.from_lists([[0, 4, 8], [1, 2, 3, 50]], blocks.n_items, values=[[1, 2, 3], [5, 5, 1, 1]])
    got = model.fold_in(h)
    confidence = model._confidence(h.matrix)
    for u in range(2):
        expected = direct_least_squares(model.item_factors_, confidence[u], 0.5)
        np.testing.assert_allclose(got[u], expected, rtol=1e-3, atol=1e-4)


def test_ials_fold_in_of_a_training_user_reproduces_the_trained_factors(blocks):
    model = IALS(factors=16, regularization=0.1, iterations=30).fit(blocks)
    folded = model.fold_in(blocks.histories())
    trained = model.user_factors_
    # the last sweep solved users against the previous item factors, with 3 conjugate gradient steps
    assert np.linalg.norm(folded - trained) / np.linalg.norm(trained) < 0.05


def test_ials_confidence_grows_with_alpha_and_value(blocks):
    model = IALS(alpha=40.0)
    h = Histories.from_lists([[0, 1]], blocks.n_items, values=[[1.0, 3.0]])
    np.testing.assert_allclose(model._confidence(h.matrix).data, [41.0, 121.0])


def test_bpr_fold_in_of_training_users_lands_near_their_trained_scores(blocks):
    model = BPR(factors=16, learning_rate=0.05, iterations=50).fit(blocks)
    folded = model.fold_in(blocks.histories()) @ model.item_factors_.T
    trained = model.user_factors_ @ model.item_factors_.T
    correlation = [np.corrcoef(a, b)[0, 1] for a, b in zip(folded, trained)]
    assert np.mean(correlation) > 0.8


def test_bpr_scores_include_the_item_bias(blocks):
    model = BPR(factors=4, iterations=5).fit(blocks)
    empty = Histories.from_lists([[]], blocks.n_items)
    expected = model._mean_item_factor(empty.matrix) @ model.fold_in_map_ @ model.item_factors_.T + model.item_bias_
    np.testing.assert_allclose(model.score(empty)[0], expected[0], atol=1e-6)
    assert model.item_factors_.shape == (blocks.n_items, 4) and model.item_bias_.shape == (blocks.n_items,)


def test_different_seeds_give_different_factors(blocks):
    a = IALS(factors=8, iterations=3, seed=0).fit(blocks).item_factors_
    b = IALS(factors=8, iterations=3, seed=1).fit(blocks).item_factors_
    assert not np.allclose(a, b)


@pytest.mark.parametrize("model", [IALS(factors=0), IALS(alpha=-1.0), BPR(iterations=0), BPR(regularization=-1.0)])
def test_bad_hyperparameters_are_rejected(blocks, model):
    with pytest.raises(ValueError):
        model.fit(blocks)
