"""schemathesis against the OpenAPI schema the main app publishes at /openapi.json: generated valid and invalid
requests for every operation, with the API key. What must hold for each: no 5xx, the status code is one the
schema documents, the body matches the schema for that status (errors included) with the documented content
type, and data the schema calls invalid is rejected with a 4xx. The schema publishes the served model names as
the enum of `model`, so valid requests reach generation (and the test checks that they did), not only the 404
for an unknown model; the engine's queue is empty afterwards.

Hypothesis drives schemathesis's strategies directly (its pytest plugin does not load under pytest 9), with a
bounded number of examples per operation and mode so the run takes a minute or two on the tiny model.
"""

from __future__ import annotations

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

pytestmark = pytest.mark.slow

MAX_EXAMPLES = 10  # per operation and generation mode
GENERATING = ("POST /v1/chat/completions", "POST /v1/completions")
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance,
          negative_data_rejection]


@pytest.fixture(scope="module")
def api_schema(main_app: str):
    spec = httpx.get(f"{main_app}/openapi.json", timeout=60).json()
    loaded = schemathesis.openapi.from_dict(spec)
    loaded.config.update(base_url=main_app)
    return loaded


def _operations(schema) -> list:
    return [result.ok() for result in schema.get_all_operations()]


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=["valid", "invalid"])
def test_no_5xx_and_responses_match_the_schema(api_schema, main_app: str, api_key: str, mode):
    auth = {"Authorization": f"Bearer {api_key}"}
    operations = _operations(api_schema)
    assert {op.label for op in operations} >= {"POST /v1/translate", "POST /v1/chat/completions",
                                               "POST /v1/completions", "GET /v1/models", "GET /healthz"}
    failures: list[str] = []
    unfuzzable: list[str] = []
    calls = 0
    statuses: dict[str, set[int]] = {}
    for op in operations:
        @settings(max_examples=MAX_EXAMPLES, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))
        @given(case=op.as_strategy(generation_mode=mode))
        def fuzz(case) -> None:
            nonlocal calls
            calls += 1
            response = case.call_and_validate(base_url=main_app, headers=auth, checks=CHECKS, timeout=120)
            statuses.setdefault(case.operation.label, set()).add(response.status_code)

        try:
            fuzz()
        except Unsatisfiable:
            assert mode == GenerationMode.NEGATIVE, op.label
            unfuzzable.append(op.label)  # nothing to negate (no body, no constrained parameter)
        except (Exception, FailureGroup) as exc:  # collect every operation's failures, report them together
            failures.append(f"{op.label}: {type(exc).__name__}: {str(exc)[:1500]}")
    assert calls >= len(operations) - len(unfuzzable)
    # Every operation with a request body gets invalid bodies.
    assert not {"POST /v1/translate", "POST /v1/chat/completions", "POST /v1/completions"} & set(unfuzzable)
    assert not failures, "\n\n".join(failures)
    print(mode, {label: sorted(codes) for label, codes in statuses.items()})
    if mode == GenerationMode.POSITIVE:
        reached = {op: 200 in statuses.get(op, set()) for op in GENERATING}
        assert all(reached.values()), f"valid requests never reached generation: {reached}"
    assert httpx.get(f"{main_app}/healthz", timeout=60).json()["queue_depth"] == 0
