"""The Studio's Describe, in Local and Remote mode: on an uploaded sketch, on the start image and under a render it
fills the prompt box with the engine's description (still editable, the words' scores on hover), and Undo brings
back the words it replaced."""

from __future__ import annotations

from PIL import Image, ImageDraw

from tests.conftest import line_sketch, png
from tests.pages.conftest import ok, texts
from tests.pages.test_app import generate, studio

QUICK = {"steps": 1, "size": 256, "seed_locked": True, "style_mode": "None"}


def photo() -> bytes:
    img = Image.new("RGB", (96, 72), (60, 110, 170))
    ImageDraw.Draw(img).ellipse([20, 10, 70, 60], fill=(230, 200, 40))
    return png(img)


def shown(at) -> str:
    """The page's text as read (user text is escaped Markdown: "house\\.png")."""
    return texts(at).replace("\\", "")


def prompt_box(at) -> str:
    return at.text_area(key="prompt").value


def test_describe_fills_the_prompt_from_an_upload_the_start_image_and_a_render(app_env):
    engine = app_env.engine  # the engine behind the page (the server's in Remote mode)
    sketch = png(line_sketch(96, 64))
    at = studio(app_env, source="Upload", prompt="my own words", **QUICK)
    at.file_uploader(key="upload").set_value(("house.png", sketch, "image/png")).run()
    ok(at)
    at = ok(at.button(key="describe_upload").click().run())
    expected = engine.styles.describe(sketch)
    assert prompt_box(at) == expected.prompt
    assert "Prompt written from the upload house.png · hover for the scores" in shown(at)
    (caption,) = [c for c in at.caption if c.value.startswith("Prompt written from")]
    best = expected.terms["object"][0]
    assert f"**{best.term}** {best.score:.2f}" in caption.help.replace(
        "\\", ""
    )  # the picked words in bold, with their CLIP cosine
    assert "Material: " in caption.help and expected.model in caption.help

    at.text_area(key="prompt").input(prompt_box(at) + ", at dusk").run()  # it stays editable
    assert "(edited since)" in shown(ok(at))
    at = ok(at.button(key="describe_undo").click().run())
    assert prompt_box(at) == "my own words"  # the words it replaced are back

    at.session_state["init_on"] = True
    at.run()
    at.file_uploader(key="init_upload").set_value(("photo.png", photo(), "image/png")).run()
    at = ok(at.button(key="describe_init").click().run())
    assert prompt_box(at) == engine.styles.describe(photo()).prompt
    assert "Prompt written from the start image (photo.png)" in shown(at)
    at.session_state["init_on"] = False

    at = ok(generate(at.run()))
    result = at.session_state["result"]
    at = ok(at.button(key=f"describe_{result.run_id}_0").click().run())
    assert prompt_box(at) == engine.styles.describe(result.png[0]).prompt
    assert "Prompt written from render" in shown(at)
