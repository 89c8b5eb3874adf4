"""The API's own page works offline: /docs (Swagger UI) loads its script and style from the server, from a pip
package's bundled copy, never from a CDN; the token rules are those of /openapi.json."""

from __future__ import annotations

import re
from urllib.parse import urljoin

import httpx
import pytest

from tests.conftest import Server


@pytest.fixture(scope="module")
def server(server_engine):
    with Server(server_engine) as srv:
        yield srv


@pytest.fixture(scope="module")
def open_server(server_engine):
    with Server(server_engine, token=None) as srv:
        yield srv


def assets(html: str) -> list[str]:
    """Every script, stylesheet and icon a page loads."""
    return re.findall(r"""<(?:script|link)[^>]*?(?:src|href)=["']([^"']+)["']""", html)


def test_the_api_docs_load_every_asset_from_the_server_itself(server):
    page = "/docs"
    resp = httpx.get(server.url + page)
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/html")
    urls = assets(resp.text)
    assert urls, resp.text
    off_site = [u for u in urls if re.match(r"(https?:)?//", u)]
    assert not off_site, f"{page} loads from elsewhere: {off_site}"
    seen = set()
    for url in urls:
        got = httpx.get(urljoin(server.url + page, url))
        assert got.status_code == 200, url
        kind = url.rsplit(".", 1)[-1]
        seen.add(kind)
        if kind == "js":
            assert "javascript" in got.headers["content-type"] and len(got.content) > 100_000, url
        elif kind == "css":
            assert got.headers["content-type"].startswith("text/css") and b"swagger-ui" in got.content, url
    assert {"js", "css"} <= seen
    assert "/openapi.json" in resp.text  # the page shows this server's schema


def test_the_swagger_ui_reads_the_openapi_version_the_server_writes(server):
    """FastAPI writes OpenAPI 3.1; Swagger UI before 5 shows 'Unable to render this definition' for it."""
    assert httpx.get(server.url + "/openapi.json").json()["openapi"].startswith("3.1")
    js = next(u for u in assets(httpx.get(server.url + "/docs").text) if u.endswith("swagger-ui-bundle.js"))
    version = re.search(r'PACKAGE_VERSION:"(\d+)\.', httpx.get(urljoin(server.url + "/docs", js)).text)
    assert version and int(version[1]) >= 5


def test_the_docs_keep_the_token_rules(server, open_server):
    """With a token, the docs and their assets are as public as /openapi.json (they hold no secret; every operation
    they try still needs the token); without one, a foreign Host or Origin is refused for them too."""
    html = httpx.get(server.url + "/docs").text
    for url in [server.url + "/openapi.json", *(urljoin(server.url + "/docs", u) for u in assets(html))]:
        assert httpx.get(url).status_code == 200, url
    assert httpx.post(server.url + "/api/styles/list", json={}).status_code == 401
    html = httpx.get(open_server.url + "/docs").text
    for url in ["/docs", *assets(html)]:
        resp = httpx.get(urljoin(open_server.url + "/docs", url), headers={"Host": "evil.example:8000"})
        assert resp.status_code == 403, url
