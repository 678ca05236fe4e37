"""Schemathesis over the service's own OpenAPI spec: at least 2,000 generated requests, valid and invalid, and
not one answered with a 5xx.

Schemathesis's pytest plugin does not run under pytest 9, so the test drives its Hypothesis strategies
itself: for every operation, schema-conforming (positive) and schema-violating (negative) cases, each sent to
the app in-process through Schemathesis's ASGI transport.
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import not_a_server_error
from schemathesis.generation.modes import GenerationMode

from genrec.serving.app import create_app
from tests.serving.conftest import API_KEY

pytestmark = pytest.mark.slow
EXAMPLES = 230  # per operation and mode; health and metrics take no input, the 5 others make >= 2,000 requests


def fuzz(operation, mode: GenerationMode, sent: list) -> None:
    @given(operation.as_strategy(generation_mode=mode))
    @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    def send(case):
        if "admin" in case.path:  # every other admin request gets the right key, so reloads and deletions run
            case.headers = {**(case.headers or {}), "X-API-Key": API_KEY} if len(sent) % 2 else case.headers
        response = case.call()
        sent.append((operation.label, mode.value, response.status_code))
        case.validate_response(response, checks=[not_a_server_error])

    send()


def test_2000_generated_requests_get_no_server_error(bundle_dir, tmp_path):
    app = create_app(bundle_dir, store=tmp_path / "events.db", api_key=API_KEY)
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    sent: list[tuple[str, str, int]] = []
    for result in schema.get_all_operations():
        operation = result.ok()
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            try:
                fuzz(operation, mode, sent)
            except Unsatisfiable:  # an operation without inputs (health, metrics) cannot be sent invalid ones
                assert mode is GenerationMode.NEGATIVE and operation.path in ("/health", "/metrics")
    assert len(sent) >= 2000, f"only {len(sent)} requests were generated"
    assert not [s for s in sent if s[2] >= 500]
    assert len({label for label, _, _ in sent}) == 7
    statuses = {status for _, _, status in sent}
    assert {200, 401, 422} <= statuses  # the fuzzing reached real answers, refusals and validation errors
    counts = {(label, mode): sum(1 for s in sent if s[:2] == (label, mode)) for label, mode, _ in sent}
    print(counts)
    print(f"schemathesis: {len(sent)} requests over {len({s[0] for s in sent})} operations, statuses "
          f"{sorted(statuses)}, no 5xx")
