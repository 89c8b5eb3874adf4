"""The design card's deployment in a real browser: the Studio on a "laptop" (its own engine could not even load)
driving `python -m engine serve` on loopback for everything: a render, History's Restore, a 2×2 sweep, and a
catalog run from an uploaded sheet down to its results.csv. The laptop's data folder stays empty."""

from __future__ import annotations

import csv
import io
import os
import re
from pathlib import Path

import pytest
from playwright.sync_api import expect

from tests.conftest import TOKEN, make_data_dir
from tools.studio_driver import (
    CHROMIUM,
    CHROMIUM_ARGS,
    draw_house,
    engine_server,
    go_to_page,
    set_slider,
    streamlit_app,
    tiny_env,
)

SHEET = b"id,description\nR-1,a red cotton shirt\nR-2,a black leather jacket\nR-3,a white suede sneaker\n"


@pytest.fixture(scope="module")
def remote_setup(tmp_path_factory, tiny_models):
    server_data = make_data_dir(tmp_path_factory.mktemp("server"), tiny_models, warm=True)
    laptop = tmp_path_factory.mktemp("laptop") / "data"
    laptop_env = {**tiny_env(laptop), "DESIGN_STUDIO_PROFILE": "default"}  # no weights here: it must not load
    with engine_server(tiny_env(server_data), token=TOKEN) as url, streamlit_app(laptop_env) as (app, _):
        yield {"engine": url, "app": app, "server_data": server_data, "laptop": laptop}


@pytest.fixture(scope="module")
def page(remote_setup):
    from playwright.sync_api import sync_playwright

    assert Path(CHROMIUM).is_file(), "Debian's chromium is needed: apt-get install chromium (.ci/run does)"
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1440, "height": 1800}, accept_downloads=True)
        page.set_default_timeout(90_000)
        page.goto(remote_setup["app"])
        sidebar = page.locator("[data-testid=stSidebar]")
        sidebar.get_by_text("Remote", exact=True).wait_for(timeout=120_000)  # the local engine cannot start here
        sidebar.get_by_text("Remote", exact=True).click()
        for label, value in (("Server URL", remote_setup["engine"]), ("Token", TOKEN)):
            field = sidebar.get_by_label(label, exact=True)
            field.fill(value)
            field.press("Enter")
            page.wait_for_timeout(1500)
        sidebar.get_by_role("button", name="Test connection").click()
        sidebar.get_by_text(re.compile("Connected: cpu · profile tiny")).wait_for()
        page.wait_for_selector("h1:has-text('Studio')", timeout=120_000)
        yield page
        browser.close()


def shoot(page, name: str) -> None:
    folder = Path(os.environ.get("REMOTE_SCREENSHOTS", "/tmp/remote-screens"))
    folder.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(folder / f"{name}.png"), full_page=True)


def go(page, name: str) -> None:
    go_to_page(page, name)


def test_render_restore_sweep_and_catalog_on_a_remote_engine(page, remote_setup, tmp_path):
    # the Studio: draw, describe, render on the server
    draw_house(page)
    page.get_by_label("Prompt", exact=True).fill("a timber cabin at dusk")
    page.keyboard.press("Control+Enter")
    page.get_by_text("Retrieved from your library").wait_for()
    page.get_by_text("Advanced").click()
    set_slider(page, "Steps", 3)
    set_slider(page, "Size (short side)", 256)
    page.get_by_role("button", name="Generate").click()
    page.get_by_text("in all").wait_for(timeout=240_000)
    expect(page.get_by_text("kept on the remote engine")).to_be_visible()
    assert page.locator("[data-testid=stException]").count() == 0
    shoot(page, "1-studio")

    # History (on the server) and Restore back into the Studio
    go(page, "History")
    page.get_by_text("a timber cabin at dusk").first.wait_for()
    page.get_by_role("button", name="Restore").first.click()
    page.wait_for_selector("h1:has-text('Studio')")
    expect(page.get_by_label("Prompt", exact=True)).to_have_value("a timber cabin at dusk")
    shoot(page, "2-restored")

    # a 2×2 sweep
    go(page, "Sweeps")
    for name, value in (("Structure strengths", "0.5, 1.5"), ("Style strengths", "0.3, 0.9"), ("Steps", "1")):
        field = page.get_by_role("textbox", name=name, exact=True)
        field.fill(value)
        field.press("Enter")
        page.wait_for_timeout(500)
    page.get_by_text("4 cells · 4 renders").wait_for()
    page.get_by_role("button", name="Run sweep").click()
    page.get_by_text(re.compile("^Sweep sweep-")).wait_for(timeout=240_000)
    assert page.locator("[data-testid=stException]").count() == 0
    shoot(page, "3-sweep")

    # a catalog run from an uploaded sheet, and its results.csv
    go(page, "Catalog")
    sheet = tmp_path / "shirts.csv"
    sheet.write_bytes(SHEET)
    page.locator("[data-testid=stFileUploader]").first.locator("input[type=file]").set_input_files(str(sheet))
    page.get_by_text("3 rows").wait_for()
    page.get_by_text("so the attributes default to none").first.wait_for()  # the tiny LLM is random: the description
    page.get_by_role("button", name="Start run").click()
    download = page.get_by_role("button", name="results.csv").first
    download.wait_for(timeout=240_000)
    with page.expect_download() as got:
        download.click()
    rows = list(csv.DictReader(io.StringIO(Path(got.value.path()).read_text())))
    assert [r["id"] for r in rows] == ["R-1", "R-2", "R-3"] and {r["status"] for r in rows} == {"done"}
    shoot(page, "4-catalog")

    # everything lives on the server; the laptop kept nothing
    server = remote_setup["server_data"]
    assert list((server / "outputs").rglob("*.png")) and list((server / "runs" / "catalog").glob("*/results.csv"))
    laptop = remote_setup["laptop"]
    assert not laptop.exists() or not [p for p in laptop.rglob("*") if p.is_file()]
