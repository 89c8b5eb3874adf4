"""The Studio in a real browser: Debian's Chromium driven by Playwright against `streamlit run app.py`."""

from __future__ import annotations

import csv
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image
from playwright.sync_api import TimeoutError as PlaywrightTimeout
from playwright.sync_api import expect

from engine.arena import Arena
from engine.history import History
from tests.conftest import REPO, line_sketch, make_data_dir
from tools.studio_driver import (
    draw_house,
    generate_and_watch,
    go_to_page,
    open_studio,
    set_slider,
    streamlit_app,
    stroke,
    tiny_env,
    watch_messages,
)


@pytest.fixture(scope="module")
def e2e_data(tmp_path_factory, tiny_models) -> Path:
    """A data folder with two settings (A, B) over one sketch and three seeds, made with the CLI as a user would."""
    data = make_data_dir(tmp_path_factory.mktemp("e2e-data"), tiny_models, warm=True)
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
def app_server(e2e_data):
    """`streamlit run app.py` on loopback over the module's data folder: (URL, process id)."""
    with streamlit_app(tiny_env(e2e_data)) as (url, pid):
        yield url, pid


@pytest.fixture(scope="module")
def app_url(app_server):
    return app_server[0]


def new_page(browser, **kw):
    """A page whose waits allow for a busy 2-core machine (a render and a rerun can take a while there)."""
    page = browser.new_page(**kw)
    page.set_default_timeout(90_000)
    return page


def quick_settings(page, steps: int, size: int = 256) -> None:
    """Open Advanced and set, with the keyboard as a user would, `steps` steps and the size."""
    steps_slider = page.get_by_role("slider", name="Steps")
    for _ in range(3):  # a click while the page still reruns (the prompt's styles arriving) can be lost
        page.get_by_text("Advanced").click()
        try:
            steps_slider.wait_for(state="visible", timeout=15_000)
            break
        except PlaywrightTimeout:
            continue
    set_slider(page, "Steps", steps)
    set_slider(page, "Size (short side)", size)
    page.wait_for_timeout(1000)


def test_draw_type_generate_and_see_the_render(app_url, browser, tmp_path):
    page = open_studio(browser, app_url)
    draw_house(page)
    page.get_by_label("Prompt", exact=True).fill("a timber cabin at dusk")
    page.keyboard.press("Control+Enter")
    page.wait_for_timeout(1500)
    # a quick render, set with the keyboard as a user would: 4 steps, the smallest size
    quick_settings(page, steps=4)
    page.wait_for_timeout(500)
    page.get_by_role("button", name="Generate").click()
    page.get_by_text("in all").wait_for(timeout=240_000)
    made = page.get_by_text(re.compile(r"\d+×\d+ · \d+ steps")).first.inner_text()
    assert "×256 · 4 steps" in made, made  # the keyboard settings took
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
    go_to_page(page, "Style library")
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
    page.wait_for_selector("h1:has-text('Studio')", timeout=120_000)
    page.wait_for_timeout(1000)  # a draft this browser kept is restored by one rerun: let it land before the click
    go_to_page(page, name)
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
    sketch = tmp_path / "room.png"
    line_sketch(192, 128).save(sketch)
    uploader = page.locator("[data-testid=stFileUploader]").filter(has_text="Sketch or photo")
    for _ in range(4):  # a click while the page is still starting up can be lost: click again
        page.locator(".st-key-sketch_panel [data-testid=stButtonGroup]").get_by_text("Upload", exact=True).click()
        try:
            uploader.wait_for(timeout=20_000)
            break
        except PlaywrightTimeout:
            continue
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


def test_an_open_page_asks_nothing_of_the_server_while_nothing_runs(app_server, browser):
    """An idle Studio, Sweeps or Catalog tab sends the server nothing: no timer reruns it (the old progress panels
    reran twice a second and cost the server ~0.8 CPU-seconds per second, starving renders)."""
    url, _ = app_server
    page = browser.new_page(viewport={"width": 1440, "height": 1400})
    page.set_default_timeout(90_000)
    sent = watch_messages(page)
    page.goto(url)
    page.wait_for_selector("h1:has-text('Studio')", timeout=120_000)
    for name in ("Studio", "Sweeps", "Catalog"):
        if name != "Studio":
            go_to_page(page, name)
        page.wait_for_timeout(2000)  # the page's first run and its components settle
        before = len(sent)
        page.wait_for_timeout(3000)
        assert len(sent) == before, f"the idle {name} page sent {len(sent) - before} messages in 3 s"
    page.close()


def test_a_render_with_the_page_open_steps_as_fast_as_a_headless_one(app_server, e2e_data, browser, tiny_models):
    """The designer's wait: a Studio render with the tab open, its steps timed by the engine, against the same
    request rendered headless here. They must be of the same order (the old page made steps 20–60× slower); the
    progress line shows step n/N with the time and, from the first steps on, a sane ETA."""
    page = open_studio(browser, app_server[0])
    draw_house(page)
    page.get_by_label("Prompt", exact=True).fill("a timber cabin at dusk")
    page.keyboard.press("Control+Enter")
    page.get_by_text("Retrieved from your library").wait_for()
    quick_settings(page, steps=12, size=512)
    history = History(e2e_data / "history.sqlite")
    known = {r["id"] for r in history.list(limit=1000)}
    shown = generate_and_watch(page, timeout=300)
    page.close()
    (run,) = [r for r in history.list(limit=1000) if r["id"] not in known]
    meta = run["metadata"]
    assert meta["params"]["steps"] == 12 and meta["source"] == "studio"

    steps = [int(m.group(1)) for _, text in shown["progress"] if (m := re.search(r"Step (\d+)/12 · [\d.]+s", text))]
    assert steps and steps == sorted(steps), shown["progress"]  # the line followed the render, in order
    for _, text in shown["progress"]:
        if m := re.search(r"about (\d+)s left", text):
            assert int(m.group(1)) <= 10 * shown["wall"] + 5, text  # never an absurd estimate

    from engine.schema import GenerateRequest
    from tests.conftest import make_engine

    sketch = (e2e_data / "sketches" / f"{meta['sketch_hash']}.png").read_bytes()
    headless = make_engine(make_data_dir(e2e_data.parent / "headless", tiny_models, warm=True))
    headless.load()
    again = headless.generate(GenerateRequest.from_metadata(meta, sketch, source="cli"))
    studio_step = statistics.median(meta["timings"]["steps"][1:])
    headless_step = statistics.median(again.metadata["timings"]["steps"][1:])
    assert studio_step < 3 * headless_step, (studio_step, headless_step)
    with Image.open(run["outputs"][0]) as im:
        assert im.convert("RGB").tobytes() == again.images()[0].tobytes()  # and the same pixels


def test_cancel_in_the_browser_stops_the_render_between_steps(app_url, browser):
    page = open_studio(browser, app_url)
    page.get_by_label("Prompt", exact=True).fill("a very long render")
    page.keyboard.press("Control+Enter")
    page.get_by_text("Retrieved from your library").wait_for()
    page.get_by_text("Advanced").click()
    page.get_by_role("slider", name="Steps").focus()
    page.keyboard.press("End")  # 100 steps, the most
    page.get_by_role("slider", name="Size (short side)").focus()
    page.keyboard.press("End")  # and the largest size: steps slow enough that the render outlasts a lost click
    page.wait_for_timeout(1000)
    page.get_by_role("button", name="Generate").click()
    page.get_by_text(re.compile(r"Step [3-9]\d?/100")).wait_for(timeout=120_000)
    error = page.get_by_text(re.compile(r"cancelled after \d+ of 100 steps"))
    cancel = page.get_by_role("button", name="Cancel")
    for _ in range(3):  # a click that lands while the progress panel redraws its button is lost: click again
        if cancel.count() == 0:  # the button is gone: the cancel was taken, its line is on the way
            break
        try:
            cancel.click(timeout=10_000)
            error.wait_for(timeout=20_000)
            break
        except PlaywrightTimeout:
            continue
    error.wait_for(timeout=60_000)
    done = int(re.search(r"after (\d+) of", error.inner_text()).group(1))
    assert 3 <= done < 100
    expect(page.get_by_role("button", name="Generate")).to_be_enabled()
    assert page.locator("[data-testid=stProgress]").count() == 0
    page.close()


def live_jobs(data: Path) -> list[str]:
    """The states of the live frames the app's engine has rendered or is rendering, oldest first."""
    import sqlite3
    from contextlib import closing

    with closing(sqlite3.connect(data / "jobs.sqlite")) as db:
        rows = db.execute("SELECT state, title FROM job WHERE kind = 'render' ORDER BY seq").fetchall()
    return [state for state, title in rows if title == "render (not kept)"]  # keep: false leaves no request


def quick_strokes(page, count: int) -> None:
    """`count` short pen strokes, one right after another (each one reaches the app when it ends)."""
    box = page.locator("canvas").last.bounding_box()
    for i in range(count):
        x, y = box["x"] + 40 + 30 * i, box["y"] + 40
        page.mouse.move(x, y)
        page.mouse.down()
        page.mouse.move(x + 15, y + 60, steps=2)
        page.mouse.up()


def test_live_canvas_renders_after_a_burst_of_strokes_once_and_keep_adds_one_render(app_url, browser, e2e_data):
    page = open_studio(browser, app_url)
    page.get_by_label("Prompt", exact=True).fill("a lounge chair")
    page.keyboard.press("Control+Enter")
    page.get_by_text("Retrieved from your library").wait_for()
    before_jobs, before_runs = len(live_jobs(e2e_data)), len(History(e2e_data / "history.sqlite").list())
    page.get_by_text("Render as I draw", exact=True).click()
    page.get_by_text("Live frame").wait_for(timeout=120_000)  # the words alone, at once
    draw_house(page)
    deadline = time.time() + 120
    while len(live_jobs(e2e_data)) < before_jobs + 2 and time.time() < deadline:
        time.sleep(0.2)
    while "running" in live_jobs(e2e_data) or "queued" in live_jobs(e2e_data):
        time.sleep(0.2)
    settled = len(live_jobs(e2e_data))
    assert settled == before_jobs + 2, live_jobs(e2e_data)  # switch-on, then the house: one each

    quick_strokes(page, 3)
    most_at_once = 0
    deadline = time.time() + 20
    while time.time() < deadline:  # watch the engine while the burst is rendered: one live frame at a time
        states = live_jobs(e2e_data)[settled:]
        most_at_once = max(most_at_once, sum(s in ("queued", "running") for s in states))
        if states and all(s == "done" for s in states) and time.time() > deadline - 15:
            break
        time.sleep(0.1)
    after = live_jobs(e2e_data)[settled:]
    assert most_at_once <= 1 and after == ["done"], after  # the burst rendered once, after its last stroke
    assert len(History(e2e_data / "history.sqlite").list()) == before_runs  # frames are not kept

    page.get_by_role("button", name="Keep").click()
    page.get_by_text("in all").wait_for(timeout=240_000)
    assert len(History(e2e_data / "history.sqlite").list()) == before_runs + 1
    shot = Path(os.environ.get("LIVE_SCREENSHOT", "/tmp/live.png"))
    page.screenshot(path=str(shot), full_page=True)
    page.get_by_text("Render as I draw", exact=True).click()  # off again
    page.close()


def pick_tool(page, name: str, hint: str | None = None) -> None:
    """Choose a canvas tool; the page reruns with it (and shows its `hint`) before the next stroke."""
    page.get_by_text(name, exact=True).click()
    if hint:
        page.get_by_text(hint).wait_for()
    page.wait_for_timeout(1000)


def test_canvas_aspect_eraser_and_shapes_then_variations_side_by_side(app_url, browser, tmp_path):
    """A 16:9 canvas renders at 16:9; the eraser takes a stroke back to blank paper; a polygon closes into a sketch;
    two variations sit side by side in the gallery and Vary adds a third in front, replacing nothing."""
    page = open_studio(browser, app_url)
    page.get_by_text("16:9", exact=True).click()
    page.get_by_text("16:9 · canvas 448×252").wait_for()
    canvas = page.locator("canvas").last
    for _ in range(60):  # the canvas remounts at its new size
        if round(canvas.bounding_box()["height"]) == 252:
            break
        page.wait_for_timeout(500)
    assert round(canvas.bounding_box()["width"]) == 448 and round(canvas.bounding_box()["height"]) == 252
    stroke(page, [(60, 60), (200, 60), (200, 120)])
    page.get_by_text("What ControlNet will follow").wait_for()
    pick_tool(page, "Eraser", "The eraser paints")
    page.get_by_role("slider", name="Width").focus()
    page.keyboard.press("End")  # the widest: 40 px
    expect(page.get_by_role("slider", name="Width")).to_have_attribute("aria-valuetext", "40")
    page.wait_for_timeout(1500)  # the page has rerun with it
    stroke(page, [(60, 60), (200, 60), (200, 120)])
    # erased back to paper: the note says so (inside the edges section, which may fold now there is nothing to show)
    page.get_by_text("No sketch yet").wait_for(state="attached")
    expect(page.get_by_text("What ControlNet will follow")).to_have_count(0)
    pick_tool(page, "Polygon", "close the polygon")
    box = page.locator("canvas").last.bounding_box()
    for x, y in ((240, 40), (400, 40), (320, 200), (240, 40)):  # the first corner again closes it
        page.mouse.click(box["x"] + x, box["y"] + y)
        page.wait_for_timeout(300)
    page.get_by_text("What ControlNet will follow").wait_for()
    pick_tool(page, "Circle")
    stroke(page, [(60, 120), (130, 190)])
    page.get_by_label("Prompt", exact=True).fill("a wide low cabinet")
    page.keyboard.press("Control+Enter")
    page.get_by_text("Retrieved from your library").wait_for()
    quick_settings(page, steps=1)
    set_slider(page, "Variations", 2)
    page.wait_for_timeout(1000)
    page.get_by_role("button", name="Generate").click()
    page.get_by_text("in all").wait_for(timeout=240_000)
    assert page.get_by_text("456×256 · 1 steps").count() == 1  # 16:9 at a short side of 256

    seeds = page.locator("[data-testid=stCaptionContainer]").filter(has_text=re.compile(r"^seed \d+$"))
    expect(seeds).to_have_count(2)
    for _ in range(40):  # until both pictures have loaded (an image takes its height only then)
        first, second = seeds.nth(0).bounding_box(), seeds.nth(1).bounding_box()
        if abs(first["y"] - second["y"]) < 2:
            break
        page.wait_for_timeout(250)
    assert abs(first["y"] - second["y"]) < 2 and second["x"] > first["x"] + 100  # side by side
    before = seeds.all_inner_texts()
    page.get_by_role("button", name="Vary").first.click()
    expect(seeds).to_have_count(3, timeout=240_000)
    after = seeds.all_inner_texts()
    assert after[1:] == before and after[0] not in before  # the new one first, nothing replaced
    page.screenshot(path=str(tmp_path / "gallery.png"), full_page=True)
    page.close()


def test_generate_right_after_typing_renders_the_new_words_with_their_styles(app_url, browser, e2e_data):
    """Typed words reach the page with the click on Generate (no blur first): the render takes them, and the
    styles they retrieve, not the ones the previous words had retrieved."""
    page = open_studio(browser, app_url)
    prompt = page.get_by_label("Prompt", exact=True)
    prompt.fill("neon night city")
    page.keyboard.press("Control+Enter")
    page.get_by_text("Retrieved from your library").wait_for()
    quick_settings(page, steps=1)
    prompt.click()
    page.keyboard.press("Control+A")
    page.keyboard.type("terrazzo floor, speckled stone", delay=20)
    generate = page.get_by_role("button", name="Generate")
    expect(generate).to_be_enabled()  # never greyed out while typing
    generate.click()
    page.get_by_text("in all").wait_for(timeout=240_000)
    meta = History(e2e_data / "history.sqlite").list(limit=1)[0]["metadata"]
    assert meta["prompt"] == "terrazzo floor, speckled stone"
    (used,) = [s["name"] for s in meta["styles"] if s["used"]]
    ticked = page.locator("[data-testid=stCheckbox]").filter(has=page.locator("input:checked"))
    expect(ticked).to_have_count(1)
    assert ticked.inner_text().strip() == used  # the new words' first style, as the page now shows them
    page.close()


def test_variations_inpaint_with_another_style_compare_star_and_find_it_in_history(
    app_url, browser, e2e_data, tmp_path
):
    """A designer's day: two variations side by side; the first reworked in one part only (brushed), with another
    style; two renders compared in the History; one starred in the Studio and found in History's starred grid."""
    page = open_studio(browser, app_url)
    draw_house(page)
    page.get_by_label("Prompt", exact=True).fill("a timber cabin")
    page.keyboard.press("Control+Enter")
    page.get_by_text("Retrieved from your library").wait_for()
    quick_settings(page, steps=2)
    set_slider(page, "Variations", 2)
    page.wait_for_timeout(1000)
    page.get_by_role("button", name="Generate").click()
    seeds = page.locator("[data-testid=stCaptionContainer]").filter(has_text=re.compile(r"^seed \d+$"))
    expect(seeds).to_have_count(2, timeout=240_000)
    for _ in range(40):  # until both pictures have loaded (an image takes its height only then)
        first, second = seeds.nth(0).bounding_box(), seeds.nth(1).bounding_box()
        if abs(first["y"] - second["y"]) < 2:
            break
        page.wait_for_timeout(250)
    assert abs(first["y"] - second["y"]) < 2 and second["x"] > first["x"] + 100  # side by side
    made = History(e2e_data / "history.sqlite").list(limit=1)[0]

    # inpaint: start from the first variation, brush its middle, another style
    page.get_by_role("button", name="Start from this").first.click()
    page.get_by_text("Repaint only a part (inpaint)").click()
    page.get_by_text("Paint or click the part to repaint").wait_for()
    page.wait_for_timeout(1500)
    box = page.locator("canvas").last.bounding_box()
    page.mouse.move(box["x"] + box["width"] * 0.3, box["y"] + box["height"] * 0.5)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.7, box["y"] + box["height"] * 0.5, steps=8)
    page.mouse.up()
    page.get_by_text(re.compile(r"Repaints \d+ % of the image")).wait_for()
    shots = Path(os.environ.get("STUDIO_SCREENSHOTS", tmp_path))  # the README's pictures (make screenshots)
    page.locator("canvas").last.scroll_into_view_if_needed()
    page.screenshot(path=str(shots / "inpaint.png"))
    page.get_by_text("From library", exact=True).click()
    page.get_by_text("Library style").wait_for()
    page.locator("[data-testid=stSelectbox]").filter(has_text="Library style").click()
    first_style = next(s["name"] for s in made["metadata"]["styles"] if s["used"])
    other = "Blueprint" if first_style == "Terrazzo" else "Terrazzo"
    page.get_by_role("option", name=other).click()
    page.wait_for_timeout(1000)
    if not page.get_by_role("slider", name="Variations").is_visible():
        page.get_by_text("Advanced").click()
    set_slider(page, "Variations", 1)
    page.wait_for_timeout(1000)
    page.get_by_role("button", name="Generate").click()
    expect(seeds).to_have_count(3, timeout=240_000)
    inpainted = History(e2e_data / "history.sqlite").list(limit=1)[0]
    meta = inpainted["metadata"]
    assert meta["kind"] == "inpaint" and meta["mask_hash"] and meta["params"]["strength"] == 0.6
    assert [s["name"] for s in meta["styles"] if s["used"]] == [other]
    assert page.get_by_text(f"inpainted at 0.6 · {other} · quality").count() == 1
    assert page.locator("[data-testid=stException]").count() == 0
    assert page.locator("[data-testid=stAlertContentError]").count() == 0
    page.get_by_text("this session, newest first").scroll_into_view_if_needed()
    page.screenshot(path=str(shots / "gallery.png"))

    # star the inpainted render right where it is
    page.get_by_role("button", name="☆ Star").first.click()
    page.get_by_role("button", name="★ Starred").wait_for()

    # the History: compare the two runs, then find the starred one
    go_to_page(page, "History")
    for run in (inpainted, made):
        page.locator(f".st-key-compare-{run['id']}").get_by_text("Compare").click()
        page.wait_for_timeout(1500)
    panel = page.locator(".st-key-compare_panel")
    panel.wait_for()
    expect(panel).to_contain_text("≠")
    page.get_by_text("★ Starred only").click()
    cards = page.locator("[class*='st-key-card-']")
    expect(cards).to_have_count(1)
    expect(page.locator(f".st-key-card-{inpainted['id']}")).to_contain_text("a timber cabin")
    page.close()
