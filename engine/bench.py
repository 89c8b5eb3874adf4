"""Benchmark: time every stage (load, edges, retrieval, each diffusion step, VAE decode) and peak memory.

    python -m engine.bench --profile tiny                 # CPU, seconds
    python -m engine.bench --real                         # full-size SD1.5/ControlNet/IP-Adapter, random weights
    python -m engine.bench --retrieval 10000 100000       # retrieval over N synthetic styles

Reports; asserts nothing. One JSON document on stdout (and --json FILE), a table on stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

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
            controlnet_model=str(root / "sd-controlnet-canny"),
            ip_adapter_model=str(root / "IP-Adapter"),
            clip_model=str(root / "clip-vit-base-patch32"),
            catalog_clip_model=str(root / "clip-vit-base-patch32"),
            fast_lora=str(root / "lcm-lora-sdv1-5"),
            taesd_model=str(root / "taesd"),
        )
    return overrides, build_s


def bench_generation(args) -> dict:
    import torch

    from .images import png_bytes
    from .local import LocalEngine
    from .schema import GenerateRequest
    from .settings import Settings

    overrides, build_s = engine_overrides(args)
    engine = LocalEngine(Settings(**overrides))
    cuda = engine.models.device.startswith("cuda")
    t0 = time.perf_counter()
    engine.load()
    load_s = time.perf_counter() - t0

    sketch = png_bytes(bench_sketch(args.size))
    request = GenerateRequest.build(
        prompt="a cosy reading corner, warm light", sketch=sketch, size=args.size, steps=args.steps, seed=0
    )
    engine.pipeline.generate(request)  # warm-up: kernels, allocator, caches
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    runs = []
    for i in range(args.runs or 3):
        t0 = time.perf_counter()
        result = engine.pipeline.generate(request.model_copy(update={"seed": i}))
        runs.append((time.perf_counter() - t0, result.metadata["timings"]))
    totals = [r[0] for r in runs]
    steps = [s for _, t in runs for s in t["steps"]]
    out = {
        "profile": "real-architectures-random-weights" if args.real else args.profile,
        "device": engine.models.device,
        "dtype": str(engine.models.dtype).removeprefix("torch."),
        "size": args.size,
        "steps": args.steps,
        "runs": args.runs or 3,
        "load_s": round(load_s, 3),
        "end_to_end_s": round(statistics.median(totals), 4),
        "edges_ms": _median_ms([t["edges"] for _, t in runs]),
        "retrieval_ms": _median_ms([t["retrieval"] for _, t in runs]),
        "style_encode_ms": _median_ms([t["style_encode"] for _, t in runs]),
        "step_ms_median": _median_ms(steps),
        "step_ms_first": round(runs[-1][1]["steps"][0] * 1000, 3),
        "step_ms_last_run": [round(v * 1000, 2) for v in runs[-1][1]["steps"]],
        "denoise_s": round(statistics.median(t["denoise"] for _, t in runs), 4),
        "vae_decode_ms": _median_ms([t["vae_decode"] for _, t in runs]),
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


def bench_modes(args) -> dict:
    """The render modes side by side in one run, on the same engine and sketch: a warm-up per mode (which also loads
    what the mode needs: the LoRA, TAESD), then rounds that render each mode in turn, so a slow minute of a noisy
    machine hits every mode alike. Medians per mode."""
    import torch

    from .images import png_bytes
    from .local import LocalEngine
    from .schema import GenerateRequest
    from .settings import Settings

    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    overrides, build_s = engine_overrides(args)
    overrides["previews"] = False  # the modes' own cost; step previews are measured apart (--previews)
    engine = LocalEngine(Settings(**overrides))
    cuda = engine.models.device.startswith("cuda")
    t0 = time.perf_counter()
    engine.load()
    load_s = time.perf_counter() - t0
    accel = None
    if args.accel and args.accel != "none":
        from .accel import optimize

        accel = optimize(engine.executor.generator("sd15").pipe, args.accel)
    sketch = png_bytes(bench_sketch(args.size))
    runs = args.runs or (10 if cuda else 3)

    def req(mode: str, seed: int, **kw) -> GenerateRequest:
        return GenerateRequest.build(
            prompt="a cosy reading corner, warm light", sketch=sketch, size=args.size, seed=seed, mode=mode, **kw
        )

    out: dict = {"device": engine.models.device, "dtype": str(engine.models.dtype).removeprefix("torch.")}
    out.update(size=args.size, runs=runs, load_s=round(load_s, 2), build_s=round(build_s, 1), accel=accel)
    if cuda:
        out["gpu"] = torch.cuda.get_device_name()
    results: dict[str, dict] = {}
    for mode in modes:  # warm-up: one step, loading the mode's LoRA or TAESD
        t0 = time.perf_counter()
        engine.pipeline.generate(req(mode, 0, steps=1))
        results[mode] = {"first_call_s": round(time.perf_counter() - t0, 2), "totals": [], "timings": [], "rss": 0}
    for i in range(runs):
        for mode in modes:
            r = results[mode]
            if cuda:
                torch.cuda.reset_peak_memory_stats()
            with PeakMemory() as mem:
                t0 = time.perf_counter()
                result = engine.pipeline.generate(req(mode, i + 1))
                r["totals"].append(time.perf_counter() - t0)
            r["rss"] = max(r["rss"], mem.rss)
            r["timings"].append(result.metadata["timings"])
            r["meta"] = result.metadata
            if cuda:
                r["gpu_peak"] = max(r.get("gpu_peak", 0), torch.cuda.max_memory_allocated())
            log.warning("%s %d/%d: %.2f s", mode, i + 1, runs, r["totals"][-1])
    table = {}
    for mode, r in results.items():
        meta = r["meta"]
        steps = [s for t in r["timings"] for s in t["steps"][1:]]  # the first step also pays the set-up
        row = {
            "end_to_end_s": round(statistics.median(r["totals"]), 3),
            "all_s": [round(t, 2) for t in r["totals"]],
            "size": f"{meta['width']}x{meta['height']}",
            "steps": meta["params"]["steps"],
            "guidance": meta["params"]["guidance"],
            "scheduler": meta["params"]["scheduler"],
            "s_per_step": round(statistics.median(steps), 3) if steps else None,
            "vae_decode_s": round(statistics.median(t["vae_decode"] for t in r["timings"]), 3),
            "style_encode_s": round(statistics.median(t["style_encode"] for t in r["timings"]), 3),
            "first_call_s": r["first_call_s"],
            "peak_rss_mb": round(r["rss"] / 2**20),
        }
        if "gpu_peak" in r:
            row["peak_gpu_mb"] = round(r["gpu_peak"] / 2**20)
        table[mode] = row
    if "quality" in table:
        for row in table.values():
            row["speedup_vs_quality"] = round(table["quality"]["end_to_end_s"] / row["end_to_end_s"], 1)
    out["modes"] = table
    device = out.get("gpu") or out["device"]
    out["markdown"] = [
        f"| {m} | {device} | {r['size']} | {r['end_to_end_s']:.2f} s | {r['steps']} | {r['s_per_step']} s "
        f"| {r['vae_decode_s']} s | {r['first_call_s']} s | {r['peak_rss_mb']} MB "
        f"| ×{r.get('speedup_vs_quality', '')} |"
        for m, r in table.items()
    ]
    return out


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
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    from .catalog.tagging import bench_tagging
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

        embeddings = ClipEmbeddings(model, Processor(), device)
        what = "ViT-B/32 (full size, random weights)"
    else:
        from .local import LocalEngine
        from .settings import Settings

        engine = LocalEngine(Settings(profile="tiny", data_dir=args.data_dir, device=device))
        embeddings, what = engine.retrieval.library.embeddings, "tiny CLIP"
    out = bench_tagging(embeddings, n=args.tagging)
    return {"model": what, "device": device, "threads": torch.get_num_threads(), **out}


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
    p.add_argument("--llm-model", default="local-model")
    p.add_argument(
        "--data-dir", default=os.environ.get("DESIGN_STUDIO_BENCH_DIR", str(Path.home() / ".design-studio-bench"))
    )
    p.add_argument("--modes", help="compare render modes side by side, e.g. quality,fast,live (at --size)")
    p.add_argument("--accel", default="none", help="a CPU optimization from engine/accel.py for --modes")
    p.add_argument("--json", type=Path, help="also write the report here")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    import warnings

    warnings.filterwarnings("ignore")

    report: dict = {
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform()},
        "edges": bench_edges(args.size),
    }
    report["retrieval"] = [bench_retrieval(n) for n in args.retrieval if n > 0]
    if args.modes:
        report["modes"] = bench_modes(args)
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
    if args.tune:
        report["tuning"] = bench_tune(args)
    text = json.dumps(report, indent=2, ensure_ascii=False)
    print(text)
    if args.json:
        args.json.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
