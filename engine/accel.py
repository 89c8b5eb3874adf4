"""Exact CPU speed-ups for the SD1.5 + ControlNet (+ IP-Adapter) pipeline.

"Exact" means the output equals plain fp32 eager PyTorch up to float rounding (relative error of one
denoising step around 1e-5 or below); reduced precision (bf16/fp16) is deliberately not offered here.

    from engine.accel import optimize, step_inputs, one_step, relative_error
    info = optimize(pipe, "channels_last")      # in place on pipe.unet / pipe.controlnet / pipe.vae
    x = step_inputs(pipe, size=512, batch=2)
    eps = one_step(pipe, x)                     # one ControlNet + UNet evaluation, as the pipeline does per step

Methods (see `METHODS`):

- ``none``: plain fp32 eager.
- ``channels_last``: NHWC weights (and hence activations) for the convolution-heavy modules; oneDNN's
  preferred layout on CPU.
- ``compile``: ``torch.compile`` with inductor, ``dynamic=False`` and freezing (weights become constants,
  oneDNN convolution/linear weights are pre-packed), on channels_last modules. Costs a compile per new
  input shape (size, batch) and per new value of the Python numbers the graph reads (e.g. the IP-Adapter
  scale); ControlNet's ``conditioning_scale`` is applied outside the compiled graph to avoid recompiles.
  Weights are frozen into the compiled graph: changing them afterwards (LoRA, a new IP-Adapter) is not
  seen by the compiled code.
- ``openvino``: ``torch.compile`` with OpenVINO's backend (through AOT autograd), f32 inference precision
  forced. Same recompile rules as ``compile`` (the ControlNet scale trick included), shorter compiles.
"""

from __future__ import annotations

import time
from typing import Any

import torch

#: Every method `optimize` knows (for measuring, tools/accel_probe.py).
ALL_METHODS = ("none", "channels_last", "compile", "compile_nchw", "openvino")
#: Those worth offering on CPU. Measured on 2 AVX2 cores at 512² (tools/accel_probe.py): channels_last ~1.0x,
#: inductor compile ~1.0-1.07x for ~6 min of compiling per shape, OpenVINO ~1.05-1.1x per step (faster VAE
#: decode, far less slow-down when the CPU is shared) for ~70-90 s per shape. None reaches 1.5x; "none" is the
#: default. "openvino" needs the openvino package (2026.4.1 tested).
METHODS = ("none", "openvino")

_STATE = "_design_studio_accel"  # attribute on pipe.unet: {"method": ..., "setup_s": ...}


def _modules(pipe) -> list[tuple[str, torch.nn.Module]]:
    return [
        (name, getattr(pipe, name)) for name in ("unet", "controlnet", "vae") if getattr(pipe, name, None) is not None
    ]


def _to_channels_last(pipe) -> None:
    for _, module in _modules(pipe):
        module.to(memory_format=torch.channels_last)


def _scale_outside(controlnet: torch.nn.Module) -> None:
    """Let the (compiled) ControlNet always see conditioning_scale=1.0 and scale its residuals eagerly.

    The scale is a Python float the graph would otherwise be specialised on (one recompile per value).
    Multiplying by 1.0 is exact, so the result is bit-identical to passing the scale in.
    """
    inner = controlnet.forward

    def forward(*args, conditioning_scale: float = 1.0, return_dict: bool = True, **kwargs):
        down, mid = inner(*args, conditioning_scale=1.0, return_dict=False, **kwargs)
        if conditioning_scale != 1.0:
            down = tuple(d * conditioning_scale for d in down)
            mid = mid * conditioning_scale
        if return_dict:
            from diffusers.models.controlnets.controlnet import ControlNetOutput

            return ControlNetOutput(down_block_res_samples=down, mid_block_res_sample=mid)
        return down, mid

    controlnet.forward = forward


def _compile(pipe, **compile_kw: Any) -> None:
    """Compile, in place, what runs per step (UNet, ControlNet) and the VAE decoder."""
    pipe.unet.compile(**compile_kw)
    if getattr(pipe, "controlnet", None) is not None:
        # Compile the bound forward (not the module call), so the eager scaling can wrap it.
        pipe.controlnet.forward = torch.compile(pipe.controlnet.forward, **compile_kw)
        _scale_outside(pipe.controlnet)
    vae = getattr(pipe, "vae", None)
    if vae is not None:
        vae.decoder.compile(**compile_kw)


def optimize(pipe, method: str = "none") -> dict:
    """Apply `method` in place to ``pipe.unet``, ``pipe.controlnet`` and ``pipe.vae``; returns
    ``{"method", "setup_s", "cached"}``.

    The modules stay the same objects (``.config``, ``.dtype``, ``.device`` unchanged), so the pipeline's
    own ``__call__`` keeps working. Calling again with the same method is a no-op; another method on an
    already optimised pipeline raises ``ValueError`` (reload the pipeline instead). Compilation itself is
    lazy: it happens on the first call with each new input shape, not here.
    """
    if method not in ALL_METHODS:
        raise ValueError(f"unknown method {method!r}; one of {', '.join(ALL_METHODS)}")
    done = getattr(pipe.unet, _STATE, None)
    if done is not None:
        if done["method"] != method:
            raise ValueError(f"pipeline already optimised with {done['method']!r}; reload it to use {method!r}")
        return {**done, "cached": True}
    if method != "none" and pipe.unet.device.type != "cpu":
        raise ValueError(f"{method!r} is a CPU optimisation; the pipeline is on {pipe.unet.device}")

    t0 = time.perf_counter()
    if method in ("channels_last", "compile"):
        _to_channels_last(pipe)
    if method in ("compile", "compile_nchw"):
        _compile(pipe, backend="inductor", dynamic=False, options={"freezing": True})
    elif method == "openvino":
        import openvino.torch  # noqa: F401  registers the "openvino" torch.compile backend

        # aot_autograd: OpenVINO's default path (make_fx inside Dynamo) fails on torch 2.13 with
        # "AssertionError: sources must not be empty for symbol sNN" while Dynamo builds its shape guards.
        options = {"device": "CPU", "aot_autograd": True, "config": {"INFERENCE_PRECISION_HINT": "f32"}}
        _compile(pipe, backend="openvino", dynamic=False, options=options)
    info = {"method": method, "setup_s": round(time.perf_counter() - t0, 3)}
    setattr(pipe.unet, _STATE, info)
    return {**info, "cached": False}


def step_inputs(pipe, size: int, batch: int, seed: int = 0) -> dict:
    """Fixed random inputs for one step at `size`² with `batch` rows (2 = classifier-free guidance)."""
    g = torch.Generator("cpu").manual_seed(seed)
    dtype = pipe.unet.dtype
    latent = pipe.vae_scale_factor if hasattr(pipe, "vae_scale_factor") else 8
    text_dim = pipe.unet.config.cross_attention_dim
    image_encoder = getattr(pipe, "image_encoder", None)
    ip_dim = image_encoder.config.projection_dim if image_encoder is not None else None

    def randn(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float32).to(dtype)

    out = {
        "latents": randn(batch, pipe.unet.config.in_channels, size // latent, size // latent),
        "t": torch.tensor(981, dtype=torch.long),
        "text_embeds": randn(batch, 77, text_dim),
        "control_image": torch.rand(batch, 3, size, size, generator=g).to(dtype),
        "ip_embeds": randn(batch, 1, ip_dim) if ip_dim else None,
    }
    return out


@torch.no_grad()
def one_step(pipe, inputs: dict) -> torch.Tensor:
    """One denoising step's network evaluations: ControlNet residuals, then the UNet's noise prediction."""
    down, mid = pipe.controlnet(
        inputs["latents"],
        inputs["t"],
        encoder_hidden_states=inputs["text_embeds"],
        controlnet_cond=inputs["control_image"],
        conditioning_scale=1.0,
        return_dict=False,
    )
    added = {"image_embeds": [inputs["ip_embeds"]]} if inputs.get("ip_embeds") is not None else None
    return pipe.unet(
        inputs["latents"],
        inputs["t"],
        encoder_hidden_states=inputs["text_embeds"],
        down_block_additional_residuals=down,
        mid_block_additional_residual=mid,
        added_cond_kwargs=added,
        return_dict=False,
    )[0]


@torch.no_grad()
def vae_decode(pipe, latents: torch.Tensor) -> torch.Tensor:
    """The VAE decode the pipeline does at the end (latents are unscaled, as the denoiser gives them)."""
    return pipe.vae.decode(latents / pipe.vae.config.scaling_factor, return_dict=False)[0]


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    """||a - b|| / ||b||, in float64."""
    a, b = a.double(), b.double()
    return float((a - b).norm() / b.norm())
