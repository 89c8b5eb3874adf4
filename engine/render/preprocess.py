"""Control maps, engine-side: a pure preprocessor's (engine/images.py `control_map`) or a model's (the depth
estimator), made where the models are. The plan, the `renders.control_preview` operation and the recorder use one
`Preprocessors`, so a preview, a render and a run's result view show the same map."""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
from PIL import Image

from .. import images as imgs
from ..errors import BadInput
from ..rules.controlnets import CONTROLS, DEFAULT_CONTROL
from ..rules.controlnets import known as known_controls


class Preprocessors:
    """Makes every ControlNet type's map. `models` holds the model-backed preprocessors' models, loaded on first
    use (a ModelStore: `models.depth` is the depth estimator, (model, image processor)); None: pure ones only."""

    def __init__(self, models: Any = None):
        self.models = models
        self._lock = threading.Lock()  # one estimate at a time (a preview and a render's plan may meet)
        self._made = {"disparity": self.disparity}  # a model-backed map kind → what makes it

    def control_map(
        self, img: Image.Image, control: str = DEFAULT_CONTROL, mode: str = "auto", low: int = 50, high: int = 150
    ) -> tuple[Image.Image, str]:
        """The map the ControlNet `control` follows in `img`, at its size, and the preprocessor used (as the
        metadata's `edge_mode` records it)."""
        if control not in CONTROLS:
            raise BadInput(f"ControlNet '{control}' is unknown; use {known_controls()}")
        kind = CONTROLS[control]
        if kind.preprocessor != "model":
            return imgs.control_map(img, control, mode, low, high)
        make = self._made.get(kind.preprocess)
        if make is None:
            raise BadInput(f"the {control} ControlNet names a map ('{kind.preprocess}') that no preprocessor makes")
        if self.models is None:
            raise BadInput(f"the {control} ControlNet's map is made by a model on the engine, not from the image alone")
        return make(img), control

    def disparity(self, img: Image.Image) -> Image.Image:
        """Relative depth by the depth estimator (Depth Anything V2: disparity, near is bright, as the depth
        ControlNet was trained on), at the image's size, stretched to 8 bits, as 3 channels."""
        import torch

        model, processor = self.models.depth
        device = next(model.parameters()).device
        with self._lock, torch.inference_mode():
            inputs = processor(images=img.convert("RGB"), return_tensors="pt")
            pixels = inputs["pixel_values"].to(device, next(model.parameters()).dtype)
            depth = model(pixel_values=pixels).predicted_depth.float()  # (1, h, w)
            depth = torch.nn.functional.interpolate(
                depth[:, None], size=(img.height, img.width), mode="bicubic", align_corners=False
            )[0, 0]
            low, high = depth.min(), depth.max()
            span = float(high - low)
            scaled = (depth - low) / span * 255 if span > 0 else torch.zeros_like(depth)
            out = scaled.clamp(0, 255).round().to(torch.uint8).cpu().numpy()
        return Image.fromarray(np.stack([out] * 3, axis=-1))
