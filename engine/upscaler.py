"""Upscaling: an ESRGAN-class super-resolution model, run in tiles with feathered seams, in bounded memory.

Which model: the settings' `upscaler_model` (a hub id, a folder or a file) and `upscaler_weight` (the file in it),
by default a safetensors copy of Real-ESRGAN's RealESRGAN_x4plus (BSD-3-Clause, the official weights converted).

How it loads:
- where `spandrel` (MIT; chaiNNer's loader of every common super-resolution architecture) can be imported, it loads
  the file, whatever its architecture (ESRGAN, Real-ESRGAN, SwinIR, HAT, …). It is no requirement of this project:
  spandrel imports torchvision in its package `__init__`, and PyPI's torchvision cannot be imported beside the pinned
  CPU torch ("operator torchvision::nms does not exist"), so it is installed only where torchvision works (a GPU box:
  `pip install spandrel`; never `spandrel-extra-arches`, whose licences are not all MIT).
- otherwise the built-in `RRDBNet` below, Real-ESRGAN's own architecture (BasicSR's `rrdbnet_arch.py`: conv_first,
  body.N.rdb1..3.conv1..5, conv_body, conv_up1, conv_up2, conv_hr, conv_last; the ×2 and ×1 variants take a
  pixel-unshuffled input), with its hyper-parameters read from the weights' shapes. It takes the official files'
  key layout, bare or under `params_ema` / `params` (the EMA weights first, as Real-ESRGAN's own inference does).

Weights are read from safetensors; a pickled `.pth` only when the settings allow pickles (DESIGN_STUDIO_ALLOW_PICKLE),
as for every other model of the engine.

Tiling: the image is cut into `tile` × `tile` pieces overlapping by `overlap` pixels; each piece runs with `pad`
pixels of context around it (cut off again after the model), and the pieces are blended across their overlaps by
linear ramps (feathered), so no seam shows. The model's memory is that of one tile, whatever the image's size; the
result is accumulated on the CPU in float32 (bounded by the engine's pixel limit, which the caller checks first).
"""

from __future__ import annotations

import importlib.util
import logging
import math
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.nn import functional as F  # noqa: N812

from .errors import Cancelled, ModelUnavailable
from .hub import PICKLE_SUFFIXES, is_hub_id, require, unavailable

log = logging.getLogger(__name__)

SETTING = "DESIGN_STUDIO_UPSCALER_MODEL"
WRAPPERS = ("params_ema", "params", "state_dict", "model")  # how training frameworks nest a state dict
PREFIXES = ("module.", "model.")  # DataParallel's and some converters' prefix on every key
FIX_ARCH = (
    "use a Real-ESRGAN RRDBNet file such as RealESRGAN_x4plus, or `pip install spandrel` where torchvision imports "
    "(a GPU box) to load other architectures"
)


# ---- the architecture ---------------------------------------------------------------------------------------------
class ResidualDenseBlock(nn.Module):
    """Five 3×3 convolutions, each seeing the block's input and every earlier output (dense), scaled residual."""

    def __init__(self, num_feat: int = 64, num_grow_ch: int = 32):
        super().__init__()
        self.conv1 = nn.Conv2d(num_feat, num_grow_ch, 3, 1, 1)
        self.conv2 = nn.Conv2d(num_feat + num_grow_ch, num_grow_ch, 3, 1, 1)
        self.conv3 = nn.Conv2d(num_feat + 2 * num_grow_ch, num_grow_ch, 3, 1, 1)
        self.conv4 = nn.Conv2d(num_feat + 3 * num_grow_ch, num_grow_ch, 3, 1, 1)
        self.conv5 = nn.Conv2d(num_feat + 4 * num_grow_ch, num_feat, 3, 1, 1)
        self.lrelu = nn.LeakyReLU(negative_slope=0.2, inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1 = self.lrelu(self.conv1(x))
        x2 = self.lrelu(self.conv2(torch.cat((x, x1), 1)))
        x3 = self.lrelu(self.conv3(torch.cat((x, x1, x2), 1)))
        x4 = self.lrelu(self.conv4(torch.cat((x, x1, x2, x3), 1)))
        x5 = self.conv5(torch.cat((x, x1, x2, x3, x4), 1))
        return x5 * 0.2 + x


class RRDB(nn.Module):
    """Residual in residual dense block: three dense blocks, scaled residual."""

    def __init__(self, num_feat: int, num_grow_ch: int = 32):
        super().__init__()
        self.rdb1 = ResidualDenseBlock(num_feat, num_grow_ch)
        self.rdb2 = ResidualDenseBlock(num_feat, num_grow_ch)
        self.rdb3 = ResidualDenseBlock(num_feat, num_grow_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.rdb3(self.rdb2(self.rdb1(x))) * 0.2 + x


class RRDBNet(nn.Module):
    """ESRGAN's generator as Real-ESRGAN trains it (RealESRGAN_x4plus: 64 filters, 23 blocks, growth 32, ×4). The ×2
    and ×1 variants pixel-unshuffle the input first (4× and 16× the channels) and upsample ×4 the same way."""

    def __init__(
        self,
        num_in_ch: int = 3,
        num_out_ch: int = 3,
        scale: int = 4,
        num_feat: int = 64,
        num_block: int = 23,
        num_grow_ch: int = 32,
    ):
        super().__init__()
        self.scale = scale
        unshuffled = {4: 1, 2: 4, 1: 16}[scale]
        self.conv_first = nn.Conv2d(num_in_ch * unshuffled, num_feat, 3, 1, 1)
        self.body = nn.Sequential(*(RRDB(num_feat, num_grow_ch) for _ in range(num_block)))
        self.conv_body = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_up1 = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_up2 = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_hr = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_last = nn.Conv2d(num_feat, num_out_ch, 3, 1, 1)
        self.lrelu = nn.LeakyReLU(negative_slope=0.2, inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.scale == 2:
            feat = F.pixel_unshuffle(x, 2)
        elif self.scale == 1:
            feat = F.pixel_unshuffle(x, 4)
        else:
            feat = x
        feat = self.conv_first(feat)
        feat = feat + self.conv_body(self.body(feat))
        feat = self.lrelu(self.conv_up1(F.interpolate(feat, scale_factor=2, mode="nearest")))
        feat = self.lrelu(self.conv_up2(F.interpolate(feat, scale_factor=2, mode="nearest")))
        return self.conv_last(self.lrelu(self.conv_hr(feat)))


def rrdbnet_config(state_dict: dict[str, torch.Tensor]) -> dict[str, int]:
    """RRDBNet's hyper-parameters, read from a state dict's shapes (what spandrel does for this architecture)."""
    blocks = {int(m.group(1)) for k in state_dict if (m := re.match(r"body\.(\d+)\.rdb1\.conv1\.weight$", k))}
    first = state_dict["conv_first.weight"]
    out_ch = state_dict["conv_last.weight"].shape[0]
    unshuffled = first.shape[1] // out_ch if first.shape[1] % out_ch == 0 else 1
    scale = {1: 4, 4: 2, 16: 1}.get(unshuffled)
    if scale is None or not blocks:
        raise ValueError("its first convolution takes no RGB input RRDBNet knows")
    return {
        "num_in_ch": first.shape[1] // unshuffled,
        "num_out_ch": out_ch,
        "scale": scale,
        "num_feat": first.shape[0],
        "num_block": max(blocks) + 1,
        "num_grow_ch": state_dict["body.0.rdb1.conv1.weight"].shape[0],
    }


def official_keys(state: Any) -> dict[str, torch.Tensor]:
    """The bare state dict of a checkpoint: unwrapped from `params_ema` / `params` (Real-ESRGAN's releases) and the
    like, a `module.` prefix taken off, keys flattened by a converter as `params_ema.conv_first.weight` too."""
    if not isinstance(state, dict):
        raise ValueError("it holds no state dict")
    for wrapper in WRAPPERS:
        if isinstance(state.get(wrapper), dict):
            return official_keys(state[wrapper])
    for wrapper in WRAPPERS:  # flattened: every key under one wrapper's prefix (the first wrapper found wins)
        prefix = f"{wrapper}."
        if any(k.startswith(prefix) for k in state) and "conv_first.weight" not in state:
            state = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
            break
    for prefix in PREFIXES:
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix) :]: v for k, v in state.items()}
    return {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}


def rrdbnet_from_state_dict(state: Any) -> RRDBNet:
    """The built-in RRDBNet with these weights (official key layout); ValueError saying why when they do not fit."""
    sd = official_keys(state)
    if "conv_first.weight" not in sd or "conv_last.weight" not in sd or "body.0.rdb1.conv1.weight" not in sd:
        raise ValueError("its keys are not Real-ESRGAN's RRDBNet layout (conv_first, body.N.rdb1…, conv_last)")
    net = RRDBNet(**rrdbnet_config(sd))
    missing, unexpected = net.load_state_dict(sd, strict=False)
    if missing or unexpected:
        names = (missing or unexpected)[:2]
        raise ValueError(f"{'missing' if missing else 'unexpected'} weights {', '.join(names)}")
    return net.eval()


# ---- loading ------------------------------------------------------------------------------------------------------
@dataclass
class Upscaler:
    """A loaded super-resolution model: `net(x)` maps a 1×3×H×W batch in [0, 1] to 1×3×(sH)×(sW)."""

    net: Callable[[torch.Tensor], torch.Tensor]
    scale: int
    architecture: str
    loader: str  # "spandrel" or "built-in"
    model: str  # as callers see it (a hub id and file, or a file's name)
    device: str
    dtype: torch.dtype
    multiple: int = 1  # the input's sides must be multiples of this (pixel-unshuffled variants)
    lock: threading.Lock | None = None  # one image at a time through the model

    def __post_init__(self) -> None:
        self.lock = threading.Lock()


def weight_file(model: str, weight: str, settings) -> Path:
    """The weights' file: `model` itself when it is a file, `model/weight` for a folder, else a hub id's `weight`
    (from the cache when the hub is out of reach)."""
    path = Path(model).expanduser()
    if path.is_file():
        return path
    if path.is_dir():
        found = path / weight
        if not found.is_file():
            raise ModelUnavailable(
                f"upscaler '{settings.shown_model(model)}' has no file '{weight}'",
                fix="set DESIGN_STUDIO_UPSCALER_WEIGHT to the weights' file name in that folder",
            )
        return found
    if not is_hub_id(model):
        raise unavailable(model, SETTING, settings, FileNotFoundError(model))
    offline = require(model, SETTING, settings)
    from huggingface_hub import hf_hub_download

    try:
        return Path(hf_hub_download(model, weight, **offline))
    except (OSError, ValueError) as exc:
        raise unavailable(model, SETTING, settings, exc) from None


def read_weights(path: Path, allow_pickle: bool) -> dict[str, Any]:
    """A state dict from safetensors, or (only where pickles are allowed) from a `.pth` read with `weights_only`."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    if path.suffix in PICKLE_SUFFIXES and not allow_pickle:
        raise ModelUnavailable(
            f"upscaler weight '{path.name}' is a pickled checkpoint, which can run code when loaded",
            fix="use its .safetensors file, or set DESIGN_STUDIO_ALLOW_PICKLE=true if you trust the file",
        )
    return torch.load(str(path), map_location="cpu", weights_only=True)


def spandrel_available() -> bool:
    """spandrel is installed and imports (with a working torchvision); False on this project's CPU stack."""
    if importlib.util.find_spec("spandrel") is None:
        return False
    try:
        import spandrel  # noqa: F401
    except Exception as exc:  # torchvision's C++ operators missing beside this torch, and the like
        log.info("spandrel is installed but does not import (%s); the built-in RRDBNet loads the upscaler", exc)
        return False
    return True


def load_upscaler(settings, device: str, dtype: torch.dtype) -> Upscaler:
    """The settings' upscaler on `device` in `dtype` (fp32 where the model has no half-precision support)."""
    model, weight = settings.upscaler_paths()
    shown = settings.shown_model(model)
    shown = shown if Path(model).expanduser().is_file() else f"{shown}/{weight}"
    path = weight_file(model, weight, settings)
    if path.suffix in PICKLE_SUFFIXES and not settings.allow_pickle:
        read_weights(path, False)  # the one-line refusal, before spandrel may open it
    if spandrel_available():
        return _load_spandrel(path, shown, device, dtype)
    try:
        net = rrdbnet_from_state_dict(read_weights(path, settings.allow_pickle))
    except ModelUnavailable:
        raise
    except Exception as exc:  # a broken file, another architecture
        raise ModelUnavailable(f"upscaler '{shown}' cannot be loaded: {_first_line(exc)}", fix=FIX_ARCH) from None
    net = net.to(device=device, dtype=dtype)
    multiple = {4: 1, 2: 2, 1: 4}[net.scale]
    return Upscaler(net, net.scale, "RRDBNet", "built-in", shown, device, dtype, multiple)


def _load_spandrel(path: Path, shown: str, device: str, dtype: torch.dtype) -> Upscaler:
    import spandrel

    try:
        descriptor = spandrel.ModelLoader(device=device).load_from_file(str(path))
    except Exception as exc:
        raise ModelUnavailable(f"upscaler '{shown}' cannot be loaded: {_first_line(exc)}", fix=FIX_ARCH) from None
    if not isinstance(descriptor, spandrel.ImageModelDescriptor):
        raise ModelUnavailable(f"upscaler '{shown}' is not a super-resolution model", fix=FIX_ARCH)
    half = dtype in (torch.float16, torch.bfloat16)
    supported = descriptor.supports_half if dtype == torch.float16 else descriptor.supports_bfloat16
    if half and not supported:
        dtype = torch.float32
    descriptor.to(device=device, dtype=dtype).eval()
    multiple = getattr(descriptor.size_requirements, "multiple_of", 1) or 1
    return Upscaler(descriptor, descriptor.scale, descriptor.architecture.name, "spandrel", shown, device, dtype,
                    multiple)  # fmt: skip


def _first_line(exc: Exception) -> str:
    text = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return text[:200]


def save_tiny_upscaler(path: Path, num_feat: int = 8, num_block: int = 1, num_grow_ch: int = 4, seed: int = 0) -> Path:
    """A random-weight RRDBNet ×4 in RealESRGAN_x4plus's key layout, as safetensors: the tiny profile's upscaler,
    loaded through the same loader as the real file. Its last convolution is amplified and biased to mid-grey, so
    its random output varies with the input (tiling tests compare something) around a visible grey."""
    from safetensors.torch import save_file

    torch.manual_seed(seed)
    net = RRDBNet(num_feat=num_feat, num_block=num_block, num_grow_ch=num_grow_ch)
    with torch.no_grad():
        net.conv_last.weight.mul_(8.0)
        net.conv_last.bias.fill_(0.5)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path))
    return path


# ---- tiled inference ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Tiling:
    """Tile side and overlap in input pixels; `pad` pixels of context each side of a tile, cut off after the model."""

    tile: int = 288
    overlap: int = 32
    pad: int = 16
    multiple: int = 1  # every side and start a multiple of this (a pixel-unshuffling model's factor)

    def starts(self, length: int) -> list[int]:
        """Where the tiles along one side begin: as few tiles as cover it with at least `overlap` between
        neighbours, spread evenly (each `side(length)` long, at most `tile`)."""
        side = self.side(length)
        n = self.tiles(length)
        if n == 1:
            return [0]
        m = self.multiple
        return [round(i * (length - side) / (n - 1) / m) * m for i in range(n)]

    def tiles(self, length: int) -> int:
        if length <= self.tile:
            return 1
        return math.ceil((length - self.overlap) / (self.tile - self.overlap))

    def side(self, length: int) -> int:
        """The tiles' side along a side of `length`: the fewest tiles, then as small as they can be."""
        n = self.tiles(length)
        if n == 1:
            return length
        return min(length, -(-math.ceil((length + (n - 1) * self.overlap) / n) // self.multiple) * self.multiple)

    def count(self, width: int, height: int) -> int:
        return len(self.starts(width)) * len(self.starts(height))


def _ramp(length: int, fade: int, at_start: bool, at_end: bool) -> torch.Tensor:
    """1 in the middle, rising linearly over `fade` samples from the start and falling to the end where the side
    borders another tile (never quite 0: every pixel keeps some weight)."""
    w = torch.ones(length)
    fade = min(fade, length // 2)
    if fade > 0:
        up = (torch.arange(fade, dtype=torch.float32) + 0.5) / fade
        if at_start:
            w[:fade] = up
        if at_end:
            w[length - fade :] = up.flip(0)
    return w


def run_tiled(
    upscaler: Upscaler,
    image: Image.Image,
    tiling: Tiling = Tiling(),
    on_tile: Callable[[int, int], None] | None = None,
    cancel: threading.Event | None = None,
) -> Image.Image:
    """The model's own factor (`upscaler.scale`) applied to `image` tile by tile, seams feathered. `on_tile(done,
    total)` after each tile; a set `cancel` stops it between tiles (Cancelled)."""
    rgb = np.asarray(image.convert("RGB"))
    h0, w0 = rgb.shape[:2]
    x = torch.from_numpy(rgb.copy()).permute(2, 0, 1).unsqueeze(0).float().div_(255)
    m = upscaler.multiple
    if h0 % m or w0 % m:  # a pixel-unshuffling model needs sides divisible by its factor: reflect, crop after
        x = F.pad(x, (0, -w0 % m, 0, -h0 % m), mode="reflect")
    _, _, h, w = x.shape
    s = upscaler.scale
    tile = max(m, tiling.tile - tiling.tile % m)
    overlap = min(tiling.overlap - tiling.overlap % m, tile // 4)
    pad = tiling.pad - tiling.pad % m
    tiles = Tiling(tile, overlap, pad, m)
    out = torch.zeros(3, h * s, w * s)
    weight = torch.zeros(1, h * s, w * s)
    ys, xs = tiles.starts(h), tiles.starts(w)
    total, done = len(ys) * len(xs), 0
    with upscaler.lock, torch.inference_mode():
        for y0 in ys:
            for x0 in xs:
                if cancel is not None and cancel.is_set():
                    raise Cancelled("cancelled")
                th, tw = tiles.side(h), tiles.side(w)
                cy0, cx0 = max(0, y0 - pad), max(0, x0 - pad)
                cy1, cx1 = min(h, y0 + th + pad), min(w, x0 + tw + pad)
                piece = x[:, :, cy0:cy1, cx0:cx1].to(upscaler.device, upscaler.dtype)
                pred = upscaler.net(piece).float().cpu()[0]
                oy, ox = (y0 - cy0) * s, (x0 - cx0) * s
                pred = pred[:, oy : oy + th * s, ox : ox + tw * s]
                fade = overlap * s
                wy = _ramp(th * s, fade, y0 > 0, y0 + th < h)
                wx = _ramp(tw * s, fade, x0 > 0, x0 + tw < w)
                wt = (wy[:, None] * wx[None, :]).unsqueeze(0)
                out[:, y0 * s : (y0 + th) * s, x0 * s : (x0 + tw) * s] += pred * wt
                weight[:, y0 * s : (y0 + th) * s, x0 * s : (x0 + tw) * s] += wt
                del piece, pred
                done += 1
                if on_tile:
                    on_tile(done, total)
    out = (out / weight)[:, : h0 * s, : w0 * s].clamp_(0, 1)
    array = out.mul_(255).round_().to(torch.uint8).permute(1, 2, 0).numpy()
    return Image.fromarray(np.ascontiguousarray(array), "RGB")


def upscale(
    upscaler: Upscaler,
    image: Image.Image,
    factor: int,
    tiling: Tiling = Tiling(),
    on_tile: Callable[[int, int], None] | None = None,
    cancel: threading.Event | None = None,
) -> Image.Image:
    """`image` × `factor` (2 or 4): the model's own factor, then Lanczos to the asked size where they differ (×2 with
    a ×4 model: ×4, then down by half, as ComfyUI's and A1111's upscalers do)."""
    made = run_tiled(upscaler, image, tiling, on_tile, cancel)
    size = (image.width * factor, image.height * factor)
    return made if made.size == size else made.resize(size, Image.Resampling.LANCZOS)
