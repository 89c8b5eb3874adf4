"""How faithful an image is: to the prompt (CLIP score), to its style reference(s), to its sketch (edge F1)."""

from __future__ import annotations

import statistics
from typing import Any

import cv2
import numpy as np
from PIL import Image

EDGE_TOLERANCE = 2  # pixels: a stroke redrawn a hair to the side still counts as kept


def clip_score(image_vec: list[float], text_vec: list[float]) -> float:
    """torchmetrics' CLIPScore for one pair: 100 × max(cosine, 0), on unit vectors."""
    return 100.0 * max(float(np.dot(image_vec, text_vec)), 0.0)


def cosine(a: list[float], b: list[float]) -> float:
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


def edge_map(image: Image.Image, size: tuple[int, int] | None = None) -> np.ndarray:
    """Canny edges (50/150) of an output, as a boolean map at `size`."""
    gray = cv2.cvtColor(np.asarray(image.convert("RGB")), cv2.COLOR_RGB2GRAY)
    if size is not None and gray.shape[::-1] != size:
        gray = cv2.resize(gray, size, interpolation=cv2.INTER_AREA)
    return cv2.Canny(gray, 50, 150) > 0


def _distance_to(edges: np.ndarray) -> np.ndarray:
    """Per pixel, the distance to the nearest edge pixel of `edges`."""
    return cv2.distanceTransform((~edges).astype(np.uint8), cv2.DIST_L2, 3)


def edge_fidelity(control: np.ndarray, output: np.ndarray, tolerance: float = EDGE_TOLERANCE) -> dict[str, float]:
    """Edge F1 with a tolerance (precision: output edges near a sketch edge; recall: sketch edges kept)
    and the symmetric Chamfer distance in pixels."""
    control, output = control.astype(bool), output.astype(bool)
    if not control.any() and not output.any():
        return {"edge_f1": 1.0, "edge_precision": 1.0, "edge_recall": 1.0, "chamfer": 0.0}
    if not control.any() or not output.any():
        return {"edge_f1": 0.0, "edge_precision": 0.0, "edge_recall": 0.0, "chamfer": float("inf")}
    to_control, to_output = _distance_to(control), _distance_to(output)
    precision = float(np.mean(to_control[output] <= tolerance))
    recall = float(np.mean(to_output[control] <= tolerance))
    f1 = 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)
    chamfer = float((to_control[output].mean() + to_output[control].mean()) / 2)
    return {"edge_f1": f1, "edge_precision": precision, "edge_recall": recall, "chamfer": chamfer}


def aggregate(values: list[float]) -> dict[str, float]:
    """n, mean, median, standard deviation (sample), p10 and p90 (linear interpolation, as numpy)."""
    vals = [float(v) for v in values if v is not None and np.isfinite(v)]
    if not vals:
        return {"n": 0}
    return {
        "n": len(vals),
        "mean": statistics.fmean(vals),
        "median": statistics.median(vals),
        "std": statistics.stdev(vals) if len(vals) > 1 else 0.0,
        "p10": float(np.percentile(vals, 10)),
        "p90": float(np.percentile(vals, 90)),
    }


def image_metrics(
    embeddings,
    images: list[Image.Image],
    prompt: str,
    control: Image.Image | None,
    references: list[Image.Image],
    vectors: list[list[float]] | None = None,
) -> list[dict[str, Any]]:
    """The three numbers for every output of one run (style and structure only where they apply). `vectors`: the
    images' embeddings by these `embeddings`, when the caller has them already (the search index needs them too)."""
    vecs = vectors if vectors is not None else embeddings.embed_images(images)
    text = embeddings.embed_query(prompt)
    ref_vecs = embeddings.embed_images(references) if references else []
    control_edges = np.asarray(control.convert("L")) > 127 if control is not None else None
    out = []
    for image, vec in zip(images, vecs, strict=True):
        m: dict[str, Any] = {"clip_score": round(clip_score(vec, text), 4)}
        if ref_vecs:
            m["style_similarity"] = round(float(np.mean([cosine(vec, r) for r in ref_vecs])), 4)
        if control_edges is not None:
            fid = edge_fidelity(control_edges, edge_map(image, control.size))
            m.update({k: round(v, 4) if np.isfinite(v) else None for k, v in fid.items()})
        out.append(m)
    return out
