"""The contract every recommender keeps. A model's test file subclasses `RecommenderContract`:

    class TestEASE(RecommenderContract):
        def make_model(self):
            return EASE(l2=10.0)

and gets fit/score/recommend shapes, exclusion of seen items, fold-in of unseen users, save/load round trip,
determinism, batch-size independence, candidate filtering, config validation and a win over popularity on
data with real structure.
"""

from __future__ import annotations

import numpy as np
import pydantic
import pytest

from genrec.data.interactions import Histories
from genrec.data.splits import split_strong_generalization
from genrec.evaluation.evaluate import evaluate
from genrec.models import Popularity, Recommender
from tests.conftest import block_interactions


class RecommenderContract:
    #: relative NDCG@10 margin over popularity the model must reach on block data (None: no claim)
    beats_popularity_by: float | None = 0.2
    #: tolerance for comparing scores across runs / batch sizes
    atol: float = 1e-5

    def make_model(self) -> Recommender:
        raise NotImplementedError

    @pytest.fixture(scope="class")
    @classmethod
    def data(cls):
        return block_interactions()

    @pytest.fixture(scope="class")
    @classmethod
    def split(cls, data):
        return split_strong_generalization(data, n_heldout=20, seed=1)

    @pytest.fixture(scope="class")
    @classmethod
    def fitted(cls, split):
        return cls().make_model().fit(split.train, validation=split.validation)

    def test_fit_returns_self_and_sets_learned_state(self, split):
        model = self.make_model()
        assert not model.is_fitted
        assert model.fit(split.train, validation=split.validation) is model
        assert model.is_fitted and model.n_items_ == split.train.n_items

    def test_score_shape_and_dtype(self, fitted, split):
        h = split.test.histories
        s = np.asarray(fitted.score(h))
        assert s.shape == (h.n_users, split.train.n_items)
        assert np.isfinite(s).all()

    def test_recommend_excludes_seen_items(self, fitted, split):
        h = split.test.histories
        recs = fitted.recommend(h, k=10)
        assert recs.items.shape == (h.n_users, 10)
        for u in range(h.n_users):
            seen = set(h.matrix.indices[h.matrix.indptr[u] : h.matrix.indptr[u + 1]])
            assert not seen & set(recs.items[u][recs.items[u] >= 0])
        assert (np.diff(recs.scores, axis=1) <= 1e-6).all(), "scores must come best first"

    def test_recommend_can_include_seen_items(self, fitted, split):
        h = split.test.histories
        recs = fitted.recommend(h, k=h.n_items, exclude_seen=False)
        assert (recs.items >= 0).all()

    def test_fold_in_for_a_user_never_seen(self, fitted, split):
        h = Histories.from_lists([[0, 4, 8, 12], [1, 5]], split.train.n_items)
        recs = fitted.recommend(h, k=5)
        assert recs.items.shape == (2, 5) and (recs.items >= 0).all()
        assert not {0, 4, 8, 12} & set(recs.items[0])

    def test_empty_history_gets_recommendations(self, fitted, split):
        h = Histories.from_lists([[]], split.train.n_items)
        recs = fitted.recommend(h, k=5)
        assert (recs.items >= 0).all()

    def test_batch_size_does_not_change_scores(self, fitted, split):
        h = split.test.histories
        a = fitted.recommend(h, k=10, batch_size=3)
        b = fitted.recommend(h, k=10, batch_size=1000)
        np.testing.assert_allclose(a.scores, b.scores, atol=self.atol, rtol=1e-4)

    def test_candidates_restrict_the_ranking(self, fitted, split):
        cands = np.arange(0, split.train.n_items, 3)
        recs = fitted.recommend(split.test.histories, k=5, candidates=cands)
        got = recs.items[recs.items >= 0]
        assert set(got) <= set(cands)

    def test_save_load_round_trip(self, fitted, split, tmp_path):
        fitted.save(tmp_path / "model", train=split.train)
        loaded = type(fitted).load(tmp_path / "model")
        h = split.test.histories
        np.testing.assert_allclose(np.asarray(loaded.score(h)), np.asarray(fitted.score(h)), atol=self.atol)
        assert loaded.get_params() == fitted.get_params()

    def test_bundle_has_no_pickles(self, fitted, split, tmp_path):
        path = fitted.save(tmp_path / "model", train=split.train)
        names = {p.name for p in path.iterdir()}
        assert {"model.json", "weights.safetensors", "items.parquet", "users.parquet"} <= names
        assert not [n for n in names if n.endswith((".pkl", ".pt", ".pickle", ".joblib"))]

    def test_same_seed_same_scores(self, split):
        h = split.test.histories
        a = np.asarray(self.make_model().fit(split.train, validation=split.validation).score(h))
        b = np.asarray(self.make_model().fit(split.train, validation=split.validation).score(h))
        np.testing.assert_allclose(a, b, atol=self.atol, rtol=1e-4)

    def test_config_rejects_unknown_keys(self):
        cls = type(self.make_model())
        with pytest.raises(pydantic.ValidationError, match="no_such_param"):
            cls.from_config({"no_such_param": 1})

    def test_repr_shows_hyperparameters(self):
        model = self.make_model()
        for name in model.param_names():
            assert f"{name}=" in repr(model)

    def test_beats_popularity_on_structured_data(self, fitted, split):
        if self.beats_popularity_by is None:
            pytest.skip("this model makes no claim over popularity")
        pop = Popularity().fit(split.train)
        ours = evaluate(fitted, split.test, ks=(10,), train=split.train)["ndcg@10"]
        base = evaluate(pop, split.test, ks=(10,), train=split.train)["ndcg@10"]
        assert ours >= base * (1 + self.beats_popularity_by), (ours, base)
