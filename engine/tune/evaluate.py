"""Recall@k of the base and the tuned CLIP on a held-out split, as the retrieval code embeds (ClipEmbeddings).

Definitions (both over the split's samples, embeddings L2-normalised, cosine similarity):

- text → image: every sample's caption is a query; the gallery is every image of the split; an image is
  relevant when its caption is the same text (case-insensitive), so repeated captions ("a red circle") have
  several right answers. recall@k = share of queries with a relevant image among the k most similar.
- image → image: every image whose label (the label column, else the caption) is shared by at least one
  other image of the split is a query; the gallery is all other images (the query itself is left out); an
  image is relevant when it has the query's label. Images with a unique label have no right answer and are
  not queries (`queries` says how many there were).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from ..errors import BadInput
from ..schema import Progress
from .data import load_manifest, read_split, write_json_atomic
from .recall import DIRECTIONS, KS, retrieval_metrics


def embed_samples(model, processor, device: str, images, texts) -> tuple[torch.Tensor, torch.Tensor]:
    from ..embeddings import ClipEmbeddings

    emb = ClipEmbeddings(model, processor, device)
    return torch.tensor(emb.embed_images(images)), torch.tensor(emb.embed_documents(texts))


def evaluate_model(model, processor, device: str, data_dir: Path, split: str = "test", ks: Sequence[int] = KS):
    """Recall@k of one model on DATA_DIR's `split` (see the module's definitions)."""
    samples = list(read_split(Path(data_dir), split))
    if len(samples) < 2:
        raise BadInput(f"the {split} split holds {len(samples)} sample(s); recall needs at least 2")
    images, texts, metas = zip(*samples, strict=True)
    image_emb, text_emb = embed_samples(model, processor, device, list(images), list(texts))
    return retrieval_metrics(image_emb, text_emb, list(texts), [m.get("label", "") for m in metas], ks)


def evaluate(
    run_dir: Path,
    settings,
    device: str | None = None,
    data_dir: Path | None = None,
    split: str = "test",
    ks: Sequence[int] = KS,
    on_progress: Callable[[Progress], None] | None = None,
) -> dict[str, Any]:
    """Base vs tuned recall@k on the run's data (or `data_dir`); also written to RUN_DIR/metrics.json."""
    from ..models import load_clip, quiet_libraries
    from .train import base_model_for, load_tuned, read_adapter

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise BadInput(f"run folder {run_dir} does not exist")
    meta = read_adapter(run_dir)
    summary_path = run_dir / "train.json"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    if data_dir is None:
        if not summary.get("data_dir"):
            raise BadInput(f"{run_dir} does not say which data it was trained on", fix="pass --data DATASET")
        data_dir = Path(summary["data_dir"])
    manifest = load_manifest(data_dir)
    if split not in manifest["splits"]:
        raise BadInput(f"unknown split '{split}'; the data folder has: {', '.join(manifest['splits'])}")
    if not all(isinstance(k, int) and k >= 1 for k in ks):
        raise BadInput(f"k must be positive integers (got {list(ks)})")
    device = device or settings.resolve_device()
    quiet_libraries()
    started = time.perf_counter()
    samples = list(read_split(Path(data_dir), split))
    if len(samples) < 2:
        raise BadInput(f"the {split} split holds {len(samples)} sample(s); recall needs at least 2")
    images, texts, metas = zip(*samples, strict=True)
    labels = [m.get("label", "") for m in metas]
    results = {}
    base = base_model_for(meta, settings)
    loaders = {
        "base": lambda: load_clip(settings, device, base),
        "tuned": lambda: load_tuned(run_dir, settings, device),
    }
    for i, (name, load) in enumerate(loaders.items(), start=1):
        model, processor = load()
        image_emb, text_emb = embed_samples(model, processor, device, list(images), list(texts))
        results[name] = retrieval_metrics(image_emb, text_emb, list(texts), labels, ks)
        del model
        if on_progress:
            on_progress(Progress("evaluate", i, len(loaders), time.perf_counter() - started))
    out = {
        "run": str(run_dir),
        "scenario": meta["scenario"],
        "base_model": base,
        "data_dir": str(Path(data_dir).resolve()),
        "split": split,
        "samples": len(samples),
        "queries": results["base"]["queries"],
        "base": {d: results["base"][d] for d in DIRECTIONS},
        "tuned": {d: results["tuned"][d] for d in DIRECTIONS},
        "delta": {
            d: {
                k: (
                    None if results["tuned"][d][k] is None else round(results["tuned"][d][k] - results["base"][d][k], 4)
                )
                for k in results["base"][d]
            }
            for d in DIRECTIONS
        },
        "seconds": round(time.perf_counter() - started, 3),
    }
    out["recall_change"], out["verdict"] = verdict(out, summary)
    write_json_atomic(run_dir / "metrics.json", out)
    return out


def _advice(summary: dict[str, Any], flags: bool) -> str:
    """What to try for more change: more optimizer steps or a higher learning rate, as flags or in words."""
    steps, lr = summary.get("steps") or 0, summary.get("lr")
    more = max(300, 3 * steps)
    per_epoch = summary.get("steps_per_epoch") or 0
    higher = f" (now {lr:g}; e.g. {lr * 3:g})" if lr else ""
    if flags:
        return f"try --min-steps {more} or a higher --lr{higher}"
    epochs = f"about {math.ceil(more / per_epoch)} epochs, {more} steps" if per_epoch else f"{more} steps"
    return f"try more epochs ({epochs}) or a higher learning rate{higher}"


def verdict(metrics: dict[str, Any], summary: dict[str, Any] | None = None, flags: bool = True) -> tuple[str, str]:
    """(improved | unchanged | worse, one line saying so): the tuned model's text→image recall@1 against the
    base's on the evaluated split, with why and what to try when it did not rise. `summary` is the run's
    train.json (steps, learning rate, the kept epoch); `flags`: advise CLI flags, else plain words (the page)."""
    summary = summary or {}
    base, tuned = metrics["base"]["text_to_image"]["R@1"], metrics["tuned"]["text_to_image"]["R@1"]
    where = f"on {metrics['samples']} {metrics['split']} pairs"
    if metrics.get("scenario") == "zero_shot" or summary.get("scenario") == "zero_shot":
        return "unchanged", f"zero_shot trains nothing: text→image recall@1 is the base's ({base:.2f}) {where}."
    steps, n = summary.get("steps"), summary.get("train_samples")
    lr = summary.get("lr")
    trained = f"{steps} steps at lr {lr:g} on {n} training pairs" if steps is not None and lr else "the training"
    i2i = [metrics[side]["image_to_image"]["R@1"] for side in ("base", "tuned")]
    images = f"image→image {i2i[0]:.2f} → {i2i[1]:.2f}" if None not in i2i else ""
    if tuned > base:
        kept = summary.get("kept_epoch")
        tail = [images] if images else []
        if kept is not None and summary.get("epochs"):
            tail.append(f"kept epoch {kept} of {summary['epochs']}")
        tail = f" ({'; '.join(tail)})" if tail else ""
        return "improved", f"The adapter raised text→image recall@1 from {base:.2f} to {tuned:.2f} {where}{tail}."
    val = summary.get("validation") or {}
    if (val.get("best") or {}).get("epoch") == 0:
        why = f"no epoch of {trained} beat the base on the {val['samples']} validation pairs, so it kept the base"
    elif tuned == base:
        why = f"{trained} moved it too little for this small a set"
    else:
        why = f"{trained} fit the training pairs but not these held-out ones"
    if tuned == base:
        both = f"; {images}" if images else ""
        line = f"The adapter did not change text→image recall@1 ({base:.2f} → {tuned:.2f}{both}) {where}: {why}"
        return "unchanged", f"{line}; {_advice(summary, flags)}."
    lower = f"a lower {'--lr' if flags else 'learning rate'}" + (f" (now {lr:g})" if lr else "")
    both = f"; {images}" if images else ""
    line = f"The adapter lowered text→image recall@1 ({base:.2f} → {tuned:.2f}{both}) {where}: {why}"
    return "worse", f"{line}; keep the base CLIP, or add training pairs or try {lower}."
