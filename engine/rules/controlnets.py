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
    # drawing's strokes as white on black), thick (strokes thickened), soft (blurred gradient magnitude)
    preprocess: str
    preprocessor: Literal["pure", "model"] = "pure"  # pure: a function of the image; model: a model, engine-side


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
    )
}  # fmt: skip
DEFAULT_CONTROL = next(iter(CONTROLS))  # the one loaded with the base pipeline; the others load on first use
# The request's type of the choice: exactly the registry's names, so the API schema lists them
ControlName = Literal[tuple(CONTROLS)]  # type: ignore[valid-type]


def known() -> str:
    """The names, for a one-line error: 'canny, lineart, scribble or softedge'."""
    names = list(CONTROLS)
    return ", ".join(names[:-1]) + " or " + names[-1]
