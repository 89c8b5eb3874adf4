"""What schemathesis needs to know about the engine's file parts, loaded by `schemathesis.toml` (the CLI run from the
repository root) and by tests/server/test_fuzz.py.

The OpenAPI says which kind of file each part takes (`encoding.contentType`). For images a fuzzer has small real
samples of its own, which the engine takes; for the other kinds (a product sheet, a zip of photos, a captions CSV, a
safetensors model) it draws random bytes, which the engine rightly refuses, so every call of such an operation would
be refused for its file alone, whatever its arguments. Here each generated call's file parts of those kinds are
replaced by a real file of that kind, agreeing with the call's arguments where the engine checks that they agree (a
sheet with the columns the options name, in the format its name's suffix says; captions that name the images in the
zip; an image to segment large enough to hold the points and the box, whose corners are put in order). The other
arguments stay as the fuzzer drew them from the schema, so the engine's answer is still the engine's: nothing here
knows what it will say.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import struct
import zipfile

import schemathesis
from PIL import Image, ImageDraw
from schemathesis import GenerationMode
from schemathesis.transport.serialization import Binary

WORDS = ["linen", "oak", "blue", "chair", "dress", "lamp", "wool", "stripe", "velvet", "brass", "sofa", "shirt"]
COLUMNS = ("text_column", "id_column", "name_column", "category_column")  # engine/catalog/options.py
MAX_PIXELS = 48_000_000  # the largest image made to hold a segmenting call's points and box (the engine takes 64 M)
PAIRS = 24  # enough image-caption pairs for recall on held-out splits (engine/tune/splits.py)


def image_bytes(width: int, height: int, colour: int) -> bytes:
    """A picture of some size: a background and a line across it."""
    img = Image.new("RGB", (width, height), (colour % 256, (colour * 7) % 256, (colour * 13) % 256))
    ImageDraw.Draw(img).line([(0, 0), (width - 1, height - 1)], fill=(255, 255, 255), width=max(1, width // 16))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def zip_of_images(n: int, seed: int) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for i in range(n):
            z.writestr(f"photo-{i:03d}.png", image_bytes(24 + i % 9, 24 + i % 7, seed + i * 997))
    return buf.getvalue()


def table(header: list[str], seed: int, rows: int = 3) -> list[list[str]]:
    return [header] + [[f"{WORDS[(seed + r + c) % len(WORDS)]} {r}" for c in range(len(header))] for r in range(rows)]


def csv_bytes(rows: list[list[str]]) -> bytes:
    buf = io.StringIO()
    csv.writer(buf).writerows(rows)
    return buf.getvalue().encode()


def xlsx_bytes(rows: list[list[str]]) -> bytes:
    from openpyxl import Workbook
    from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE

    book = Workbook()
    for row in rows:  # a cell cannot hold control characters: a column name with one is a column Excel cannot have
        book.active.append([ILLEGAL_CHARACTERS_RE.sub("", cell) for cell in row])
    buf = io.BytesIO()
    book.save(buf)
    return buf.getvalue()


def lora_bytes(rank: int, seed: int) -> bytes:
    """A small SD 1.5 LoRA in safetensors (kohya names on one attention layer): zeros, a seed in its metadata."""
    dim = 320
    layer = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q"
    tensors = {f"{layer}.lora_down.weight": (rank, dim), f"{layer}.lora_up.weight": (dim, rank)}
    header: dict = {"__metadata__": {"seed": str(seed)}}
    offset = 0
    for name, shape in tensors.items():
        size = shape[0] * shape[1] * 4
        header[name] = {"dtype": "F32", "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    head = json.dumps(header).encode()
    return struct.pack("<Q", len(head)) + head + bytes(offset)


def coordinates(value) -> list[float]:
    """The numbers in a list of points or a box (a form sends them as JSON text)."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return []
    if isinstance(value, int | float) and not isinstance(value, bool):
        return [float(value)]
    if isinstance(value, list):
        return [c for v in value for c in coordinates(v)]
    return []


def ordered_box(box):
    """A box as x0 < x1, y0 < y1 (the one rule between its numbers that no schema can state): the drawn corners
    sorted, and one pixel wide or tall where they met. A box that is not four numbers stays as drawn."""
    numbers = coordinates(box)
    if len(numbers) != 4:
        return box
    (x0, x1), (y0, y1) = sorted(numbers[0::2]), sorted(numbers[1::2])
    if x1 <= x0:
        x0, x1 = (x0 - 1, x0) if x0 >= 1 else (x0, x0 + 1)
    if y1 <= y0:
        y0, y1 = (y0 - 1, y0) if y0 >= 1 else (y0, y0 + 1)
    fixed = [x0, y0, x1, y1]
    return json.dumps(fixed) if isinstance(box, str) else fixed


def extents(points, box) -> tuple[float, float]:
    """The largest x and y of a call's points and box (0 where it has none)."""
    xs, ys = [], []
    for group in (points, box):
        numbers = coordinates(group)
        xs += numbers[0::2]
        ys += numbers[1::2]
    return max(xs, default=0.0), max(ys, default=0.0)


def seed_of(value) -> int:
    return int.from_bytes(hashlib.sha256(repr(value).encode()).digest()[:4], "little")


def is_file(value) -> bool:
    return isinstance(value, bytes | str)  # schemathesis's Binary is a str


def agreeing(body: dict) -> dict:
    """The body with its non-image file parts made real files of their kind, agreeing with the arguments."""
    args = body.get("args") if isinstance(body.get("args"), dict) else {}
    seed = seed_of(args)
    if is_file(body.get("sheet")):
        options = args.get("options") if isinstance(args.get("options"), dict) else {}
        named = [options.get(k) for k in COLUMNS if isinstance(options.get(k), str) and options.get(k).strip()]
        # inspecting names the columns as arguments of its own, and guesses the ones it leaves out
        given = [args.get(k) for k in COLUMNS if isinstance(args.get(k), str) and args.get(k).strip()]
        header = list(dict.fromkeys(named)) or list(dict.fromkeys([*given, "id", "name", "category", "description"]))
        rows = table(header, seed)
        xlsx = str(args.get("name", "")).lower().endswith((".xlsx", ".xlsm"))
        body["sheet"] = Binary(xlsx_bytes(rows) if xlsx else csv_bytes(rows))
    if is_file(body.get("photos")):
        body["photos"] = Binary(zip_of_images(3, seed))
    if is_file(body.get("images")) or is_file(body.get("captions")):
        body["images"] = Binary(zip_of_images(PAIRS, seed))
        captions = [[f"photo-{i:03d}.png", f"{WORDS[i % len(WORDS)]} {i}"] for i in range(PAIRS)]
        body["captions"] = Binary(csv_bytes([["file", "caption"], *captions]))
    for part, fields in (("image", args), ("file", body)):  # segmenting: an image that holds the clicks
        if is_file(body.get(part)) and ("points" in fields or "box" in fields):
            if fields.get("box") is not None:
                fields["box"] = ordered_box(fields["box"])
            xs, ys = extents(fields.get("points"), fields.get("box"))
            width, height = 8 + int(xs), 8 + int(ys)
            if width * height > MAX_PIXELS:  # more than the engine decodes: a picture it does
                width, height = min(width, 4096), min(height, 4096)
            body[part] = Binary(image_bytes(width, height, seed))
    if is_file(body.get("data")):
        body["data"] = Binary(lora_bytes(1 + seed % 8, seed))
    return body


@schemathesis.hook
def map_case(context, case):
    """Every phase's calls with data the schema allows: file parts as real files of their kind (the calls with data
    it refuses keep what they were drawn with)."""
    positive = case.meta is None or case.meta.generation.mode == GenerationMode.POSITIVE
    if positive and isinstance(case.body, dict):
        case.body = agreeing(dict(case.body))
    return case
