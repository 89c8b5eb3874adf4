"""Offline, the app asks nothing of the outside world: every request a page load makes stays on loopback (the page
icon ships with the app; the navigation's icons come from Streamlit's bundled font)."""

from __future__ import annotations

from urllib.parse import urlsplit

from tests.conftest import make_data_dir
from tools.studio_driver import streamlit_app, tiny_env

PAGES = ("/", "/styles")  # the Studio, and a page of pictures (every page was checked once: the icon was all)
LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def test_no_request_leaves_loopback_on_a_page_load(browser, tmp_path, tiny_models):
    with streamlit_app(tiny_env(make_data_dir(tmp_path / "data", tiny_models, warm=True))) as (url, _):
        page = browser.new_page(viewport={"width": 1440, "height": 900})
        asked: list[str] = []
        page.on("request", lambda request: asked.append(request.url))
        page.on("websocket", lambda ws: asked.append(ws.url))
        for path in PAGES:
            page.goto(url + path)
            if path == "/":
                page.get_by_role("button", name="Generate").first.wait_for(timeout=120_000)
            page.wait_for_load_state("networkidle")
        icons = page.eval_on_selector_all("link[rel*=icon]", "links => links.map(l => l.href)")
        page.close()
    outside = sorted({u for u in asked if urlsplit(u).scheme not in ("data", "blob") and
                      urlsplit(u).hostname not in LOOPBACK})  # fmt: skip
    assert not outside, outside
    assert icons and all(urlsplit(i).hostname in LOOPBACK for i in icons), icons
