"""The plan (engine/render/plan.py): a request checked and made ready for the pipeline, with no model and no side
effect: the size a render comes out at, the seeds it uses, the control map it follows, and the one-line refusals."""

from __future__ import annotations

import io
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from engine.errors import BadInput, UnsupportedImage
from engine.render.plan import plan
from engine.render.preprocess import Preprocessors
from engine.rules.controlnets import CONTROLS, DEFAULT_CONTROL
from engine.rules.models import TEXT_ONLY, rules
from engine.schema import MAX_SEED, GenerateRequest
from engine.tiny import depth_components
from tests.engine.render.dummies import drawing

MAX_PIXELS, MAX_BYTES = 4_000_000, 10_000_000


def png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def photo(width: int = 96, height: int = 64) -> Image.Image:
    """Not a drawing: smooth colour gradients with a bright disc, so no tone dominates."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    disc = ((x - width / 2) ** 2 + (y - height / 2) ** 2 < (height / 3) ** 2) * 90
    rgb = np.stack([x * 255 / width, y * 255 / height, 128 + disc], axis=-1)
    return Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8))


def request(**values) -> GenerateRequest:
    return GenerateRequest.build(**{"prompt": "a timber cabin at dusk", "size": 64, "steps": 2, **values})


def planned(cpu: bool = False, **values):
    return plan(request(**values), MAX_PIXELS, MAX_BYTES, cpu=cpu, maps=MAPS)


# the engine's preprocessors with the tiny profile's depth estimator, in memory (a model-backed map, no ModelStore)
MAPS = Preprocessors(SimpleNamespace(depth=depth_components()))


# ---- sizes --------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("values", "size"),
    [
        ({"size": 100}, (96, 96)),  # text only: a square, the short side rounded down to a multiple of 8
        ({"size": 64, "aspect": "16:9"}, (112, 64)),  # text only at an aspect: short side 64, the long one rounded
        ({"size": 64, "aspect": "9:16"}, (64, 112)),
        ({"size": 64, "sketch": png(drawing(96, 64))}, (96, 64)),  # the sketch sets the shape
        ({"size": 64, "sketch": png(drawing(100, 70))}, (88, 64)),  # 91.4 px → 88: a multiple of 8
        ({"size": 64, "init_image": png(photo(100, 70))}, (88, 64)),  # no sketch: the image sets it
    ],
)
def test_the_render_size_is_the_short_side_asked_in_multiples_of_the_models_step(values, size):
    p = planned(**values)
    assert (p.width, p.height) == size
    multiple = rules("sd15").multiple
    assert p.width % multiple == 0 and p.height % multiple == 0
    if p.control is not None:
        assert p.control.size == size  # the control map is at the render's size
    if p.init is not None:
        assert p.init.size == size


def test_a_sketch_and_an_image_together_the_sketch_sets_the_size_and_the_image_fills_it():
    p = planned(sketch=png(drawing(96, 64)), init_image=png(photo(64, 96)))
    assert (p.width, p.height) == (96, 64) and p.init.size == (96, 64)


def test_flux_renders_a_square_of_the_size_whatever_the_aspect():
    p = planned(model="flux", size=100, aspect="16:9")
    assert (p.width, p.height) == (96, 96)


def test_live_mode_on_a_cpu_is_capped_at_its_small_size_and_the_request_is_left_as_it_was():
    r = request(mode="live", size=512, hires=1.5)
    p = plan(r, MAX_PIXELS, MAX_BYTES, cpu=True)
    assert (p.width, p.height) == (256, 256)
    assert p.hires_size is None  # a live frame has no hires fix
    assert (r.size, r.hires) == (512, 1.5)  # planning changed nothing in the caller's request
    assert (plan(r, MAX_PIXELS, MAX_BYTES, cpu=False).width) == 512  # on a GPU the size asked


def test_the_hires_fix_size_is_the_factor_in_multiples_of_8():
    assert planned(sketch=png(drawing(96, 64)), hires=1.5).hires_size == (144, 96)
    assert planned(size=72, hires=1.3).hires_size == (96, 96)  # 93.6 → 96
    assert planned().hires_size is None


# ---- seeds --------------------------------------------------------------------------------------------------------
def test_variations_take_consecutive_seeds_from_the_requests_seed():
    assert planned(seed=7, variations=3).seeds == [7, 8, 9]
    assert planned(seed=7).seeds == [7]


def test_seeds_wrap_around_at_the_largest_seed():
    assert planned(seed=MAX_SEED, variations=2).seeds == [MAX_SEED, 0]


def test_without_a_seed_one_is_drawn_and_the_variations_follow_it():
    seeds = planned(variations=2).seeds
    assert 0 <= seeds[0] <= MAX_SEED and seeds[1] == (seeds[0] + 1) % (MAX_SEED + 1)


# ---- refusals, each one line ----------------------------------------------------------------------------------------
def refusal(error: type[Exception], **values) -> str:
    with pytest.raises(error) as caught:
        planned(**values)
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_a_mask_without_an_image_to_repaint_is_refused():
    mask = png(Image.new("L", (64, 64), 255))
    with pytest.raises(BadInput) as caught:
        request(mask=mask)
    assert str(caught.value) == "a mask needs the image to repaint: give an init image (white in the mask = change)"


def test_a_sketch_that_is_not_an_image_is_refused():
    message = refusal(UnsupportedImage, sketch=b"these are not the bytes of an image")
    assert message == "sketch is not an image (PNG, JPEG, WebP, GIF, BMP or TIFF expected)"


def test_canny_thresholds_low_above_high_are_refused():
    message = refusal(BadInput, sketch=png(photo()), edge_mode="canny", canny_low=200, canny_high=100)
    assert message == "canny thresholds: low (200) must not exceed high (100)"


def test_flux_with_a_sketch_is_refused_by_the_models_rules():
    assert refusal(BadInput, model="flux", sketch=png(drawing())) == TEXT_ONLY
    assert refusal(BadInput, model="flux", style="Walnut") == TEXT_ONLY  # no style reference either


def test_flux_asked_for_what_only_sd15_does_says_what_and_why():
    message = refusal(BadInput, model="flux", control="scribble")
    assert message == "the scribble ControlNet needs SD 1.5; FLUX.1-schnell + LoRA renders from text only here"


def test_flux_turns_retrieval_off_rather_than_refusing():
    assert planned(model="flux").request.use_style is False
    assert planned().request.use_style is True


# ---- the control map -------------------------------------------------------------------------------------------------
def pen_drawing() -> Image.Image:
    """The drawing as a pen on a tablet leaves it: anti-aliased strokes (drawn at 4× and scaled down)."""
    return drawing(384, 256).resize((96, 64), Image.Resampling.LANCZOS)


def grey_levels(image: Image.Image) -> int:
    return len(np.unique(np.asarray(image)[..., 0]))


@pytest.mark.parametrize("control", list(CONTROLS))
def test_each_controlnet_type_follows_the_map_the_registry_names(control):
    """The registry (engine/rules/controlnets.py) decides the map: edges and their own line mode, a drawing's ink
    anti-aliased, its strokes thickened for scribble, soft gradients; the plan records which it made."""
    p = planned(sketch=png(pen_drawing()), control=control)
    edges = planned(sketch=png(pen_drawing()), control=DEFAULT_CONTROL).control
    lit = np.asarray(p.control)[..., 0] > 127
    assert p.control.mode == "RGB" and p.control.size == (96, 64) and lit.any()
    kind = CONTROLS[control].preprocess
    if kind == "edges":
        assert p.edge_mode == "lines" and grey_levels(p.control) == 2  # a drawing's own lines, black or white
    else:
        assert p.edge_mode == control
        assert not np.array_equal(np.asarray(p.control), np.asarray(edges))
    if kind == "ink":
        assert grey_levels(p.control) > 2  # the strokes' anti-aliasing is kept
    if kind == "thick":
        assert lit.sum() > (np.asarray(edges)[..., 0] > 127).sum()  # thicker than the lines
    if kind in ("soft", "disparity", "downscaled"):  # continuous tones: gradients, depth, the image itself
        assert grey_levels(p.control) > 8


def test_a_photo_gives_canny_edges_and_lineart_says_it_fell_back_to_them():
    assert planned(sketch=png(photo())).edge_mode == "canny"
    assert planned(sketch=png(photo()), control="lineart").edge_mode == "lineart-canny"


def test_canny_thresholds_change_the_edges():
    low = planned(sketch=png(photo()), edge_mode="canny", canny_low=5, canny_high=20).control
    high = planned(sketch=png(photo()), edge_mode="canny", canny_low=200, canny_high=250).control
    assert (np.asarray(low) > 0).sum() > (np.asarray(high) > 0).sum()


def test_without_a_sketch_controlnet_follows_the_images_own_edges_and_text_only_has_no_map():
    p = planned(init_image=png(photo()))
    assert p.control is not None and p.edge_mode == "canny" and p.init is not None
    text = planned()
    assert text.control is None and text.edge_mode is None and text.sketch_hash is None
