"""Two-stage scoring (low-rank shortlist, exact re-ranking): the float32 model's top k and scores, its rules on
seen items and filters, and its place in the service."""

from __future__ import annotations

import numpy as np
import pytest
from fastapi.testclient import TestClient

from genrec.data.interactions import Histories
from genrec.models.multvae import MultDAE, MultVAE
from genrec.serving.app import create_app
from genrec.serving.rerank import TwoStageScorer, parse_rerank
from genrec.serving.scorer import ProcessScorer
from genrec.serving.served import ScoringRow, ServedModel
from tests.conftest import block_interactions

N_ITEMS = 400


@pytest.fixture(scope="module")
def multvae_dir(tmp_path_factory):
    train = block_interactions(n_users=300, n_items=N_ITEMS, n_groups=8, p_in=0.1, p_out=0.01)
    model = MultVAE(hidden_dims=(64, 16), epochs=15, batch_size=50, lr=1e-2, seed=0,
                    train_options={"progress": False}).fit(train)
    return model.save(tmp_path_factory.mktemp("multvae") / "model", train)


@pytest.fixture(scope="module")
def exact(multvae_dir) -> ServedModel:
    return ServedModel.load(multvae_dir)


def history_rows(served: ServedModel, k: int = 10, exclude_seen: bool = True) -> list[ScoringRow]:
    """One row per training user of the bundle: their own history."""
    m = served.histories.matrix
    return [ScoringRow(m.indices[m.indptr[u]: m.indptr[u + 1]].astype(np.int64),
                       np.ones(m.indptr[u + 1] - m.indptr[u], np.float32), k, exclude_seen)
            for u in range(m.shape[0]) if m.indptr[u + 1] > m.indptr[u]]


def test_a_shortlist_of_a_tenth_of_the_items_finds_the_float32_top_k(exact):
    rows = history_rows(exact)
    two_stage = TwoStageScorer(exact, rank=16, candidates=40)
    pairs = list(zip(exact.score_rows(rows), two_stage.score_rows(rows)))
    overlap = np.mean([len(set(a) & set(b)) / len(a) for (a, _), (b, _) in pairs])
    assert overlap >= 0.99  # (a rank-4 shortlist of 20 keeps about 40%: the shortlist is what is tested)
    # the returned scores are the float32 model's own for those items, not the low-rank approximation's
    logits = exact.model.score(Histories.from_lists([r.items for r in rows], exact.n_items))
    for i, (_, (items, scores)) in enumerate(pairs):
        assert np.allclose(scores, logits[i, items], atol=1e-4)


def assert_every_item_shortlisted_gives_the_float32_ranking(served: ServedModel) -> None:
    rows = history_rows(served, k=25)[:40]
    for (a, sa), (b, sb) in zip(served.score_rows(rows), TwoStageScorer(served, 4, N_ITEMS).score_rows(rows)):
        assert np.array_equal(a, b) and np.allclose(sa, sb, atol=1e-5)


def test_with_every_item_shortlisted_it_is_the_float32_ranking(exact):
    assert_every_item_shortlisted_gives_the_float32_ranking(exact)


@pytest.mark.parametrize("model_class", [MultVAE, MultDAE])
def test_networks_without_hidden_layers_score_as_the_model(model_class, tmp_path):
    """[I -> d -> I]: no encoder layer after the input layer (a VAE's input layer gives mean and log-variance
    itself) and no decoder layer before the output layer: the Gowalla configuration's Mult-VAE."""
    train = block_interactions(n_users=200, n_items=N_ITEMS, n_groups=8, p_in=0.1, p_out=0.01)
    model = model_class(hidden_dims=(16,), epochs=3, batch_size=50, lr=1e-2, seed=0,
                        train_options={"progress": False}).fit(train)
    assert_every_item_shortlisted_gives_the_float32_ranking(ServedModel.load(model.save(tmp_path / "model", train)))


def test_seen_items_and_filtered_out_items_are_never_returned(exact):
    two_stage = TwoStageScorer(exact, rank=16, candidates=20)  # k=30 > 20 candidates: the shortlist takes k
    allowed = np.zeros(N_ITEMS, bool)
    allowed[::2] = True
    few = np.zeros(N_ITEMS, bool)
    few[[1, 3, 5]] = True  # fewer allowed items than k
    history = np.array([0, 2, 4, 6, 8, 10], np.int64)
    rows = [ScoringRow(history, np.ones(6, np.float32), 30, True),
            ScoringRow(history, np.ones(6, np.float32), 30, True, allowed),
            ScoringRow(history, np.ones(6, np.float32), 30, True, few),
            ScoringRow(history, np.ones(6, np.float32), 10, False)]
    (free, _), (even, _), (three, _), (with_seen, _) = two_stage.score_rows(rows)
    assert len(free) == 30 and not set(free) & set(history)
    assert len(even) == 30 and np.all(even % 2 == 0) and not set(even) & set(history)
    assert sorted(three) == [1, 3, 5]
    expected, _ = exact.score_rows(rows[3:])[0]
    assert set(with_seen) & set(history) and np.array_equal(with_seen, expected)


def test_duplicate_history_items_count_once_as_in_the_model(exact):
    once = ScoringRow(np.array([3, 7], np.int64), np.ones(2, np.float32), 10, True)
    twice = ScoringRow(np.array([3, 7, 3], np.int64), np.ones(3, np.float32), 10, True)
    (a, sa), (b, sb) = TwoStageScorer(exact, 8, 40).score_rows([once, twice])
    assert np.array_equal(a, b) and np.allclose(sa, sb)


def test_the_app_serves_two_stage_scores_in_a_thread_and_in_a_child_process(multvae_dir, exact):
    body = {"history": [0, 8, 16, 24], "k": 5}
    with TestClient(create_app(multvae_dir)) as client:
        expected = client.post("/v1/recommendations", json=body).json()["items"]
    with TestClient(create_app(multvae_dir, rerank="8:50")) as client:
        assert isinstance(client.app.state.service.active.scorer, TwoStageScorer)
        assert client.get("/health").json()["model"]["rerank"] == "8:50"
        got = client.post("/v1/recommendations", json=body).json()["items"]
    assert [i["item_id"] for i in got] == [i["item_id"] for i in expected]
    assert np.allclose([i["score"] for i in got], [i["score"] for i in expected], atol=1e-4)
    scorer = ProcessScorer(multvae_dir, rerank=(8, 50))
    try:
        rows = history_rows(exact)[:20]
        for (a, _), (b, _) in zip(TwoStageScorer(exact, 8, 50).score_rows(rows), scorer.score_rows(rows)):
            assert np.array_equal(a, b)
    finally:
        scorer.close()


def test_rerank_settings_are_checked_with_a_message_naming_them(multvae_dir, bundle_dir, exact):
    assert parse_rerank("64:256") == (64, 256) and parse_rerank("none") is None and parse_rerank(None) is None
    for bad in ("64", "a:b", "0:10", "64:256:1"):
        with pytest.raises(ValueError, match="rerank"):
            parse_rerank(bad)
    with pytest.raises(ValueError, match="rank must be in 1..63"):
        TwoStageScorer(exact, rank=64)
    with pytest.raises(ValueError, match="not a float32 Mult-VAE"):
        TwoStageScorer(ServedModel.load(bundle_dir))  # the co-occurrence test model has no output layer
    with pytest.raises(ValueError, match="without quantize"):
        create_app(multvae_dir, rerank="8:50", quantize="int8")


def test_a_request_gets_the_same_items_alone_or_in_a_batch(exact):
    # the int8 shortlist quantises the activations per batch: the exact re-scoring hides it
    rows = history_rows(exact)[:60]
    two_stage = TwoStageScorer(exact, rank=16, candidates=40)
    together = two_stage.score_rows(rows)
    alone = [two_stage.score_rows([row])[0] for row in rows]
    assert np.mean([np.array_equal(a, b) for (a, _), (b, _) in zip(together, alone)]) >= 0.95
    for (a, sa), (b, sb) in zip(together, alone):
        if np.array_equal(a, b):
            assert np.allclose(sa, sb, atol=1e-4)
