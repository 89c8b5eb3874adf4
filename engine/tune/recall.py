"""Recall@k in both directions from normalised embeddings (the definitions: `engine.tune.evaluate`'s docstring).
Shared by the evaluation and by training's per-epoch validation, so both measure the same thing."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

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
