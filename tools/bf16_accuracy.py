"""fp32 against bf16 arithmetic for a whole 20-step render, on a CPU without bf16 units.

    python tools/bf16_accuracy.py [--size 512] [--steps 20] [--profile tiny]

Where the CPU has no bf16 units (AVX2 only), torch runs bf16 convolutions and matmuls on slow fallback kernels: a
512² step took over 15 minutes here, so `python -m engine.bench --real --accuracy` (real bf16) only fits small sizes.
This tool measures the same comparison at full speed by doing bf16's rounding in fp32: every weight rounded to bf16
once, every layer's output rounded to bf16 (a forward hook on each leaf module), and the latents rounded after each
step, with products summed in fp32 as AMX and AVX512-BF16 do. What it leaves in fp32 is the arithmetic inside one
layer's forward (a residual add, the softmax inside attention): a real bf16 run differs from it there by at most
one rounding per such op. The same request as the bench's accuracy (its sketch, one style, seed 0, quality mode).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def round_to_bf16(modules: list[torch.nn.Module]) -> list:
    """Weights rounded to bf16 in place, and a hook on every leaf module rounding its outputs; returns the hooks."""

    def rounded(value):
        if isinstance(value, torch.Tensor) and value.is_floating_point():
            return value.to(torch.bfloat16).to(value.dtype)
        if isinstance(value, tuple):
            return tuple(rounded(v) for v in value)
        return value

    hooks = []
    with torch.no_grad():
        for module in modules:
            for p in module.parameters():
                p.copy_(p.to(torch.bfloat16).to(p.dtype))
            for m in module.modules():
                if not list(m.children()):
                    hooks.append(m.register_forward_hook(lambda _m, _i, out: rounded(out)))
    return hooks


def main() -> None:
    from engine import bench

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--profile", choices=["default", "tiny"], default="default")
    p.add_argument("--data-dir", default=str(Path.home() / ".design-studio-bench"))
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    args.real, args.device, args.timeout = args.profile == "default", "cpu", 7200.0
    overrides, _ = bench.engine_overrides(args)
    overrides["previews"] = False
    from engine.images import png_bytes

    sketch = png_bytes(bench.bench_sketch(args.size))
    from diffusers import UniPCMultistepScheduler

    plain_step = UniPCMultistepScheduler.step

    def rounded_step(self, *a, **kw):  # the latents a bf16 pipeline carries from step to step are bf16
        out = plain_step(self, *a, **kw)
        if isinstance(out, tuple):  # return_dict=False, as the pipelines call it
            return (out[0].to(torch.bfloat16).to(out[0].dtype), *out[1:])
        out.prev_sample = out.prev_sample.to(torch.bfloat16).to(out.prev_sample.dtype)
        return out

    runs = {}
    for name in ("float32", "bf16-rounding"):
        engine = bench.open_engine(overrides, "float32")
        hooks = []
        try:
            if name != "float32":
                engine.load()
                pipe = engine.executor.generator("sd15").pipe  # the loaded parts (an internal: measured here)
                hooks = round_to_bf16([pipe.unet, pipe.controlnet, pipe.vae, pipe.text_encoder, pipe.image_encoder])
                UniPCMultistepScheduler.step = rounded_step
            runs[name] = bench._accuracy_render(engine, args, name, sketch)
        finally:
            UniPCMultistepScheduler.step = plain_step
            for h in hooks:
                h.remove()
            free = bench.close_engine(engine)
            del engine
        free()
        print(f"{name}: {runs[name]['render_s']:.1f} s", file=sys.stderr, flush=True)
    a, b = runs["float32"].pop("_latents"), runs["bf16-rounding"].pop("_latents")
    pa, pb = runs["float32"].pop("_pixels"), runs["bf16-rounding"].pop("_pixels")
    out = {
        "size": args.size,
        "steps": args.steps,
        "profile": args.profile,
        "latents_rel_error": bench.rel_error(a, b),
        "latents_max_abs": float((a - b).abs().max()),
        "image_psnr_db": bench.psnr(pa, pb),
        "seconds": {k: v["render_s"] for k, v in runs.items()},
    }
    print(json.dumps(out, indent=2))
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
