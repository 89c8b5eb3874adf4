"""What a designer waits: the Studio's render, with the page open in Chromium, against the same request rendered by
the CLI's engine in this process, side by side in one run; and what an open page costs while nothing runs.

python tools/ui_bench.py [--renders 3] [--steps 20] [--size 512] [--real] [--json out.json]

It starts `streamlit run app.py` on loopback (tiny profile unless --real), opens the Studio in Debian's headless
Chromium, draws a house, types a prompt and presses Generate, and times click → render on the page. After each
Studio render, the same request (same sketch, seed, style, settings, read back from the run's metadata) goes
through `LocalEngine.generate` here, as `python -m engine generate` does, with models already loaded. Renders
alternate (Studio, CLI, Studio, CLI, …) after one warm-up each, so drift of a noisy machine hits both alike.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tools.studio_driver import (  # noqa: E402
    CHROMIUM,
    CHROMIUM_ARGS,
    draw_house,
    generate_and_watch,
    idle_cpu,
    open_studio,
    set_slider,
    streamlit_app,
    tiny_env,
)

PROMPT = "a timber cabin at dusk, warm light in the windows"
STEP_TEXT = re.compile(r"Step (\d+)/(\d+) · ([\d.]+)s(?: · about (\d+)s left)?")


def studio_render(page, history, timeout: float) -> dict:
    """Click Generate and wait until the new render is on the page (a new seed's caption under it, Generate enabled
    again); the progress texts seen on the way, with when (seconds after the click)."""
    known = {r["id"] for r in history.list(limit=5)}
    shown = generate_and_watch(page, timeout)
    runs = [r for r in history.list(limit=5) if r["id"] not in known]
    if len(runs) != 1:
        raise RuntimeError(f"expected one new run in the history, found {len(runs)}")
    return {**shown, "run": runs[0]}


def eta_check(progress: list[tuple[float, str]], wall: float) -> dict | None:
    """The ETA the page showed at its first step against the time that was actually left."""
    for t, text in progress:
        m = STEP_TEXT.search(text)
        if m and m.group(4):
            return {"step": int(m.group(1)), "eta_shown": int(m.group(4)), "actually_left": round(wall - t, 2)}
    return None


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--renders", type=int, default=3, help="measured renders on each side (after a warm-up)")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--size", type=int, default=512, choices=[256, 384, 512, 640, 768, 1024])
    p.add_argument("--idle-seconds", type=float, default=10.0)
    p.add_argument("--real", action="store_true", help="full-size architectures with random weights (slow on CPU)")
    p.add_argument("--data-dir", type=Path, help="keep the data folders here (default: a temp folder)")
    p.add_argument("--json", type=Path, help="write the report here too")
    args = p.parse_args()

    from playwright.sync_api import sync_playwright

    from engine.history import History
    from engine.local import LocalEngine
    from engine.schema import GenerateRequest
    from engine.settings import Settings
    from engine.tiny import prepare_tiny

    root = args.data_dir or Path(tempfile.mkdtemp(prefix="ui-bench-"))
    app_data, cli_data = root / "app", root / "cli"
    extra: dict[str, str] = {}
    if args.real:
        from engine.bench import build_real  # the same builder `engine.bench --real` uses

        full = build_real(root / "full-size-random", "cpu")
        extra = {
            "DESIGN_STUDIO_BASE_MODEL": str(full / "stable-diffusion-v1-5"),
            "DESIGN_STUDIO_CONTROLNET_MODEL": str(full / "sd-controlnet-canny"),
            "DESIGN_STUDIO_IP_ADAPTER_MODEL": str(full / "IP-Adapter"),
            "DESIGN_STUDIO_CLIP_MODEL": str(full / "clip-vit-base-patch32"),
        }
    else:
        models = prepare_tiny(root / "models" / "tiny")
        for d in (app_data, cli_data):
            (d / "models").mkdir(parents=True, exist_ok=True)
            if not (d / "models" / "tiny").exists():
                (d / "models" / "tiny").symlink_to(models, target_is_directory=True)
    env = tiny_env(app_data, **extra)
    if args.real:
        env.pop("DESIGN_STUDIO_PROFILE")
    settings = Settings(
        data_dir=cli_data, device="cpu", **({"profile": "tiny"} if not args.real else {}), **_model_settings(extra)
    )
    cli_engine = LocalEngine(settings)
    t_load = time.perf_counter()
    cli_engine.load()
    print(f"CLI engine loaded in {time.perf_counter() - t_load:.1f}s", file=sys.stderr)
    app_history = History(app_data / "history.sqlite")

    report: dict = {"steps": args.steps, "size": args.size, "profile": "full-size" if args.real else "tiny"}
    with streamlit_app(env, log=root / "streamlit.log") as (url, pid), sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = open_studio(browser, url)
        page.wait_for_timeout(5000)  # images and components settle
        idle = {"Studio": idle_cpu(page, pid, args.idle_seconds)}
        for name in ("Sweeps", "Catalog") if args.idle_seconds else ():
            page.get_by_role("link", name=name).click()
            page.wait_for_selector(f"h1:has-text('{name}')", timeout=120_000)
            page.wait_for_timeout(3000)
            idle[name] = idle_cpu(page, pid, args.idle_seconds)
        page.close()
        report["idle_cpu_s_per_s"] = {k: round(v, 4) for k, v in idle.items()}
        print(f"idle CPU-s/s: {report['idle_cpu_s_per_s']}", file=sys.stderr)

        page = open_studio(browser, url)
        draw_house(page)
        page.get_by_label("Prompt", exact=True).fill(PROMPT)
        page.keyboard.press("Control+Enter")
        page.get_by_text("Retrieved from your library").wait_for()
        page.wait_for_timeout(1000)
        page.get_by_text("Advanced").click()
        page.get_by_role("slider", name="Steps").wait_for()
        set_slider(page, "Steps", args.steps)
        set_slider(page, "Size (short side)", args.size)
        page.wait_for_timeout(2000)

        studio, cli, etas = [], [], []
        timeout = 600.0 if not args.real else 3600.0
        for i in range(args.renders + 1):
            shown = studio_render(page, app_history, timeout)
            run = shown["run"]
            meta = run["metadata"]
            sketch_hash = meta["sketch_hash"]
            sketch = (app_data / "sketches" / f"{sketch_hash}.png").read_bytes() if sketch_hash else None
            request = GenerateRequest.from_metadata(meta, sketch, source="bench")
            t0 = time.perf_counter()
            out = cli_engine.generate(request)
            cli_wall = time.perf_counter() - t0
            if i == 0:
                print(f"warm-up: Studio {shown['wall']:.2f}s, CLI engine {cli_wall:.2f}s", file=sys.stderr)
                continue
            same = out.images()[0].tobytes() == _first_image(run).tobytes()
            studio.append({"wall": shown["wall"], "engine_total": meta["timings"]["total"],
                           "steps": meta["timings"].get("steps", []), "same_pixels": same})  # fmt: skip
            cli.append({"wall": cli_wall, "steps": out.metadata["timings"].get("steps", [])})
            eta = eta_check(shown["progress"], shown["wall"])
            if eta:
                etas.append(eta)
            print(f"render {i}: Studio {shown['wall']:.2f}s (engine {meta['timings']['total']:.2f}s), "
                  f"CLI engine {cli_wall:.2f}s, same pixels {same}", file=sys.stderr)  # fmt: skip
        browser.close()

    def per_step(runs: list[dict]) -> float:
        return statistics.median(s for r in runs for s in r["steps"]) if runs and runs[0]["steps"] else 0.0

    s_wall = statistics.median(r["wall"] for r in studio)
    c_wall = statistics.median(r["wall"] for r in cli)
    report.update(
        studio_s_per_render=round(s_wall, 3),
        studio_engine_s_per_render=round(statistics.median(r["engine_total"] for r in studio), 3),
        studio_s_per_step=round(per_step(studio), 4),
        cli_s_per_render=round(c_wall, 3),
        cli_s_per_step=round(per_step(cli), 4),
        ratio=round(s_wall / c_wall, 3),
        step_ratio=round(per_step(studio) / per_step(cli), 3) if per_step(cli) else None,
        same_pixels=all(r["same_pixels"] for r in studio),
        eta_first_step=etas,
        renders=args.renders,
    )
    print(json.dumps(report))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


def _first_image(run: dict):
    from PIL import Image

    with Image.open(run["outputs"][0]) as im:
        return im.convert("RGB")


def _model_settings(env: dict[str, str]) -> dict[str, str]:
    """DESIGN_STUDIO_X=... environment entries as Settings keyword arguments."""
    return {k.removeprefix("DESIGN_STUDIO_").lower(): v for k, v in env.items() if k.startswith("DESIGN_STUDIO_")}


if __name__ == "__main__":
    main()
