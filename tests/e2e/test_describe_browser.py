"""Describe in a real browser, in Local mode and in Remote mode (the Studio on a "laptop" that cannot load its own
engine, driving `python -m engine serve` on loopback): an uploaded sketch's Describe fills the prompt box with the
engine's words, editable, with no error on the page."""

from __future__ import annotations

import io
import re
from contextlib import ExitStack

import pytest
from PIL import Image, ImageDraw
from playwright.sync_api import expect

from tests.conftest import TOKEN, make_data_dir, make_engine
from tools.studio_driver import engine_server, open_studio, streamlit_app, tiny_env


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
    """The Studio's URL in this mode, and the prompt the engine behind it writes for the sketch."""
    data = make_data_dir(tmp_path_factory.mktemp(f"describe-{request.param}"), tiny_models, warm=True)
    expected = make_engine(data).styles.describe(sketch_png()).prompt
    with ExitStack() as stack:
        if request.param == "local":
            url, _ = stack.enter_context(streamlit_app(tiny_env(data)))
            yield {"mode": "local", "app": url, "expected": expected}
        else:
            engine = stack.enter_context(engine_server(tiny_env(data), token=TOKEN))
            laptop = tmp_path_factory.mktemp("describe-laptop") / "data"
            app, _ = stack.enter_context(streamlit_app({**tiny_env(laptop), "DESIGN_STUDIO_PROFILE": "default"}))
            yield {"mode": "remote", "app": app, "engine": engine, "expected": expected, "laptop": laptop}


def connect(page, engine_url: str) -> None:
    """The sidebar's Remote mode, pointed at the served engine."""
    sidebar = page.locator("[data-testid=stSidebar]")
    sidebar.get_by_text("Remote", exact=True).wait_for(timeout=120_000)
    sidebar.get_by_text("Remote", exact=True).click()
    for label, value in (("Server URL", engine_url), ("Token", TOKEN)):
        field = sidebar.get_by_label(label, exact=True)
        field.fill(value)
        field.press("Enter")
        page.wait_for_timeout(1500)
    sidebar.get_by_role("button", name="Test connection").click()
    sidebar.get_by_text(re.compile("Connected: cpu · profile tiny")).wait_for()


def test_describe_an_uploaded_sketch_fills_the_prompt(browser, studio):
    if studio["mode"] == "remote":
        page = browser.new_page(viewport={"width": 1440, "height": 1700})
        page.set_default_timeout(90_000)
        page.goto(studio["app"])
        connect(page, studio["engine"])
        page.wait_for_selector("h1:has-text('Studio')", timeout=120_000)
    else:
        page = open_studio(browser, studio["app"])
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
    assert page.locator("[data-testid=stException]").count() == 0
    assert page.locator("[data-testid=stAlertContentError]").count() == 0

    prompt.fill(studio["expected"] + ", at dusk")  # still the designer's box
    prompt.press("Control+Enter")
    page.get_by_text("(edited since)").wait_for()
    if studio["mode"] == "remote":  # everything happened on the server: the laptop kept nothing
        laptop = studio["laptop"]
        assert not laptop.exists() or not [p for p in laptop.rglob("*") if p.is_file()]
    page.close()
