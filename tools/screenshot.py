"""Screenshots of the running app in headless Debian Chromium (never `playwright install`).

python tools/screenshot.py http://localhost:8501 out.png [--page "Style library"] [--prompt TEXT --generate]
"""

from __future__ import annotations

import argparse

from playwright.sync_api import sync_playwright

try:
    from tools.studio_driver import CHROMIUM, CHROMIUM_ARGS
except ModuleNotFoundError:  # run as a script: tools/ is this file's folder
    from studio_driver import CHROMIUM, CHROMIUM_ARGS


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("url")
    p.add_argument("out")
    p.add_argument("--page", help="sidebar link to click first")
    p.add_argument("--prompt")
    p.add_argument("--sketch", help="file to upload")
    p.add_argument("--generate", action="store_true")
    p.add_argument("--width", type=int, default=1440)
    p.add_argument("--height", type=int, default=1000)
    args = p.parse_args()
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": args.width, "height": args.height})
        page.goto(args.url)
        page.wait_for_selector("h1", timeout=120_000)
        if args.page:
            page.get_by_role("link", name=args.page).click()
            page.wait_for_selector(f"h1:has-text('{args.page}')", timeout=60_000)
        if args.sketch:
            page.locator("input[type=file]").first.set_input_files(args.sketch)
        if args.prompt:
            page.get_by_role("textbox").first.fill(args.prompt)
            page.keyboard.press("Control+Enter")
        if args.generate:
            page.get_by_role("button", name="Generate").click()
            page.wait_for_selector("text=saved to", timeout=120_000)
        page.wait_for_timeout(1500)
        page.screenshot(path=args.out, full_page=True)
        browser.close()


if __name__ == "__main__":
    main()
