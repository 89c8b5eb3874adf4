"""Decode and validate images, fit them to the generation size, and make edge maps."""

from __future__ import annotations

import hashlib
import io
import re
import threading
import warnings
from contextlib import nullcontext
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import BadInput, TooLarge, UnsupportedImage
from .rules.controlnets import CONTROLS, DEFAULT_CONTROL
from .rules.controlnets import known as known_controls

ACCEPTED = {"PNG", "JPEG", "WEBP", "MPO", "GIF", "BMP", "TIFF"}  # GIF and TIFF: the first frame or page
FORMATS = "PNG, JPEG, WebP, GIF, BMP or TIFF"
UPLOAD_TYPES = ["png", "jpg", "jpeg", "webp", "gif", "bmp", "tif", "tiff"]  # what the pages' uploaders offer
MAX_SIDE = 1024
TILE_FACTOR = 2  # the tile ControlNet's map: the image downscaled this many times (and back to its size)
HEAVY_PIXELS = 4_000_000  # decodes above this many pixels take turns: one at a time per process
_heavy = threading.BoundedSemaphore(1)


def read_bytes(path: str | Path, max_bytes: int) -> bytes:
    """Read an input file with the upload limit applied before it is all in memory."""
    path = Path(path)
    if not path.is_file():
        raise BadInput(f"no such file: {path}")
    size = path.stat().st_size
    if size > max_bytes:
        raise TooLarge(f"{path.name} is {size / 1e6:.1f} MB; the limit is {max_bytes / 1e6:.0f} MB")
    return path.read_bytes()


def decode(data: bytes, max_pixels: int, max_bytes: int | None = None, name: str = "image") -> Image.Image:
    """Bytes → an RGB image: alpha composited on white, EXIF orientation applied, modes normalised."""
    if not data:
        raise UnsupportedImage(f"{name} is empty (0 bytes)")
    if max_bytes is not None and len(data) > max_bytes:
        raise TooLarge(f"{name} is {len(data) / 1e6:.1f} MB; the limit is {max_bytes / 1e6:.0f} MB")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            # Header only so far: refuse huge canvases before a single pixel is decoded.
            w, h = img.size
            if w * h > max_pixels:
                raise TooLarge(f"{name} is {w}×{h} pixels; the limit is {max_pixels / 1e6:.0f} megapixels")
            if img.format not in ACCEPTED:
                raise UnsupportedImage(f"{name} is {img.format}; use {FORMATS}")
            with _heavy if w * h > HEAVY_PIXELS else nullcontext():
                img.load()  # a GIF's or a TIFF's first frame only
                return to_rgb(img)
    except BadInput:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        # Pillow refuses before we see the header; its message carries the pixel count.
        found = re.search(r"\((\d+) pixels\)", str(exc))
        size = f"{int(found.group(1)) / 1e6:.0f} megapixels" if found else "too many pixels"
        raise TooLarge(f"{name} has {size}; the limit is {max_pixels / 1e6:.0f} megapixels") from None
    except UnidentifiedImageError:
        raise UnsupportedImage(f"{name} is not an image ({FORMATS} expected)") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise UnsupportedImage(f"{name} is truncated or corrupt ({exc})") from None


def to_rgb(img: Image.Image) -> Image.Image:
    """Any decoded mode → 8-bit RGB, without float64 copies: 16- and 32-bit grey go through a lookup table."""
    img = ImageOps.exif_transpose(img)
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img)
        if img.mode == "I":
            arr = np.clip(arr, 0, 65535)
        top = 65535 if arr.size and int(arr.max()) > 255 else 255
        lut = ((np.arange(top + 1, dtype=np.uint32) * 255 + top // 2) // top).astype(np.uint8)
        img = Image.fromarray(lut[arr], "L")
    elif img.mode == "F":
        arr = np.nan_to_num(np.asarray(img, np.float32))
        top = np.float32(255.0 if arr.size and float(arr.max()) > 1.0 else 1.0)
        img = Image.fromarray(np.clip(arr * (255 / top), 0, 255).astype(np.uint8), "L")
    if img.mode == "P":
        img = img.convert("RGBA")
    if img.mode in ("LA", "RGBA", "PA"):
        img = img.convert("RGBA")
        white = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(white, img)
    return img.convert("RGB")


def fit_size(width: int, height: int, short_side: int = 512, max_side: int = MAX_SIDE) -> tuple[int, int]:
    """Scale so the short side is `short_side`, keep the aspect, cap the long side, multiples of 8."""
    scale = short_side / min(width, height)
    scale = min(scale, max_side / max(width, height))
    w = max(8, int(round(width * scale / 8)) * 8)
    h = max(8, int(round(height * scale / 8)) * 8)
    return w, h


def fit(img: Image.Image, short_side: int = 512) -> Image.Image:
    w, h = fit_size(*img.size, short_side=short_side)
    if (w, h) == img.size:
        return img
    return img.resize((w, h), Image.Resampling.LANCZOS)


def is_line_art(gray: np.ndarray) -> bool:
    """A drawing: nearly every pixel is background or ink, with one clearly dominant tone."""
    small = cv2.resize(gray, (128, 128), interpolation=cv2.INTER_AREA) if gray.size > 128 * 128 else gray
    light = np.mean(small >= 200)
    dark = np.mean(small <= 55)
    return (light + dark) >= 0.9 and max(light, dark) >= 0.6


def edges(img: Image.Image, mode: str = "auto", low: int = 50, high: int = 150) -> tuple[Image.Image, str]:
    """The control map ControlNet expects (white lines on black, 3 channels) and the mode used."""
    gray = cv2.cvtColor(np.asarray(img.convert("RGB")), cv2.COLOR_RGB2GRAY)
    if mode == "auto":
        mode = "lines" if is_line_art(gray) else "canny"
    if mode == "lines":
        _, binary = cv2.threshold(gray, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
        if np.mean(binary) > 127:  # dark strokes on a light page: invert to white on black
            binary = 255 - binary
        out = binary
    elif mode == "canny":
        if low > high:
            raise BadInput(f"canny thresholds: low ({low}) must not exceed high ({high})")
        out = cv2.Canny(gray, low, high)
    else:
        raise BadInput(f"edge mode '{mode}' is unknown; use auto, lines or canny")
    return Image.fromarray(np.stack([out] * 3, axis=-1)), mode


def control_map(
    img: Image.Image, control: str = DEFAULT_CONTROL, mode: str = "auto", low: int = 50, high: int = 150
) -> tuple[Image.Image, str]:
    """What the chosen ControlNet follows (its registry entry, engine/rules/controlnets.py, names the map and says
    what it expects), and the preprocessor used, as recorded in the metadata's `edge_mode`:
    - edges: `edges` (a drawing's own lines, or Canny edges);
    - ink: a drawing's strokes inverted, anti-aliasing kept (white lines on black, as the lineart annotator draws
      them); a photo has no strokes to keep, so its Canny edges (recorded as `<type>-canny`);
    - thick: the strokes (or edges) thickened, as the scribble model was trained on;
    - soft: blurred Sobel gradient magnitude, soft and continuous (standing in for HED / PiDiNet);
    - downscaled: the image itself, downscaled `TILE_FACTOR`× and back to its size (as the tile model's
      tile_resample does): colours and shapes kept, the fine detail left for the model to add.
    A model-backed type's map is made engine-side (engine/render/preprocess.py), not here."""
    if control not in CONTROLS:
        raise BadInput(f"ControlNet '{control}' is unknown; use {known_controls()}")
    if CONTROLS[control].preprocessor == "model":  # its map is made by a model, engine-side
        raise BadInput(f"the {control} ControlNet's map is made by a model on the engine, not from the image alone")
    kind = CONTROLS[control].preprocess
    if kind == "edges":
        return edges(img, mode, low, high)
    if kind == "downscaled":
        rgb = np.asarray(img.convert("RGB"))
        h, w = rgb.shape[:2]
        small = cv2.resize(rgb, (max(1, w // TILE_FACTOR), max(1, h // TILE_FACTOR)), interpolation=cv2.INTER_AREA)
        return Image.fromarray(cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)), control
    gray = cv2.cvtColor(np.asarray(img.convert("RGB")), cv2.COLOR_RGB2GRAY)
    drawing = is_line_art(gray)
    used = control
    if kind == "ink":
        if drawing:
            ink = gray.astype(np.float32)
            if np.median(ink) > 127:  # dark strokes on a light page
                ink = 255 - ink
            page = float(np.median(ink))
            out = np.clip((ink - page) * 255 / max(1.0, float(ink.max()) - page), 0, 255).astype(np.uint8)
        else:
            out, used = cv2.Canny(gray, low, high), f"{control}-canny"
    elif kind == "thick":
        lines = np.asarray(edges(img, "lines" if drawing else "canny", low, high)[0])[..., 0]
        width = max(3, round(min(gray.shape) / 128))
        out = cv2.dilate(lines, np.ones((width, width), np.uint8))
    elif kind == "soft":
        blurred = cv2.GaussianBlur(gray, (0, 0), max(1.0, min(gray.shape) / 256))
        gx = cv2.Sobel(blurred, cv2.CV_32F, 1, 0, ksize=3)
        gy = cv2.Sobel(blurred, cv2.CV_32F, 0, 1, ksize=3)
        magnitude = cv2.magnitude(gx, gy)
        out = np.clip(magnitude * 255 / max(1e-6, float(np.percentile(magnitude, 99.5))), 0, 255).astype(np.uint8)
    else:
        raise BadInput(f"the {control} ControlNet names a map ('{kind}') that no preprocessor makes")
    return Image.fromarray(np.stack([out] * 3, axis=-1)), used


def outpaint_pads(size: tuple[int, int], pads: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
    """The borders (left, top, right, bottom) an extension adds, each side's total rounded up to a multiple of 8 (as
    the model needs): the extra pixels go to the right (the left when only it grows) and the bottom (the top)."""
    left, top, right, bottom = pads
    extra_w, extra_h = -(size[0] + left + right) % 8, -(size[1] + top + bottom) % 8
    if right or not left:
        right += extra_w
    else:
        left += extra_w
    if bottom or not top:
        bottom += extra_h
    else:
        top += extra_h
    return left, top, right, bottom


def outpaint_canvas(img: Image.Image, pads: tuple[int, int, int, int]) -> tuple[Image.Image, np.ndarray]:
    """The image on a larger canvas and the part to paint (bool H×W, True = the new border). The border starts as
    the image's own edge colours, mirrored outwards and blurred more the further it is from the image, so the
    render continues the image's tones instead of starting from a flat colour; the image itself is untouched."""
    left, top, right, bottom = pads
    rgb = np.asarray(img.convert("RGB"))
    h, w = rgb.shape[:2]
    remaining, canvas = [top, bottom, left, right], rgb
    while any(remaining):  # mirrored as often as the border needs (one wider than the image mirrors the mirror)
        if min(canvas.shape[:2]) < 2:
            canvas = cv2.copyMakeBorder(canvas, *remaining, cv2.BORDER_REPLICATE)
            break
        need = [min(r, canvas.shape[0] - 1) for r in remaining[:2]] + [
            min(r, canvas.shape[1] - 1) for r in remaining[2:]
        ]
        canvas = cv2.copyMakeBorder(canvas, *need, cv2.BORDER_REFLECT_101)
        remaining = [r - n for r, n in zip(remaining, need, strict=True)]
    left, top, right, bottom = pads
    mask = np.ones(canvas.shape[:2], bool)
    mask[top : top + h, left : left + w] = False
    distance = cv2.distanceTransform(mask.astype(np.uint8), cv2.DIST_L2, 3)
    far = float(distance.max()) or 1.0
    blurred = [cv2.GaussianBlur(canvas, (0, 0), sigma) for sigma in (2.0, far / 4 + 2, far / 2 + 4)]
    weight = np.clip(distance / far, 0, 1)[..., None]
    near, mid, wide = (b.astype(np.float32) for b in blurred)
    fill = np.where(weight < 0.5, near + (mid - near) * weight * 2, mid + (wide - mid) * (weight - 0.5) * 2)
    out = np.where(mask[..., None], fill, canvas.astype(np.float32))
    out[top : top + h, left : left + w] = rgb
    return Image.fromarray(np.round(out).clip(0, 255).astype(np.uint8)), mask


def png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def content_hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
