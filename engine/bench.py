"""Benchmark: time every stage (load, edges, retrieval, each diffusion step, VAE decode) and peak memory.

    python -m engine.bench --profile tiny                 # CPU, seconds
    python -m engine.bench --real                         # full-size SD1.5/ControlNet/IP-Adapter, random weights
    python -m engine.bench --retrieval 10000 100000       # retrieval over N synthetic styles
    python -m engine.bench --real --modes quality,fast,live --dtypes float32,auto [--size 512] [--device cuda]
    python -m engine.bench --real --accuracy [--size 512] [--steps 20]     # fp32 vs bf16: latents, pixels
    python -m engine.bench --real --accuracy-parts [--size 512]            # fp32 vs bf16, each model part alone

Renders are timed through the engine interface, as the designer waits: `renders.submit`, `jobs.wait` until the job
is done, `renders.result`: the clock stops when the image is available. A render's metrics (CLIP score, edge F1)
are computed afterwards by their own job (`RenderResult.measure_job`): the benchmark waits for it untimed, so it
never overlaps the next render, and reports it apart as "metrics (after the image)".

--modes renders, per round, each mode twice in a row (`--stay`, the default): the first follows another mode and
pays the switch (fusing the few-step LoRA into the UNet, or reading the base weights back: ~3 s on a 2-core CPU),
the second follows the same mode, as for a designer who stays in it. "end to end" is the median of the second
renders, "after a switch" that of the first; the speed-ups use "end to end". `--no-stay` renders each mode once a
round (every render then follows a switch, as the earlier tables in docs/performance.md were measured). With one
mode there is no switch and each render counts once.

--dtypes takes float32, bfloat16, float16 or auto (resolved by the settings, engine/precision.py): one engine per
dtype, loaded, warmed, measured, closed and freed before the next (two full-size engines do not fit in 24 GiB).

--accuracy reads the final latents at the decode, an internal of the generator: it measures an internal.

Reports; asserts nothing. One JSON document on stdout (and --json FILE), the tables on stderr as Markdown.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import io
import json
import logging
import math
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from .rules.controlnets import CONTROLS, DEFAULT_CONTROL

log = logging.getLogger("bench")


def _median_ms(times: list[float]) -> float:
    return round(statistics.median(times) * 1000, 3)


def _peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def bench_sketch(size: int) -> Image.Image:
    """A line drawing of the requested size: a room with a window, a table and a lamp."""
    img = Image.new("RGB", (size, size), "white")
    d = ImageDraw.Draw(img)
    s = size / 512
    for box in (
        [60, 60, 452, 452],
        [90, 90, 220, 260],
        [260, 330, 430, 360],
        [300, 360, 310, 452],
        [380, 360, 390, 452],
    ):
        d.rectangle([int(v * s) for v in box], outline="black", width=max(1, int(3 * s)))
    d.ellipse([int(v * s) for v in (300, 120, 380, 200)], outline="black", width=max(1, int(3 * s)))
    d.line([(int(340 * s), int(200 * s)), (int(340 * s), int(330 * s))], "black", max(1, int(3 * s)))
    return img


def bench_edges(size: int, repeats: int = 50) -> dict:
    from .images import edges

    sketch = bench_sketch(size)
    rng = np.random.default_rng(0)
    photo = Image.fromarray((rng.random((size // 8, size // 8, 3)) * 255).astype(np.uint8)).resize((size, size))
    out = {}
    for mode, img in (("lines", sketch), ("canny", photo)):
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            edges(img, mode)
            times.append(time.perf_counter() - t0)
        out[f"{mode}_ms"] = _median_ms(times)
    return out


def bench_retrieval(n: int, dim: int = 512, queries: int = 200, seed: int = 0) -> dict:
    """Median query time through the library's real search path, and agreement with exact search."""
    from .library import StyleLibrary, chroma_client

    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(max(8, n // 200), dim))
    vecs = centers[rng.integers(0, len(centers), n)] + 0.35 * rng.normal(size=(n, dim))
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)

    class _Fixed:  # search_vector needs no embedding model: the query is already a vector
        dim = 512

    with tempfile.TemporaryDirectory() as tmp:
        lib = StyleLibrary(chroma_client(Path(tmp)), _Fixed(), collection="bench")
        t0 = time.perf_counter()
        batch = 4096
        for i in range(0, n, batch):
            ids = [f"s{j}" for j in range(i, min(n, i + batch))]
            lib.vectors.add(
                ids=ids,
                embeddings=vecs[i : i + batch].tolist(),
                metadatas=[{"name": sid, "hidden": False, "source": "bench"} for sid in ids],
                documents=ids,
            )
        index_s = time.perf_counter() - t0
        # a query like a near-duplicate image of a stored style: cosine ≈ 0.9 to it
        qs = vecs[rng.integers(0, n, queries)] + 0.02 * rng.normal(size=(queries, dim))
        qs /= np.linalg.norm(qs, axis=1, keepdims=True)
        times, agree = [], 0
        for q in qs:
            t0 = time.perf_counter()
            hits = lib.search_vector(q.tolist(), k=3)
            times.append(time.perf_counter() - t0)
            agree += hits[0].id == f"s{int(np.argmax(vecs @ q))}"
        scan = []
        for q in qs[:50]:
            t0 = time.perf_counter()
            int(np.argmax(vecs @ q))
            scan.append(time.perf_counter() - t0)
    return {
        "styles": n,
        "index_s": round(index_s, 2),
        "median_ms": _median_ms(times),
        "p90_ms": round(float(np.percentile(times, 90)) * 1000, 3),
        "top1_equals_exact": round(agree / queries, 4),
        "numpy_scan_ms": _median_ms(scan),
    }


def build_real(root: Path, device: str) -> Path:
    """Full-size architectures from configs/full-size.json with random weights, in the real layout."""
    import torch

    from .tiny import build_profile, full_size_spec

    marker = root / "built.json"
    if not marker.is_file():
        dtype = torch.float16 if device.startswith("cuda") else torch.float32
        build_profile(root, full_size_spec(), dtype=dtype, device=device)
        marker.write_text(json.dumps({"dtype": str(dtype)}))
    if not (root / "taesd").is_dir():  # built before the few-step modes
        from .tiny import build_fast_parts

        build_fast_parts(root, full_size_spec(), dtype=torch.float16 if device.startswith("cuda") else torch.float32)
    return root


def engine_overrides(args) -> tuple[dict, float]:
    """Settings for the benchmark's engine: the profile asked for, or (--real) full-size random architectures."""
    from .settings import Settings

    overrides: dict = {"data_dir": args.data_dir, "profile": "tiny" if args.profile == "tiny" else "default"}
    if args.device:
        overrides["device"] = args.device
    build_s = 0.0
    if args.real:
        device = Settings(**overrides).resolve_device()
        t0 = time.perf_counter()
        root = build_real(Path(args.data_dir) / "models" / "full-size-random", device)
        build_s = time.perf_counter() - t0
        overrides.update(
            profile="default",
            base_model=str(root / "stable-diffusion-v1-5"),
            controlnet_model=str(root / CONTROLS[DEFAULT_CONTROL].tiny_folder),
            ip_adapter_model=str(root / "IP-Adapter"),
            clip_model=str(root / "clip-vit-base-patch32"),
            catalog_clip_model=str(root / "clip-vit-base-patch32"),
            fast_lora=str(root / "lcm-lora-sdv1-5"),
            taesd_model=str(root / "taesd"),
        )
    return overrides, build_s


# ---- the machine and the engine interface ------------------------------------------------------------------------

#: The /proc/cpuinfo flags that decide what a CPU runs fast: AVX2/AVX-512 for fp32, bf16 units, int8 dot products.
CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_int8", "avx512_vnni", "avx_vnni")
PROMPT = "a cosy reading corner, warm light"


def proc_flags(path: str = "/proc/cpuinfo") -> set[str]:
    """The kernel's flags of the first processor (empty off Linux)."""
    try:
        for line in Path(path).read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("flags"):
                return set(line.partition(":")[2].split())
    except OSError:
        pass
    return set()


def machine_info(device: str = "cpu") -> dict:
    """What the numbers were measured on: the CPU as torch dispatches on it, the relevant flags, torch, threads, GPU."""
    import torch

    from .precision import cpu_features

    features = cpu_features()
    flags = proc_flags()
    info = {
        "cpu": features.model or platform.processor() or platform.machine(),
        "torch_isa": features.isa,
        "cpu_flags": {flag: flag in flags for flag in CPU_FLAGS},
        "bf16_units": features.bf16,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
    if str(device).startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name()
    return info


def machine_line(m: dict) -> str:
    flags = ", ".join(f for f, on in m["cpu_flags"].items() if on) or "none of them"
    line = (
        f"Machine: {m['cpu']}; torch ISA {m['torch_isa'] or '?'}; flags {flags} (of {', '.join(CPU_FLAGS)}); "
        f"bf16 units: {m['bf16_units'] or 'none'}; torch {m['torch']}, {m['threads']} threads"
    )
    return line + (f"; GPU {m['gpu']}" if m.get("gpu") else "")


@dataclass
class Timed:
    """One render as the designer waits for it: submit → the image available (`seconds`); its metrics, computed by
    a separate job after the image, waited for untimed and reported apart (`metrics_s`, None when measured inline)."""

    seconds: float
    result: Any
    metrics_s: float | None = None


def wait_job(engine, job_id: str, timeout: float):
    """The job once it has ended, following it the way a client does (`jobs.wait` holds until it moves)."""
    start = time.monotonic()
    deadline, said = start + timeout, start
    info = engine.jobs.get(job_id)
    while not info.done:
        left = deadline - time.monotonic()
        if left <= 0:
            engine.jobs.cancel(job_id)
            raise TimeoutError(f"job {job_id} ({info.kind}) still {info.state} after {timeout:.0f} s")
        info = engine.jobs.wait(job_id, timeout=min(left, 20.0))
        if time.monotonic() - said > 60:  # a slow render says where it is, once a minute at most
            said = time.monotonic()
            log.warning("  %s: %s %d/%d after %.0f s", info.kind, info.stage, info.step, info.total, said - start)
    if info.state != "done":
        raise RuntimeError(f"job {job_id} ({info.kind}) {info.state}: {info.error}")
    return info


def render_timed(engine, request, timeout: float = 7200.0) -> Timed:
    """Render through the engine interface (`renders.submit`, `jobs.wait`, `renders.result`) and time it; then wait
    for the render's measure job, if any, so measuring never overlaps the next render."""
    t0 = time.perf_counter()
    job = engine.renders.submit(request)
    wait_job(engine, job.id, timeout)
    result = engine.renders.result(job.id)
    timed = Timed(time.perf_counter() - t0, result)
    measure_job = getattr(result, "measure_job", None)
    if measure_job:
        t0 = time.perf_counter()
        wait_job(engine, measure_job, timeout)
        timed.metrics_s = time.perf_counter() - t0
    return timed


def open_engine(overrides: dict, dtype: str | None = None):
    """A LocalEngine for the benchmark: the dtype asked for (None: the settings' own), no adoption of the jobs a
    killed earlier benchmark left in the data folder (they would run inside the timings)."""
    from .local import LocalEngine
    from .settings import Settings

    settings = Settings(**overrides, **({"dtype": dtype} if dtype else {}))
    return LocalEngine(settings, adopt_jobs=False)


def close_engine(engine) -> Callable[[], dict]:
    """Close the engine; the returned call, made once the caller has dropped its reference, frees its memory and
    says whether the models are gone (two full-size engines do not fit side by side in 24 GiB)."""
    ref = weakref.ref(engine.models)
    engine.close()

    def free() -> dict:
        import torch

        deadline = time.monotonic() + 10  # the job workers let go of the handlers at their next wake-up
        while True:
            gc.collect()
            if ref() is None or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        with contextlib.suppress(OSError, AttributeError):  # glibc keeps freed heap pages unless asked
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        return {"freed": ref() is None, "rss_after_close_mb": round(_rss() / 2**20)}

    return free


def _rss() -> int:
    import psutil

    return psutil.Process().memory_info().rss


def precision_of(engine, requested: str) -> str:
    """The precision column: 'float32', 'auto → float32', 'bfloat16 (emulated: slower here)', 'auto → bfloat16
    (AMX)'."""
    from .precision import dtype_name, precision_label

    name = dtype_name(engine.models.dtype)
    text = f"{requested} → {name}" if requested != name else name
    label = precision_label(engine.models.device, engine.models.dtype)
    return text + (f" ({label.partition('(')[2]}" if "(" in label else "")


def _median(values) -> float | None:
    values = list(values)
    return statistics.median(values) if values else None


def _r(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


def _s(value: float | None) -> str:
    return "–" if value is None else f"{value:.3g} s"


def bench_generation(args) -> dict:
    """One request rendered a few times through the engine interface: load, end to end, each stage."""
    import torch

    from .images import png_bytes
    from .schema import GenerateRequest

    overrides, build_s = engine_overrides(args)
    engine = open_engine(overrides, args.dtypes.split(",")[0].strip() if args.dtypes else None)
    cuda = engine.models.device.startswith("cuda")
    t0 = time.perf_counter()
    engine.load()
    load_s = time.perf_counter() - t0

    sketch = png_bytes(bench_sketch(args.size))
    request = GenerateRequest.build(prompt=PROMPT, sketch=sketch, size=args.size, steps=args.steps, seed=0)
    render_timed(engine, request, args.timeout)  # warm-up: kernels, allocator, caches
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    runs = [render_timed(engine, request.model_copy(update={"seed": i}), args.timeout) for i in range(args.runs or 3)]
    timings = [r.result.metadata["timings"] for r in runs]
    steps = [s for t in timings for s in t["steps"]]
    metrics = [r.metrics_s for r in runs if r.metrics_s is not None]
    out = {
        "profile": "real-architectures-random-weights" if args.real else args.profile,
        "device": engine.models.device,
        "dtype": str(engine.models.dtype).removeprefix("torch."),
        "precision": precision_of(engine, engine.settings.dtype),
        "size": args.size,
        "steps": args.steps,
        "runs": args.runs or 3,
        "load_s": round(load_s, 3),
        "end_to_end_s": round(statistics.median(r.seconds for r in runs), 4),
        "metrics_after_s": _r(_median(metrics)),
        "edges_ms": _median_ms([t["edges"] for t in timings]),
        "retrieval_ms": _median_ms([t["retrieval"] for t in timings]),
        "style_encode_ms": _median_ms([t["style_encode"] for t in timings]),
        "step_ms_median": _median_ms(steps),
        "step_ms_first": round(timings[-1]["steps"][0] * 1000, 3),
        "step_ms_last_run": [round(v * 1000, 2) for v in timings[-1]["steps"]],
        "denoise_s": round(statistics.median(t["denoise"] for t in timings), 4),
        "vae_decode_ms": _median_ms([t["vae_decode"] for t in timings]),
        "peak_rss_mb": _peak_rss_mb(),
    }
    if args.real:
        out["build_s"] = round(build_s, 1)
        pipe = engine.executor.generator("sd15").pipe
        out["parameters"] = {
            name: sum(p.numel() for p in getattr(pipe, name).parameters())
            for name in ("unet", "controlnet", "vae", "text_encoder", "image_encoder")
        }
    if cuda:
        out["peak_gpu_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
        out["gpu"] = torch.cuda.get_device_name()
    engine.close()
    return out


class PeakMemory:
    """The highest resident memory of this process (and of the GPU) while the block runs, sampled every 50 ms."""

    def __enter__(self):
        import threading

        import psutil

        self._proc, self._stop, self.rss = psutil.Process(), threading.Event(), 0
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.rss = max(self.rss, self._proc.memory_info().rss)
            self._stop.wait(0.05)

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.rss = max(self.rss, self._proc.memory_info().rss)


# ---- render modes × precisions ---------------------------------------------------------------------------------


def bench_modes(args) -> dict:
    """The render modes side by side, per precision: one engine per dtype (loaded, a warm-up per mode, then rounds
    that render the modes in turn, so a slow minute of a noisy machine hits every mode alike), closed and freed
    before the next. Medians per mode and dtype; see the module docstring for 'same mode' and 'after a switch'."""
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    dtypes = [d.strip() for d in args.dtypes.split(",") if d.strip()] if args.dtypes else [None]
    overrides, build_s = engine_overrides(args)
    overrides["previews"] = False  # the modes' own cost; step previews are measured apart
    from .settings import Settings

    cuda = Settings(**overrides).resolve_device().startswith("cuda")
    rounds = args.runs or (10 if cuda else 3)
    stay = args.stay and len(modes) > 1
    out: dict = {"size": args.size, "rounds": rounds, "stay": stay, "build_s": round(build_s, 1), "accel": None}
    out["engines"], out["rows"] = [], []
    for dtype in dtypes:
        engine_out, rows, free = _bench_modes_one_dtype(args, overrides, dtype, modes, rounds, stay)
        engine_out.update(free())
        out["accel"] = engine_out.pop("accel")
        out["engines"].append(engine_out)
        out["rows"] += rows
        log.warning("%s: engine closed (freed: %s, RSS now %s MB)", engine_out["precision"], engine_out["freed"],
                    engine_out["rss_after_close_mb"])  # fmt: skip
    out["machine"] = machine_info("cuda" if cuda else "cpu")
    _add_ratios(out["rows"])
    out["markdown"] = modes_markdown(out, cuda)
    return out


def _bench_modes_one_dtype(args, overrides: dict, dtype: str | None, modes: list[str], rounds: int, stay: bool):
    import torch

    from .images import png_bytes
    from .schema import GenerateRequest

    engine = open_engine(overrides, dtype)
    requested = engine.settings.dtype
    cuda = engine.models.device.startswith("cuda")
    t0 = time.perf_counter()
    engine.load()
    load_s = time.perf_counter() - t0
    accel = None
    if args.accel and args.accel != "none":
        from .accel import optimize

        accel = optimize(engine.executor.generator("sd15").pipe, args.accel)
    sketch = png_bytes(bench_sketch(args.size))

    def req(mode: str, seed: int, **kw) -> GenerateRequest:
        return GenerateRequest.build(prompt=PROMPT, sketch=sketch, size=args.size, seed=seed, mode=mode, **kw)

    precision = precision_of(engine, requested)
    results: dict[str, dict] = {}
    for mode in modes:  # warm-up: one step, loading the mode's LoRA or TAESD
        t0 = time.perf_counter()
        render_timed(engine, req(mode, 0, steps=1), args.timeout)
        results[mode] = {"first_call_s": round(time.perf_counter() - t0, 2), "renders": [], "rss": 0}
    previous = modes[-1]
    seed = 1
    for i in range(rounds):
        for mode in modes:
            for _ in range(2 if stay else 1):  # stay: the mode again, as a designer who keeps to it
                r = results[mode]
                if cuda:
                    torch.cuda.reset_peak_memory_stats()
                with PeakMemory() as mem:
                    timed = render_timed(engine, req(mode, seed), args.timeout)
                seed += 1
                r["rss"] = max(r["rss"], mem.rss)
                r["renders"].append((timed, previous != mode))
                r["meta"] = timed.result.metadata
                if cuda:
                    r["gpu_peak"] = max(r.get("gpu_peak", 0), torch.cuda.max_memory_allocated())
                log.warning("%s %s %d/%d%s: %.2f s", precision, mode, i + 1, rounds,
                            " (after a switch)" if previous != mode else "", timed.seconds)  # fmt: skip
                previous = mode
    rows = []
    for mode, r in results.items():
        meta = r["meta"]
        timings = [t.result.metadata["timings"] for t, _ in r["renders"]]
        steps = [s for t in timings for s in t["steps"][1:]]  # the first step also pays the set-up
        same = [t.seconds for t, switched in r["renders"] if not switched]
        switched = [t.seconds for t, switched in r["renders"] if switched]
        row = {
            "mode": mode,
            "device": engine.models.device,
            "requested": requested,
            "dtype": str(engine.models.dtype).removeprefix("torch."),
            "precision": precision,
            "size": f"{meta['width']}x{meta['height']}",
            "end_to_end_s": _r(_median(same or switched)),
            "after_switch_s": _r(_median(switched)),
            "same_mode_s": [round(s, 2) for s in same],
            "after_switch_all_s": [round(s, 2) for s in switched],
            "steps": meta["params"]["steps"],
            "guidance": meta["params"]["guidance"],
            "scheduler": meta["params"]["scheduler"],
            "s_per_step": _r(_median(steps)),
            "vae_decode_s": _r(_median(t["vae_decode"] for t in timings)),
            "style_encode_s": _r(_median(t["style_encode"] for t in timings)),
            "metrics_after_s": _r(_median(t.metrics_s for t, _ in r["renders"] if t.metrics_s is not None)),
            "first_call_s": r["first_call_s"],
            "peak_rss_mb": round(r["rss"] / 2**20),
            "rounds": rounds,
        }
        if "gpu_peak" in r:
            row["peak_gpu_mb"] = round(r["gpu_peak"] / 2**20)
        rows.append(row)
    quality = next((row for row in rows if row["mode"] == "quality"), None)
    for row in rows:
        row["speedup_vs_quality"] = round(quality["end_to_end_s"] / row["end_to_end_s"], 1) if quality else None
    engine_out = {"requested": requested, "dtype": rows[0]["dtype"], "precision": precision,
                  "load_s": round(load_s, 2), "accel": accel}  # fmt: skip
    return engine_out, rows, close_engine(engine)


def _add_ratios(rows: list[dict]) -> None:
    """Each row against the explicit float32 row of its mode: fp32 time ÷ this time, end to end and per step."""
    for row in rows:
        ref = next((r for r in rows if r["mode"] == row["mode"] and r["requested"] == "float32"), None)
        if ref is None or ref is row:
            row["fp32_over_this"] = None
            continue
        per_step = ref["s_per_step"] / row["s_per_step"] if ref["s_per_step"] and row["s_per_step"] else None
        row["fp32_over_this"] = {"end_to_end": round(ref["end_to_end_s"] / row["end_to_end_s"], 2),
                                 "s_per_step": _r(per_step, 2)}  # fmt: skip


def modes_markdown(out: dict, cuda: bool) -> list[str]:
    """The modes table as Markdown lines, the machine first."""
    extra = " peak GPU | rounds |" if cuda else ""
    lines = [
        machine_line(out["machine"]),
        "",
        f"{out['rounds']} rounds, medians; end to end = submit → the image available (a render after one of the "
        "same mode); metrics are computed after the image, by their own job.",
        "",
        "| mode | device | precision | size | end to end | after a switch | s/step | decode "
        f"| metrics (after the image) | peak RSS | vs quality | fp32 ÷ this (end to end, step) |{extra}",
        "|---" * (12 + (2 if cuda else 0)) + "|",
    ]
    for r in out["rows"]:
        ratio = r.get("fp32_over_this")
        ratio_text = f"×{ratio['end_to_end']}, ×{ratio['s_per_step']}" if ratio else ""
        speedup = f"×{r['speedup_vs_quality']}" if r.get("speedup_vs_quality") is not None else ""
        line = (
            f"| {r['mode']} | {out['machine'].get('gpu') or r['device']} | {r['precision']} "
            f"| {r['size'].replace('x', '×')} | {_s(r['end_to_end_s'])} | {_s(r['after_switch_s'])} "
            f"| {_s(r['s_per_step'])} | {_s(r['vae_decode_s'])} | {_s(r['metrics_after_s'])} "
            f"| {r['peak_rss_mb'] / 1024:.1f} GB | {speedup} | {ratio_text} |"
        )
        if cuda:
            line += f" {r.get('peak_gpu_mb', '')} MB | {r['rounds']} |"
        lines.append(line)
    return lines


# ---- accuracy: float32 against bfloat16 --------------------------------------------------------------------------


def rel_error(a, b) -> float:
    """‖a − b‖ / ‖a‖, in float64."""
    a, b = a.double().flatten(), b.double().flatten()
    return float((a - b).norm() / a.norm().clamp_min(1e-30))


def cosine(a, b) -> float:
    import torch

    return float(torch.nn.functional.cosine_similarity(a.double().flatten(), b.double().flatten(), dim=0))


def psnr(a: np.ndarray, b: np.ndarray) -> float | None:
    """PSNR of two 8-bit images in dB; None when they are identical."""
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return None if mse == 0 else round(10 * math.log10(255**2 / mse), 2)


def _db(value: float | None) -> str:
    return "identical" if value is None else f"{value:.1f} dB"


def bench_accuracy(args) -> dict:
    """The same request (the bench sketch, one style, seed 0, quality mode) rendered in float32, then in the other
    dtype (one engine after the other), through the engine interface; the final latents (read at the decode, an
    internal) and the decoded 8-bit images compared, with each dtype's time."""
    from .images import png_bytes

    overrides, build_s = engine_overrides(args)
    overrides["previews"] = False
    sketch = png_bytes(bench_sketch(args.size))
    runs: dict[str, dict] = {}
    for dtype in ("float32", args.against):
        engine = open_engine(overrides, dtype)
        try:
            runs[dtype] = _accuracy_render(engine, args, dtype, sketch)
        finally:
            free = close_engine(engine)
            del engine
        runs[dtype].update(free())
        log.warning("%s: %.1f s (%s s a step)", dtype, runs[dtype]["render_s"], runs[dtype]["s_per_step"])
    ref, other = runs["float32"], runs[args.against]
    a, b = ref.pop("_latents"), other.pop("_latents")
    pa, pb = ref.pop("_pixels"), other.pop("_pixels")
    out = {
        "size": ref.pop("size"),
        "steps": args.steps,
        "seed": 0,
        "mode": "quality",
        "style": ref.pop("style"),
        "device": ref.pop("device"),
        "build_s": round(build_s, 1),
        "latents_shape": list(a.shape),
        "latents_rel_error": rel_error(a, b),
        "latents_max_abs": float((a - b).abs().max()),
        "latents_rms": float(a.pow(2).mean().sqrt()),
        "image_psnr_db": psnr(pa, pb),
        "image_max_abs_diff": int(np.abs(pa.astype(np.int16) - pb.astype(np.int16)).max()),
        "image_mean_abs_diff": round(float(np.abs(pa.astype(np.int16) - pb.astype(np.int16)).mean()), 3),
        "float32": ref,
        args.against: other,
    }
    for key in ("size", "style", "device"):
        other.pop(key)
    out["machine"] = machine_info(out["device"])
    out["markdown"] = accuracy_markdown(out, args.against)
    return out


def _accuracy_render(engine, args, dtype: str, sketch: bytes) -> dict:
    """One engine's render of the accuracy request, with its final latents and pixels (keys starting with _)."""
    import torch

    from .schema import GenerateRequest

    t0 = time.perf_counter()
    engine.load()
    load_s = time.perf_counter() - t0
    generator = engine.executor.generator("sd15")
    latents: list = []
    decode = generator.decode

    def capture(*a, **kw):
        latents.append(next(x for x in (*a, *kw.values()) if isinstance(x, torch.Tensor)).detach().float().cpu())
        return decode(*a, **kw)

    generator.decode = capture  # the final latents, as the render decodes them
    style = engine.retrieval.library.list()[0].name  # the first shipped style by name: the same in both
    request = GenerateRequest.build(prompt=PROMPT, sketch=sketch, size=args.size, steps=args.steps, seed=0,
                                    mode="quality", style=style)  # fmt: skip
    try:
        with PeakMemory() as mem:
            timed = render_timed(engine, request, args.timeout)
    finally:
        del generator.decode
    timings, meta = timed.result.metadata["timings"], timed.result.metadata
    with Image.open(io.BytesIO(timed.result.png[0])) as im:
        pixels = np.asarray(im.convert("RGB"))
    return {
        "precision": precision_of(engine, dtype),
        "size": f"{meta['width']}x{meta['height']}",
        "style": style,
        "device": engine.models.device,
        "load_s": round(load_s, 2),
        "render_s": round(timed.seconds, 2),
        "s_per_step": _r(_median(timings["steps"][1:])),
        "first_step_s": _r(timings["steps"][0]),
        "vae_decode_s": _r(timings["vae_decode"]),
        "metrics_after_s": _r(timed.metrics_s),
        "peak_rss_mb": round(mem.rss / 2**20),
        "_latents": latents[-1],
        "_pixels": pixels,
    }


def accuracy_markdown(out: dict, against: str) -> list[str]:
    ref, other = out["float32"], out[against]
    rows = [
        ("precision", ref["precision"], other["precision"]),
        ("load", _s(ref["load_s"]), _s(other["load_s"])),
        ("render, end to end (one, cold)", _s(ref["render_s"]), _s(other["render_s"])),
        ("s/step (after the first)", _s(ref["s_per_step"]), _s(other["s_per_step"])),
        ("VAE decode", _s(ref["vae_decode_s"]), _s(other["vae_decode_s"])),
        ("peak RSS", f"{ref['peak_rss_mb'] / 1024:.1f} GB", f"{other['peak_rss_mb'] / 1024:.1f} GB"),
    ]
    return [
        machine_line(out["machine"]),
        "",
        f"{out['size'].replace('x', '×')}, {out['steps']} steps, quality mode, seed 0, style '{out['style']}', "
        f"{out['device']}",
        "",
        f"| | float32 | {against} |",
        "|---|---|---|",
        *[f"| {a} | {b} | {c} |" for a, b, c in rows],
        "",
        f"| float32 vs {against} | |",
        "|---|---|",
        f"| final latents: relative error ‖a−b‖/‖a‖ | {out['latents_rel_error']:.3g} |",
        f"| final latents: max abs difference (RMS of the latents {out['latents_rms']:.3g}) "
        f"| {out['latents_max_abs']:.3g} |",
        f"| decoded image: PSNR (8-bit) | {_db(out['image_psnr_db'])} |",
        f"| decoded image: mean / max abs difference (0–255) | {out['image_mean_abs_diff']} / "
        f"{out['image_max_abs_diff']} |",
    ]


def bench_accuracy_parts(args) -> dict:
    """Each model part alone, float32 against the other dtype, on the same input: the fp32 engine's parts run
    first, then are cast in place (as loading in that dtype would: the same round-to-nearest) and run again. Time
    per part is its last of --part-calls calls in each dtype (by default the second: the first pays the kernels'
    set-up)."""
    overrides, build_s = engine_overrides(args)
    overrides["previews"] = False
    engine = open_engine(overrides, "float32")
    try:
        engine.load()
        device, style, results = engine.models.device, *_measure_parts(engine, args)
    finally:
        free = close_engine(engine)
        del engine
    out = {"size": args.size - args.size % 8, "against": args.against, "device": device, "style": style,
           "calls": max(1, args.part_calls),
           "build_s": round(build_s, 1), "parts": results, **free()}  # fmt: skip
    out["machine"] = machine_info(device)
    out["markdown"] = parts_markdown(out)
    return out


def _measure_parts(engine, args) -> tuple[str, list[dict]]:
    import torch

    from .embeddings import pooled
    from .images import edges

    device = engine.models.device
    pipe = engine.executor.generator("sd15").pipe
    taesd = engine.models.taesd
    clip, processor = engine.models.clip
    library = engine.retrieval.library
    style = library.list()[0]
    style_image = library.image(style.id)
    size = args.size - args.size % 8
    sketch = bench_sketch(size)

    def sync() -> None:
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    with torch.inference_mode():
        torch.manual_seed(0)
        ids = pipe.tokenizer(["", PROMPT], padding="max_length", max_length=pipe.tokenizer.model_max_length,
                             truncation=True, return_tensors="pt").input_ids.to(device)  # fmt: skip
        text_states = pipe.text_encoder(ids)[0]  # (2, tokens, dim): unconditional, prompt (CFG)
        pixels = pipe.feature_extractor(images=style_image, return_tensors="pt").pixel_values.to(device)
        image_embed = pipe.image_encoder(pixels).image_embeds
        image_embeds = torch.stack([torch.zeros_like(image_embed), image_embed])  # (2, 1, dim) as with CFG
        control = torch.from_numpy(np.asarray(edges(sketch, "lines")[0].convert("RGB")).copy())
        control = (control.permute(2, 0, 1).float() / 255)[None].repeat(2, 1, 1, 1).to(device)
        latents = torch.randn((2, pipe.unet.config.in_channels, size // 8, size // 8)).to(device)
        timestep = torch.tensor(500, device=device)
        page = torch.from_numpy(np.asarray(sketch.convert("RGB")).copy()).permute(2, 0, 1).float()[None] / 127.5 - 1
        vae_latents = pipe.vae.encode(page.to(device)).latent_dist.mode() * pipe.vae.config.scaling_factor
        clip_pixels = processor(images=[style_image], return_tensors="pt")["pixel_values"].to(device)
        clip_text = {k: v.to(device) for k, v in processor(text=[PROMPT], return_tensors="pt", padding=True).items()}
    pipe.set_ip_adapter_scale(0.8)

    def unet_step(dt):
        enc = text_states.to(dt)
        down, mid = pipe.controlnet(latents.to(dt), timestep, encoder_hidden_states=enc, controlnet_cond=control.to(dt),
                                    conditioning_scale=1.5, return_dict=False)  # fmt: skip
        return pipe.unet(latents.to(dt), timestep, encoder_hidden_states=enc, down_block_additional_residuals=down,
                         mid_block_additional_residual=mid, added_cond_kwargs={"image_embeds": [image_embeds.to(dt)]},
                         return_dict=False)[0]  # fmt: skip

    def to_8bit(decoded):
        return ((decoded.float() / 2 + 0.5).clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()

    parts = [  # name, what goes in, the call, how the two outputs are compared
        ("UNet + ControlNet + IP-Adapter, one step", f"{size}², batch 2 (CFG)", unet_step, "rel_error"),
        ("VAE decode", f"{size}²",
         lambda dt: pipe.vae.decode(vae_latents.to(dt) / pipe.vae.config.scaling_factor).sample, "psnr"),
        ("TAESD decode", f"{size}²",
         lambda dt: taesd.decode(vae_latents.to(dt) / taesd.config.scaling_factor).sample, "psnr"),
        ("CLIP text encoder (SD), pooled", "1 prompt", lambda dt: pipe.text_encoder(ids[1:])[1], "cosine"),
        ("CLIP text encoder (SD), hidden states", "1 prompt", lambda dt: pipe.text_encoder(ids[1:])[0], "rel_error"),
        ("IP-Adapter image encoder", "224², 1 image",
         lambda dt: pipe.image_encoder(pixels.to(dt)).image_embeds, "cosine"),
        ("retrieval CLIP, image", "224², 1 image",
         lambda dt: pooled(clip.get_image_features(pixel_values=clip_pixels.to(dt))), "cosine"),
        ("retrieval CLIP, text", "1 prompt", lambda dt: pooled(clip.get_text_features(**clip_text)), "cosine"),
    ]  # fmt: skip
    modules = [pipe.unet, pipe.controlnet, pipe.vae, pipe.text_encoder, pipe.image_encoder, taesd, clip]
    results: dict[str, dict] = {name: {"part": name, "input": what, "compare": how} for name, what, _, how in parts}
    for dt in (torch.float32, getattr(torch, args.against)):
        for module in modules:
            module.to(dt)  # fp32 first; then cast once, in place (nothing of fp32 is needed after its pass)
        for name, _, call, _ in parts:
            times, output = [], None
            for _ in range(max(1, args.part_calls)):
                with torch.inference_mode():
                    sync()
                    t0 = time.perf_counter()
                    output = call(dt)
                    sync()
                    times.append(time.perf_counter() - t0)
            key = "float32" if dt == torch.float32 else args.against
            results[name][f"{key}_s"] = round(times[-1], 4)
            results[name][f"{key}_first_s"] = round(times[0], 4)
            results[name][f"_{key}"] = output.detach().float().cpu()
            log.warning("%s, %s: %.3f s", name, key, times[-1])
    for row in results.values():
        a, b = row.pop("_float32"), row.pop(f"_{args.against}")
        if row["compare"] == "psnr":
            row["psnr_db"] = psnr(to_8bit(a), to_8bit(b))
        elif row["compare"] == "cosine":
            row["cosine"] = cosine(a, b)
        row["rel_error"] = rel_error(a, b)
        row["slowdown"] = round(row[f"{args.against}_s"] / max(row["float32_s"], 1e-9), 2)
    return style.name, list(results.values())


def parts_markdown(out: dict) -> list[str]:
    against = out["against"]
    short = {"bfloat16": "bf16", "float16": "fp16"}.get(against, against)
    lines = [
        machine_line(out["machine"]),
        "",
        f"Each part alone on the same input, float32 vs {against} ({out['device']}; time: call {out['calls']} of "
        f"{out['calls']}).",
        "",
        f"| part | input | fp32 | {short} | {short} ÷ fp32 time | agreement |",
        "|---|---|---|---|---|---|",
    ]
    for r in out["parts"]:
        if r["compare"] == "psnr":
            agreement = f"PSNR {_db(r['psnr_db'])}"
        elif r["compare"] == "cosine":
            agreement = f"cosine {r['cosine']:.6f} (rel. error {r['rel_error']:.2g})"
        else:
            agreement = f"rel. error {r['rel_error']:.3g}"
        lines.append(f"| {r['part']} | {r['input']} | {_s(r['float32_s'])} | {_s(r[f'{against}_s'])} "
                     f"| ×{r['slowdown']} | {agreement} |")  # fmt: skip
    return lines


GERMAN = [
    "Rotes Baumwoll-T-Shirt mit Rundhalsausschnitt", "Schwarze Lederjacke für Herren, Größe M",
    "Weiße Sneaker aus Wildleder", "Grüner Strickpullover aus Schurwolle, übergroß",
    "Blaue Jeans mit geradem Bein", "Beiger Trenchcoat mit Gürtel", "Graue Wollmütze mit Bommel",
    "Gelbes Sommerkleid aus Leinen",
]  # fmt: skip


def bench_catalog(args) -> dict:
    """Rows per minute of a catalog run, and where the time goes: translation, the LLM, render + score."""
    import shutil
    import tempfile

    from .catalog.llm import ExtractionFailed
    from .catalog.options import CatalogOptions
    from .catalog.runner import CatalogRun
    from .catalog.sheets import read_sheet
    from .local import LocalEngine
    from .services.catalog import Renderer
    from .settings import Settings

    overrides, _ = engine_overrides(args)
    if args.real:  # the catalog's own models (Marian, the LLM) are not part of the full-size build: tiny ones
        tiny = Path(args.data_dir) / "models" / "tiny"
        from .tiny import prepare_tiny

        prepare_tiny(tiny)
        overrides.update(translation_model=str(tiny / "opus-mt-de-en"), llm_model=str(tiny / "Phi-3-mini-4k-instruct"))
    engine = LocalEngine(Settings(**overrides))
    engine.load()
    n = args.catalog
    rows = ["id,description"] + [f"P-{i},{GERMAN[i % len(GERMAN)]} (Modell {i})" for i in range(n)]
    data = "\n".join(rows).encode()
    sheet = read_sheet(data, "bench.csv")
    models = engine.catalog_models()
    t0 = time.perf_counter()
    texts = models.translator("de").translate([r["description"] for r in sheet.rows])
    translate_s = time.perf_counter() - t0
    extractor = models.extractor(CatalogOptions.build(text_column="description", retries=0))
    llm_times = []
    for text in texts[:3]:
        t0 = time.perf_counter()
        with contextlib.suppress(ExtractionFailed):  # random weights write no JSON; the time is what counts
            extractor.extract(text)
        llm_times.append(time.perf_counter() - t0)
    folder = Path(tempfile.mkdtemp(prefix="bench-catalog-"))
    try:
        options = CatalogOptions.build(text_column="description", id_column="id", llm="none", steps=args.steps,
                                       size=args.size)  # fmt: skip
        run = CatalogRun(Renderer(engine.core), folder / "run", sheet, data, options, models)
        t0 = time.perf_counter()
        summary = run.run()
        run_s = time.perf_counter() - t0
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    llm_s = statistics.median(llm_times)
    per_row_no_llm = run_s / n
    return {
        "rows": n,
        "size": args.size,
        "steps": args.steps,
        "device": engine.models.device,
        "done": summary["done"],
        "translate_ms_per_row": round(translate_s / n * 1000, 2),
        "llm_s_per_row": round(llm_s, 3),
        "render_and_score_s_per_row": round(summary["seconds_per_item"]["mean"], 3),
        "rows_per_minute_without_llm": round(60 / per_row_no_llm, 1),
        "rows_per_minute_with_local_llm": round(60 / (per_row_no_llm + llm_s), 1),
    }


def bench_tag(args) -> dict:
    """Product photos tagged per minute (decoding included, the LLM excluded): the tiny CLIP, or (--real) the
    full-size ViT-B/32 architecture from configs/full-size.json with random weights and a 224-px processor."""
    import torch

    from .catalog.tagging import bench_tagging

    embeddings, what, device = bench_clip(args)
    out = bench_tagging(embeddings, n=args.tagging)
    return {"model": what, "device": device, "threads": torch.get_num_threads(), **out}


def bench_clip(args):
    """(ClipEmbeddings, what it is, device): the tiny CLIP, or (--real) the full-size ViT-B/32 architecture from
    configs/full-size.json with random weights and a 224-px processor (words through the tiny tokenizer)."""
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    from .embeddings import ClipEmbeddings
    from .tiny import full_size_spec
    from .tokenizer import tiny_tokenizer

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if args.real:
        c = full_size_spec()["clip"]
        tok = tiny_tokenizer(Path(args.data_dir) / "models" / "clip-tokenizer")
        torch.manual_seed(0)
        config = CLIPConfig(
            text_config={"vocab_size": len(tok), **c["text"]},
            vision_config=c["vision"],
            projection_dim=c["projection_dim"],
        )
        model = CLIPModel(config).to(device).eval()

        class Processor:  # the tiny tokenizer for words, CLIP's own 224-px preprocessing for photos
            image = CLIPImageProcessor()

            def __call__(self, text=None, images=None, **kw):
                if images is not None:
                    return self.image(images=images, return_tensors="pt")
                return tok(text, return_tensors="pt", padding=True, truncation=True)

        return ClipEmbeddings(model, Processor(), device), "ViT-B/32 (full size, random weights)", device
    from .local import LocalEngine
    from .settings import Settings

    engine = LocalEngine(Settings(profile="tiny", data_dir=args.data_dir, device=device))
    return engine.retrieval.library.embeddings, "tiny CLIP", device


def bench_describe(args) -> dict:
    """`styles.describe`'s work on 1024×768 JPEGs (decode, scale, embed, score, compose) with the shipped styles'
    tags as library candidates: the first call (which embeds the vocabulary and keeps it in the data folder), the
    first call of the next start (which reads it from there), and the calls after it."""
    import shutil
    import statistics

    import torch

    from .catalog.tagging import bench_images
    from .describe import VOCABULARY, Describer
    from .images import decode
    from .library import SHIPPED_DIR

    embeddings, what, device = bench_clip(args)
    known = {t for terms in VOCABULARY.values() for t in terms}
    manifest = json.loads((SHIPPED_DIR / "manifest.json").read_text())
    tags = sorted({t for s in manifest["styles"] for t in s.get("tags", [])} - known)
    photos = bench_images(args.describe + 1, (1024, 768))
    cache = Path(args.data_dir) / "bench-describe-cache"
    shutil.rmtree(cache, ignore_errors=True)
    describer = Describer(cache)

    def one(data: bytes) -> tuple[float, str]:
        t0 = time.perf_counter()
        prompt, _ = describer.describe(embeddings, decode(data, 64_000_000), tags)
        return time.perf_counter() - t0, prompt

    first, prompt = one(photos[0])
    describer = Describer(cache)  # the next start: the vocabulary's embeddings from the data folder
    restart, _ = one(photos[0])
    after = sorted(one(p)[0] for p in photos[1:])
    return {
        "model": what, "device": device, "threads": torch.get_num_threads(), "candidates": len(known) + len(tags),
        "first_call_s": round(first, 3), "first_call_after_restart_s": round(restart, 3), "calls": len(after),
        "median_s": round(statistics.median(after), 4),
        "p95_s": round(after[min(len(after) - 1, int(0.95 * len(after)))], 4),
        "example": prompt,
    }  # fmt: skip


def bench_listings(args) -> dict:
    """Listings per minute from an OpenAI-compatible server, one request at a time and 4 at once."""
    from .catalog.listing import ListingWriter
    from .catalog.llm import OpenAIBackend

    if not args.llm:
        raise SystemExit("--listings needs --llm URL (an OpenAI-compatible server: LM Studio, Ollama, vLLM)")
    backend = OpenAIBackend(args.llm, model=args.llm_model)
    attrs = {"color": "red", "neckline": "v-neck", "sleeve": "short sleeve", "pattern": "floral", "fabric": "cotton"}
    out = {}
    for concurrency in (1, 4):
        writer = ListingWriter(backend, retries=1, concurrency=concurrency)
        t0 = time.perf_counter()
        results = writer.write_many([(i, attrs, f"item {i}") for i in range(args.listings)])
        seconds = time.perf_counter() - t0
        ok = sum(not isinstance(r, Exception) for r in results.values())
        out[f"concurrency_{concurrency}"] = {"listings": ok, "seconds": round(seconds, 2),
                                             "per_minute": round(60 * args.listings / seconds, 1)}  # fmt: skip
    return out


def bench_segment(args) -> dict:
    """SAM2 regions: the image embedding (a new image's first click), each further point prompt (the embedding
    cached), and an automatic analysis (8×8 point grid + NMS). Tiny profile, or (--real) the full-size
    hiera-tiny architecture (`Sam2Config()`, 1024² input) with random weights."""
    import statistics

    import torch
    from transformers import Sam2Config, Sam2Model

    from .regions import PREPROCESS_DEFAULTS, Segmenter, build_tiny_sam2, load_sam2

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if args.real:
        torch.manual_seed(0)
        dtype = torch.float16 if device.startswith("cuda") else torch.float32
        segmenter = Segmenter(Sam2Model(Sam2Config()).to(device, dtype).eval(), PREPROCESS_DEFAULTS, device)
        what = "SAM2.1 hiera-tiny (full size, random weights, 1024² input)"
    else:
        folder = Path(args.data_dir) / "models" / "sam2-tiny"
        if not (folder / "config.json").is_file():
            build_tiny_sam2(folder)
        segmenter, what = load_sam2(str(folder), device, None), "tiny SAM2 (256² input)"

    def timed(fn) -> float:
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        return (time.perf_counter() - t0) * 1000

    sketches = [bench_sketch(768).rotate(90 * i) for i in range(4)]
    segmenter.embeddings(sketches[0])  # warm-up
    embed = [timed(lambda im=im: segmenter._cache.clear() or segmenter.embeddings(im)) for im in sketches]
    w, h = sketches[0].size
    points = [((i * 37) % w, (i * 53) % h) for i in range(args.segment)]
    prompt = [timed(lambda p=p: segmenter.segment(sketches[0], [p])) for p in points]
    automatic = [timed(lambda im=im: segmenter.automatic(im, score_threshold=0.0)) for im in sketches[:2]]
    return {
        "model": what,
        "device": device,
        "threads": torch.get_num_threads(),
        "image": f"{w}×{h}",
        "embedding_ms": round(statistics.median(embed), 1),
        "point_prompt_ms": round(statistics.median(prompt), 1),
        "automatic_8x8_ms_with_embedding": round(statistics.median(automatic), 1),
        "first_click_ms": round(statistics.median(embed) + statistics.median(prompt), 1),
    }


def bench_tune(args) -> dict:
    """Retrieval tuning: training samples per second (dual_lora, batch 16) on coloured shapes, with the tiny CLIP,
    or (--real) the full-size ViT-B/32 architecture from configs/full-size.json with random weights at 224 px."""
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    from .settings import Settings
    from .tiny import full_size_spec
    from .tokenizer import tiny_tokenizer
    from .tune.bench import bench_train

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    settings = Settings(profile="tiny", data_dir=args.data_dir, device=device)
    model_id, size = None, 64
    if args.real:
        folder = Path(args.data_dir) / "models" / "clip-vit-b32-random"
        if not (folder / "config.json").is_file():
            c = full_size_spec()["clip"]
            tok = tiny_tokenizer(folder / "_tokenizer")
            torch.manual_seed(0)
            config = CLIPConfig(text_config={"vocab_size": len(tok), **c["text"]}, vision_config=c["vision"],
                                projection_dim=c["projection_dim"])  # fmt: skip
            CLIPModel(config).save_pretrained(folder, safe_serialization=True)
            CLIPProcessor(image_processor=CLIPImageProcessor(), tokenizer=tok).save_pretrained(folder)
        model_id, size = str(folder), 224
    return bench_train(settings, per_class=args.tune, device=device, model_id=model_id, image_size=size)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m engine.bench", description=__doc__.splitlines()[0])
    p.add_argument("--profile", choices=["tiny", "default"], default="tiny")
    p.add_argument("--real", action="store_true", help="full-size architectures with random weights")
    p.add_argument("--device", help="auto, cpu, cuda")
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--runs", type=int, default=0, help="default 3 (10 with --modes on a GPU)")
    p.add_argument("--retrieval", type=int, nargs="*", default=[10_000], help="library sizes (0 to skip)")
    p.add_argument("--skip-generation", action="store_true")
    p.add_argument("--catalog", type=int, default=0, metavar="ROWS", help="also time a catalog run of ROWS rows")
    p.add_argument("--tagging", type=int, default=0, metavar="IMAGES", help="also time tagging IMAGES photos")
    p.add_argument("--listings", type=int, default=0, metavar="N", help="time N listings against --llm")
    p.add_argument("--llm", metavar="URL", help="an OpenAI-compatible server for --listings")
    p.add_argument("--tune", type=int, default=0, metavar="N", help="time retrieval tuning on 9 × N shape images")
    p.add_argument("--segment", type=int, default=0, metavar="N", help="time SAM2: N point prompts + analysis")
    p.add_argument("--describe", type=int, default=0, metavar="N", help="time N `styles.describe` calls")
    p.add_argument("--llm-model", default="local-model")
    p.add_argument(
        "--data-dir", default=os.environ.get("DESIGN_STUDIO_BENCH_DIR", str(Path.home() / ".design-studio-bench"))
    )
    p.add_argument("--modes", help="compare render modes side by side, e.g. quality,fast,live (at --size)")
    p.add_argument("--dtypes", help="precisions to compare, e.g. float32,auto (default: the settings' dtype)")
    p.add_argument(
        "--stay",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="with --modes: also time each mode right after itself (no switch); --no-stay: once a round",
    )
    p.add_argument("--accuracy", action="store_true", help="one render in float32 and in --against: latents, PSNR")
    p.add_argument("--accuracy-parts", action="store_true", help="each model part in float32 and in --against")
    p.add_argument(
        "--part-calls",
        type=int,
        default=2,
        help="--accuracy-parts: calls per part and dtype, the last timed (1: the first call is timed)",
    )
    p.add_argument(
        "--against",
        default="bfloat16",
        choices=["bfloat16", "float16"],
        help="the dtype --accuracy and --accuracy-parts compare float32 with",
    )
    p.add_argument("--timeout", type=float, default=7200.0, help="seconds one render may take before it is cancelled")
    p.add_argument("--accel", default="none", help="a CPU optimization from engine/accel.py for --modes")
    p.add_argument("--json", type=Path, help="also write the report here")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    import warnings

    warnings.filterwarnings("ignore")

    report: dict = {"machine": {}, "edges": bench_edges(args.size)}
    report["retrieval"] = [bench_retrieval(n) for n in args.retrieval if n > 0]
    if args.modes:
        report["modes"] = bench_modes(args)
    elif args.accuracy or args.accuracy_parts:
        if args.accuracy:
            report["accuracy"] = bench_accuracy(args)
        if args.accuracy_parts:
            report["accuracy_parts"] = bench_accuracy_parts(args)
    elif not args.skip_generation:
        report["generation"] = bench_generation(args)
    if args.catalog:
        report["catalog"] = bench_catalog(args)
    if args.tagging:
        report["tagging"] = bench_tag(args)
    if args.listings:
        report["listings"] = bench_listings(args)
    if args.segment:
        report["segmentation"] = bench_segment(args)
    if args.describe:
        report["describe"] = bench_describe(args)
    if args.tune:
        report["tuning"] = bench_tune(args)
    report["machine"] = machine_info(args.device or "cpu")  # after the engines: their thread count
    for section in ("modes", "accuracy", "accuracy_parts"):
        if section in report:
            print("\n".join(["", *report[section]["markdown"], ""]), file=sys.stderr)
    text = json.dumps(report, indent=2, ensure_ascii=False)
    print(text)
    if args.json:
        args.json.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
