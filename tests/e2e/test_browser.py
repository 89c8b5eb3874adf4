"""The Studio in a real browser: Debian's Chromium driven by Playwright against `streamlit run app.py`."""

from __future__ import annotations

import csv
import os
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from PIL import Image
from playwright.sync_api import TimeoutError as PlaywrightTimeout
from playwright.sync_api import expect

from engine.arena import Arena
from tests.conftest import REPO, free_port, line_sketch, make_data_dir
from tools.screenshot import CHROMIUM, CHROMIUM_ARGS


@pytest.fixture(scope="module")
def e2e_data(tmp_path_factory, tiny_models) -> Path:
    """A data folder with two settings (A, B) over one sketch and three seeds, made with the CLI as a user would."""
    data = make_data_dir(tmp_path_factory.mktemp("e2e-data"), tiny_models)
    sketch = data / "chair.png"
    line_sketch(128, 96).save(sketch)
    for label, structure in (("A", "0.4"), ("B", "1.6")):
        subprocess.run(
            [sys.executable, "-m", "engine", "generate", "--profile", "tiny", "--data-dir", str(data), "--device",
             "cpu", "--sketch", str(sketch), "--prompt", "a lounge chair", "--size", "64", "--steps", "1", "--seed",
             "21", "--variations", "3", "--structure", structure, "--batch", "ab", "--label", label],
            cwd=REPO, check=True, capture_output=True, timeout=180,
        )  # fmt: skip
    return data


@pytest.fixture(scope="module")
def app_url(e2e_data):
    data = e2e_data
    port = free_port()
    env = {
        **os.environ,
        "DESIGN_STUDIO_PROFILE": "tiny",
        "DESIGN_STUDIO_DEVICE": "cpu",
        "DESIGN_STUDIO_DATA_DIR": str(data),
    }
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "streamlit",
            "run",
            "app.py",
            "--server.port",
            str(port),
            "--server.address",
            "127.0.0.1",
        ],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 90
    while time.time() < deadline:
        try:
            if urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).read() == b"ok":
                break
        except OSError:
            time.sleep(0.5)
    else:
        proc.kill()
        raise RuntimeError("streamlit did not start")
    yield url
    proc.terminate()
    proc.wait(timeout=30)


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    assert Path(CHROMIUM).is_file(), "Debian's chromium is needed: apt-get install chromium (.ci/run does)"
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


def new_page(browser, **kw):
    """A page whose waits allow for a busy 2-core machine (a render and a rerun can take a while there)."""
    page = browser.new_page(**kw)
    page.set_default_timeout(90_000)
    return page


def quick_settings(page, steps: int) -> None:
    """Open Advanced and set, with the keyboard as a user would, `steps` steps and the smallest size."""
    page.get_by_text("Advanced").click()
    page.get_by_role("slider", name="Steps").focus()
    page.keyboard.press("Home")
    for _ in range(steps - 1):
        page.keyboard.press("ArrowRight")
    page.get_by_role("slider", name="Size (short side)").focus()
    page.keyboard.press("Home")
    page.wait_for_timeout(1000)


def test_draw_type_generate_and_see_the_render(app_url, browser, tmp_path):
    page = new_page(browser, viewport={"width": 1440, "height": 1700})
    page.goto(app_url)
    page.wait_for_selector("h1:has-text('Studio')", timeout=120_000)
    canvas = page.locator("canvas").last
    canvas.wait_for(timeout=60_000)
    box = canvas.bounding_box()
    page.mouse.move(box["x"] + 80, box["y"] + 260)
    page.mouse.down()
    for x, y in [(80, 140), (220, 50), (360, 140), (360, 260), (80, 260)]:
        page.mouse.move(box["x"] + x, box["y"] + y, steps=6)
    page.mouse.up()
    page.get_by_label("Prompt", exact=True).fill("a timber cabin at dusk")
    page.keyboard.press("Control+Enter")
    page.wait_for_timeout(1500)
    # a quick render, set with the keyboard as a user would: 4 steps, the smallest size
    quick_settings(page, steps=4)
    page.wait_for_timeout(500)
    page.get_by_role("button", name="Generate").click()
    page.get_by_text("in all").wait_for(timeout=240_000)
    assert page.get_by_text("×256 · 4 steps").count() == 1  # the keyboard settings took
    page.wait_for_timeout(1000)

    shot = Path(os.environ.get("STUDIO_SCREENSHOT", tmp_path / "studio.png"))
    page.screenshot(path=str(shot), full_page=True)
    assert page.get_by_text("edges (lines)").count() == 1  # the drawing was read as line art
    assert page.get_by_text("seed ").count() >= 1
    with Image.open(shot) as im:
        assert im.size[0] == 1440
    page.close()


def test_add_a_style_by_upload_and_find_it_in_the_grid(app_url, browser, tmp_path):
    swatch = tmp_path / "olive.png"
    Image.new("RGB", (128, 128), (110, 120, 40)).save(swatch)
    page = new_page(browser, viewport={"width": 1440, "height": 1400})
    page.goto(app_url)
    page.get_by_role("link", name="Style library").click()
    page.wait_for_selector("h1:has-text('Style library')", timeout=60_000)
    page.get_by_text("Add styles").click()
    page.locator("input[type=file]").first.set_input_files(str(swatch))
    page.get_by_text("olive.png").wait_for(timeout=60_000)  # the upload has arrived
    page.get_by_label("Name", exact=True).fill("Olive drab")
    page.get_by_label("Name", exact=True).press("Enter")
    add = page.get_by_role("button", name="Add to library")
    expect(add).to_be_enabled(timeout=60_000)  # the page has rerun with the file
    add.click()
    page.get_by_text("Added “Olive drab”.").wait_for(timeout=60_000)
    page.get_by_text("Olive drab", exact=True).wait_for(timeout=60_000)
    assert page.get_by_text("yours", exact=True).count() == 1
    assert page.get_by_label("Name", exact=True).input_value() == ""  # the form is ready for the next one
    page.close()


def open_page(browser, app_url, name: str, height: int = 1400):
    page = new_page(browser, viewport={"width": 1440, "height": height})
    page.goto(app_url)
    page.get_by_role("link", name=name).click()
    page.wait_for_selector(f"h1:has-text('{name}')", timeout=120_000)
    return page


def test_dashboard_exports_one_csv_row_per_image(app_url, browser, tmp_path):
    page = open_page(browser, app_url, "Dashboard")
    page.get_by_role("tab", name="Images").click()
    export = page.get_by_role("button", name=re.compile(r"Export CSV \(\d+ images\)"))
    export.wait_for(timeout=60_000)
    shown = int(re.search(r"\((\d+) images\)", export.inner_text()).group(1))
    with page.expect_download(timeout=60_000) as info:
        export.click()
    path = tmp_path / "export.csv"
    info.value.save_as(path)
    rows = list(csv.DictReader(path.open()))
    assert shown >= 6 and len(rows) == shown
    assert sum(r["set"] == "ab · A" for r in rows) == 3 and all(r["clip_score"] for r in rows)
    page.close()


def test_arena_votes_with_the_keyboard(app_url, browser, e2e_data):
    page = open_page(browser, app_url, "Arena")
    for label, value in (("Set A", "ab · A"), ("Set B", "ab · B")):
        page.get_by_label(label).click()
        page.get_by_role("option", name=value, exact=True).click()
    page.get_by_text("3 pairs share a sketch, prompt and seed.").wait_for(timeout=60_000)
    page.get_by_role("button", name="Start voting").click()
    page.get_by_text("Pair 1 of 3").wait_for(timeout=60_000)
    for key, next_text in (("ArrowLeft", "Pair 2 of 3"), ("ArrowRight", "Pair 3 of 3"), ("ArrowDown", "All 3 pairs")):
        page.locator("h1").click()  # focus on the page, not on a field
        page.keyboard.press(key)
        page.get_by_text(next_text).wait_for(timeout=60_000)
    arena = Arena(e2e_data / "arena.sqlite")
    pairs = arena.pairs(arena.contests()[0]["id"])
    flip = {"A": "B", "B": "A"}
    assert [p["choice"] for p in pairs] == [pairs[0]["left_side"], flip[pairs[1]["left_side"]], "tie"]
    page.close()


def test_regions_click_an_object_name_its_look_and_render(app_url, browser, tmp_path):
    """Regions mode as a designer uses it: click on the sketch, see the region's row, type its words, render,
    and read each region's style beside the result."""
    page = new_page(browser, viewport={"width": 1440, "height": 3000})
    page.goto(app_url)
    page.wait_for_selector("h1:has-text('Studio')", timeout=120_000)
    page.get_by_text("Upload", exact=True).first.click()
    sketch = tmp_path / "room.png"
    line_sketch(192, 128).save(sketch)
    uploader = page.locator("[data-testid=stFileUploader]").filter(has_text="Sketch or photo")
    uploader.wait_for()
    for _ in range(4):  # a rerun that replaces the uploader as the file goes in loses the file: give it again
        page.wait_for_timeout(1000)
        uploader.locator("input[type=file]").set_input_files(str(sketch))
        try:
            page.get_by_text("What ControlNet will follow").wait_for(timeout=15_000)
            break
        except PlaywrightTimeout:
            continue
    page.get_by_label("Prompt", exact=True).fill("a living room")
    page.keyboard.press("Control+Enter")
    page.get_by_text("Regions: a different style").click()
    page.get_by_text("Click an object to add it as a region").wait_for()
    region = page.get_by_label("Region 1")
    for _ in range(6):  # the canvas takes its clicks once its component has mounted; a click before is lost
        page.wait_for_timeout(2000)
        box = page.locator("canvas").last.bounding_box()
        page.mouse.click(box["x"] + box["width"] * 0.3, box["y"] + box["height"] * 0.6)
        try:
            region.wait_for(timeout=10_000)
            break
        except PlaywrightTimeout:
            continue
    region.wait_for(timeout=10_000)
    page.get_by_label("Region 1").fill("walnut")
    page.keyboard.press("Enter")
    page.get_by_text("retrieves").wait_for(timeout=30_000)
    quick_settings(page, steps=1)
    page.get_by_role("button", name="Generate").click()
    page.get_by_text("regions over the render").wait_for(timeout=240_000)
    expect(page.get_by_text(re.compile("Region 1: “walnut” →"))).to_be_visible()
    page.screenshot(path=str(tmp_path / "regions.png"), full_page=True)
    page.close()
