"""The HTTP API in-process: what each endpoint answers, and how it refuses what it cannot take."""

from __future__ import annotations

import asyncio
import sys
import types
from dataclasses import dataclass

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient

from genrec.data.interactions import Histories
from genrec.models.base import load_bundle
from genrec.serving.app import create_app
from tests.conftest import block_interactions
from tests.serving.conftest import API_KEY
from tests.serving.cooccurrence import Cooccurrence


def recommend(client, **body):
    return client.post("/v1/recommendations", json=body)


def item_ids(response) -> list:
    return [x["item_id"] for x in response.json()["items"]]


# recommendations --------------------------------------------------------------------------------------------
def test_known_user_gets_top_k_of_their_training_history_without_seen_items(client, train):
    r = recommend(client, user_id="u3", k=5)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["strategy"] == "known_user" and body["user_id"] == "u3" and len(body["items"]) == 5
    seen = set(train.to_frame().query("user == 'u3'")["item"])
    assert body["history_length"] == len(seen)
    assert not seen & set(item_ids(r)) and all(i.startswith("i") for i in item_ids(r))
    scores = [x["score"] for x in body["items"]]
    assert scores == sorted(scores, reverse=True)


def test_known_user_matches_the_library_recommendation(client, bundle_dir):
    bundle = load_bundle(bundle_dir)
    row = list(bundle.user_ids.raw).index("u7")
    expected = bundle.model.recommend(bundle.histories[[row]], k=10)
    assert item_ids(recommend(client, user_id="u7", k=10)) == bundle.item_ids.raw[expected.items[0]].tolist()


def test_exclude_seen_false_may_return_history_items(client):
    history = ["i0", "i4", "i8", "i12", "i16"]
    with_seen = item_ids(recommend(client, history=history, k=60, exclude_seen=False))
    without = item_ids(recommend(client, history=history, k=60))
    assert set(history) <= set(with_seen) and not set(history) & set(without)


def test_new_user_is_folded_in_from_the_history_and_unknown_ids_are_counted(client, bundle_dir):
    r = recommend(client, user_id="someone-new", history=["i1", "nope", "i5", "i9", "also-nope"], k=5)
    body = r.json()
    assert body["strategy"] == "fold_in" and body["unknown_history_items"] == 2 and body["history_length"] == 3
    bundle = load_bundle(bundle_dir)
    h = Histories.from_lists([bundle.item_ids.index(["i1", "i5", "i9"])], len(bundle.item_ids))
    assert item_ids(r) == bundle.item_ids.raw[bundle.model.recommend(h, k=5).items[0]].tolist()


def test_a_history_of_only_unknown_ids_is_refused(client):
    r = recommend(client, history=["x", "y"])
    assert r.status_code == 422 and r.json()["message"].startswith("history:")


def test_unknown_user_without_history_gets_the_most_popular_items(client, train):
    r = recommend(client, user_id="stranger", k=3)
    assert r.json()["strategy"] == "popularity_fallback"
    popularity = train.item_popularity()
    assert sorted(popularity[train.item_ids.index(item_ids(r))].tolist(), reverse=True) == \
        sorted(popularity, reverse=True)[:3]
    assert recommend(client, k=3).json()["strategy"] == "popularity_fallback"


def test_filters_restrict_the_candidates_by_item_attributes(client, train):
    attrs = train.item_attributes.assign(item=train.item_ids.raw)
    r = recommend(client, user_id="u1", k=50, filters={"category": ["c1", "c2"], "price_band": "low"})
    assert r.status_code == 200
    allowed = set(attrs.query("category in ['c1', 'c2'] and price_band == 'low'")["item"])
    assert set(item_ids(r)) <= allowed and len(item_ids(r)) > 0
    fallback = recommend(client, k=50, filters={"price_band": "high"})
    assert set(item_ids(fallback)) <= set(attrs.query("price_band == 'high'")["item"])


def test_a_filter_on_an_unknown_attribute_names_it(client):
    r = recommend(client, user_id="u1", filters={"colour": "red"})
    assert r.status_code == 422 and r.json()["message"].startswith("filters.colour: unknown item attribute")


def test_integer_ids_match_by_number_or_text_and_come_back_as_numbers(tmp_path):
    data = block_interactions()
    bundle = Cooccurrence().fit(data).save(tmp_path / "model", data)
    with TestClient(create_app(bundle)) as c:
        r = recommend(c, history=[1, "5", 9], k=3)
        assert r.json()["unknown_history_items"] == 0 and all(isinstance(i, int) for i in item_ids(r))
        assert recommend(c, user_id=3).json()["strategy"] == "known_user"
        assert recommend(c, user_id="3").json()["strategy"] == "known_user"


@pytest.mark.parametrize("body, field", [
    ({"k": 0}, "k"), ({"k": 1001}, "k"), ({"k": "ten"}, "k"), ({"history": ["i1"] * 10_001}, "history"),
    ({"history": [1.5]}, "history.0"), ({"user_id": ""}, "user_id"), ({"colour": 1}, "colour"),
    ({"filters": {"category": []}}, "filters.category"), ({"explain": "yes"}, "explain"),
])
def test_invalid_requests_are_refused_with_the_field_named(client, body, field):
    r = client.post("/v1/recommendations", json=body)
    assert r.status_code == 422
    assert any(e["field"] == field or e["field"].startswith(field + ".") for e in r.json()["errors"]), r.text
    assert r.json()["message"].split(":")[0].startswith(field)


def test_a_body_over_the_size_limit_is_413(client):
    r = client.post("/v1/recommendations", content=b" " * 1_000_001, headers={"content-type": "application/json"})
    assert r.status_code == 413
    assert client.post("/v1/recommendations", content=b"{", headers={"content-type": "application/json"}) \
        .status_code == 422


# explanations ----------------------------------------------------------------------------------------------
def test_without_the_explain_module_the_response_says_so(client, monkeypatch):
    monkeypatch.setitem(sys.modules, "genrec.explain", None)  # importing it fails
    body = recommend(client, user_id="u1", k=3, explain=True).json()
    assert "not available" in body["explanations"] and all(x["explanation"] is None for x in body["items"])


def test_explanations_come_from_genrec_explain_with_raw_ids(client, monkeypatch):
    @dataclass
    class Explanation:
        item: int
        contributions: list

    def explain(model, histories, user_row, item, top=3):
        history = histories.sequence(user_row)[:top]
        return Explanation(item, [(int(i), 0.5) for i in history])

    monkeypatch.setitem(sys.modules, "genrec.explain", types.SimpleNamespace(explain=explain))
    body = recommend(client, history=["i2", "i6"], k=12, explain=True).json()
    first = body["items"][0]["explanation"]
    assert first["item"] == body["items"][0]["item_id"]
    assert first["contributions"] == [{"item_id": "i2", "contribution": 0.5}, {"item_id": "i6", "contribution": 0.5}]
    assert body["items"][11]["explanation"] is None and "first 10" in body["explanations"]


def test_explanations_from_the_real_module_name_history_items(client):
    pytest.importorskip("genrec.explain")
    body = recommend(client, history=["i2", "i6", "i10"], k=3, explain=True).json()
    assert body["explanations"] is None
    for item in body["items"]:
        explanation = item["explanation"]
        assert explanation["item"] == item["item_id"] and np.isclose(explanation["score"], item["score"], atol=1e-5)
        assert {c["item_id"] for c in explanation["contributions"]} <= {"i2", "i6", "i10"}


# similar items, events, administration --------------------------------------------------------------------
def test_similar_items_leave_the_item_out(client):
    r = client.get("/v1/items/i3/similar", params={"k": 7})
    assert r.status_code == 200 and r.json()["item_id"] == "i3"
    assert len(item_ids(r)) == 7 and "i3" not in item_ids(r)
    assert client.get("/v1/items/nope/similar").status_code == 404
    assert client.get("/v1/items/i3/similar", params={"k": 0}).status_code == 422


def test_events_make_a_new_user_known_and_change_their_recommendations(client):
    assert recommend(client, user_id="newbie").json()["strategy"] == "popularity_fallback"
    r = client.post("/v1/events", json={"events": [{"user_id": "newbie", "item_id": "i2", "value": 1.0},
                                                   {"user_id": "newbie", "item_id": "unknown-item"}]})
    assert r.status_code == 200 and r.json() == {"written": 2, "unknown_items": 1}
    body = recommend(client, user_id="newbie", k=5).json()
    assert body["strategy"] == "known_user" and body["history_length"] == 1 and "i2" not in item_ids_of(body)
    assert item_ids(recommend(client, user_id="newbie", k=5)) == item_ids(recommend(client, history=["i2"], k=5))
    assert client.app.state.service.store.count() == 2


def test_events_add_to_a_known_users_history(client):
    before = recommend(client, user_id="u5", k=60).json()
    added = item_ids(recommend(client, user_id="u5", k=1))[0]
    client.post("/v1/events", json={"events": [{"user_id": "u5", "item_id": added}]})
    after = recommend(client, user_id="u5", k=60).json()
    assert after["history_length"] == before["history_length"] + 1 and added not in item_ids_of(after)


def item_ids_of(body: dict) -> list:
    return [x["item_id"] for x in body["items"]]


@pytest.mark.parametrize("events, field", [
    ([], "events"), ([{"user_id": "u", "item_id": "i"}] * 10_001, "events"),
    ([{"user_id": "u"}], "events.0.item_id"), ([{"user_id": "u", "item_id": "i", "value": "x"}], "events.0.value"),
    ([{"user_id": "u", "item_id": "i", "timestamp": -1}], "events.0.timestamp"),
])
def test_invalid_events_are_refused_and_nothing_is_written(client, events, field):
    r = client.post("/v1/events", json={"events": events})
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == field
    assert client.app.state.service.store.count() == 0


def test_non_finite_event_values_are_refused(client):
    r = client.post("/v1/events", content=b'{"events": [{"user_id": "u", "item_id": "i", "value": 1e999}]}',
                    headers={"content-type": "application/json"})
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "events.0.value"


def test_admin_endpoints_need_the_api_key(client):
    client.post("/v1/events", json={"events": [{"user_id": "gone", "item_id": "i1"}]})
    assert client.delete("/v1/admin/users/gone").status_code == 401
    assert client.delete("/v1/admin/users/gone", headers={"X-API-Key": "wrong"}).status_code == 401
    r = client.delete("/v1/admin/users/gone", headers={"X-API-Key": API_KEY})
    assert r.status_code == 200 and r.json() == {"user_id": "gone", "deleted_events": 1}
    assert recommend(client, user_id="gone").json()["strategy"] == "popularity_fallback"
    assert client.post("/v1/admin/reload", headers={"X-API-Key": "wrong"}).status_code == 401


def test_admin_endpoints_are_disabled_without_a_configured_key(bundle_dir):
    with TestClient(create_app(bundle_dir)) as c:
        r = c.post("/v1/admin/reload", headers={"X-API-Key": "anything"})
        assert r.status_code == 403 and "disabled" in r.json()["message"]
        assert c.delete("/v1/admin/users/u1").status_code == 403


# health, metrics, docs, batching ---------------------------------------------------------------------------
def test_health_describes_the_model_and_the_store(client):
    body = client.get("/health").json()
    assert body["status"] == "ok" and body["model"]["model"] == "test-cooccurrence"
    assert body["model"]["n_items"] == 60 and "SQLiteEventStore" in body["store"]


def test_metrics_are_prometheus_text_with_requests_latency_batches_events_and_model(client):
    recommend(client, user_id="u1")
    recommend(client, k=0)
    client.post("/v1/events", json={"events": [{"user_id": "u1", "item_id": "i1"}]})
    r = client.get("/metrics")
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
    text = r.text
    assert 'genrec_http_requests_total{endpoint="/v1/recommendations",method="POST",status="200"} 1' in text
    assert 'genrec_http_requests_total{endpoint="/v1/recommendations",method="POST",status="422"} 1' in text
    assert 'genrec_http_request_duration_seconds_bucket{endpoint="/v1/recommendations",le="+Inf"} 2' in text
    assert "genrec_scoring_batch_size_count 1" in text and "genrec_events_written_total 1" in text
    assert 'genrec_model_info{model="test-cooccurrence",class="Cooccurrence"' in text
    assert 'genrec_recommendations_total{strategy="known_user"} 1' in text


def test_openapi_and_docs_are_served(client):
    spec = client.get("/openapi.json").json()
    assert {"/v1/recommendations", "/v1/items/{item_id}/similar", "/v1/events", "/v1/admin/reload",
            "/v1/admin/users/{user_id}", "/health", "/metrics"} <= set(spec["paths"])
    assert client.get("/docs").status_code == 200


def test_concurrent_requests_are_scored_in_shared_batches(bundle_dir):
    app = create_app(bundle_dir, max_wait_ms=20.0)

    async def burst():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
            bodies = [{"history": [f"i{j}", f"i{j + 1}"], "k": 3} for j in range(24)]
            return await asyncio.gather(*(c.post("/v1/recommendations", json=b) for b in bodies))

    responses = asyncio.run(burst())
    assert all(r.status_code == 200 for r in responses)
    batches = app.state.service.metrics.batch_size
    assert batches.count() < 24 and batches._series[()][-1] == 24  # fewer calls than requests, every one scored
    for j, r in zip(range(24), responses):  # each answer is for its own history
        assert f"i{j}" not in item_ids(r) and r.json()["history_length"] == 2
