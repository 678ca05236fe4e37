import numpy as np
import pandas as pd
import pytest

from genrec.data.splits import split_strong_generalization
from genrec.data.synthetic import make_synthetic
from genrec.evaluation.debias import (
    PopularityDebiased,
    choose_lambda,
    debias_scores,
    debiased_results,
    ipw_weights,
    reranked_results,
    tradeoff,
    tradeoff_frame,
)
from genrec.evaluation.evaluate import evaluate
from genrec.models import EASE, Popularity


@pytest.fixture(scope="module")
def split():
    """A log with a long tail: Zipf item popularity, taste groups."""
    data = make_synthetic(n_users=600, n_items=300, mean_history=20, seed=0)
    return split_strong_generalization(data, n_heldout=100, seed=0)


@pytest.fixture(scope="module")
def base(split):
    return EASE(l2=100.0).fit(split.train)


def test_debias_scores_standardise_each_user_then_subtract_the_log_popularity():
    scores = np.array([[1.0, 2.0, 3.0], [10.0, 10.0, 40.0]], np.float32)
    log_pop = np.log1p(np.array([0.0, 3.0, 7.0]))
    out = debias_scores(scores, log_pop, lam=0.5)
    z = (scores - scores.mean(1, keepdims=True)) / scores.std(1, keepdims=True)
    np.testing.assert_allclose(out, z - 0.5 * log_pop, rtol=1e-6)
    np.testing.assert_allclose(debias_scores(scores, log_pop, 0.0, "none"), scores)
    np.testing.assert_allclose(debias_scores(scores, log_pop, 1.0, "log"), np.log(scores) - log_pop, rtol=1e-6)
    with pytest.raises(ValueError, match="normalize"):
        debias_scores(scores, log_pop, 0.1, "rank")


def test_lambda_zero_recommends_what_the_base_model_does(split, base):
    h = split.test.histories
    wrapped = PopularityDebiased(base, lam=0.0).fit(split.train)
    np.testing.assert_array_equal(wrapped.recommend(h, k=20).items, base.recommend(h, k=20).items)


def test_a_stronger_penalty_recommends_less_popular_items(split, base):
    h = split.test.histories
    popularity = split.train.item_popularity()
    arp = [popularity[PopularityDebiased(base, lam=lam).fit(split.train).recommend(h, k=20).items].mean()
           for lam in (0.0, 0.2, 0.8, 3.0)]
    assert arp == sorted(arp, reverse=True) and arp[-1] < 0.5 * arp[0], arp


def test_wrapper_fits_an_unfitted_base_and_checks_its_arguments(split):
    wrapped = PopularityDebiased(Popularity(), lam=0.1).fit(split.train)
    assert wrapped.base.is_fitted and wrapped.n_items_ == split.train.n_items
    assert "lam=0.1" in repr(wrapped)
    with pytest.raises(ValueError, match="lam"):
        PopularityDebiased(Popularity(), lam=-1.0).fit(split.train)
    with pytest.raises(ValueError, match="normalize"):
        PopularityDebiased(Popularity(), normalize="softmax").fit(split.train)
    with pytest.raises(NotImplementedError, match="base model"):
        wrapped.save("unused")


def test_ipw_weights_are_inverse_popularity_with_mean_one(split):
    train = split.train
    w = ipw_weights(train, power=0.5)
    assert w.shape == (len(train),) and w.mean() == pytest.approx(1.0, rel=1e-5)
    popularity = train.item_popularity()[train.items]
    np.testing.assert_allclose(w * np.sqrt(popularity), (w * np.sqrt(popularity))[0], rtol=1e-4)
    np.testing.assert_allclose(ipw_weights(train, power=0.0), 1.0)
    capped = ipw_weights(train, power=1.0, max_weight=2.0)
    uncapped = ipw_weights(train, power=1.0)
    assert capped.max() == pytest.approx(2.0) and uncapped.max() > 2.0
    np.testing.assert_allclose(capped[uncapped < 2.0], uncapped[uncapped < 2.0])
    with pytest.raises(ValueError, match="power"):
        ipw_weights(train, power=-1.0)


def test_tradeoff_reports_accuracy_beside_long_tail_coverage(split, base):
    frame = tradeoff(base, split, [0.2, 0.4, 0.8], k=20)
    assert list(frame["lam"]) == [0.0, 0.2, 0.4, 0.8]
    plain = evaluate(base, split.test, ks=(20,), train=split.train)
    assert frame.loc[0, "ndcg@20"] == pytest.approx(plain["ndcg@20"])
    assert frame.loc[0, "tail_coverage@20"] == pytest.approx(plain["tail_coverage@20"])
    assert frame.loc[0, "ndcg_change"] == 0.0 and frame.loc[0, "tail_coverage_change"] == 0.0
    assert frame["tail_coverage_change"].iloc[1:].min() > 0.0
    assert frame["arp@20"].is_monotonic_decreasing


def test_debiased_results_keep_the_imbalance_view(split, base):
    results = debiased_results(base, split.test, split.train, [0.0, 0.5])
    for r in results.values():
        assert {"head", "mid", "tail"} == set(r.item_buckets["bucket"]) and len(r.user_buckets) >= 2
    tail_share = {lam: r.item_buckets.set_index("bucket").loc["tail", "rec_share@20"] for lam, r in results.items()}
    assert tail_share[0.5] > tail_share[0.0]


def test_choose_lambda_takes_the_most_tail_within_the_accuracy_budget():
    frame = pd.DataFrame({"lam": [0.0, 0.1, 0.2, 0.4], "ndcg_change": [0.0, -0.01, -0.04, -0.2],
                          "tail_coverage_change": [0.0, 0.1, 0.5, 0.9]})
    assert choose_lambda(frame, max_ndcg_loss=0.05) == 0.2
    assert choose_lambda(frame, max_ndcg_loss=0.005) == 0.0


def test_choose_lambda_with_a_tail_target_takes_the_least_penalty_that_reaches_it():
    frame = pd.DataFrame({"lam": [0.0, 0.05, 0.1, 0.2, 0.4, 0.8],
                          "ndcg_change": [0.0, 0.001, -0.002, -0.005, -0.015, -0.03],
                          "tail_coverage_change": [0.0, 0.2, 0.5, 0.6, 1.4, 3.0]})
    assert choose_lambda(frame, max_ndcg_loss=0.02) == 0.4  # most tail within the budget
    assert choose_lambda(frame, max_ndcg_loss=0.02, min_tail_gain=0.45) == 0.1  # the smallest λ reaching +45%
    assert choose_lambda(frame, max_ndcg_loss=0.02, min_tail_gain=0.5) == 0.1  # reaching includes equality
    # the target beyond what the budget allows: fall back to the most tail within the budget, never past it
    assert choose_lambda(frame, max_ndcg_loss=0.02, min_tail_gain=2.0) == 0.4
    assert choose_lambda(frame, max_ndcg_loss=0.001, min_tail_gain=0.45) == 0.05


class CountingScorer:
    """Wraps a fitted model and counts the users it scores."""

    def __init__(self, model):
        self.model, self.scored = model, 0

    def score(self, histories):
        self.scored += histories.n_users
        return self.model.score(histories)


def test_one_scoring_pass_serves_every_normalisation_and_lambda(split, base):
    counting = CountingScorer(base)
    settings = [("zscore", 0.0), ("zscore", 0.4), ("log", 0.4), ("none", 0.01)]
    results = reranked_results(counting, split.test, split.train, settings, batch_size=32)
    assert counting.scored == split.test.histories.n_users
    for normalize, lam in settings[1:]:
        alone = debiased_results(base, split.test, split.train, [lam], normalize=normalize)[lam]
        assert results[(normalize, lam)].summary == pytest.approx(alone.summary)
    frame = tradeoff_frame({lam: results[("zscore", lam)] for lam in (0.0, 0.4)})
    assert list(frame["lam"]) == [0.0, 0.4] and frame.loc[1, "tail_coverage_change"] > 0
    with pytest.raises(ValueError, match="λ = 0"):
        tradeoff_frame({0.4: results[("zscore", 0.4)]})
    with pytest.raises(ValueError, match="normalize"):
        reranked_results(base, split.test, split.train, [("rank", 0.1)])


def test_fast_top_items_agree_with_top_k_and_pad_exhausted_rows():
    from genrec.evaluation.debias import _top_items
    from genrec.models.base import top_k

    rng = np.random.default_rng(0)
    scores = rng.normal(size=(5, 50)).astype(np.float32)
    scores[2, 3:] = -np.inf
    np.testing.assert_array_equal(_top_items(scores, 10), top_k(scores, 10)[0])
    assert list(_top_items(scores, 10)[2, 3:]) == [-1] * 7
