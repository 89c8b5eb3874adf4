"""Upscale ×2 under a render in a real browser (issue 32), in Local mode and in Remote mode (the Studio on a "laptop"
whose own engine could not load, driving `python -m engine serve` on loopback): the progress, then the upscaled
render on the page, kept by the engine that rendered it."""

from __future__ import annotations

import json
import re
import sqlite3
from contextlib import ExitStack
from pathlib import Path

import pytest

from tests.conftest import TOKEN, make_data_dir
from tools.studio_driver import engine_server, open_studio, set_slider, streamlit_app, tiny_env


def connect(page, url: str) -> None:
    """The sidebar's Remote mode, pointed at the server, as a designer sets it."""
    sidebar = page.locator("[data-testid=stSidebar]")
    sidebar.get_by_text("Remote", exact=True).click()
    for label, value in (("Server URL", url), ("Token", TOKEN)):
        field = sidebar.get_by_label(label, exact=True)
        field.fill(value)
        field.press("Enter")
        page.wait_for_timeout(1500)
    sidebar.get_by_role("button", name="Test connection").click()
    sidebar.get_by_text(re.compile("Connected: cpu · profile tiny")).wait_for()


def upscales_kept(data: Path) -> list[dict]:
    with sqlite3.connect(data / "history.sqlite") as db:
        rows = db.execute("SELECT metadata FROM runs").fetchall()
    return [m["upscale"] for (text,) in rows if (m := json.loads(text)).get("upscale")]


@pytest.mark.parametrize("mode", ["local", "remote"])
def test_upscale_under_a_render_in_the_browser(browser, tmp_path, tiny_models, mode):
    data = make_data_dir(tmp_path / "data", tiny_models, warm=True)
    with ExitStack() as stack:
        if mode == "local":
            app, _ = stack.enter_context(streamlit_app(tiny_env(data)))
        else:
            url = stack.enter_context(engine_server(tiny_env(data), token=TOKEN))
            laptop = tiny_env(tmp_path / "laptop", DESIGN_STUDIO_PROFILE="default")  # no weights: it must not load
            app, _ = stack.enter_context(streamlit_app(laptop))
        if mode == "local":
            page = open_studio(browser, app)
        else:  # the laptop's own engine cannot start: the page offers Remote mode, then shows the Studio
            page = browser.new_page(viewport={"width": 1440, "height": 1700})
            page.set_default_timeout(90_000)
            page.goto(app)
            page.locator("[data-testid=stSidebar]").get_by_text("Remote", exact=True).wait_for(timeout=120_000)
            connect(page, url)
            page.wait_for_selector("h1:has-text('Studio')", timeout=120_000)
        stack.callback(page.close)
        page.get_by_label("Prompt", exact=True).fill("a copper kettle")
        page.get_by_text("Advanced").click()
        set_slider(page, "Size (short side)", 256)
        page.get_by_role("button", name="Generate").click()
        page.get_by_text("in all").wait_for(timeout=240_000)

        page.get_by_role("button", name="Upscale ×2").first.click()
        page.get_by_text(re.compile(r"^upscaled ×2 · ")).first.wait_for(timeout=240_000)
        assert page.locator("[data-testid=stException]").count() == 0
        assert page.locator("[data-testid=stAlertContentError]").count() == 0
        # the engine that rendered it (the server's data folder in Remote mode) keeps the upscale, linked
        (kept,) = upscales_kept(data)
        assert kept["factor"] == 2 and kept["source"]["index"] == 0
        if mode == "remote":
            laptop_files = [p for p in (tmp_path / "laptop").rglob("*") if p.is_file()]
            assert not laptop_files, laptop_files[:3]
