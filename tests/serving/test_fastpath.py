"""The lean path for POST /v1/recommendations answers byte for byte as FastAPI would, and leaves the rest to it."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from genrec.serving.app import create_app
from genrec.serving.fastpath import plain_request
from genrec.serving.schemas import RecommendationRequest
from tests.serving.conftest import API_KEY

JSON = {"content-type": "application/json"}


@pytest.fixture
def both(bundle_dir, tmp_path):
    """(fast, framework): clients of the same service with and without the lean path."""
    apps = [create_app(bundle_dir, store=tmp_path / f"{fast}.db", api_key=API_KEY, fast_path=fast)
            for fast in (True, False)]
    with TestClient(apps[0]) as fast, TestClient(apps[1]) as framework:
        yield fast, framework


def answers(client, body: bytes, headers=JSON) -> tuple[int, str, bytes]:
    r = client.post("/v1/recommendations", content=body, headers=headers)
    return r.status_code, r.headers["content-type"], r.content


PLAIN = [{"user_id": "u1"}, {"user_id": "u2", "k": 3, "exclude_seen": False}, {"history": ["i1", "i7", "i9"]},
         {"history": ["i1", "nope"], "k": 20}, {"user_id": "someone new"}, {"user_id": "u3", "history": ["i40"]},
         {"history": ["nope", "nada"]}, {}, {"user_id": None, "history": None, "filters": None, "explain": False}]
OTHER = [{"k": 0}, {"k": 5.0}, {"k": True}, {"k": "5"}, {"history": [True]}, {"history": "i1"}, {"user_id": ""},
         {"user_id": "a\nb"}, {"user_id": "\ud800"}, {"colour": 1}, {"explain": None},
         {"filters": {"category": ["c1"]}, "k": 4}, {"filters": {"colour": "red"}},
         {"history": ["i1"] * 10_001}, [], "text"]


@pytest.mark.parametrize("body", PLAIN)
def test_plain_requests_get_the_frameworks_exact_bytes(both, body):
    fast, framework = both
    encoded = json.dumps(body).encode()
    assert plain_request(encoded) is not None
    assert answers(fast, encoded) == answers(framework, encoded)


@pytest.mark.parametrize("body", OTHER)
def test_everything_else_is_left_to_fastapi_and_answered_the_same(both, body):
    fast, framework = both
    encoded = json.dumps(body).encode()
    assert plain_request(encoded) is None
    assert answers(fast, encoded) == answers(framework, encoded)


@pytest.mark.parametrize("body, headers", [
    (b"{", JSON), (b"", JSON), (b'{"user_id": "u1"}', {"content-type": "text/plain"}),
    (b'{"user_id": "u1"}', {}), (b" " * 1_000_001, JSON), (b'{"user_id": "u1", "k": 99999999999999999999}', JSON),
])
def test_malformed_undeclared_and_oversized_bodies_go_the_framework_way(both, body, headers):
    fast, framework = both
    assert answers(fast, body, headers) == answers(framework, body, headers)


def test_requests_answered_on_the_lean_path_are_counted_in_the_metrics(both):
    fast, _ = both
    fast.post("/v1/recommendations", json={"user_id": "u1"})
    fast.post("/v1/recommendations", json={"history": ["nope"]})  # 422 from the service, on the lean path
    fast.post("/v1/recommendations", json={"k": 0})  # 422 from validation, through FastAPI
    text = fast.get("/metrics").text
    assert 'genrec_http_requests_total{endpoint="/v1/recommendations",method="POST",status="200"} 1' in text
    assert 'genrec_http_requests_total{endpoint="/v1/recommendations",method="POST",status="422"} 2' in text
    assert 'genrec_http_request_duration_seconds_count{endpoint="/v1/recommendations"} 3' in text
    assert 'genrec_recommendations_total{strategy="known_user"} 1' in text


ids = st.one_of(st.integers(-2**70, 2**70), st.text(max_size=8), st.booleans(), st.none(), st.floats())
values = st.one_of(ids, st.lists(ids, max_size=4), st.dictionaries(st.text(max_size=3), ids, max_size=2))
bodies = st.dictionaries(st.sampled_from(["user_id", "history", "k", "exclude_seen", "filters", "explain", "x"]),
                         values, max_size=4)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(bodies)
def test_what_the_lean_path_takes_pydantic_takes_unchanged(body):
    encoded = json.dumps(body).encode()
    taken = plain_request(encoded)
    if taken is None:
        return
    validated = RecommendationRequest.model_validate(json.loads(encoded))  # raises if the lean path was wrong
    assert taken.model_dump() == validated.model_dump()

