"""The Studio's layout as a newcomer meets it on a 1440×900 screen (issue 29, items 4, 5, 6 and 15), in Local and in
Remote mode: the live frame beside the canvas while drawing, the new render in view and large when it arrives, a
render brought back as a sketch drawn over on the canvas with the drawing it replaced recoverable, and style names
shown whole."""

from __future__ import annotations

import time

import pytest

from tests.conftest import TOKEN, make_data_dir
from tools.studio_driver import draw_house, engine_server, streamlit_app, tiny_env

VIEW = {"width": 1440, "height": 900}

INK = """(canvases) => {  // dark pixels drawn on a panel's canvases (Fabric draws on the lower one)
  let dark = 0;
  for (const c of canvases) {
    const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
    for (let i = 0; i < d.length; i += 4) if (d[i + 3] > 0 && d[i] < 100) dark++;
  }
  return dark;
}"""


def ink(page) -> int:
    return page.locator(".st-key-sketch_panel canvas").evaluate_all(INK)  # (Playwright sees into shadow roots)


TRUNCATED = """() => [...document.querySelectorAll('[data-testid=stCheckbox] [data-testid=stMarkdownContainer] p')]
  .filter(p => p.scrollWidth > p.clientWidth + 1).map(p => p.innerText)"""


@pytest.fixture(scope="module", params=["local", "remote"])
def studio_url(request, tmp_path_factory, tiny_models):
    data = make_data_dir(tmp_path_factory.mktemp("layout"), tiny_models, warm=True)
    if request.param == "local":
        with streamlit_app(tiny_env(data)) as (url, _):
            yield url
        return
    with engine_server(tiny_env(data), token=TOKEN) as engine_url:
        laptop = tiny_env(
            tmp_path_factory.mktemp("laptop"), DESIGN_STUDIO_PROFILE="default", DESIGN_STUDIO_REMOTE_URL=engine_url,
            DESIGN_STUDIO_REMOTE_TOKEN=TOKEN,
        )  # fmt: skip
        with streamlit_app(laptop) as (url, _):
            yield url


def in_view(page, selector: str, within_s: float = 6.0) -> dict:
    """`selector`'s box, once it is inside the window (the page scrolls as images above it load: a loaded
    machine takes a few seconds)."""
    deadline = time.monotonic() + within_s
    while True:
        box = page.locator(selector).first.bounding_box()
        assert box is not None, f"{selector} is not on the page"
        if box["y"] >= -2 and box["y"] + box["height"] <= VIEW["height"] + 2:
            return box
        assert time.monotonic() < deadline, (selector, box)
        page.wait_for_timeout(250)


def test_live_frame_new_render_and_drawing_over_a_render_at_1440x900(browser, studio_url):
    page = browser.new_page(viewport=VIEW)
    page.set_default_timeout(120_000)
    page.goto(studio_url)
    page.wait_for_selector("h1:has-text('Studio')")
    prompt = page.get_by_label("Prompt", exact=True)
    prompt.fill("a timber cabin at dusk")
    prompt.press("Control+Enter")
    page.get_by_text("Retrieved from your library").wait_for()
    assert page.evaluate(TRUNCATED) == []  # style names whole, not "Mid-century …"

    # item 4: the live frame beside the canvas, both in view while drawing
    page.get_by_text("Render as I draw", exact=True).click()
    draw_house(page)
    page.get_by_text("Live frame").wait_for()
    frame = in_view(page, ".st-key-live_frame_box img")
    canvas = in_view(page, ".st-key-sketch_panel canvas")
    assert frame["x"] > canvas["x"] + canvas["width"] - 2  # beside it, not below the settings
    page.get_by_text("Render as I draw", exact=True).click()  # off again
    page.get_by_text("Live frame").wait_for(state="detached")
    drawn = ink(page)
    assert drawn > 100

    # item 5: the new render in view, large, when it arrives
    page.get_by_text("Fast", exact=True).click()
    page.wait_for_timeout(1500)
    page.get_by_role("button", name="Generate").click()
    page.locator(".st-key-latest_render img").first.wait_for()
    page.wait_for_timeout(2000)  # the page has scrolled to it
    render = in_view(page, ".st-key-latest_render img")
    assert render["width"] >= 600  # large: twice the size of the style beside it
    style = page.locator(".st-key-latest_render img").nth(3).bounding_box()  # sketch, edges, then the style
    assert render["width"] > 2 * style["width"]

    # item 6: As sketch puts the render's edges on the canvas, drawn over; Back brings the house back
    page.locator(".st-key-latest_render").get_by_role("button", name="As sketch").click()
    page.get_by_text("Drawing over").wait_for()
    page.wait_for_timeout(2000)
    in_view(page, ".st-key-sketch_panel canvas")  # the page went to the canvas
    assert ink(page) < drawn // 2  # a fresh layer over the picture: the house is gone
    draw_house(page)  # drawable over
    page.wait_for_timeout(1500)
    assert ink(page) > 100
    page.get_by_role("button", name="Back to my previous drawing").click()
    page.get_by_text("Drawing over").wait_for(state="detached")
    page.wait_for_timeout(2000)
    assert ink(page) > drawn // 2  # the house drawing is back, drawable again
    assert not page.locator("[data-testid=stException]").count()
    page.close()
