"""The Catalog page's Tag photos tab through AppTest: a zip in, a reviewed table out, similar products."""

from __future__ import annotations

import io
import json
import re
import zipfile

from PIL import Image

from tests.engine.test_catalog_llm import ScriptedServer, completion
from tests.engine.test_catalog_tag_run import LISTING
from tests.pages.conftest import ok, settle


def photo_zip() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, colour in (("red.jpg", (200, 30, 30)), ("blue.png", (30, 30, 200)), ("green.png", (30, 160, 40))):
            img = io.BytesIO()
            Image.new("RGB", (120, 150), colour).save(img, "PNG" if name.endswith("png") else "JPEG")
            z.writestr(name, img.getvalue())
        z.writestr("broken.png", b"\x89PNG\r\n\x1a\n broken")
    return buf.getvalue()


def test_tag_a_zip_review_export_and_find_similar(app_env):
    server = ScriptedServer(lambda i, body: (200, completion(json.dumps(LISTING))))
    try:
        at = app_env.app().run()
        at.switch_page("pages/catalog.py").run()
        at.file_uploader(key="tag_zip").set_value(("photos.zip", photo_zip(), "application/zip")).run()
        at.segmented_control(key="tag_llm").set_value("server").run()
        at.text_input(key="tag_llm_url").input(server.url).run()
        at.button(key="tag_start").click().run()
        ok(settle(at, "tag_job"))
    finally:
        server.stop()
    assert [w.value for w in at.main.warning] == [
        w.value for w in at.main.warning if w.value.startswith("Skipped broken.png")
    ]
    assert len(at.main.warning) == 1
    table = at.session_state["tag_table"]
    assert sorted(table["image"]) == ["blue.png", "green.png", "red.jpg"]
    assert set(table["status"]) == {"listed"} and set(table["title"]) == {"Red cotton top"}
    labels = [d.proto.label for d in at.get("download_button")]
    assert "Export CSV (all 3)" in labels and "Export .xlsx (all 3)" in labels

    at.selectbox(key="tag_like").select("red.jpg").run()
    # file names are shown as typed: their Markdown characters escaped (red\.jpg reads as red.jpg)
    hits = [c.value for c in at.caption if re.fullmatch(r"(red|blue|green)\\\.(jpg|png) · \d\.\d\d", c.value)]
    assert len(hits) == 3 and hits[0] == r"red\.jpg · 1.00"
