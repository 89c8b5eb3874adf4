"""The designer's tools of issue 32 in a real browser, in Local mode and in Remote mode (the Studio on a "laptop"
without weights, driving `python -m engine serve` on loopback), one app per mode for all of them: Describe on an
upload, Depth from "Start from this" with a second ControlNet, Upscale ×2 under a render, and Extend to 16:9. After
each result: no exception and no error line on the page; in Remote mode the laptop keeps nothing."""

from __future__ import annotations

import io
import json
import re
import sqlite3
from pathlib import Path

import pytest
from PIL import Image, ImageDraw
from playwright.sync_api import TimeoutError as PlaywrightTimeout
from playwright.sync_api import expect

from tests.conftest import TOKEN, make_data_dir, make_engine
from tools.studio_driver import (
    draw_house,
    engine_server,
    generate_and_watch,
    open_studio,
    set_slider,
    streamlit_app,
    tiny_env,
)


def sketch_png() -> bytes:
    img = Image.new("RGB", (320, 240), "white")
    d = ImageDraw.Draw(img)
    d.rectangle([60, 100, 260, 220], outline="black", width=4)
    d.line([(40, 110), (160, 20), (280, 110)], fill="black", width=4)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module", params=["local", "remote"])
def studio(request, tmp_path_factory, tiny_models):
    """The Studio's URL in this mode, the engine's data folder, and the prompt that engine writes for the sketch."""
    data = make_data_dir(tmp_path_factory.mktemp(f"tools-{request.param}"), tiny_models, warm=True)
    expected = make_engine(data).styles.describe(sketch_png()).prompt
    if request.param == "local":
        with streamlit_app(tiny_env(data)) as (url, _):
            yield {"url": url, "data": data, "expected": expected}
        return
    laptop = tmp_path_factory.mktemp("tools-laptop")
    with engine_server(tiny_env(data), token=TOKEN) as engine_url:
        env = tiny_env(laptop, DESIGN_STUDIO_PROFILE="default", DESIGN_STUDIO_REMOTE_URL=engine_url,
                       DESIGN_STUDIO_REMOTE_TOKEN=TOKEN)  # fmt: skip
        with streamlit_app(env) as (url, _):
            yield {"url": url, "data": data, "expected": expected}
    made = [p for p in laptop.rglob("*") if p.is_file()]
    assert not made, f"Remote mode wrote on the laptop: {made[:3]}"


def clean(page) -> None:
    assert page.locator("[data-testid=stException]").count() == 0
    assert page.locator("[data-testid=stAlertContentError]").count() == 0


def quick(page) -> None:
    """No style, 2 steps, 256 px: a render in a second or two (what the tools do with it is the point here)."""
    page.locator("[data-testid=stButtonGroup]").get_by_text("None", exact=True).click()
    for _ in range(3):  # a click while the page still reruns can be lost
        page.get_by_text("Advanced").click()
        try:
            page.get_by_role("slider", name="Steps").wait_for(state="visible", timeout=15_000)
            break
        except PlaywrightTimeout:
            continue
    set_slider(page, "Steps", 2)
    set_slider(page, "Size (short side)", 256)


def first_render(page, prompt: str) -> None:
    draw_house(page)
    page.get_by_label("Prompt", exact=True).fill(prompt)
    page.keyboard.press("Control+Enter")
    page.wait_for_timeout(1000)
    quick(page)
    generate_and_watch(page, timeout=240)
    clean(page)


def latest_record(data: Path) -> dict:
    newest = max(data.glob("outputs/*/*-0.json"), key=lambda p: p.stat().st_mtime)
    return json.loads(newest.read_text())


def test_describe_an_uploaded_sketch_fills_the_prompt(browser, studio):
    page = open_studio(browser, studio["url"])
    page.locator(".st-key-sketch_panel [data-testid=stButtonGroup]").get_by_text("Upload", exact=True).click()
    uploader = page.locator("[data-testid=stFileUploader]").filter(has_text="Sketch or photo")
    uploader.locator("input[type=file]").set_input_files(
        {"name": "house.png", "mimeType": "image/png", "buffer": sketch_png()}
    )
    page.get_by_text("house.png · 320×240").wait_for()
    page.get_by_role("button", name="Describe").click()
    prompt = page.get_by_label("Prompt", exact=True)
    expect(prompt).to_have_value(studio["expected"], timeout=60_000)
    expect(page.get_by_text("Prompt written from the upload house.png")).to_be_visible()
    clean(page)
    prompt.fill(studio["expected"] + ", at dusk")  # still the designer's box
    prompt.press("Control+Enter")
    page.get_by_text("(edited since)").wait_for()
    page.close()


def test_depth_from_start_from_this_and_two_controlnets_at_once(browser, studio):
    page = open_studio(browser, studio["url"])
    first_render(page, "a timber cabin at dusk")
    page.get_by_role("button", name="Start from this").first.click()
    page.get_by_text("starting from render").wait_for()
    page.locator("[data-testid=stButtonGroup]").get_by_text("Depth", exact=True).click()
    page.get_by_text("Depth follows the image you start from").wait_for()
    page.get_by_text("What ControlNet will follow (depth)").wait_for()
    page.get_by_role("button", name="Add a ControlNet").click()
    page.get_by_text("What ControlNet 2 will follow (lines)").wait_for()  # Canny, on the drawing
    clean(page)
    generate_and_watch(page, timeout=240)
    clean(page)
    meta = latest_record(studio["data"])  # where the engine keeps it: the server's folder in Remote mode
    units = meta["params"]["controls"]
    assert [(u["type"], u["weight"]) for u in units] == [("depth", 1.5), ("canny", 0.8)]
    assert units[0]["image_hash"] == meta["init_hash"] and units[1]["image_hash"] is None
    page.close()


def upscales_kept(data: Path) -> list[dict]:
    with sqlite3.connect(data / "history.sqlite") as db:
        rows = db.execute("SELECT metadata FROM runs").fetchall()
    return [m["upscale"] for (text,) in rows if (m := json.loads(text)).get("upscale")]


def test_upscale_under_a_render(browser, studio):
    page = open_studio(browser, studio["url"])
    first_render(page, "a copper kettle")
    page.locator(".st-key-latest_render").get_by_role("button", name="Upscale ×2").click()
    page.get_by_text(re.compile(r"^upscaled ×2 · ")).first.wait_for(timeout=240_000)
    clean(page)
    (kept,) = upscales_kept(studio["data"])  # the engine that rendered it keeps the upscale, linked
    assert kept["factor"] == 2 and kept["source"]["index"] == 0
    page.close()


def test_extend_a_render_to_16_9(browser, studio):
    page = open_studio(browser, studio["url"])
    first_render(page, "a timber cabin at dusk")
    latest = page.locator(".st-key-latest_render")
    size = re.search(r"(\d+)×(\d+)", latest.get_by_text(re.compile(r"steps · .*\d+×\d+")).first.inner_text())
    w, h = int(size[1]), int(size[2])
    latest.get_by_role("button", name="Extend").click()
    page.get_by_text("Extend the canvas (outpaint)").wait_for()
    wider = page.get_by_text(re.compile(rf"{w}×{h} → about {round(h * 16 / 9)}×{h}"))
    for _ in range(3):  # a click that lands while the panel's first run redraws it is lost: click again
        page.locator(".st-key-extend_aspect").get_by_text("16:9", exact=True).click()
        try:
            wider.wait_for(timeout=20_000)  # the preview shows the wider canvas: the borders are set
            break
        except PlaywrightTimeout:
            continue
    generate_and_watch(page, timeout=240)
    line = latest.get_by_text(re.compile(r"^extended \+\d+ left \+\d+ right"))
    line.wait_for(timeout=60_000)
    text = line.inner_text()
    wide = round(h * 16 / 9)
    assert f"{wide + (-wide % 8)}×{h}" in text and w < wide, text
    clean(page)
    page.close()
