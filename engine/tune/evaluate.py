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
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from ..errors import BadInput
from ..schema import Progress
from .data import load_manifest, read_split, write_json_atomic

KS = (1, 5, 10)
DIRECTIONS = ("text_to_image", "image_to_image")


def recall_at_k(scores: torch.Tensor, relevant: torch.Tensor, ks: Sequence[int] = KS) -> dict[str, float]:
    """`scores` [queries, gallery], `relevant` the same shape (bool): share of queries with a hit in the top k."""
    if scores.shape[0] == 0:
        return {f"R@{k}": None for k in ks}
    out = {}
    for k in ks:
        top = scores.topk(min(k, scores.shape[1]), dim=1).indices
        hit = relevant.gather(1, top).any(dim=1)
        out[f"R@{k}"] = round(float(hit.float().mean()), 4)
    return out


def retrieval_metrics(
    image_emb: torch.Tensor, text_emb: torch.Tensor, texts: list[str], labels: list[str], ks: Sequence[int] = KS
) -> dict[str, Any]:
    """Both directions from precomputed, normalised embeddings (rows aligned with `texts` and `labels`)."""
    texts = [t.casefold() for t in texts]
    labels = [(lab or t).casefold() for lab, t in zip(labels, texts, strict=True)]
    t_ids = torch.tensor([{t: i for i, t in enumerate(dict.fromkeys(texts))}[t] for t in texts])
    l_ids = torch.tensor([{x: i for i, x in enumerate(dict.fromkeys(labels))}[x] for x in labels])
    t2i = recall_at_k(text_emb @ image_emb.T, t_ids[:, None] == t_ids[None, :], ks)
    same = l_ids[:, None] == l_ids[None, :]
    eye = torch.eye(len(labels), dtype=torch.bool)
    queries = (same & ~eye).any(dim=1)
    scores = (image_emb @ image_emb.T).masked_fill(eye, float("-inf"))[queries]
    i2i = recall_at_k(scores, (same & ~eye)[queries], ks)
    return {
        "text_to_image": t2i,
        "image_to_image": i2i,
        "queries": {"text_to_image": len(texts), "image_to_image": int(queries.sum())},
    }


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
            raise BadInput(f"{run_dir} does not say which data it was trained on", fix="pass --data DATA_DIR")
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
    write_json_atomic(run_dir / "metrics.json", out)
    return out
