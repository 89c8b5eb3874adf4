"""Regions: SAM2 masks from point and box prompts, automatic masks for analysis, polygons, RLE, overlays.

The model is transformers' `Sam2Model`, loaded through `from_pretrained` like every other model. Its
`Sam2Processor` needs torchvision, whose PyPI wheels are built for CUDA torch; the preprocessing SAM2 defines
is small, so it is done here from the model's own `preprocessor_config.json` (resize to the square input size,
rescale, normalise; masks upsampled bilinearly to the image and thresholded at 0).
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from .errors import BadInput
from .masks import mask_png, polygons, rle_encode

POINTS_PER_BATCH = 64  # point prompts per forward pass in automatic segmentation
PREPROCESS_DEFAULTS = {"size": 1024, "image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225]}


@dataclass
class Segment:
    """One mask over an image: the mask itself (bool, H×W), the model's predicted IoU and its outline."""

    mask: np.ndarray = field(repr=False)
    score: float
    polygons: list[list[list[int]]] = field(default_factory=list, repr=False)
    concepts: list[dict[str, Any]] = field(default_factory=list)

    @property
    def area(self) -> float:
        """The share of the image the mask covers, in [0, 1]."""
        return float(self.mask.mean())

    @property
    def bbox(self) -> list[int]:
        ys, xs = np.nonzero(self.mask)
        if len(xs) == 0:
            return [0, 0, 0, 0]
        return [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]

    def as_dict(self, encoding: str = "rle") -> dict[str, Any]:
        """JSON-ready: the mask as COCO RLE ("rle"), a base64 PNG ("png") or left out ("none")."""
        out: dict[str, Any] = {
            "score": round(self.score, 4),
            "area": round(self.area, 4),
            "bbox": self.bbox,
            "polygons": self.polygons,
        }
        if encoding == "png":
            import base64

            out["mask_png"] = base64.b64encode(mask_png(self.mask)).decode()
        elif encoding == "rle":
            out["rle"] = rle_encode(self.mask)
        if self.concepts:
            out["concepts"] = self.concepts
        return out


# ---- masks: files, polygons, RLE, overlays -----------------------------------------------------------


def _mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 0.0


# ---- the model -----------------------------------------------------------------------------------------


def read_preprocess_config(model_id: str) -> dict[str, Any]:
    """Input size, mean and std from the model's `preprocessor_config.json` (local folder or hub cache)."""
    from transformers.utils import cached_file

    config = dict(PREPROCESS_DEFAULTS)
    try:
        path = cached_file(model_id, "preprocessor_config.json", _raise_exceptions_for_missing_entries=False)
    except OSError:
        path = None
    if path:
        raw = json.loads(Path(path).read_text())
        size = raw.get("size") or {}
        config["size"] = int(size.get("height") or size.get("longest_edge") or config["size"])
        config["image_mean"] = raw.get("image_mean", config["image_mean"])
        config["image_std"] = raw.get("image_std", config["image_std"])
    return config


def build_tiny_sam2(folder: Path, size: int = 256) -> None:
    """A random-weight SAM2 (hiera layout, small widths, `size`² input) in facebook/sam2.1-hiera-tiny's layout."""
    from transformers import Sam2Config, Sam2Model
    from transformers.models.sam2 import (
        Sam2HieraDetConfig,
        Sam2MaskDecoderConfig,
        Sam2PromptEncoderConfig,
        Sam2VisionConfig,
    )

    backbone = Sam2HieraDetConfig(
        hidden_size=16,
        image_size=[size, size],
        blocks_per_stage=[1, 1, 2, 1],
        embed_dim_per_stage=[16, 32, 64, 128],
        num_attention_heads_per_stage=[1, 1, 2, 2],
        window_size_per_stage=[8, 4, 8, 4],
        global_attention_blocks=[3],
        num_attention_heads=1,
    )
    vision = Sam2VisionConfig(
        backbone_config=backbone,
        backbone_channel_list=[128, 64, 32, 16],
        backbone_feature_sizes=[[size // 4] * 2, [size // 8] * 2, [size // 16] * 2],
        fpn_hidden_size=32,
    )
    config = Sam2Config(
        vision_config=vision,
        prompt_encoder_config=Sam2PromptEncoderConfig(hidden_size=32, image_size=size, patch_size=16),
        mask_decoder_config=Sam2MaskDecoderConfig(
            hidden_size=32, mlp_dim=64, num_attention_heads=2, iou_head_hidden_dim=32
        ),
    )
    torch.manual_seed(0)
    Sam2Model(config).save_pretrained(folder, safe_serialization=True)
    (folder / "preprocessor_config.json").write_text(
        json.dumps(
            {
                "image_processor_type": "Sam2ImageProcessorFast",
                "size": {"height": size, "width": size},
                "mask_size": {"height": size // 4, "width": size // 4},
                "image_mean": PREPROCESS_DEFAULTS["image_mean"],
                "image_std": PREPROCESS_DEFAULTS["image_std"],
                "do_rescale": True,
                "rescale_factor": 1 / 255,
            },
            indent=2,
        )
    )


class Segmenter:
    """SAM2 over PIL images: the image embedding is computed once per image and kept for the next clicks."""

    def __init__(self, model, preprocess: dict[str, Any], device: str = "cpu", cache: int = 4):
        self.model = model
        self.size = int(preprocess["size"])
        self.mean = torch.tensor(preprocess["image_mean"]).view(1, 3, 1, 1)
        self.std = torch.tensor(preprocess["image_std"]).view(1, 3, 1, 1)
        self.device = device
        self.dtype = next(model.parameters()).dtype
        self._cache: OrderedDict[str, Any] = OrderedDict()
        self._cache_size = cache
        self._lock = threading.Lock()

    def _pixels(self, image: Image.Image) -> torch.Tensor:
        resized = image.convert("RGB").resize((self.size, self.size), Image.BILINEAR)
        x = torch.from_numpy(np.asarray(resized, np.float32) / 255.0).permute(2, 0, 1)[None]
        return ((x - self.mean) / self.std).to(self.device, self.dtype)

    @torch.inference_mode()
    def embeddings(self, image: Image.Image):
        """The image's SAM2 features, cached by content (a designer clicks the same sketch many times)."""
        from .images import content_hash

        key = content_hash(image.tobytes()) + f"-{image.size}"
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        emb = self.model.get_image_embeddings(pixel_values=self._pixels(image))
        with self._lock:
            self._cache[key] = emb
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return emb

    def _scale(self, image: Image.Image) -> torch.Tensor:
        w, h = image.size
        return torch.tensor([self.size / w, self.size / h])

    def _upsample(self, logits: torch.Tensor, image: Image.Image) -> np.ndarray:
        """Low-res mask logits (..., h, w) → bool masks at the image's size."""
        w, h = image.size
        lead = logits.shape[:-2]
        up = torch.nn.functional.interpolate(
            logits.reshape(-1, 1, *logits.shape[-2:]).float(), size=(h, w), mode="bilinear", align_corners=False
        )
        return (up > 0).reshape(*lead, h, w).cpu().numpy()

    @staticmethod
    def check_point(x: float, y: float, image: Image.Image) -> None:
        w, h = image.size
        if not (0 <= x < w and 0 <= y < h):
            raise BadInput(f"the point ({x:g}, {y:g}) is outside the image, which is {w}×{h}; click inside it")

    @staticmethod
    def check_box(box: list[float], image: Image.Image) -> None:
        w, h = image.size
        x0, y0, x1, y1 = box
        if not (0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h):
            raise BadInput(f"the box {list(box)} is not inside the {w}×{h} image with x0 < x1 and y0 < y1")

    @torch.inference_mode()
    def segment(
        self,
        image: Image.Image,
        points: list[tuple[float, float]] | None = None,
        labels: list[int] | None = None,
        box: list[float] | None = None,
        tolerance: float = 1.0,
    ) -> Segment:
        """One object from its prompts: points (label 1 inside, 0 outside) and/or a box, in image pixels.
        With a single point SAM2 proposes three masks and the one with the best predicted IoU is kept."""
        points = list(points or [])
        if not points and box is None:
            raise BadInput("segmenting needs a point or a box on the image")
        labels = list(labels) if labels is not None else [1] * len(points)
        if len(labels) != len(points) or any(v not in (0, 1) for v in labels):
            raise BadInput("give one label per point: 1 for inside the object, 0 for outside")
        for x, y in points:
            self.check_point(x, y, image)
        if box is not None:
            self.check_box(box, image)
        scale = self._scale(image)
        kw: dict[str, Any] = {"image_embeddings": self.embeddings(image)}
        if points:
            kw["input_points"] = (torch.tensor(points, dtype=torch.float32) * scale)[None, None].to(self.device)
            kw["input_labels"] = torch.tensor(labels, dtype=torch.long)[None, None].to(self.device)
        if box is not None:
            kw["input_boxes"] = (torch.tensor(box, dtype=torch.float32) * scale.repeat(2))[None, None].to(self.device)
        multimask = len(points) == 1 and box is None
        out = self.model(**kw, multimask_output=multimask)
        scores = out.iou_scores[0, 0].float()
        best = int(scores.argmax())
        mask = self._upsample(out.pred_masks[0, 0, best], image)
        if not mask.any():
            raise BadInput("SAM2 found no object there (an empty mask); click nearer the middle of it or draw a box")
        return Segment(mask, float(scores[best]), polygons(mask, tolerance))

    @torch.inference_mode()
    def automatic(
        self,
        image: Image.Image,
        grid: int = 8,
        score_threshold: float = 0.5,
        nms_iou: float = 0.7,
        min_area: float = 0.002,
        max_masks: int = 16,
        tolerance: float = 1.0,
    ) -> list[Segment]:
        """Every object SAM2 finds from a grid×grid of point prompts: masks above the score threshold,
        large enough, with duplicates removed (mask IoU above `nms_iou`), best first."""
        if not 1 <= grid <= 32:
            raise BadInput(f"grid must be between 1 and 32 points a side (got {grid})")
        w, h = image.size
        steps = (np.arange(grid) + 0.5) / grid
        pts = torch.tensor([[[x * w, y * h]] for y in steps for x in steps], dtype=torch.float32)
        embeddings = self.embeddings(image)
        scores, best_of, low = [], [], []
        # Points in batches (as SAM2's own automatic generator does): each batch keeps only its best mask per point,
        # as booleans at the model's low resolution, so memory stays flat whatever the grid and the image size.
        for batch in torch.split(pts, POINTS_PER_BATCH):
            batch_scores, logits = self._point_masks(embeddings, batch, image)
            best = batch_scores.argmax(-1)
            rows = torch.arange(len(batch))
            scores.append(batch_scores[rows, best])
            best_of.append(best)
            low.append((logits[rows, best] > 0).cpu())
            del logits
        score, masks = torch.cat(scores).numpy(), torch.cat(low).numpy()  # (points,), (points, h', w') bool
        best = torch.cat(best_of)
        # Filter and remove duplicates at low resolution; only the masks kept are brought to the image's size.
        kept: list[int] = []
        for i in np.argsort(-score, kind="stable"):
            if score[i] < score_threshold or masks[i].mean() < min_area:
                continue
            if any(_mask_iou(masks[i], masks[k]) > nms_iou for k in kept):
                continue
            kept.append(int(i))
            if len(kept) >= max_masks:
                break
        if not kept:
            return []
        _, logits = self._point_masks(embeddings, pts[kept], image)  # the kept points' logits again, exactly
        full = self._upsample(logits[torch.arange(len(kept)), best[kept]], image)
        return [
            Segment(full[n], float(score[i]), polygons(full[n], tolerance)) for n, i in enumerate(kept) if full[n].any()
        ]

    def _point_masks(self, embeddings, points: torch.Tensor, image: Image.Image) -> tuple[torch.Tensor, torch.Tensor]:
        """One positive point prompt per row → (scores (n, 3), low-resolution mask logits (n, 3, h', w'))."""
        out = self.model(
            image_embeddings=embeddings,
            input_points=(points * self._scale(image))[None].to(self.device),
            input_labels=torch.ones(1, len(points), 1, dtype=torch.long, device=self.device),
            multimask_output=True,
        )
        return out.iou_scores[0].float().cpu(), out.pred_masks[0].float()


def load_sam2(model_id: str, device: str, dtype, use_safetensors: bool | None = True) -> Segmenter:
    from transformers import Sam2Model

    model = Sam2Model.from_pretrained(model_id, use_safetensors=use_safetensors)
    model = model.to(device, dtype).eval()  # the engine's precision (bf16 on a CPU with bf16 units)
    return Segmenter(model, read_preprocess_config(model_id), device)


def cutout(image: Image.Image, mask: np.ndarray, fill: int = 255) -> Image.Image:
    """The region alone on a plain background, cropped to its box: what a region-wise CLIP analysis sees."""
    arr = np.asarray(image.convert("RGB")).copy()
    arr[~mask] = fill
    ys, xs = np.nonzero(mask)
    return Image.fromarray(arr[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1])
