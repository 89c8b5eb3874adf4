"""The ControlNet types a render can follow: the one registry. Adding a type is one entry here plus its preprocessor
(engine/images.py `control_map` for a pure one; a model-backed one runs engine-side); the request's choices, the
settings' default ids, the tiny profile's folders, the CLI's choices and the Studio's labels all come from it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class ControlType:
    name: str
    label: str
    expects: str  # what the input should be, in the user's words
    default_id: str  # the hub id its weights come from (a local folder may stand in: the settings' `controlnets`)
    tiny_folder: str  # its folder in the tiny profile (random weights, the same architecture)
    # the map it follows, made by engine/images.py `control_map`: edges (Canny, or a drawing's own lines), ink (a
    # drawing's strokes as white on black), thick (strokes thickened), soft (blurred gradient magnitude), downscaled
    # (the image itself, its fine detail left to the model); or by a model, engine-side (engine/render/preprocess.py):
    # disparity (relative depth, near is bright, from a monocular depth estimator)
    preprocess: str
    preprocessor: Literal["pure", "model"] = "pure"  # pure: a function of the image; model: a model, engine-side
    lines: bool = True  # its map is white lines on black: a render's edge fidelity is measured against it
    drawings: bool = True  # a drawn sketch suits it; False: it needs a photo or a render (a drawing has no depth)


CONTROLS: dict[str, ControlType] = {
    c.name: c
    for c in (
        ControlType(
            "canny", "Canny edges",
            "any sketch or photo: its Canny edges (a drawing's own lines with edge mode 'lines')",
            "lllyasviel/sd-controlnet-canny", "sd-controlnet-canny", "edges",
        ),
        ControlType(
            "lineart", "Line art",
            "a drawing: its strokes, anti-aliased, as white lines on black (no model needed); a photo gives its "
            "Canny edges instead",
            "lllyasviel/control_v11p_sd15_lineart", "control_v11p_sd15_lineart", "ink",
        ),
        ControlType(
            "scribble", "Scribble",
            "a rough drawing: its strokes thickened; loose shapes are followed loosely",
            "lllyasviel/control_v11p_sd15_scribble", "control_v11p_sd15_scribble", "thick",
        ),
        ControlType(
            "softedge", "Soft edge",
            "a photo or shaded drawing: soft gradient edges (a Sobel map standing in for HED/PiDiNet)",
            "lllyasviel/control_v11p_sd15_softedge", "control_v11p_sd15_softedge", "soft",
        ),
        ControlType(
            "depth", "Depth",
            "a photo or a render: its depth, estimated on the engine by Depth Anything V2 (a drawn sketch has no "
            "depth: use a photo, or Start from this under a render, to keep its geometry in another style)",
            "lllyasviel/control_v11f1p_sd15_depth", "control_v11f1p_sd15_depth", "disparity", "model",
            lines=False, drawings=False,
        ),
        ControlType(
            "tile", "Tile",
            "a photo or a render to re-style with its detail kept: the image itself, downscaled (with a start image "
            "at a low strength: a detail-preserving re-style or an upscale's refine)",
            "lllyasviel/control_v11f1e_sd15_tile", "control_v11f1e_sd15_tile", "downscaled", lines=False,
        ),
    )
}  # fmt: skip
DEFAULT_CONTROL = next(iter(CONTROLS))  # the one loaded with the base pipeline; the others load on first use
# The request's type of the choice: exactly the registry's names, so the API schema lists them
ControlName = Literal[tuple(CONTROLS)]  # type: ignore[valid-type]


# The type an upscale's refine (and a detail-preserving re-style) follows: the one whose map is the image itself
REFINE_CONTROL = next((c.name for c in CONTROLS.values() if c.preprocess == "downscaled"), DEFAULT_CONTROL)
MAX_UNITS = 3  # ControlNets one render follows at once (diffusers' MultiControlNetModel)


def known() -> str:
    """The names, for a one-line error: 'canny, lineart, scribble or softedge'."""
    names = list(CONTROLS)
    return ", ".join(names[:-1]) + " or " + names[-1]
