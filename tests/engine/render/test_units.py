"""Several ControlNets at once: the plan of a request's units (each with its map, weight and range of the steps, its
own image or the sketch) and `Generator.run` over them (diffusers' MultiControlNetModel) on in-memory dummy
components. One ControlNet renders as it always did: the pinned slice (test_sd15.py) holds that."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from engine.errors import BadInput
from engine.images import control_map
from tests.engine.render.dummies import drawing, dummy_params
from tests.engine.render.test_plan import photo, planned, png


# ---- the plan ------------------------------------------------------------------------------------------------------
def test_each_unit_gets_its_map_weight_and_range_and_the_first_is_the_control():
    p = planned(
        sketch=png(photo()),
        controls=[
            {"type": "canny", "weight": 1.2},
            {"type": "depth", "weight": 0.5, "start": 0.1, "end": 0.6},
            {"type": "tile", "weight": 0.3},
        ],
    )
    assert [(u.type, u.weight, u.start, u.end) for u in p.units] == [
        ("canny", 1.2, 0.0, 1.0), ("depth", 0.5, 0.1, 0.6), ("tile", 0.3, 0.0, 1.0),
    ]  # fmt: skip
    assert all(u.map.size == (96, 64) for u in p.units)  # every map at the render's size
    assert p.control is p.units[0].map and p.edge_mode == "canny"
    assert p.request.control == "canny" and p.request.structure_strength == 1.2  # the first unit is `control`
    assert [u.record()["module"] for u in p.units] == ["canny", "depth", "tile"]
    # the depth map is the estimator's, the tile map the image itself (downscaled): neither is edges
    assert not np.array_equal(np.asarray(p.units[1].map), np.asarray(p.units[0].map))
    assert np.abs(np.asarray(p.units[2].map).astype(int) - np.asarray(photo()).astype(int)).mean() < 8


def test_a_request_without_units_plans_one_control_at_the_structure_strength():
    p = planned(sketch=png(photo()), control="tile", structure_strength=0.7)
    assert [(u.type, u.weight, u.start, u.end, u.image_hash) for u in p.units] == [("tile", 0.7, 0.0, 1.0, None)]


def test_a_unit_with_its_own_image_follows_it_fitted_to_the_sketchs_size():
    own = photo(64, 64)
    p = planned(sketch=png(drawing(96, 64)), controls=[{"type": "canny"}, {"type": "tile", "image": png(own)}])
    assert p.units[1].image_hash is not None and p.units[0].image_hash is None
    assert p.units[1].map.size == (96, 64) == (p.width, p.height)  # the sketch sets the size; the image fills it
    # without a sketch or a start image, the first own image sets the size
    alone = planned(controls=[{"type": "tile", "image": png(photo(100, 70))}])
    assert (alone.width, alone.height) == (88, 64) and alone.units[0].map.size == (88, 64)


def test_units_with_nothing_to_follow_are_refused_in_one_line():
    with pytest.raises(BadInput, match="controls: the ControlNets have nothing to follow"):
        planned(controls=[{"type": "canny"}, {"type": "depth"}])
    with pytest.raises(BadInput, match=r"ControlNet 2 \(canny\) has nothing to follow"):
        planned(controls=[{"type": "tile", "image": png(photo())}, {"type": "canny"}])
    assert planned(control="depth").units == []  # one `control` and no sketch: text only, as ever


@pytest.mark.parametrize(
    ("controls", "message"),
    [
        ([{"type": "canny"}] * 4, "controls: at most 3 ControlNets at once (got 4)"),
        ([{"type": "canny", "weight": 4}], "ControlNet 1 weight: must be at most 3"),
        ([{"type": "canny"}, {"type": "depth", "start": 0.8, "end": 0.2}], "ControlNet 2: start (0.8) must be before"),
        ([{"type": "edges"}], "ControlNet 1 type:"),
    ],
)
def test_bad_units_are_one_line_each(controls, message):
    with pytest.raises(BadInput) as err:
        planned(sketch=png(photo()), controls=controls)
    assert str(err.value).startswith(message), str(err.value)


def test_flux_refuses_several_controlnets():
    with pytest.raises(BadInput, match="several ControlNets needs SD 1.5"):
        planned(model="flux", controls=[{"type": "canny"}, {"type": "canny"}])


# ---- the render ----------------------------------------------------------------------------------------------------
def pixels(output) -> np.ndarray:
    return np.asarray(output.images[0]).astype(np.int16)


def units(*specs) -> list[tuple]:
    """(type, map, weight, start, end) per unit, every map the drawing's own lines (the default ControlNet: the
    dummy components hold that one only)."""
    lines = control_map(drawing(), "canny", "lines")[0]
    return [("canny", lines, *spec) for spec in specs]


def test_one_unit_over_all_the_steps_is_the_plain_render(generator):
    plain = pixels(generator.run(dummy_params()))
    assert np.array_equal(pixels(generator.run(dummy_params(controls=units((1.5, 0.0, 1.0))))), plain)


def test_a_second_controlnet_at_weight_0_changes_nothing_and_at_weight_1_changes_the_image(generator):
    plain = pixels(generator.run(dummy_params(structure_strength=1.0)))
    zero = pixels(generator.run(dummy_params(controls=units((1.0, 0.0, 1.0), (0.0, 0.0, 1.0)))))
    assert np.abs(zero - plain).max() <= 1  # summed residuals in another order at most
    second = Image.new("RGB", (64, 64))  # a map of its own: a bright square
    second.paste((255, 255, 255), (16, 16, 48, 48))
    both = pixels(generator.run(dummy_params(controls=[*units((1.0, 0.0, 1.0)), ("canny", second, 1.0, 0.0, 1.0)])))
    assert np.abs(both - plain).mean() > 1


def test_a_units_range_of_the_steps_matters(generator):
    full = pixels(generator.run(dummy_params(controls=units((1.5, 0.0, 1.0)))))
    late = pixels(generator.run(dummy_params(controls=units((1.5, 0.5, 1.0)))))  # the first of 2 steps without it
    assert np.abs(full - late).mean() > 1


def test_several_units_render_through_the_hires_fix_too(generator):
    out = generator.run(dummy_params(controls=units((1.0, 0.0, 1.0), (0.5, 0.2, 0.8)), hires_size=(96, 96)))
    assert out.images[0].size == (96, 96)
