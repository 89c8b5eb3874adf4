"""Property-based fuzz of the OpenAPI schema against a live uvicorn (issue 30, finding 11): every operation, 20
generated calls each, the token set. Whatever arrives, never a 5xx; and the generated data, drawn from the schema,
is accepted by the engine often enough that the schema says what the engine checks (schemathesis's "schema
validation mismatch": every call refused, and not only as not-found, conflict or queue-full). The file parts get real
files of their kind from tools/fuzz_hooks.py, as the CLI does from the repository root (schemathesis.toml)."""

from __future__ import annotations

from collections import Counter

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

import tools.fuzz_hooks  # noqa: F401  (registers the file parts' real files, as schemathesis.toml does for the CLI)
from tests.conftest import TOKEN, Server

AUTH = {"Authorization": f"Bearer {TOKEN}"}
EXAMPLES = 20
# Codes that say nothing about the data sent (schemathesis leaves them out the same way)
NOT_ABOUT_DATA = {401, 403, 404, 409, 429}


@pytest.fixture(scope="module")
def live(server_engine):
    # a short queue: valid random jobs fill it fast and the rest must be 429, not errors
    with Server(server_engine, max_queued=3) as srv:
        yield srv


@pytest.fixture(scope="module")
def api_schema(live):
    return schemathesis.openapi.from_url(f"{live.url}/openapi.json", headers=AUTH)


def mismatched(statuses: Counter) -> bool:
    """schemathesis's test: every call refused (4xx), and at least a tenth of them for the data itself."""
    total = sum(statuses.values())
    if not total or any(code < 400 for code in statuses):
        return False
    about_data = sum(n for code, n in statuses.items() if code not in NOT_ABOUT_DATA)
    return about_data / total >= 0.1


def statuses_of(operation, mode: GenerationMode = GenerationMode.POSITIVE) -> Counter:
    """The statuses of EXAMPLES generated calls to one operation (data the schema allows, or data it does not: a
    body that is not UTF-8, a wrong type…); a 5xx fails at once. `.answers`: the most frequent refusals."""
    statuses: Counter = Counter()
    answers: Counter = Counter()

    @given(case=operation.as_strategy(mode))
    @settings(
        max_examples=EXAMPLES, deadline=None, database=None, derandomize=True, suppress_health_check=list(HealthCheck)
    )
    def check(case):
        response = case.call(headers=AUTH)
        assert response.status_code < 500, (
            f"{case.method} {case.formatted_path} → {response.status_code}: {response.text[:300]}"
        )
        statuses[response.status_code] += 1
        if response.status_code >= 400:
            answers[f"{response.status_code} {response.text[:160]}"] += 1

    check()
    statuses.answers = answers.most_common(4)  # type: ignore[attr-defined]
    return statuses


def takes_any_text(schema: dict) -> bool:
    """A parameter whose schema takes every string (plain text, or text or nothing): no value of it is invalid."""
    bare = {k: v for k, v in schema.items() if k not in ("title", "description")}
    if bare == {"type": "string"}:
        return True
    return set(bare) == {"anyOf"} and any(takes_any_text(s) for s in bare["anyOf"])


def nothing_to_negate(op) -> bool:
    """No body, query or cookie, and path parameters and headers that take any text: there is no data the schema
    refuses (hypothesis would spend seconds finding that out, then raise `Unsatisfiable`)."""
    if len(op.body) or len(op.query) or len(op.cookies):
        return False
    return all(takes_any_text(p.definition.get("schema", {})) for p in [*op.path_parameters, *op.headers])


def test_no_request_gets_a_server_error_and_the_schema_says_what_is_checked(api_schema):
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) >= 70
    mismatch = {}
    for op in operations:
        statuses = statuses_of(op)
        if mismatched(statuses):
            mismatch[f"{op.method.upper()} {op.path}"] = statuses.answers
    for op in operations:
        if nothing_to_negate(op):
            continue
        try:
            statuses_of(op, GenerationMode.NEGATIVE)  # data the schema refuses: still never a 5xx
        except Unsatisfiable:  # nothing in the operation can be made invalid (no arguments)
            continue
    assert not mismatch, f"mostly refused generated data: {mismatch}"
