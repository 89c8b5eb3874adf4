"""Issue 30, finding 11: one body decoder for every route. Whatever body a client sends (not UTF-8, not JSON, not
an object, a content type the route does not declare, a form cut short or without its boundary), every route in
the OpenAPI answers 4xx with one line, and the server log shows no traceback."""

from __future__ import annotations

import logging

import httpx
import pytest

from tests.conftest import TOKEN, Server

AUTH = {"Authorization": f"Bearer {TOKEN}"}
PART = b'--XX\r\nContent-Disposition: form-data; name="args"\r\n\r\n'
BODIES = {
    "JSON that is not UTF-8": (b'\xff\xfe{"a": 1}', "application/json"),
    "truncated JSON": (b'{"a":', "application/json"),
    "a JSON array": (b"[1, 2]", "application/json"),
    "CSV": (b"a,b\n1,2\n", "text/csv"),
    "XML": (b"<a>1</a>", "application/xml"),
    "a truncated form": (PART + b'{"a', "multipart/form-data; boundary=XX"),
    "a form without boundary": (PART + b"{}\r\n--XX--\r\n", "multipart/form-data"),
    "a form that is not UTF-8": (b"prompt=\xff\xfe&options=\xff", "application/x-www-form-urlencoded"),
}  # fmt: skip


class Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture(scope="module")
def live(server_engine):
    with Server(server_engine) as srv:
        yield srv


@pytest.fixture
def server_log():
    """Everything the server logs while the test runs: the engine's loggers, uvicorn's, and the root."""
    handler = Collect()
    loggers = [logging.getLogger(name) for name in ("", "engine", "uvicorn", "uvicorn.error", "uvicorn.access")]
    for logger in loggers:
        logger.addHandler(handler)
    yield handler.records
    for logger in loggers:
        logger.removeHandler(handler)


def body_routes(url: str) -> list[tuple[str, str]]:
    """(method, path) of every operation in the OpenAPI that may take a body, path parameters filled in."""
    spec = httpx.get(f"{url}/openapi.json").json()
    found = []
    for path, item in spec["paths"].items():
        for method in item:
            if method in ("post", "put", "patch", "delete"):
                found.append((method.upper(), path.replace("{job_id}", "nojob").replace("{name_or_id}", "nostyle")))
    return found


def test_every_route_answers_a_bad_body_with_one_line(live, server_log):
    routes = body_routes(live.url)
    assert len(routes) >= 50  # the interface's operations and the seed API's
    wrong = []
    with httpx.Client(base_url=live.url, headers=AUTH, timeout=30) as http:
        for method, path in routes:
            for what, (body, media) in BODIES.items():
                resp = http.request(method, path, content=body, headers={"content-type": media})
                try:
                    detail = resp.json().get("detail")
                except ValueError:
                    detail = None
                if not (400 <= resp.status_code < 500 and isinstance(detail, str) and detail and "\n" not in detail):
                    wrong.append(f"{method} {path} with {what}: {resp.status_code} {resp.text[:120]}")
    assert not wrong, "\n".join(wrong[:20])
    tracebacks = [r.getMessage() for r in server_log if r.exc_info or "Traceback" in r.getMessage()]
    assert not tracebacks, tracebacks[:3]


def test_the_status_says_what_was_wrong(live):
    with httpx.Client(base_url=live.url, headers=AUTH, timeout=30) as http:
        not_utf8 = http.post("/api/history/rows", content=b"\xff\xfe", headers={"content-type": "application/json"})
        assert not_utf8.status_code == 400 and "UTF-8" in not_utf8.json()["detail"]
        array = http.post("/api/jobs/list", content=b"[]", headers={"content-type": "application/json"})
        assert array.status_code == 422 and "JSON object" in array.json()["detail"]
        for path in ("/api/catalog/preview", "/api/catalog/start", "/generate", "/styles"):
            csv = http.post(path, content=b"a,b", headers={"content-type": "text/csv"})
            assert csv.status_code == 415, (path, csv.text)
            assert "text/csv" in csv.json()["detail"]
        cut = http.post(
            "/jobs", content=BODIES["a truncated form"][0], headers={"content-type": BODIES["a truncated form"][1]}
        )
        assert cut.status_code == 400 and cut.json()["detail"].count("\n") == 0
        # what works keeps working: an empty JSON body, a plain form
        assert http.post("/api/jobs/list", content=b"", headers={"content-type": "application/json"}).status_code == 200
        assert http.post("/api/jobs/list", json={"active": False}).status_code == 200
