"""`retrain` folds the recorded events into the next model; `POST /v1/admin/reload` swaps it in, without
dropping requests, and only after checking the bundle's sha256."""

from __future__ import annotations

import asyncio
import json

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient

from genrec.models.base import load_bundle
from genrec.serving.app import create_app
from genrec.serving.commands import describe, retrain
from genrec.serving.retraining import training_interactions
from genrec.serving.store import Event, SQLiteEventStore
from tests.serving.conftest import API_KEY

ADMIN = {"X-API-Key": API_KEY}


@pytest.fixture
def store(tmp_path):
    with SQLiteEventStore(tmp_path / "events.db") as s:
        yield s


def test_the_training_table_is_the_bundle_histories_then_the_new_events_in_time_order(bundle_dir, train, store):
    store.append([Event("u0", "i59", timestamp=20), Event("new", "i1", timestamp=10), Event("u0", "i58", 2.0, 5),
                  Event("new", "gone")])
    table, skipped = training_interactions(load_bundle(bundle_dir), store.events_since(0))
    assert list(skipped["item"]) == ["gone"]
    assert table.n_users == train.n_users + 1 and table.n_items == train.n_items and len(table) == len(train) + 3
    u0 = table.user_ids.index(["u0"])[0]
    seq = table.histories().sequence(u0)
    assert list(table.item_ids.raw[seq[-2:]]) == ["i58", "i59"]  # after the training items, by timestamp
    trained = train.histories().sequence(train.user_ids.index(["u0"])[0])
    assert list(table.item_ids.raw[seq[:-2]]) == list(train.item_ids.raw[trained])
    assert table.csr()[u0, table.item_ids.index(["i58"])[0]] == 2.0
    assert table.item_attributes is not None and list(table.item_attributes.columns) == ["category", "price_band"]


def test_retrain_writes_a_verified_bundle_that_knows_the_new_users_and_co_occurrences(bundle_dir, store, tmp_path):
    store.append([Event("new", "i0"), Event("new", "i1"), Event("new", "not-an-item")])
    report = retrain(bundle_dir, store, tmp_path / "next")
    assert report.new_users == 1 and report.events_used == 2 and report.events_skipped == 1
    assert report.skipped_items == ("not-an-item",) and report.events_through_seq == 3
    assert "skipped 1 events" in describe(report)
    new = load_bundle(tmp_path / "next", verify=True)
    assert "new" in set(new.user_ids.raw) and new.meta["extra"]["events_through_seq"] == 3
    assert new.meta["params"] == load_bundle(bundle_dir).meta["params"]
    a, b = new.item_ids.index(["i0", "i1"])
    assert new.model.similarity_[a, b] > load_bundle(bundle_dir).model.similarity_[a, b]  # taken together again


def test_a_second_retrain_folds_in_only_the_events_since_the_first(bundle_dir, store, tmp_path):
    store.append([Event("a", "i0")])
    first = retrain(bundle_dir, store, tmp_path / "first")
    store.append([Event("b", "i1")])
    second = retrain(first.path, store, tmp_path / "second")
    assert second.events_used == 1 and second.events_through_seq == 2
    assert {"a", "b"} <= set(load_bundle(second.path).user_ids.raw)


def test_reload_swaps_in_the_retrained_model_and_keeps_only_later_events_in_memory(bundle_dir, tmp_path):
    app = create_app(bundle_dir, store=tmp_path / "events.db", api_key=API_KEY)
    with TestClient(app) as c:
        c.post("/v1/events", json={"events": [{"user_id": "fresh", "item_id": "i3"}]})
        retrain(bundle_dir, app.state.service.store, tmp_path / "next")
        c.post("/v1/events", json={"events": [{"user_id": "later", "item_id": "i4"}]})
        r = c.post("/v1/admin/reload", json={"model_dir": str(tmp_path / "next")}, headers=ADMIN)
        assert r.status_code == 200, r.text
        assert r.json()["model"]["events_through_seq"] == 1 and r.json()["overlay_users"] == 1
        assert c.get("/health").json()["model"]["path"] == str(tmp_path / "next")
        fresh = c.post("/v1/recommendations", json={"user_id": "fresh"}).json()
        assert fresh["strategy"] == "known_user" and fresh["history_length"] == 1  # from the bundle, not twice
        assert c.post("/v1/recommendations", json={"user_id": "later"}).json()["strategy"] == "known_user"
        assert 'genrec_model_reloads_total 1' in c.get("/metrics").text


def test_reload_refuses_a_tampered_bundle_and_keeps_serving_the_old_one(bundle_dir, tmp_path):
    import shutil

    copy = tmp_path / "tampered"
    shutil.copytree(bundle_dir, copy)
    meta = json.loads((copy / "model.json").read_text())
    meta["sha256"]["weights.safetensors"] = "0" * 64
    (copy / "model.json").write_text(json.dumps(meta))
    with TestClient(create_app(bundle_dir, api_key=API_KEY)) as c:
        r = c.post("/v1/admin/reload", json={"model_dir": str(copy)}, headers=ADMIN)
        assert r.status_code == 422 and "sha256" in r.json()["message"]
        r = c.post("/v1/admin/reload", json={"model_dir": str(tmp_path / "missing")}, headers=ADMIN)
        assert r.status_code == 422 and "model_dir" in r.json()["message"]
        assert c.get("/health").json()["model"]["path"] == str(bundle_dir)


def test_requests_in_flight_during_a_reload_all_complete(bundle_dir, tmp_path):
    app = create_app(bundle_dir, api_key=API_KEY, max_wait_ms=2.0)
    service = app.state.service
    old = service.current

    async def traffic():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            async def one(j):
                return await c.post("/v1/recommendations", json={"history": [f"i{j % 60}"], "k": 5})

            async def reload_midway():
                await asyncio.sleep(0.01)
                return await c.post("/v1/admin/reload", headers=ADMIN)

            return await asyncio.gather(*(one(j) for j in range(150)), reload_midway())

    responses = asyncio.run(traffic())
    assert [r.status_code for r in responses] == [200] * 151
    assert service.current is not old  # the swap happened while requests were being scored
    assert np.isclose(service.metrics.batch_size._series[()][-1], 150)
