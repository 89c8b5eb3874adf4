"""Training throughput (samples/s) on a synthetic data set, and the data set itself.

`make_shapes` draws coloured shapes on varied backgrounds, captioned with their colour and shape: a task
a CLIP can learn in seconds, used by the learning test and the benchmark. `bench_train` prepares it, trains
one scenario and reports samples per second (wired into `python -m engine.bench`).
"""

from __future__ import annotations

import csv
import json
import tempfile
import time
from pathlib import Path
from typing import Any

COLORS = {"red": (220, 30, 30), "green": (30, 170, 50), "blue": (30, 60, 220)}
PALETTE = {**COLORS, "yellow": (235, 205, 25), "purple": (140, 40, 180), "orange": (240, 130, 20)}
SHAPES = ("circle", "square", "triangle")


def shape_image(color: str, shape: str, rng, size: int = 64):
    """One `color` `shape` at a random place and size on a random neutral background, with a little noise."""
    import numpy as np
    from PIL import Image, ImageDraw

    grey = int(rng.integers(150, 256))
    tint = rng.integers(-20, 21, 3)
    bg = tuple(int(np.clip(grey + t, 0, 255)) for t in tint)
    img = Image.new("RGB", (size, size), bg)
    d = ImageDraw.Draw(img)
    r = rng.uniform(0.18, 0.32) * size
    cx, cy = rng.uniform(r + 1, size - r - 1, 2)
    rgb = tuple(int(np.clip(c + j, 0, 255)) for c, j in zip(PALETTE[color], rng.integers(-25, 26, 3), strict=True))
    if shape == "circle":
        d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=rgb)
    elif shape == "square":
        d.rectangle([cx - r, cy - r, cx + r, cy + r], fill=rgb)
    else:
        d.polygon([(cx, cy - r), (cx - r, cy + r * 0.8), (cx + r, cy + r * 0.8)], fill=rgb)
    arr = np.asarray(img, dtype=np.int16) + rng.integers(-8, 9, (size, size, 3), dtype=np.int16)
    return Image.fromarray(arr.clip(0, 255).astype(np.uint8))


def make_shapes(
    folder: Path,
    per_class: int = 20,
    seed: int = 0,
    size: int = 64,
    colors: tuple[str, ...] = tuple(COLORS),
    shapes: tuple[str, ...] = SHAPES,
) -> Path:
    """`per_class` images of each colour × shape as PNGs in `folder`, and `folder/captions.csv`
    (file, caption, label); returns the CSV's path. Colours come from `PALETTE`."""
    import numpy as np

    unknown = [c for c in colors if c not in PALETTE] + [s for s in shapes if s not in SHAPES]
    if unknown:
        raise ValueError(f"no such colour or shape: {', '.join(unknown)}")

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rows = []
    for color in colors:
        for shape in shapes:
            for i in range(per_class):
                name = f"{color}-{shape}-{i:03d}.png"
                shape_image(color, shape, rng, size).save(folder / name)
                rows.append({"file": name, "caption": f"a {color} {shape}", "label": f"{color} {shape}"})
    path = folder / "captions.csv"
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=["file", "caption", "label"])
        writer.writeheader()
        writer.writerows(rows)
    return path


def bench_train(
    settings,
    scenario: str = "dual_lora",
    per_class: int = 16,
    epochs: int = 2,
    batch_size: int = 16,
    device: str | None = None,
    model_id: str | None = None,
    image_size: int = 64,
) -> dict[str, Any]:
    """Train `scenario` on 9 × `per_class` shapes and report samples/s (the training loop only: no model
    loading, no data preparation). `model_id`: any CLIP folder or id (default: the settings' retrieval CLIP)."""
    from .data import prepare
    from .train import TrainConfig, train

    with tempfile.TemporaryDirectory(prefix="tune-bench-") as tmp:
        root = Path(tmp)
        csv_path = make_shapes(root / "images", per_class=per_class, size=image_size)
        prepare(root / "data", images=root / "images", captions=csv_path, shard_size=64)
        t0 = time.perf_counter()
        config = TrainConfig(scenario=scenario, epochs=epochs, min_steps=0, batch_size=batch_size, lr=1e-3)
        result = train(root / "data", root / "run", settings, config, device=device, model_id=model_id)
        wall = time.perf_counter() - t0
        summary = json.loads((root / "run" / "train.json").read_text())
    return {
        "scenario": scenario,
        "device": result["device"],
        "amp": result["amp"],
        "base_model": result["base_model"],
        "samples": summary["train_samples"],
        "epochs": epochs,
        "batch_size": batch_size,
        "steps": summary["steps"],
        "trainable_parameters": summary["trainable_parameters"],
        "samples_per_s": summary["samples_per_s"],
        "seconds_total": round(wall, 3),
    }
