"""`Generator.run` (engine/render/sd15.py) on the in-memory dummy components: 64×64, 2 steps, fixed seeds, fp32 on
the CPU. The same call gives the same pixels; a pinned corner of the image says they are still the ones they were."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from engine.errors import Cancelled
from tests.engine.render.dummies import drawing, dummy_params

# The 3×3 bottom-right corner of the last (blue) channel of `dummy_params()`'s image, 8-bit, as diffusers' pipeline
# tests pin `image[0, -3:, -3:, -1]`. To regenerate it (after a deliberate change to the tiny spec, its seeds, the
# Generator or diffusers' numerics), print it and paste it here:
#   .venv/bin/python -c "import numpy as np; from engine.render.sd15 import Generator; \
#     from tests.engine.render.dummies import *; \
#     g = Generator(dummy_pipeline(dummy_components())); \
#     print(np.asarray(g.run(dummy_params()).images[0])[-3:, -3:, -1].tolist())"
EXPECTED_SLICE = np.array([[130, 113, 127], [130, 118, 127], [128, 119, 126]])
# One 8-bit level either way: fp32 on another CPU (its SIMD width orders the sums differently) moves values by ~1e-6,
# which can tip one across a rounding edge; anything more is a real change of the render.
ATOL = 1


def pixels(output, i: int = 0) -> np.ndarray:
    return np.asarray(output.images[i]).astype(np.int16)


def test_the_image_is_the_pinned_one(generator):
    image = pixels(generator.run(dummy_params()))
    assert image.shape == (64, 64, 3)
    image_slice = image[-3:, -3:, -1]
    assert np.abs(image_slice - EXPECTED_SLICE).max() <= ATOL, image_slice.tolist()


def test_the_same_call_gives_the_same_pixels_again_and_on_new_components(generator, make_generator):
    first = pixels(generator.run(dummy_params()))
    assert np.array_equal(first, pixels(generator.run(dummy_params())))
    assert np.array_equal(first, pixels(make_generator(0).run(dummy_params())))


def test_other_weights_give_other_pixels(generator, make_generator):
    """The pin is no accident of the render: components built under another seed render something else."""
    assert np.abs(pixels(make_generator(1).run(dummy_params())) - pixels(generator.run(dummy_params()))).mean() > 5


def test_another_seed_gives_another_image_and_each_variation_is_its_seeds_image(generator):
    one = pixels(generator.run(dummy_params(seeds=[7])))
    other = pixels(generator.run(dummy_params(seeds=[8])))
    assert np.abs(one - other).mean() > 5
    both = generator.run(dummy_params(seeds=[7, 8]))
    assert len(both.images) == 2
    # a variation renders again alone by its seed (one level: a batch of two sums in another order)
    assert np.abs(pixels(both, 0) - one).max() <= 1 and np.abs(pixels(both, 1) - other).max() <= 1


def test_the_sketch_steers_the_image_by_its_structure_strength(generator):
    followed = pixels(generator.run(dummy_params()))
    ignored = pixels(generator.run(dummy_params(structure_strength=0.0)))
    assert np.abs(followed - ignored).mean() > 1


def test_the_prompt_and_the_negative_prompt_change_the_image(generator):
    base = pixels(generator.run(dummy_params()))
    assert np.abs(pixels(generator.run(dummy_params(prompt="a red chair"))) - base).mean() > 0.5
    assert np.abs(pixels(generator.run(dummy_params(negative_prompt="blurry"))) - base).mean() > 0.5


def test_a_style_reference_acts_by_its_strength_and_at_zero_not_at_all(generator):
    base = pixels(generator.run(dummy_params()))
    reference = [(drawing(48, 48), 1.0)]
    assert np.abs(pixels(generator.run(dummy_params(references=reference, style_strength=2.0))) - base).mean() > 0.3
    assert np.array_equal(pixels(generator.run(dummy_params(references=reference, style_strength=0.0))), base)


def test_text_only_renders_at_the_size_asked(generator):
    out = generator.run(dummy_params(control=None, width=96, height=64))
    assert out.images[0].size == (96, 64) and pixels(out).std() > 1


def test_progress_is_reported_after_every_step_and_the_timings_are_kept(generator):
    seen = []
    out = generator.run(dummy_params(steps=3), on_progress=lambda p: seen.append((p.stage, p.step, p.total)))
    assert seen == [("denoise", 1, 3), ("denoise", 2, 3), ("denoise", 3, 3)]
    assert len(out.timings["steps"]) == 3
    assert {"style_encode", "prompt_encode", "denoise", "vae_decode"} <= set(out.timings)


def test_a_cancel_stops_the_render_between_steps_in_one_line(generator):
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(Cancelled) as caught:
        generator.run(dummy_params(steps=3), cancel=cancel)
    assert str(caught.value) == "cancelled after 1 of 3 steps"
    assert pixels(generator.run(dummy_params())).shape == (64, 64, 3)  # and the Generator renders on
