"""A page opened by its own address (`/history`) is not a way around the app's front door: Streamlit runs the
pages/ folder's files directly then, without app.py and its password gate."""

from __future__ import annotations

from playwright.sync_api import sync_playwright

from tests.conftest import make_data_dir
from tools.studio_driver import CHROMIUM, CHROMIUM_ARGS, streamlit_app, tiny_env

PASSWORD = "correct horse battery staple"


def test_a_page_opened_by_its_address_asks_for_the_password_first(tmp_path, tiny_models):
    env = tiny_env(make_data_dir(tmp_path / "data", tiny_models), DESIGN_STUDIO_UI_PASSWORD=PASSWORD)
    with streamlit_app(env) as (url, _), sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        for path in ("/history", "/sweeps", "/tune"):
            page = browser.new_page()
            page.goto(url + path)
            page.get_by_label("Team password").wait_for(timeout=60_000)
            body = page.locator("body").inner_text()
            assert "Team password" in body
            assert page.locator("h1").filter(has_text="History").count() == 0  # not the page itself
            page.close()
        browser.close()
