"""Scoring in a child process gives exactly what scoring in-process gives, and a swap replaces the process."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from fastapi.testclient import TestClient

from genrec.serving.app import create_app
from genrec.serving.scorer import ProcessScorer, decode_results, decode_rows, encode_results, encode_rows
from genrec.serving.served import ScoringRow, ServedModel
from tests.serving.conftest import API_KEY, MODEL_MODULE


def rows(n_items: int) -> list[ScoringRow]:
    allowed = np.zeros(n_items, bool)
    allowed[::3] = True
    return [ScoringRow(np.array([1, 2, 3]), np.array([1.0, 2.0, 0.5], np.float32), 5, True),
            ScoringRow(np.array([7]), np.ones(1, np.float32), 60, False, allowed),
            ScoringRow(np.array([4, 9]), np.ones(2, np.float32), 1, True, ~allowed)]


def test_rows_and_results_survive_the_wire_format():
    sent = rows(61)
    got = decode_rows(encode_rows(sent), 61)
    for a, b in zip(sent, got):
        assert np.array_equal(a.items, b.items) and np.array_equal(a.values, b.values)
        assert (a.k, a.exclude_seen) == (b.k, b.exclude_seen)
        assert (a.allowed is None and b.allowed is None) or np.array_equal(a.allowed, b.allowed)
    results = [(np.array([3, 1]), np.array([0.5, 0.25], np.float32)), (np.zeros(0, np.int64), np.zeros(0))]
    for (i, s), (j, t) in zip(results, decode_results(encode_results(results))):
        assert np.array_equal(i, j) and np.allclose(s, t)


def test_a_bundle_the_child_cannot_load_is_an_error_naming_it(tmp_path):
    with pytest.raises(ValueError, match="could not load"):
        ProcessScorer(tmp_path / "nothing-here")


def test_the_app_scores_in_a_child_process_exactly_as_in_process_and_a_swap_replaces_it(bundle_dir):
    # one test for both, since every child process costs an interpreter start and a torch import
    served = ServedModel.load(bundle_dir)
    app = create_app(bundle_dir, api_key=API_KEY, imports=[MODEL_MODULE], scoring_process=True)
    with TestClient(app) as c:
        first = app.state.service.active.scorer
        for (i, s), (j, t) in zip(served.score_rows(rows(served.n_items)), first.score_rows(rows(served.n_items))):
            assert np.array_equal(i, j) and np.allclose(s, t)
        expected = c.post("/v1/recommendations", json={"user_id": "u2", "k": 5}).json()["items"]
        assert c.post("/v1/admin/reload", headers={"X-API-Key": API_KEY}).status_code == 200
        second = app.state.service.active.scorer
        assert second is not first
        assert c.post("/v1/recommendations", json={"user_id": "u2", "k": 5}).json()["items"] == expected
    first.processes[0].join(10)
    assert not first.processes[0].is_alive() and not second.processes[0].is_alive()


def test_two_children_score_batches_at_once_and_dead_children_are_an_error_not_a_hang(bundle_dir):
    served = ServedModel.load(bundle_dir)
    scorer = ProcessScorer(bundle_dir, imports=[MODEL_MODULE], processes=2)

    async def scenario():
        both = await asyncio.gather(*(scorer.score_rows_async(rows(served.n_items)) for _ in range(3)))
        for process in scorer.processes:
            process.kill()
            process.join(10)
        with pytest.raises(RuntimeError, match="scoring process"):
            await asyncio.wait_for(scorer.score_rows_async(rows(served.n_items)), 10)
        return both

    try:
        assert len(scorer.processes) == 2
        results = asyncio.run(scenario())
    finally:
        scorer.close()
    for got in results:
        for (i, s), (j, t) in zip(served.score_rows(rows(served.n_items)), got):
            assert np.array_equal(i, j) and np.allclose(s, t)
