"""A reload keeps the unfinished work (issue 29, item 10): the drawing, the prompt, a setting and the Remote server's
URL come back from the browser's storage, with one line that says so; the token does not, and that line says so."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from tests.conftest import make_data_dir
from tools.studio_driver import draw_house, engine_server, open_studio, streamlit_app, tiny_env
from tools.studio_driver import settled as page_settled

# Dark pixels over every canvas on the page (the drawable canvas draws its strokes on one of its layers, in a shadow
# root, which Playwright's locator reaches).
INKED = """canvases => canvases.reduce((n, c) => {
  if (!c.width || !c.height) return n;
  const px = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
  for (let i = 0; i < px.length; i += 4) if (px[i + 3] > 0 && Math.min(px[i], px[i + 1], px[i + 2]) < 128) n++;
  return n;
}, 0)"""
RESTORED = re.compile("Restored your unsaved sketch and settings")


@pytest.fixture(scope="module")
def reload_data(tmp_path_factory, tiny_models):
    return make_data_dir(tmp_path_factory.mktemp("reload-data"), tiny_models, warm=True)


@pytest.fixture(scope="module")
def app_url(reload_data):
    with streamlit_app(tiny_env(reload_data)) as (url, _):
        yield url


def settled(page) -> None:
    """Wait until the page has finished its run, then a moment for the draft."""
    page_settled(page)
    page.wait_for_timeout(1000)


def test_a_reload_brings_back_the_drawing_the_prompt_and_a_setting(app_url, browser):
    page = open_studio(browser, app_url, height=900)
    settled(page)
    draw_house(page)
    page.get_by_text("(the words alone too)").wait_for(state="detached", timeout=30_000)  # the drawing has arrived
    inked = page.locator("canvas").evaluate_all(INKED)
    assert inked > 100
    prompt = page.get_by_label("Prompt", exact=True)
    prompt.fill("a timber cabin at dusk")
    prompt.press("Control+Enter")
    page.get_by_text("Retrieved from your library").wait_for(timeout=60_000)
    page.get_by_test_id("stMain").get_by_text("16:9", exact=True).click()  # the aspect: a setting, and the canvas
    page.get_by_text("16:9 · canvas 448×252").wait_for(timeout=30_000)
    settled(page)

    page.reload()
    page.wait_for_selector("h1:has-text('Studio')", timeout=120_000)
    page.get_by_text(RESTORED).wait_for(timeout=30_000)
    expect(page.get_by_label("Prompt", exact=True)).to_have_value("a timber cabin at dusk", timeout=30_000)
    page.get_by_text("16:9 · canvas 448×252").wait_for(timeout=30_000)  # the aspect came back
    page.get_by_text("Retrieved from your library").wait_for(timeout=30_000)
    settled(page)
    assert page.get_by_text("(the words alone too)").count() == 0  # the Studio has the drawing again, not only ink
    assert page.locator("canvas").evaluate_all(INKED) > inked // 3  # the house, fitted into 16:9, is on the canvas
    assert page.get_by_text("The Remote token is not kept").count() == 0

    page.reload()  # a second reload: the restored work was kept again
    page.get_by_text(RESTORED).wait_for(timeout=60_000)
    expect(page.get_by_label("Prompt", exact=True)).to_have_value("a timber cabin at dusk", timeout=30_000)
    page.close()


def test_a_reload_keeps_the_remote_server_url_and_says_the_token_is_not_kept(app_url, browser, reload_data):
    with engine_server(tiny_env(reload_data)) as engine_url:
        page = open_studio(browser, app_url, height=900)
        settled(page)
        sidebar = page.get_by_test_id("stSidebar")
        sidebar.get_by_text("Remote", exact=True).click()
        field = sidebar.get_by_label("Server URL", exact=True)
        field.fill(engine_url)
        field.press("Enter")
        sidebar.get_by_text("Remote engine: device").wait_for(timeout=60_000)
        settled(page)

        page.reload()
        page.get_by_text(RESTORED).wait_for(timeout=60_000)
        assert page.get_by_text("The Remote token is not kept").count() == 1
        sidebar = page.get_by_test_id("stSidebar")
        expect(sidebar.get_by_label("Server URL", exact=True)).to_have_value(engine_url, timeout=30_000)
        sidebar.get_by_text("Remote engine: device").wait_for(timeout=60_000)  # connected again, with no token
        page.close()
