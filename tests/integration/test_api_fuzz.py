"""Hostile HTTP input: schemathesis generates requests from the OpenAPI document (valid and
invalid bodies, odd path parameters, huge strings) against the running API; none may end in a
5xx."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.generation import GenerationMode

from tests.integration.harness import ApiServer

pytestmark = pytest.mark.integration

EXAMPLES_PER_OPERATION = 40


def test_no_request_ends_in_a_server_error(api: ApiServer) -> None:
    schema = schemathesis.openapi.from_url(f"{api.url}/openapi.json")
    headers = {
        "Authorization": f"Bearer {api.settings.admin_token}",
        "Accept": "application/json",  # the SSE variant of /events streams until disconnected
    }
    failures: list[str] = []
    statuses: Counter[int] = Counter()
    operations = [result.ok() for result in schema.get_all_operations()]  # type: ignore[union-attr]
    assert len(operations) >= 15, "the whole API is exercised"
    for operation in operations:
        strategy = operation.as_strategy(generation_mode=GenerationMode.POSITIVE) | (
            operation.as_strategy(generation_mode=GenerationMode.NEGATIVE)
        )

        @given(case=strategy)
        @settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            database=None,
        )
        def exercise(case: Any) -> None:
            response = case.call(base_url=api.url, headers=headers, timeout=30)
            statuses[response.status_code // 100 * 100] += 1
            if response.status_code >= 500:
                failures.append(
                    f"{case.method} {case.formatted_path} → {response.status_code}: "
                    f"{response.text[:300]}"
                )

        exercise()
    assert failures == []
    # both sides were reached: accepted requests, and refusals with a 4xx rather than a crash
    assert statuses[200] >= 50 and statuses[400] >= 200, statuses
