"""Schemathesis over the service's own OpenAPI spec: generated requests, valid and invalid, and not one
answered with a 5xx.

The test sends 25 cases per operation and generation mode (about 250 requests, ~20 s);
`GENREC_FUZZ_EXAMPLES=230` makes it the >= 2,000-request run of issue 7, which
`benchmarks/serving_load.py --fuzz` runs and records in benchmarks/results/serving.md.

Schemathesis's pytest plugin does not run under pytest 9, so the test drives its Hypothesis strategies
itself: for every operation, schema-conforming (positive) and schema-violating (negative) cases, each sent to
the app in-process through Schemathesis's ASGI transport.
"""

from __future__ import annotations

import os

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import not_a_server_error
from schemathesis.generation.modes import GenerationMode

from genrec.serving.app import create_app
from tests.serving.conftest import API_KEY

pytestmark = pytest.mark.slow
# per operation and mode; health and metrics take no input, so 230 for the 5 others make >= 2,000 requests
EXAMPLES = int(os.environ.get("GENREC_FUZZ_EXAMPLES", 25))


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


def test_generated_requests_get_no_server_error(bundle_dir, tmp_path):
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
    server_errors = [s for s in sent if s[2] >= 500]
    statuses = sorted({status for _, _, status in sent})
    print(f"schemathesis: {len(sent)} requests over {len({s[0] for s in sent})} operations, "
          f"{len(server_errors)} 5xx, statuses {statuses}")
    assert not server_errors, server_errors[:5]
    assert len(sent) >= 9 * EXAMPLES, f"only {len(sent)} requests were generated"
    assert len({label for label, _, _ in sent}) == 7
    assert {200, 401, 422} <= set(statuses)  # the fuzzing reached real answers, refusals and validation errors
