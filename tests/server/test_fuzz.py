"""Property-based fuzz of the OpenAPI schema against a live uvicorn: whatever arrives, never a 5xx."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from tests.server.test_server import TOKEN, Server

AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def live(server_engine):
    # a short queue: valid random jobs fill it fast and the rest must be 429, not errors
    with Server(server_engine, max_queued=3) as srv:
        yield srv


@pytest.fixture(scope="module")
def api_schema(live):
    return schemathesis.openapi.from_url(f"{live.url}/openapi.json", headers=AUTH)


def test_no_request_gets_a_server_error(api_schema):
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) >= 13
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=10, deadline=None, database=None, suppress_health_check=list(HealthCheck))
        def check(case):
            response = case.call(headers=AUTH)
            assert response.status_code < 500, (
                f"{case.method} {case.formatted_path} → {response.status_code}: {response.text[:300]}"
            )

        check()
