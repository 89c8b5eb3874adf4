"""Extend (outpainting) in a real browser, in Local and Remote mode: a render, **Extend** under it, an aspect preset,
Generate, and the wider render on the page with what made it, no error and no traceback."""

from __future__ import annotations

import re

import pytest

from tests.conftest import TOKEN, make_data_dir
from tools.studio_driver import draw_house, engine_server, open_studio, streamlit_app, tiny_env


@pytest.fixture(scope="module", params=["local", "remote"])
def studio_url(request, tmp_path_factory, tiny_models):
    data = make_data_dir(tmp_path_factory.mktemp("extend"), tiny_models, warm=True)
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


def test_extend_a_render_to_16_9(browser, studio_url):
    page = open_studio(browser, studio_url)
    draw_house(page)
    prompt = page.get_by_label("Prompt", exact=True)
    prompt.fill("a timber cabin at dusk")
    prompt.press("Control+Enter")
    page.get_by_text("Retrieved from your library").wait_for()
    page.get_by_role("button", name="Generate").click()
    latest = page.locator(".st-key-latest_render")
    latest.get_by_role("button", name="Extend").wait_for()
    size = re.search(r"(\d+)×(\d+)", latest.get_by_text(re.compile(r"steps · .*\d+×\d+")).first.inner_text())
    w, h = int(size[1]), int(size[2])

    latest.get_by_role("button", name="Extend").click()
    page.get_by_text("Extend the canvas (outpaint)").wait_for()
    page.locator(".st-key-extend_aspect").get_by_text("16:9", exact=True).click()
    page.get_by_text(re.compile(r"the grey part is painted")).wait_for()
    page.get_by_role("button", name="Generate").click()
    line = latest.get_by_text(re.compile(r"^extended \+\d+ left \+\d+ right"))
    line.wait_for(timeout=180_000)
    text = line.inner_text()
    wide = round(h * 16 / 9)
    assert f"{wide + (-wide % 8)}×{h}" in text and w < wide, text
    assert page.locator("[data-testid=stException]").count() == 0
    assert page.locator("[data-testid=stAlertContentError]").count() == 0
    page.close()
