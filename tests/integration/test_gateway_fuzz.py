"""Fuzzing the running gateway from the OpenAPI document it serves (schemathesis).

Every operation gets generated requests, valid (positive) and invalid (negative), with an
all-scopes key, first with random app ids, then with a real one so that bodies reach the
routes: no answer may be a 5xx, and each must match the documented status codes, content
types, headers and schemas. Afterwards the gateway still serves the producer's tokens.
"""

from __future__ import annotations

from typing import Any

import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable

from .gateway_stack import RunningGateway, gateway

__all__ = ["gateway"]


def test_fuzz_from_the_served_document(gateway: RunningGateway) -> None:
    """No generated request gets a server error or an undocumented answer."""
    schema = schemathesis.openapi.from_url(gateway.base_url + "/v1/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 6
    headers = gateway.auth("operator")
    real_app = {"app_id": gateway.stack.app_ids[1]}
    runs: list[tuple[Any, schemathesis.GenerationMode, dict[str, str] | None]] = []
    for operation in operations:
        for mode in schemathesis.GenerationMode:
            runs.append((operation, mode, None))
            if "{app_id}" in operation.path:
                runs.append((operation, mode, real_app))
    calls = 0
    for operation, mode, path_parameters in runs:

        @given(case=operation.as_strategy(generation_mode=mode, path_parameters=path_parameters))
        @settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
        def run(case: schemathesis.Case) -> None:
            nonlocal calls
            calls += 1
            case.call_and_validate(base_url=gateway.base_url, headers=headers)

        try:
            run()
        except Unsatisfiable:
            # No parameter or body to break (/healthz): there is no invalid request.
            assert mode is schemathesis.GenerationMode.NEGATIVE, operation.label
    print(f"fuzzed {len(operations)} operations with {calls} requests")
    assert gateway.get(f"/v1/apps/{gateway.stack.app_ids[0]}/access_token").status_code == 200
