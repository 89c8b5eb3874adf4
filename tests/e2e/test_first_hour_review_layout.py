"""The Style library as a new designer sees it at 1440×900 in Chromium (issue 29, item 15): every style's name in
full, never cut with an ellipsis, and the cards in even rows: one picture height, one card height per row."""

from __future__ import annotations

from tests.conftest import make_data_dir
from tools.studio_driver import go_to_page, streamlit_app, tiny_env

# Per card (the bordered box around each picture): its box, its picture's height, its name as shown, and whether any
# box around the name cuts it short
MEASURE = """() => [...document.querySelectorAll('[data-testid=stMain] img')].map(img => {
  let card = img.parentElement;
  while (card && getComputedStyle(card).borderTopWidth === '0px') card = card.parentElement;
  const box = card.getBoundingClientRect();
  const name = card.querySelector('[data-testid=stMarkdownContainer] strong');
  let cut = false;
  for (let el = name; el && el !== card; el = el.parentElement) {
    if (el.scrollWidth > el.clientWidth + 1 && getComputedStyle(el).overflowX !== 'visible') cut = true;
  }
  return {top: Math.round(box.top), height: Math.round(box.height), image: Math.round(img.height),
          name: name ? name.innerText : '', cut};
})"""


def test_the_style_library_shows_whole_names_in_even_rows(browser, tmp_path, tiny_models):
    from engine.local import LocalEngine
    from engine.settings import Settings

    data = make_data_dir(tmp_path / "data", tiny_models, warm=True)
    names = [s.name for s in LocalEngine(Settings(profile="tiny", data_dir=data, device="cpu")).styles.list()]
    with streamlit_app(tiny_env(data)) as (url, _):
        page = browser.new_page(viewport={"width": 1440, "height": 900})
        page.set_default_timeout(90_000)
        page.goto(url)
        page.wait_for_selector("h1", timeout=120_000)
        go_to_page(page, "Style library")
        page.wait_for_function(  # every style's picture on the page, loaded
            f"document.querySelectorAll('[data-testid=stMain] img').length >= {len(names)}"
            " && [...document.querySelectorAll('[data-testid=stMain] img')].every(i => i.complete)"
        )
        page.wait_for_timeout(500)  # the last layout pass
        page.screenshot(path=str(tmp_path / "style-library.png"))
        cards = page.evaluate(MEASURE)
        page.close()
    assert sorted(c["name"] for c in cards) == sorted(names)
    assert not [c["name"] for c in cards if c["cut"]]
    assert len({c["image"] for c in cards}) == 1, [(c["name"], c["image"]) for c in cards]
    rows: dict[int, set[int]] = {}
    for c in cards:
        rows.setdefault(c["top"], set()).add(c["height"])
    assert len(rows) == -(-len(names) // 4), rows  # four to a row, every card of a row level with the others
    assert all(len(heights) == 1 for heights in rows.values()), rows
