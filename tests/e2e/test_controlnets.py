"""Depth and several ControlNets in a real browser, in Local and in Remote mode: draw and render, press **Start from
this** under the render, choose Depth (it follows that render, not the drawing), add a second ControlNet (Canny on
the drawing) and render both at once; the engine's record names both, with depth made from the render."""

from __future__ import annotations

import json
import re
from contextlib import ExitStack
from pathlib import Path

import pytest
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from tests.conftest import TOKEN, make_data_dir
from tools.studio_driver import (
    draw_house,
    engine_server,
    generate_and_watch,
    open_studio,
    set_slider,
    streamlit_app,
    tiny_env,
)


@pytest.fixture(params=["local", "remote"])
def setup(request, tmp_path, tiny_models):
    """The Studio over the tiny profile: its own engine (Local), or a laptop's Studio on `python -m engine serve`
    (Remote). Yields (the app's URL, the engine's data folder, the server's URL or None)."""
    data = make_data_dir(tmp_path / "data", tiny_models, warm=True)
    with ExitStack() as stack:
        if request.param == "local":
            url, _ = stack.enter_context(streamlit_app(tiny_env(data)))
            yield url, data, None
        else:
            server = stack.enter_context(engine_server(tiny_env(data), token=TOKEN))
            laptop = {**tiny_env(tmp_path / "laptop"), "DESIGN_STUDIO_PROFILE": "default"}
            url, _ = stack.enter_context(streamlit_app(laptop))
            yield url, data, server


def open_remote(browser, url: str, server: str):
    """The laptop's Studio (its own engine cannot load: no weights there) switched to the served engine."""
    page = browser.new_page(viewport={"width": 1440, "height": 1700})
    page.set_default_timeout(90_000)
    page.goto(url)
    sidebar = page.locator("[data-testid=stSidebar]")
    sidebar.get_by_text("Remote", exact=True).wait_for(timeout=120_000)
    sidebar.get_by_text("Remote", exact=True).click()
    for label, value in (("Server URL", server), ("Token", TOKEN)):
        field = sidebar.get_by_label(label, exact=True)
        field.fill(value)
        field.press("Enter")
        page.wait_for_timeout(1500)
    sidebar.get_by_role("button", name="Test connection").click()
    sidebar.get_by_text(re.compile("Connected: cpu · profile tiny")).wait_for()
    page.wait_for_selector("h1:has-text('Studio')", timeout=120_000)
    return page


def latest_record(data: Path) -> dict:
    newest = max(data.glob("outputs/*/*-0.json"), key=lambda p: p.stat().st_mtime)
    return json.loads(newest.read_text())


def test_depth_from_start_from_this_and_two_controlnets_at_once(setup, browser):
    url, data, server = setup
    page = open_remote(browser, url, server) if server else open_studio(browser, url)
    draw_house(page)
    page.get_by_label("Prompt", exact=True).fill("a timber cabin at dusk")
    page.keyboard.press("Control+Enter")
    page.wait_for_timeout(1000)
    page.locator("[data-testid=stButtonGroup]").get_by_text("None", exact=True).click()  # no style: quicker
    for _ in range(3):  # a click while the page still reruns can be lost
        page.get_by_text("Advanced").click()
        try:
            page.get_by_role("slider", name="Steps").wait_for(state="visible", timeout=15_000)
            break
        except PlaywrightTimeout:
            continue
    set_slider(page, "Steps", 2)
    set_slider(page, "Size (short side)", 256)
    generate_and_watch(page, timeout=240)

    page.get_by_role("button", name="Start from this").first.click()
    page.get_by_text("starting from render").wait_for()
    page.locator("[data-testid=stButtonGroup]").get_by_text("Depth", exact=True).click()
    page.get_by_text("Depth follows the image you start from").wait_for()
    page.get_by_text("What ControlNet will follow (depth)").wait_for()
    page.get_by_role("button", name="Add a ControlNet").click()
    page.get_by_text("What ControlNet 2 will follow (lines)").wait_for()  # Canny, on the drawing
    assert page.locator("[data-testid=stException]").count() == 0

    generate_and_watch(page, timeout=240)
    assert page.locator("[data-testid=stException]").count() == 0
    assert page.locator("[data-testid=stAlertContentError]").count() == 0
    meta = latest_record(data)  # where the engine keeps it: the server's folder in Remote mode
    units = meta["params"]["controls"]
    assert [(u["type"], u["weight"]) for u in units] == [("depth", 1.5), ("canny", 0.8)]
    assert units[0]["image_hash"] == meta["init_hash"] and units[1]["image_hash"] is None
    page.close()
