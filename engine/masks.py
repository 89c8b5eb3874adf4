"""Masks as files, outlines, COCO RLE and overlays: pure helpers (numpy, OpenCV, Pillow) the pages, the CLI and
the engine share; no model here."""

from __future__ import annotations

import io
import json
import math
from typing import Any

import cv2
import numpy as np
from PIL import Image

from .errors import BadInput

# One colour per region, in order: the overlay, the list in the Studio and the metadata use the same.
REGION_COLORS = ["#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#bfef45"]


MAX_POINTS = 64  # SAM2 point prompts in one call: a designer clicks a few; 100k took 20 s


def parse_json_list(text: str | None, name: str, length: int | None = None) -> list | None:
    """A JSON list from a form field or a CLI flag (points, labels, a box), or one line saying what is wrong:
    points are at most MAX_POINTS [x, y] pairs and a box four numbers (finite), labels are 0 or 1."""
    if text is None or text == "":
        return None
    if len(text) > 100_000:
        raise BadInput(f"{name} is too long ({len(text)} characters)")
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        raise BadInput(f"{name} must be JSON, e.g. {EXAMPLES[name]}") from None
    if not isinstance(value, list) or (length is not None and len(value) != length):
        raise BadInput(f"{name} must be a JSON list, e.g. {EXAMPLES[name]}")
    return check_list(value, name)


def check_list(value, name: str) -> list:
    """One of SAM2's prompts as given (from JSON or from Python), checked: points at most MAX_POINTS [x, y] pairs,
    a box four finite numbers, labels 0 or 1; a plain list back, or one line saying what is wrong."""
    if not isinstance(value, list | tuple):
        raise BadInput(f"{name} must be a list, e.g. {EXAMPLES[name]}")
    value = list(value)
    if name == "points":
        if len(value) > MAX_POINTS:
            raise BadInput(f"{len(value)} points is too many: at most {MAX_POINTS} in one call (draw a box instead)")
        if not all(isinstance(p, list | tuple) and len(p) == 2 and all(map(_finite, p)) for p in value):
            raise BadInput(f"points must be a JSON list of [x, y] pairs, e.g. {EXAMPLES[name]}")
        return [list(p) for p in value]
    if name == "box" and (len(value) != 4 or not all(map(_finite, value))):
        raise BadInput(f"box must be four numbers x0, y0, x1, y1, e.g. {EXAMPLES[name]}")
    if name == "labels":
        if len(value) > MAX_POINTS:
            raise BadInput(f"{len(value)} labels is too many: at most {MAX_POINTS}, one per point")
        if not all(v in (0, 1) and not isinstance(v, float | bool) for v in value):
            raise BadInput(f"labels must be 1 (inside) or 0 (outside), one per point, e.g. {EXAMPLES[name]}")
    return value


def check_prompts(points, labels, box) -> tuple[list | None, list | None, list | None]:
    """SAM2's prompts, checked the same way for every route (the form of /segment, the JSON of
    /api/renders/segment, a Python caller): each as `check_list` says, a point or a box at least, one label per
    point."""
    points = check_list(points, "points") if points is not None else None
    labels = check_list(labels, "labels") if labels else None  # none (or []): every point inside the object
    box = check_list(box, "box") if box is not None else None
    if not points and box is None:
        raise BadInput("segmenting needs a point or a box on the image")
    if labels is not None and len(labels) != len(points or []):
        raise BadInput(f"give one label per point ({len(points or [])} points, {len(labels)} labels)")
    return points, labels, box


def _finite(v) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


EXAMPLES = {"points": "[[120, 80], [200, 90]]", "labels": "[1, 0]", "box": "[10, 20, 200, 180]"}


def mask_png(mask: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(mask.astype(np.uint8) * 255, "L").save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def read_mask(
    data: bytes,
    size: tuple[int, int] | None = None,
    name: str = "mask",
    max_pixels: int = 64_000_000,
    max_bytes: int | None = None,
) -> np.ndarray:
    """A mask file (white = inside) → bool H×W; with `size` (w, h) it must match. Empty masks are refused."""
    from .images import decode

    img = decode(data, max_pixels, max_bytes, name=name)
    mask = np.asarray(img.convert("L")) > 127
    if size is not None and (img.width, img.height) != tuple(size):
        raise BadInput(
            f"{name} is {img.width}×{img.height} but the image is {size[0]}×{size[1]}; "
            "make the mask from the same image (segment it, or export it at the image's size)"
        )
    if not mask.any():
        raise BadInput(f"{name} is empty (no white pixels); click inside the object you want, or draw it in white")
    return mask


def polygons(mask: np.ndarray, tolerance: float = 1.0, min_area: float = 4.0) -> list[list[list[int]]]:
    """The mask's outer outlines as simplified polygons ([[x, y], ...] each), largest first."""
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    contours = sorted(contours, key=cv2.contourArea, reverse=True)
    out = []
    for c in contours:
        if cv2.contourArea(c) < min_area and len(contours) > 1:
            continue
        simple = cv2.approxPolyDP(c, tolerance, True)
        if len(simple) >= 3:
            out.append(simple.reshape(-1, 2).astype(int).tolist())
    return out


def fill_polygons(polys: list[list[list[int]]], size: tuple[int, int]) -> np.ndarray:
    """Polygons → bool mask of `size` (w, h): the inverse of `polygons`, up to its simplification."""
    canvas = np.zeros((size[1], size[0]), np.uint8)
    cv2.fillPoly(canvas, [np.asarray(p, np.int32) for p in polys], 1)
    return canvas.astype(bool)


def rle_encode(mask: np.ndarray) -> dict[str, Any]:
    """COCO's uncompressed RLE: run lengths over the column-major pixels, starting with a run of zeros."""
    flat = np.asarray(mask, bool).flatten(order="F")
    changes = np.flatnonzero(np.diff(flat.astype(np.int8))) + 1
    bounds = np.concatenate([[0], changes, [flat.size]])
    counts = np.diff(bounds).tolist()
    if flat.size and flat[0]:
        counts = [0, *counts]
    return {"size": [int(mask.shape[0]), int(mask.shape[1])], "counts": counts}


def rle_decode(rle: dict[str, Any]) -> np.ndarray:
    h, w = rle["size"]
    counts = [int(c) for c in rle["counts"]]
    if sum(counts) != h * w or any(c < 0 for c in counts):
        raise BadInput(f"the RLE mask's counts add up to {sum(counts)}, not {h}×{w}")
    values = np.zeros(len(counts), bool)
    values[1::2] = True
    return np.repeat(values, counts).reshape((h, w), order="F")


def overlay(image: Image.Image, masks: list[np.ndarray], alpha: float = 0.45) -> Image.Image:
    """The image with each mask tinted in its region colour (semi-transparent) and outlined."""
    base = np.asarray(image.convert("RGB")).astype(np.float32)
    out = base.copy()
    for i, mask in enumerate(masks):
        if mask.shape != base.shape[:2]:
            mask = np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).resize(image.size, Image.NEAREST)) > 127
        rgb = np.array([int(REGION_COLORS[i % len(REGION_COLORS)][j : j + 2], 16) for j in (1, 3, 5)], np.float32)
        out[mask] = (1 - alpha) * out[mask] + alpha * rgb
        contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(out, contours, -1, rgb.tolist(), max(1, round(min(image.size) / 256)))
    return Image.fromarray(out.clip(0, 255).astype(np.uint8))


def exclusive(masks: list[np.ndarray]) -> list[np.ndarray]:
    """Overlapping regions as layers: where two overlap, the later one wins."""
    out = [m.copy() for m in masks]
    for i in range(len(out)):
        for later in out[i + 1 :]:
            out[i] &= ~later
    return out
