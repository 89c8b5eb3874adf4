"""Measure the exact CPU speed-ups of engine.accel on the full-size (random-weight) SD1.5 + ControlNet + IP-Adapter.

    .venv/bin/python tools/accel_probe.py --size 512 --batch 2 --methods none,channels_last,compile
    .venv/bin/python tools/accel_probe.py --smoke compile      # a real pipe(...) call, 256², 2 steps, vs plain

Each method runs on its own copy of unet/controlnet/vae, alternated round by round with plain fp32 ("none")
so both see the same machine load; speed-up = median(none) / median(method) within that pair. Prints a table
(and --json FILE). Peak RSS is the process's high-water mark, reset before each method.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import gc
import json
import statistics
import sys
import time
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from engine.accel import ALL_METHODS, one_step, optimize, relative_error, step_inputs, vae_decode  # noqa: E402


def rss_mb(field: str = "VmHWM") -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return round(int(line.split()[1]) / 1024, 1)
    return float("nan")


def reset_peak() -> None:
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def load(root: Path):
    from engine.bench import build_real
    from engine.models import load_pipeline
    from engine.settings import Settings

    root = build_real(root, "cpu")
    s = Settings(
        profile="default",
        data_dir="/tmp/fullsize-data",
        base_model=str(root / "stable-diffusion-v1-5"),
        controlnet_model=str(root / "sd-controlnet-canny"),
        ip_adapter_model=str(root / "IP-Adapter"),
    )
    return load_pipeline(s, "cpu", torch.float32)


def variant(pipe):
    """A pipeline-like view with its own copies of the modules an optimisation touches."""
    return SimpleNamespace(
        unet=copy.deepcopy(pipe.unet),
        controlnet=copy.deepcopy(pipe.controlnet),
        vae=copy.deepcopy(pipe.vae),
        image_encoder=pipe.image_encoder,
        vae_scale_factor=pipe.vae_scale_factor,
    )


def timed(fn, *args):
    t0 = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - t0


def measure(pipe, methods, size, batch, repeats, vae_sizes, log):
    x = step_inputs(pipe, size, batch)
    ref, first_none = timed(one_step, pipe, x)
    lat = {s: torch.randn(1, 4, s // 8, s // 8, generator=torch.Generator().manual_seed(1)) for s in vae_sizes}
    vae_ref = {s: vae_decode(pipe, lat[s]) for s in vae_sizes}
    rows = []
    for method in methods:
        if method == "none":
            continue
        gc.collect()
        reset_peak()
        v = variant(pipe)
        info = optimize(v, method)
        row = {"method": method, "size": size, "batch": batch, "setup_s": info["setup_s"]}
        try:
            out, first = timed(one_step, v, x)  # compiles (if the method compiles)
            row["first_call_s"] = round(first, 2)
            row["rel_err"] = relative_error(out, ref)
            vae_first = {}
            for s in vae_sizes:
                img, t = timed(vae_decode, v, lat[s])
                vae_first[s] = round(t, 2)
                row[f"vae{s}_rel_err"] = relative_error(img, vae_ref[s])
            row["vae_first_call_s"] = vae_first
            t_none, t_meth, vae_none, vae_meth = [], [], {s: [] for s in vae_sizes}, {s: [] for s in vae_sizes}
            for r in range(repeats):
                for who, times in (("none", t_none), (method, t_meth)):
                    target = pipe if who == "none" else v
                    _, t = timed(one_step, target, x)
                    times.append(t)
                    log(f"  {size}² b{batch} round {r}: {who:14s} {t:7.2f} s")
                for s in vae_sizes:
                    vae_none[s].append(timed(vae_decode, pipe, lat[s])[1])
                    vae_meth[s].append(timed(vae_decode, v, lat[s])[1])
            med_none, med = statistics.median(t_none), statistics.median(t_meth)
            row.update(
                none_s=round(med_none, 3),
                step_s=round(med, 3),
                speedup=round(med_none / med, 3),
                compile_s=round(max(0.0, first - med), 1),
                steps_none=[round(t, 2) for t in t_none],
                steps=[round(t, 2) for t in t_meth],
            )
            for s in vae_sizes:
                row[f"vae{s}_none_s"] = round(statistics.median(vae_none[s]), 3)
                row[f"vae{s}_s"] = round(statistics.median(vae_meth[s]), 3)
        except Exception as exc:  # report and go on with the next method
            row["error"] = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:400] if str(exc) else ''}"
            log(f"  {method} failed: {row['error']}")
        row["peak_rss_mb"] = rss_mb()
        rows.append(row)
        log(json.dumps(row))
        del v
        torch._dynamo.reset()
        gc.collect()
    return rows, first_none


def table(rows, vae_sizes) -> str:
    head = ["method", "size", "batch", "setup s", "compile s", "s/step", "none s/step", "speed-up", "rel err"]
    head += [f"VAE{s} s (none)" for s in vae_sizes] + ["peak RSS MB"]
    lines = [" | ".join(head)]
    for r in rows:
        if "error" in r:
            lines.append(f"{r['method']} | {r['size']} | {r['batch']} | FAILED: {r['error']}")
            continue
        cells = [r["method"], r["size"], r["batch"], r["setup_s"], r["compile_s"], r["step_s"], r["none_s"]]
        cells += [f"{r['speedup']:.2f}x", f"{r['rel_err']:.1e}"]
        cells += [f"{r[f'vae{s}_s']} ({r[f'vae{s}_none_s']}) err {r[f'vae{s}_rel_err']:.0e}" for s in vae_sizes]
        cells += [r["peak_rss_mb"]]
        lines.append(" | ".join(str(c) for c in cells))
    return "\n".join(lines)


def smoke(pipe, method: str, log) -> dict:
    """A real pipe(...) call (ControlNet + IP-Adapter embeds, CFG) at 256², 2 steps, plain vs `method`."""
    from PIL import Image

    dim = pipe.image_encoder.config.projection_dim
    embeds = torch.randn(1, 1, dim, generator=torch.Generator().manual_seed(2))
    embeds = torch.cat([torch.zeros_like(embeds), embeds])
    control = Image.new("RGB", (256, 256), "white")

    def call(scale):
        return pipe(
            prompt="a cosy reading corner",
            image=control,
            height=256,
            width=256,
            num_inference_steps=2,
            guidance_scale=7.5,
            generator=torch.Generator().manual_seed(0),
            ip_adapter_image_embeds=[embeds],
            controlnet_conditioning_scale=scale,
            output_type="pt",
        ).images

    ref, t_ref = timed(call, 0.8)
    info = optimize(pipe, method)
    again = optimize(pipe, method)
    out, t_first = timed(call, 0.8)
    out2, t_second = timed(call, 0.8)
    _, t_other_scale = timed(call, 0.5)  # must not recompile the ControlNet
    pipe.set_ip_adapter_scale(0.6)  # the product sets the style strength per request: recompiles the UNet?
    _, t_other_ip_scale = timed(call, 0.5)
    res = {
        "method": method,
        "optimize": info,
        "second_optimize_cached": again["cached"],
        "plain_s": round(t_ref, 2),
        "first_s": round(t_first, 2),
        "second_s": round(t_second, 2),
        "other_cond_scale_s": round(t_other_scale, 2),
        "other_ip_scale_s": round(t_other_ip_scale, 2),
        "image_rel_err": relative_error(out, ref),
        "repeat_rel_err": relative_error(out2, out),
        "unet_type": type(pipe.unet).__name__,
        "dtype": str(pipe.unet.dtype),
        "peak_rss_mb": rss_mb(),
    }
    log(json.dumps(res))
    return res


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--batch", default="2", help="comma-separated batch sizes, e.g. 2,1")
    ap.add_argument(
        "--methods", default="none,channels_last,compile", help=f"comma-separated: {', '.join(ALL_METHODS)}"
    )
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--vae-sizes", default="512,256")
    ap.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: leave as is)")
    ap.add_argument("--root", default="/tmp/fullsize")
    ap.add_argument("--smoke", metavar="METHOD", help="instead: a real pipe(...) call at 256², plain vs METHOD")
    ap.add_argument("--json", help="write the rows here")
    args = ap.parse_args(argv)

    def log(msg):
        print(msg, file=sys.stderr, flush=True)

    if args.threads:
        torch.set_num_threads(args.threads)
    log(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    t0 = time.perf_counter()
    pipe = load(Path(args.root))
    log(f"loaded in {time.perf_counter() - t0:.1f} s, RSS {rss_mb('VmRSS')} MB")

    if args.smoke:
        result = smoke(pipe, args.smoke, log)
        if args.json:
            Path(args.json).write_text(json.dumps(result, indent=1))
        return 0

    methods = [m for m in args.methods.split(",") if m]
    vae_sizes = [int(s) for s in args.vae_sizes.split(",") if s]
    rows = []
    for batch in [int(b) for b in args.batch.split(",")]:
        r, _ = measure(pipe, methods, args.size, batch, args.repeats, vae_sizes, log)
        rows += r
    print(table(rows, vae_sizes))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
