"""End to end: every endpoint of a real uvicorn process on 127.0.0.1, and events that survive a SIGKILL."""

from __future__ import annotations

import asyncio
import signal
import time

import httpx
import pytest

from genrec.serving.commands import retrain
from genrec.serving.store import SQLiteEventStore
from tests.serving.conftest import API_KEY, free_port, running_server, start_server, stop, wait_healthy

ADMIN = {"X-API-Key": API_KEY}


@pytest.fixture(scope="module")
def server(bundle_dir, tmp_path_factory):
    store = tmp_path_factory.mktemp("e2e") / "events.db"
    with running_server(bundle_dir, store) as (base, _):
        with httpx.Client(base_url=base, timeout=10.0) as client:
            yield client, store


def test_health_and_docs(server):
    client, _ = server
    assert client.get("/health").json()["model"]["model"] == "test-cooccurrence"
    assert "/v1/recommendations" in client.get("/openapi.json").json()["paths"]
    assert client.get("/docs").status_code == 200


def test_recommendations_for_known_new_and_unknown_users(server):
    client, _ = server
    strategies = [client.post("/v1/recommendations", json=body).json()["strategy"] for body in
                  ({"user_id": "u1", "k": 5}, {"history": ["i1", "i2"], "k": 5}, {"user_id": "nobody"})]
    assert strategies == ["known_user", "fold_in", "popularity_fallback"]
    filtered = client.post("/v1/recommendations", json={"user_id": "u1", "filters": {"price_band": "low"}, "k": 60})
    assert filtered.status_code == 200 and filtered.json()["items"]
    assert client.post("/v1/recommendations", json={"k": 0}).status_code == 422
    assert client.post("/v1/recommendations", content=b"[" * 1_100_000,
                       headers={"content-type": "application/json"}).status_code == 413


def test_similar_items(server):
    client, _ = server
    r = client.get("/v1/items/i7/similar", params={"k": 4})
    assert r.status_code == 200 and len(r.json()["items"]) == 4
    assert "i7" not in [x["item_id"] for x in r.json()["items"]]


def test_events_then_retrain_then_reload_then_delete(server, bundle_dir, tmp_path):
    client, store_path = server
    r = client.post("/v1/events", json={"events": [{"user_id": "e2e-user", "item_id": "i11"},
                                                   {"user_id": "e2e-user", "item_id": "i12"}]})
    assert r.json() == {"written": 2, "unknown_items": 0}
    assert client.post("/v1/recommendations", json={"user_id": "e2e-user"}).json()["strategy"] == "known_user"
    with SQLiteEventStore(store_path) as store:  # the server's store, read while it runs (WAL allows it)
        report = retrain(bundle_dir, store, tmp_path / "next")
    assert report.new_users == 1
    r = client.post("/v1/admin/reload", json={"model_dir": str(report.path)}, headers=ADMIN)
    assert r.status_code == 200 and r.json()["model"]["n_users"] == report.n_users
    deleted = client.delete("/v1/admin/users/e2e-user", headers=ADMIN)
    assert deleted.json()["deleted_events"] == 2
    assert client.delete("/v1/admin/users/e2e-user").status_code == 401


def test_metrics_count_what_the_server_did(server):
    client, _ = server
    client.post("/v1/recommendations", json={"history": ["i3"]})
    text = client.get("/metrics").text
    assert 'genrec_http_requests_total{endpoint="/v1/recommendations",method="POST",status="200"}' in text
    assert "genrec_scoring_batch_size_bucket" in text and "genrec_model_info{" in text


# durability: SIGKILL in the middle of a burst of event writes -----------------------------------------------
async def _burst(base: str, acknowledged: list, stop_after_s: float) -> None:
    """4 connections post batches of 10 events (unique values) until the server dies or time runs out."""
    deadline = time.monotonic() + stop_after_s

    async def writer(w: int, client: httpx.AsyncClient) -> None:
        for j in range(10_000):
            if time.monotonic() > deadline:
                return
            events = [{"user_id": f"crash-{w}", "item_id": f"i{(j + n) % 60}", "value": float(j * 10 + n)}
                      for n in range(10)]
            try:
                r = await client.post(f"{base}/v1/events", json={"events": events})
            except httpx.HTTPError:
                return  # the server is gone
            if 200 <= r.status_code < 300:
                acknowledged.extend((e["user_id"], e["value"]) for e in events)

    async with httpx.AsyncClient(timeout=5.0) as client:
        await asyncio.gather(*(writer(w, client) for w in range(4)))


def test_every_acknowledged_event_survives_a_sigkill(bundle_dir, tmp_path):
    store_path, port = tmp_path / "events.db", free_port()
    base = f"http://127.0.0.1:{port}"
    proc = start_server(bundle_dir, store_path, port)
    acknowledged: list = []
    try:
        wait_healthy(proc, base)

        async def burst_then_kill():
            burst = asyncio.ensure_future(_burst(base, acknowledged, stop_after_s=20.0))
            for _ in range(200):  # kill once some writes were acknowledged (at most ~10 s)
                if len(acknowledged) >= 300:
                    break
                await asyncio.sleep(0.05)
            proc.send_signal(signal.SIGKILL)
            await burst

        asyncio.run(burst_then_kill())
        proc.wait(timeout=10)
        assert proc.returncode == -signal.SIGKILL and len(acknowledged) >= 10
    finally:
        stop(proc)
    with running_server(bundle_dir, store_path) as (base, _):  # restarts on the same store
        known = httpx.post(f"{base}/v1/recommendations", json={"user_id": "crash-0"}, timeout=10).json()
        assert known["strategy"] == "known_user"
    with SQLiteEventStore(store_path) as store:
        stored = set(zip(store.events_since(0)["user"], store.events_since(0)["value"]))
    missing = [e for e in acknowledged if e not in stored]
    assert not missing, f"{len(missing)} of {len(acknowledged)} acknowledged events are not in the store"
