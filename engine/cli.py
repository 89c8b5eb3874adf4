"""`python -m engine`: generate, manage styles, build the tiny profile. A command that lists things prints a table
(JSON with --json); the others print one JSON line. Errors are one line on stderr: exit 2 when the user can fix
them (the input, or weights missing on this machine), 1 otherwise."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

from .errors import BadInput, EngineError, ModelUnavailable
from .progress import ProgressBar
from .rules.controlnets import CONTROLS, DEFAULT_CONTROL, MAX_UNITS
from .rules.controlnets import known as known_controls
from .rules.modes import MODES
from .schema import SCHEDULERS

EXIT_OK, EXIT_INTERNAL, EXIT_BAD_INPUT = 0, 1, 2


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit 2, as for any other bad input
        self.exit(EXIT_BAD_INPUT, f"error: {message} (see `python -m engine {self.prog.split()[-1]} --help`)\n")


def _parser() -> argparse.ArgumentParser:
    # Each command takes the options that mean something to it: `verbose` everywhere, `local` where this process may
    # run the engine, `remote` where the engine may instead be the one served at --remote.
    verbose = argparse.ArgumentParser(add_help=False)
    verbose.add_argument("-v", "--verbose", action="store_true", help="log details (and tracebacks) to stderr")
    local = argparse.ArgumentParser(add_help=False, parents=[verbose])
    local.add_argument("--profile", choices=["default", "tiny"], help="model profile (overrides the settings)")
    local.add_argument("--data-dir", type=Path, help="data folder (overrides DESIGN_STUDIO_DATA_DIR)")
    local.add_argument("--device", help="auto, cpu, cuda, cuda:N, mps")
    local.add_argument(
        "--dtype",
        choices=["auto", "float32", "bfloat16", "float16"],
        help="precision (overrides DESIGN_STUDIO_DTYPE); auto: fp16 on a GPU, bf16 on a CPU with bf16 units, else fp32",
    )
    remote = argparse.ArgumentParser(add_help=False)
    remote.add_argument("--remote", metavar="URL", help="use the engine served at URL (`python -m engine serve`)")
    remote.add_argument("--token", help="the remote engine's token (or DESIGN_STUDIO_API_TOKEN)")
    common = [local, remote]
    listing = argparse.ArgumentParser(add_help=False)
    listing.add_argument("--json", action="store_true", help="print JSON instead of a table")

    p = _Parser(prog="python -m engine", description="Generative Design Studio engine")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    g = sub.add_parser("generate", parents=common, help="sketch + prompt → image(s)")
    _generation_args(g)
    g.add_argument("--steps", type=int, help="default: the mode's (quality 20, fast 4, live 2)")
    g.add_argument("--structure", type=float, default=1.5, help="ControlNet scale")
    g.add_argument("--style-strength", type=float, default=0.8, help="IP-Adapter scale")
    g.add_argument("--out", type=Path, help="also write the image here (.png; variations get -1, -2, ...)")
    g.add_argument("--model", choices=["sd15", "flux"], default="sd15", help="flux: FLUX.1-schnell + LoRA, text only")
    g.add_argument("--batch", help="group this run with others (Dashboard and Arena compare sets)")
    g.add_argument("--label", default="", help="name this setting within the batch, e.g. 'A' or 'low structure'")
    g.add_argument(
        "--region",
        action="append",
        default=[],
        metavar="MASK.png=WORDS",
        help="a region with its own style, retrieved by WORDS (or MASK.png=style:NAME); repeatable, up to 4",
    )
    g.add_argument("--init-image", type=Path, help="image-to-image: start from this image (a photo or a past render)")
    g.add_argument(
        "--strength",
        type=float,
        help="how far back to noise: 0 keeps the image, 1 ignores it (default 0.75; 1 with --outpaint)",
    )
    g.add_argument(
        "--outpaint", metavar="LEFT,TOP,RIGHT,BOTTOM",
        help="extend the --init-image by these pixels on each side (each side's total rounded up to a multiple of 8)",
    )  # fmt: skip
    g.add_argument("--mask", type=Path, help="inpaint: repaint only where this mask is white (needs --init-image)")
    g.add_argument(
        "--control",
        action="append",
        default=[],
        metavar="TYPE[:WEIGHT[:START:END]]",
        help=f"the ControlNet (default {DEFAULT_CONTROL} at --structure); repeatable, up to {MAX_UNITS} at once, each "
        "with its weight and the fraction of the steps it acts in, e.g. --control canny:1.0 --control depth:0.5:0:0.6. "
        + "; ".join(f"{c.name}: {c.expects}" for c in CONTROLS.values()),
    )
    g.add_argument(
        "--checkpoint",
        help="an SD 1.5 checkpoint: FILE.safetensors (kept on the engine), a name, or a hub id the engine allows",
    )
    g.add_argument(
        "--lora", action="append", default=[], metavar="FILE[:WEIGHT]", help="a LoRA (file or name), repeatable"
    )
    g.add_argument("--hires", type=float, default=1.0, help="hires fix: upscale 1.5–2× and refine (1: off)")
    g.add_argument("--hires-strength", type=float, default=0.35, help="the hires fix's refine strength")
    g.add_argument(
        "--upscale", type=int, choices=[2, 4], metavar="{2,4}",
        help="then upscale each image 2× or 4× (Real-ESRGAN, tiled) into a new run linked to the render",
    )  # fmt: skip
    g.add_argument(
        "--upscale-refine", action="store_true",
        help="refine the upscale by image-to-image at low strength (tile ControlNet; up to 1024 px a side)",
    )  # fmt: skip

    sg = sub.add_parser("segment", parents=common, help="SAM2: the object at a point or in a box → mask + polygon")
    sg.add_argument("image", type=Path)
    sg.add_argument("--point", action="append", default=[], metavar="X,Y", help="inside the object (repeatable)")
    sg.add_argument("--negative-point", action="append", default=[], metavar="X,Y", help="outside it (repeatable)")
    sg.add_argument("--box", metavar="X0,Y0,X1,Y1", help="a box around the object")
    sg.add_argument("--out", type=Path, help="write the mask here (.png, white inside)")

    de = sub.add_parser("describe", parents=[*common, listing], help="a prompt for an image, from CLIP and the library")
    de.add_argument("image", type=Path, help="a sketch, photo or render (PNG, JPEG, WebP, GIF, BMP or TIFF)")
    de.add_argument("-k", type=int, default=5, help="scored terms per category in --json (1-20)")
    de.add_argument("--threshold", type=float, default=0.15, help="a term's share of its category to be said (0-1)")
    de.add_argument("--max-chars", type=int, default=200, help="the prompt's length at most")

    w = sub.add_parser("sweep", parents=common, help="one sketch + prompt over a grid of settings")
    _generation_args(w)
    w.add_argument("--structure", default="0.5,1.0,1.5", help="structure strengths, comma-separated")
    w.add_argument("--style-strength", default="0.2,0.6,1.0", help="style strengths, comma-separated")
    w.add_argument("--steps", default="20", help="step counts, comma-separated (optional third axis)")
    w.add_argument(
        "--controls",
        metavar="TYPE,TYPE",
        help=f"ControlNet types, comma-separated (optional fourth axis): {known_controls()}",
    )
    w.add_argument(
        "--lora", action="append", default=[], metavar="FILE[:WEIGHT]", help="a LoRA (file or name), repeatable"
    )
    w.add_argument(
        "--lora-weights", metavar="W,W",
        help="the --lora's weights, comma-separated (optional fifth axis; the first --lora is varied)",
    )  # fmt: skip
    w.add_argument("--out", type=Path, help="put BATCH/contact.png, table.csv, sweep.json here (default: .)")

    s = sub.add_parser("styles", help="the style library")
    ssub = s.add_subparsers(dest="action", required=True, parser_class=_Parser)
    ls = ssub.add_parser("list", parents=[*common, listing], help="the styles, as a table (--json: JSON)")
    ls.add_argument("--all", action="store_true", help="include hidden styles")
    add = ssub.add_parser("add", parents=common)
    add.add_argument("image", type=Path)
    add.add_argument("--name", required=True)
    add.add_argument("--description", default="")
    add.add_argument("--tags", default="", help="comma-separated")
    for verb in ("remove", "hide", "unhide"):
        ssub.add_parser(verb, parents=common).add_argument("name")
    se = ssub.add_parser("search", parents=[*common, listing], help="styles like words or a picture")
    se.add_argument("text", nargs="?")
    se.add_argument("--image", type=Path)
    se.add_argument("-k", type=int, default=3)

    me = sub.add_parser("metrics", parents=common, help="measure past runs again")
    me.add_argument("--run", action="append", help="a run id (repeatable); all runs when absent")

    c = sub.add_parser("catalog", help="product sheets → photos, attributes and scores")
    csub = c.add_subparsers(dest="action", required=True, parser_class=_Parser)
    # a preview only reads the sheet: on an engine in this process, with no model loaded and nothing written
    for action, parents in (("run", common), ("preview", [verbose, listing])):
        ca = csub.add_parser(action, parents=parents)
        ca.add_argument("sheet", type=Path, help=".xlsx or .csv, the first row names the columns")
        ca.add_argument("--text-column", help="the description column (guessed when absent)")
        ca.add_argument("--id-column", help="the product id column (guessed; else row numbers)")
        ca.add_argument("--name-column")
        ca.add_argument("--category-column")
        ca.add_argument("--limit", type=int, help="only the first N rows")
    run = csub.choices["run"]
    run.add_argument("--out", type=Path, help="copy the tables, the report and the images here when done")
    run.add_argument(
        "--source-lang", default="auto", help="the sheet's language (auto: guessed from its descriptions, as the "
        "Catalog page does); 'en' turns translation off",
    )  # fmt: skip
    run.add_argument(
        "--llm",
        metavar="URL|local|none",
        default="local",
        help="attributes from the local model (default), an OpenAI-compatible server URL (LM Studio, Ollama, vLLM),"
        " or none (the description itself goes into the prompt)",
    )
    run.add_argument("--llm-model", default="local-model", help="the model name to ask that server for")
    run.add_argument("--template", help="the prompt template, with {product_type}, {key_features}, ...")
    run.add_argument("--seed", type=int, default=42, help="global seed; row i renders with seed + i")
    run.add_argument("--model", choices=["sd15", "flux"], default="sd15", help="flux: FLUX.1-schnell + its LoRA")
    run.add_argument("--steps", type=int, help="default 20 (sd15) or 4 (flux)")
    run.add_argument("--size", type=int, default=512)
    run.add_argument("--guidance", type=float, help="default 7.5 (sd15) or 0 (flux, as schnell is distilled)")
    run.add_argument("--style", help="a style from the library for every row (none by default)")
    run.add_argument("--retries", type=int, default=2, help="LLM retries per row")
    run.add_argument("--executor", choices=["local", "ray"], default="local", help="where the renders run")
    run.add_argument("--ray-address", help="join this Ray cluster (`ray start --head`); default: a local one")
    run.add_argument("--workers", type=int, help="Ray workers (default: one per GPU of the cluster, else 1)")

    tg = csub.add_parser("tag", parents=common, help="product photos → attributes, listings, a table")
    tg.add_argument("source", type=Path, help="a folder of images or a .zip")
    tg.add_argument("--out", type=Path, required=True, help="the table: .csv or .xlsx (the other is written beside)")
    tg.add_argument("--vocab", type=Path, help="a YAML vocabulary (default: the shipped apparel one)")
    tg.add_argument("--llm", metavar="URL|local|none", default="local", help="who writes the listings")
    tg.add_argument("--llm-model", default="local-model")
    tg.add_argument("--concurrency", type=int, default=4, help="listing requests at once")
    tg.add_argument("--retries", type=int, default=2)
    si = csub.add_parser("similar", parents=[*common, listing], help="tagged products like a photo or like words")
    si.add_argument("text", nargs="?")
    si.add_argument("--image", type=Path)
    si.add_argument("-k", type=int, default=8)

    tu = sub.add_parser("tune", help="tune retrieval (CLIP LoRA) on your own image–text pairs")
    from .tune.cli import add_parsers as add_tune_parsers

    add_tune_parsers(tu, common, _Parser)

    sv = sub.add_parser("serve", parents=[local], help="serve the engine over HTTP")
    sv.add_argument("--token", help="the token clients must send (or DESIGN_STUDIO_API_TOKEN; generated when unset)")
    sv.add_argument("--host", default="127.0.0.1")
    sv.add_argument("--port", type=int, default=8000)
    sv.add_argument("--ngrok", action="store_true", help="open a public tunnel (needs NGROK_AUTHTOKEN)")
    sv.add_argument("--executor", choices=["local", "ray"], default="local", help="where renders run")
    sv.add_argument("--ray-address", help="join this Ray cluster (`ray start --head`); default: a local one")
    sv.add_argument("--workers", type=int, help="Ray workers (default: one per GPU of the cluster, else 1)")

    sub.add_parser("doctor", parents=[*common, listing], help="which models are here, which are missing, how to "
                        "fetch them (exit 0: every model the enabled features need is here)")  # fmt: skip
    mo = sub.add_parser("models", help="the models the settings name")
    msub = mo.add_subparsers(dest="action", required=True, parser_class=_Parser)
    pu = msub.add_parser(
        "pull", parents=[local, listing], help="download models' files (safetensors only) from the hub"
    )
    pu.add_argument("names", nargs="*", metavar="NAME", help="models by their doctor name (default: the models the "
                    "enabled features need; see `python -m engine doctor`)")  # fmt: skip
    pu.add_argument("--all", action="store_true", help="every model the settings name (FLUX and the LLM are large)")
    pu.add_argument("--dry-run", action="store_true", help="print what it would fetch, fetching nothing (offline)")
    pu.add_argument("--fp32", action="store_true", help="full-precision files on a GPU too (default there: fp16)")

    t = sub.add_parser("prepare-tiny", parents=[verbose], help="build the tiny random-weight profile")
    t.add_argument("--data-dir", type=Path, help="data folder (overrides DESIGN_STUDIO_DATA_DIR)")
    t.add_argument("--profile", choices=["tiny"], help="accepted for symmetry: it always builds the tiny profile")
    t.add_argument("--force", action="store_true")
    return p


def _generation_args(p: argparse.ArgumentParser) -> None:
    """What `generate` and `sweep` share: the inputs, the style, and the settings a sweep does not vary."""
    p.add_argument("--sketch", type=Path, help="PNG/JPEG/WebP sketch or photo; omit for text-to-image")
    p.add_argument("--prompt", required=True)
    p.add_argument("--negative", default="", help="negative prompt")
    p.add_argument("--style", help="use this style instead of retrieving one")
    p.add_argument("--blend", help="blend references, e.g. 'Watercolor:0.7,Ink wash:0.3'")
    p.add_argument("--no-style", action="store_true", help="no style reference at all")
    p.add_argument("--style-only", action="store_true", help="apply the reference to the style blocks only")
    p.add_argument("-k", type=int, default=3, help="styles to retrieve (the first is used)")
    p.add_argument("--seed", type=int)
    p.add_argument(
        "--mode",
        choices=list(MODES),
        default="quality",
        help="; ".join(f"{m.name}: {m.summary}" for m in MODES.values()),
    )
    p.add_argument("--guidance", type=float, help="default: the mode's (quality 7.5, fast and live 1)")
    p.add_argument("--size", type=int, default=512, help="short side in pixels (multiple of 8)")
    p.add_argument("--variations", type=int, default=1)
    p.add_argument("--scheduler", choices=list(SCHEDULERS), help="default: the mode's (quality unipc, fast lcm)")
    p.add_argument("--edge-mode", default="auto", choices=["auto", "lines", "canny"])
    p.add_argument("--canny-low", type=int, default=50)
    p.add_argument("--canny-high", type=int, default=150)


def _settings(args):
    from .settings import Settings

    overrides = {k: v for k in LOCAL_OPTIONS if (v := getattr(args, k, None))}
    return Settings(**overrides)


LOCAL_OPTIONS = ("profile", "data_dir", "device", "dtype")  # they choose and shape an engine in this process


def _engine(args, settings, renders: bool = False, **local):
    """The engine the command talks to: the one served at --remote, or one in this process. One that `renders`
    checks first, before the heavy imports, that the models every render needs are here or the hub answers."""
    remote = getattr(args, "remote", None)
    if remote:
        given = [f"--{k.replace('_', '-')}" for k in LOCAL_OPTIONS if getattr(args, k, None)]
        given += [f"--{k.replace('_', '-')}" for k, v in local.items() if v and v != "local"]  # --executor ray, ...
        if given:
            raise BadInput(
                f"{', '.join(given)} {'sets' if len(given) == 1 else 'set'} up an engine in this process, not the one "
                f"at --remote (it has its own settings)",
                fix="leave out --remote, or the local options",
            )
        from .remote import RemoteEngine

        return RemoteEngine(remote, args.token or settings.api_token)
    if getattr(args, "token", None):
        raise BadInput("--token goes with --remote URL (the engine served there)")
    if renders:
        from .hub import check_render_models

        check_render_models(settings)
    from .local import LocalEngine

    return LocalEngine(settings, adopt_jobs=False, **local)


def _follow(engine, job):
    """Wait for a job with the progress bar; Ctrl-C cancels it (a queued job at once, a running one between steps)."""
    bar = ProgressBar()
    try:
        return engine.follow(job, bar)
    except KeyboardInterrupt:
        engine.jobs.cancel(job.id)
        raise
    finally:
        bar.close()


def _check_writable(out: Path) -> None:
    if out.suffix.lower() != ".png":
        raise BadInput(f"--out must be a .png path (got {out})")
    parent = out.parent if str(out.parent) else Path(".")
    if not parent.is_dir():
        raise BadInput(f"cannot write {out}: folder {parent} does not exist")
    if out.is_dir():
        raise BadInput(f"cannot write {out}: it is a folder")
    try:
        with tempfile.NamedTemporaryFile(dir=parent, prefix=".write-test-"):
            pass
    except OSError as exc:
        raise BadInput(f"cannot write to {parent}: {exc.strerror or exc}") from None


def _write(path: Path, data: bytes) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    except OSError as exc:
        raise BadInput(f"cannot write {path}: {exc.strerror or exc}") from None


def _numbers(text: str, flag: str, count: int) -> list[float]:
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        values = []
    if len(values) != count:
        example = "120,80" if count == 2 else "10,20,200,180"
        raise BadInput(f"{flag} takes {count} comma-separated numbers, e.g. {flag} {example} (got '{text}')")
    return values


def _model_name(engine, kind: str, value: str) -> str:
    """A checkpoint or LoRA given as a file is added to the engine (the same file again is not copied twice) and
    named by its file name; anything else is a name the engine knows (or, for a checkpoint, a hub id its operator
    allows: DESIGN_STUDIO_ALLOWED_MODELS). A folder here is refused: the engine loads no folder a caller names."""
    path = Path(value)
    if path.is_dir():  # a diffusers folder here: the engine never opens a folder a caller names
        raise BadInput(
            f"'{value}' is a folder; a render names a .safetensors file (it is added to the engine) or a name the "
            "engine knows",
            fix="pass it as one .safetensors file, or (for the engine on this machine) set DESIGN_STUDIO_BASE_MODEL "
            "to the folder",
        )
    if path.suffix.lower() in (".safetensors", ".ckpt", ".pt", ".bin") or path.is_file():
        if path.suffix.lower() != ".safetensors":
            raise BadInput(
                f"'{path.name}' is not a .safetensors file; pickled weights can run code when loaded",
                fix="convert it to .safetensors",
            )
        if not path.is_file():
            raise BadInput(f"no file '{value}'")
        return _send(engine, kind, path)
    return value


def _send(engine, kind: str, path: Path) -> str:
    """The file onto the engine in parts (engine/uploads.py: nothing sent when it is there, an upload cut short
    goes on where it stopped), with a bar in MB; its name there."""
    from .schema import Progress
    from .uploads import send_model

    bar, started = ProgressBar(), time.monotonic()

    def shown(held: int, size: int) -> None:
        bar(Progress(f"upload {path.name} (MB)", held >> 20, max(1, size >> 20), time.monotonic() - started))

    try:
        return send_model(engine, kind, path.stem, path, shown)["name"]
    finally:
        bar.close()


def _parse_lora(engine, spec: str) -> dict:
    """FILE[:WEIGHT] or NAME[:WEIGHT] → {name, weight}."""
    target, sep, weight = spec.rpartition(":")
    try:
        name, value = (target, float(weight)) if sep and target else (spec, 1.0)
    except ValueError:  # a colon that is no weight (C:\models\wood.safetensors)
        name, value = spec, 1.0
    return {"name": _model_name(engine, "lora", name), "weight": value}


def _parse_controls(specs: list[str]) -> dict:
    """`--control TYPE[:WEIGHT[:START:END]]`, repeatable → the request's `control` (one type alone, at --structure)
    or `controls` (a weight or a range given, or several)."""
    units = []
    for spec in specs:
        name, *numbers = spec.split(":")
        if name not in CONTROLS:
            raise BadInput(f"--control: ControlNet '{name}' is unknown; use {known_controls()}")
        if len(numbers) not in (0, 1, 3):
            raise BadInput(f"--control takes TYPE, TYPE:WEIGHT or TYPE:WEIGHT:START:END (got '{spec}')")
        try:
            values = [float(v) for v in numbers]
        except ValueError:
            raise BadInput(f"--control: '{spec}' has a weight or range that is not a number") from None
        units.append({"type": name, **dict(zip(("weight", "start", "end"), values, strict=False))})
    if not units:
        return {}
    if len(units) == 1 and set(units[0]) == {"type"}:
        return {"control": units[0]["type"]}
    return {"controls": units}


def _parse_regions(specs: list[str], max_bytes: int) -> list[dict]:
    """`MASK.png=WORDS` or `MASK.png=style:NAME` → the request's regions (mask files read with the limits)."""
    from .images import read_bytes

    regions = []
    for spec in specs:
        path, sep, what = spec.partition("=")
        if not sep or not path or not what.strip():
            raise BadInput(f"--region takes MASK.png=WORDS or MASK.png=style:NAME (got '{spec}')")
        region = {"mask": read_bytes(Path(path), max_bytes)}
        if what.startswith("style:"):
            region["style"] = what.removeprefix("style:").strip()
        else:
            region["words"] = what
        regions.append(region)
    return regions


def _segment(args) -> dict:
    from .images import read_bytes

    settings = _settings(args)
    if args.out:
        _check_writable(args.out)
    points = [_numbers(p, "--point", 2) for p in args.point] + [
        _numbers(p, "--negative-point", 2) for p in args.negative_point
    ]
    labels = [1] * len(args.point) + [0] * len(args.negative_point)
    box = _numbers(args.box, "--box", 4) if args.box else None
    image = read_bytes(args.image, settings.max_upload_bytes)
    found = _engine(args, settings).renders.segment(image, points or None, labels or None, box)
    if args.out:
        _write(args.out, found.mask_png)
    h, w = found.mask().shape
    return {"mask": str(args.out) if args.out else None, "width": w, "height": h,
            **found.model_dump(exclude={"mask_png"})}  # fmt: skip


def _describe(args) -> Listing:
    """The prompt alone on stdout (for `$(python -m engine describe photo.jpg)`); --json: the scored terms too."""
    from .images import read_bytes

    settings = _settings(args)
    image = read_bytes(args.image, settings.max_upload_bytes)
    found = _engine(args, settings).styles.describe(image, args.k, args.threshold, args.max_chars)
    return Listing([], {}, found.prompt, data=found.model_dump())


def _parse_blend(text: str | None) -> list[dict]:
    if not text:
        return []
    items = []
    for part in text.split(","):
        name, _, weight = part.rpartition(":") if ":" in part else (part, "", "1")
        try:
            items.append({"style": name.strip(), "weight": float(weight)})
        except ValueError:
            raise BadInput(f"--blend: '{part}' is not NAME:WEIGHT") from None
    return items


def _request(args, sketch: bytes | None, **settings):
    from .schema import GenerateRequest

    return GenerateRequest.build(
        prompt=args.prompt,
        negative_prompt=args.negative,
        sketch=sketch,
        edge_mode=args.edge_mode,
        canny_low=args.canny_low,
        canny_high=args.canny_high,
        style=args.style,
        blend=_parse_blend(args.blend),
        k=args.k,
        style_only=args.style_only,
        use_style=not args.no_style,
        seed=args.seed,
        size=args.size,
        variations=args.variations,
        mode=args.mode,
        source="cli",
        **{
            k: v
            for k, v in {"guidance": args.guidance, "scheduler": args.scheduler, **settings}.items()
            if v is not None
        },
    )


def _sweep(args) -> dict:
    from .images import read_bytes
    from .sweep import parse_values

    settings = _settings(args)
    structures = parse_values(args.structure, "--structure")
    styles = parse_values(args.style_strength, "--style-strength")
    steps = parse_values(args.steps, "--steps", int)
    controls = [c.strip() for c in (args.controls or "").split(",") if c.strip()] or None
    for name in controls or []:
        if name not in CONTROLS:
            raise BadInput(f"--controls: ControlNet '{name}' is unknown; use {known_controls()}")
    sketch = read_bytes(args.sketch, settings.max_upload_bytes) if args.sketch else None
    lora_weights = parse_values(args.lora_weights, "--lora-weights") if args.lora_weights else None
    if lora_weights and not args.lora:
        raise BadInput("--lora-weights varies a LoRA: give it with --lora NAME_OR_FILE")
    _request(args, sketch, steps=steps[0])  # a bad setting is one line before the engine starts
    engine = _engine(args, settings, renders=True)
    request = _request(args, sketch, steps=steps[0], loras=[_parse_lora(engine, spec) for spec in args.lora])
    job = _follow(engine, engine.sweeps.start(request, structures, styles, steps, controls, lora_weights))
    batch = job.result["batch"]
    sweep = engine.sweeps.get(batch)
    out = {"batch": batch, "style": sweep["style"]}
    folder = args.out / batch if args.out else Path(batch)
    for key, name in (("contact_sheet", "contact.png"), ("table", "table.csv"), ("summary", "sweep.json")):
        _write(folder / name, engine.sweeps.file(batch, name))
        out[key] = str(folder / name)
    return {**out, "cells": sweep["table"]}


def _generate(args) -> dict:
    from .images import read_bytes

    settings = _settings(args)
    limit = settings.max_upload_bytes
    sketch = read_bytes(args.sketch, limit) if args.sketch else None
    if args.out:
        _check_writable(args.out)
    controls = _parse_controls(args.control)  # a bad spec is one line before any model loads
    engine = _engine(args, settings, renders=args.model == "sd15")
    request = _request(
        args,
        sketch,
        steps=args.steps,
        structure_strength=args.structure,
        style_strength=args.style_strength,
        model=args.model,
        batch=args.batch,
        label=args.label,
        regions=_parse_regions(args.region, limit),
        init_image=read_bytes(args.init_image, limit) if args.init_image else None,
        **({"strength": args.strength} if args.strength is not None else {}),
        outpaint=[round(v) for v in _numbers(args.outpaint, "--outpaint", 4)] if args.outpaint else None,
        mask=read_bytes(args.mask, limit) if args.mask else None,
        **controls,
        checkpoint=_model_name(engine, "checkpoint", args.checkpoint) if args.checkpoint else None,
        loras=[_parse_lora(engine, spec) for spec in args.lora],
        hires=args.hires,
        hires_strength=args.hires_strength,
    )
    if args.upscale_refine and not args.upscale:
        raise BadInput("--upscale-refine goes with --upscale 2 or 4")
    start = time.perf_counter()
    job = _follow(engine, engine.renders.submit(request))
    result = engine.measured(job.id)  # the numbers in the files it writes, as before
    source = None
    if args.upscale:  # each image upscaled into its own run, linked to this one; those are what it writes
        source = result
        upscaled = [
            engine.measured(_follow(engine, engine.renders.upscale(result.run_id, i, args.upscale,
                                                                   args.upscale_refine)).id)
            for i in range(len(result.png))
        ]  # fmt: skip
        result = upscaled[0].model_copy(
            update={
                "png": [u.png[0] for u in upscaled],
                "files": [f for u in upscaled for f in u.files],
                "seeds": [u.seeds[0] for u in upscaled],
            }
        )
    # a local engine's files are in this machine's data folder; a remote one's come here
    outputs = [str(Path(settings.data_dir).expanduser() / name) for name in result.files]
    out = args.out or (Path(f"{result.run_id}.png") if args.remote else None)
    if out:
        outputs = []
        for i, data in enumerate(result.png):
            dst = out if i == 0 else out.with_name(f"{out.stem}-{i}{out.suffix}")
            _write(dst, data)
            outputs.append(str(dst))
    images = result.images()
    return {
        "output": outputs[0],
        "outputs": outputs,
        "run_id": result.run_id,
        "seed": result.seeds[0],
        "seeds": result.seeds,
        "size": list(images[0].size),
        "profile": result.metadata.get("profile", settings.profile),
        "edge_mode": result.metadata.get("edge_mode"),
        "kind": result.metadata.get("kind"),
        "dtype": result.metadata.get("dtype"),
        "control": result.metadata["params"].get("control"),
        "controls": [
            {k: u[k] for k in ("type", "weight", "start", "end")} for u in result.metadata["params"].get("controls", [])
        ],
        "styles": [s.as_dict() for s in result.styles],
        "regions": [{k: r[k] for k in ("index", "words", "style", "area", "style_similarity")} for r in result.regions],
        "seconds": round(time.perf_counter() - start, 3),
        "timings": result.metadata["timings"],
        **(
            {"upscale": args.upscale, "source_run_id": source.run_id, "run_ids": [u.run_id for u in upscaled]}
            if source is not None
            else {}
        ),
    }


def _style_dict(s) -> dict:
    return {"id": s.id, "name": s.name, "source": s.source, "hidden": s.hidden, "tags": s.tags}


class Listing:
    """What a list command found: a table for a person, and behind --json the same data as JSON (`data`, shaped as
    the command always printed it)."""

    def __init__(self, rows: list[dict], columns: dict[str, str], empty: str, data=None, intro: list[str] = ()):
        self.rows, self.columns, self.empty = rows, columns, empty
        self.data = rows if data is None else data
        self.intro = list(intro)

    def table(self) -> str:
        """A header and one row per item, each column as wide as its widest cell."""
        if not self.rows:
            return "\n".join([*self.intro, self.empty])
        cells = [list(self.columns.values())] + [[_cell(r.get(k)) for k in self.columns] for r in self.rows]
        widths = [max(len(row[i]) for row in cells) for i in range(len(self.columns))]
        lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells]
        return "\n".join([*self.intro, *lines])


def _cell(value) -> str:
    if value is None or value is False:
        return ""
    if value is True:
        return "yes"
    if isinstance(value, float):
        return f"{value:.3f}"
    if isinstance(value, list | tuple):
        return ", ".join(str(v) for v in value)
    return " ".join(str(value).split())  # one line per row, whatever the text holds


def _styles(args) -> dict | list | Listing:
    from .images import read_bytes

    settings = _settings(args)
    styles = _engine(args, settings).styles
    if args.action == "list":
        found = [_style_dict(s) for s in styles.list(include_hidden=args.all)]
        columns = {"name": "NAME", "source": "SOURCE", "tags": "TAGS"}
        if args.all:
            columns["hidden"] = "HIDDEN"
        return Listing(found, {**columns, "id": "ID"}, "no styles in the library")
    if args.action == "add":
        tags = [t for t in args.tags.split(",") if t.strip()]
        data = read_bytes(args.image, settings.max_upload_bytes)
        return _style_dict(styles.add(data, args.name, args.description, tags))
    if args.action == "remove":
        return {"removed": _style_dict(styles.remove(args.name))}
    if args.action in ("hide", "unhide"):
        return _style_dict(styles.hide(args.name, args.action == "hide"))
    image = read_bytes(args.image, settings.max_upload_bytes) if args.image else None
    hits = [s.as_dict() for s in styles.search(text=args.text, image=image, k=args.k)]
    ranked = [{"rank": i, **h} for i, h in enumerate(hits, 1)]
    return Listing(ranked, {"rank": "#", "name": "NAME", "score": "SCORE", "source": "SOURCE", "id": "ID"},
                   "no styles found", data=hits)  # fmt: skip


def _prepare_tiny(args) -> dict:
    from .tiny import prepare_tiny

    settings = _settings(args)
    start = time.perf_counter()
    root = prepare_tiny(settings.tiny_dir, force=args.force)
    return {"tiny_dir": str(root), "seconds": round(time.perf_counter() - start, 3)}


def _size(n: int | None, about: bool = False) -> str:
    if not n:
        return ""
    text = f"{n / 1e9:.1f} GB" if n >= 1e9 else f"{n / 1e6:.0f} MB" if n >= 1e6 else f"{n / 1e3:.0f} kB"
    return f"~{text}" if about else text


class Report(Listing):
    """A listing with lines after the table and an exit status of its own (the doctor's verdict)."""

    def __init__(self, *args, outro: list[str] = (), exit_code: int = EXIT_OK, **kw):
        super().__init__(*args, **kw)
        self.outro, self.exit_code = list(outro), exit_code

    def table(self) -> str:
        return "\n".join([super().table(), *self.outro])


def _doctor(args) -> Report:
    """`doctor`: every model the engine's settings name, found or missing, through the engine (here or --remote)."""
    report = _engine(args, _settings(args)).about.doctor()
    rows = [
        {**m.model_dump(), "status": m.status + (f" ({m.variant})" if m.variant else ""),
         "size": _size(m.size) if m.size else _size(m.download_size, about=True),
         "needed": "yes" if m.needed else "optional"}
        for m in report.models
    ]  # fmt: skip
    columns = {"name": "NAME", "status": "STATUS", "format": "FORMAT", "size": "SIZE", "needed": "NEEDED",
               "features": "FOR", "model": "MODEL"}  # fmt: skip
    unusable = [m for m in report.models if m.needed and not m.usable]
    outro = [""]
    if report.ok:
        outro.append(f"ok: every model the enabled features need is here (profile {report.profile})")
    else:
        outro.append(f"missing: {len(unusable)} of the models every render needs ({', '.join(report.missing)})")
        if report.fetch_all:
            outro += ["fetch them all where the hub is reachable:", f"  {report.fetch_all}", "or one by one:"]
        outro += [f"  {m.name}: {m.download or m.fetch or m.note}" for m in unusable]
        outro += [f"  {m.name}: {m.note}" for m in unusable if m.note and m.download]
    intro = [f"profile {report.profile} · hub cache {report.cache}", ""]
    code = EXIT_OK if report.ok else EXIT_BAD_INPUT
    return Report(rows, columns, "no models", data=report.model_dump(), intro=intro, outro=outro, exit_code=code)


def _models(args):
    """`models pull`: the files of the named models from the hub, into its cache (the tiny profile is built)."""
    from .doctor import fp16_device, plan, pull

    settings = _settings(args)
    fp16 = not args.fp32 and settings.profile != "tiny" and fp16_device(settings)
    steps = plan(settings, args.names, every=args.all, fp16=fp16)
    if args.dry_run:
        rows = [s.as_dict() for s in steps]
        shown = [{**r, "download_size": _size(r["download_size"], about=True), "include": " ".join(r["include"])
                  if r["action"] == "download" else ""} for r in rows]  # fmt: skip
        total = sum(s.download_size or 0 for s in steps if s.action == "download")
        fetch = [s for s in steps if s.action == "download"]
        outro = ["", f"would download {len(fetch)} model{'s' * (len(fetch) != 1)}"
                 + (f", about {_size(total)}" if total else "") + (" (fp16 variants)" if fp16 else "")]  # fmt: skip
        columns = {"name": "NAME", "action": "ACTION", "download_size": "SIZE", "model": "MODEL", "include": "FILES"}
        return Report(shown, columns, "nothing to fetch", data={"fp16": fp16, "steps": rows}, outro=outro)
    done = pull(settings, steps, progress=lambda line: print(line, file=sys.stderr))
    return {"downloaded": done, "present": [s.name for s in steps if s.action == "present"], "fp16": fp16}


def _metrics(args) -> dict:
    """Measure past runs again, as the engine's "remeasure" job, followed with the progress bar (Ctrl-C cancels)."""
    start = time.perf_counter()
    engine = _engine(args, _settings(args))
    job = _follow(engine, engine.history.remeasure(args.run or None))
    result = job.result or {}
    return {
        "recomputed": result.get("remeasured", 0),
        "missing": result.get("missing", 0),
        "seconds": round(time.perf_counter() - start, 3),
    }


def _inspect(args, engine, data: bytes, sample_rows: int = 0):
    """The sheet as the engine reads it under the columns the flags name (the others guessed): `catalog.inspect`."""
    return engine.catalog.inspect(
        data, args.sheet.name, args.text_column or None, args.id_column or None, args.name_column or None,
        args.category_column or None, sample_rows,
    )  # fmt: skip


def _catalog_columns(info) -> dict:
    """The mapping in force as the options and the preview's JSON name it."""
    m = info.mapping
    return {"text_column": m.text, "id_column": m.id, "name_column": m.name, "category_column": m.category}


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp", ".tif", ".tiff")


def _zip_folder(folder: Path, max_bytes: int) -> bytes:
    """A folder's images as one zip, for the engine (which takes uploads, never paths)."""
    import io
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        for path in sorted(folder.rglob("*")):
            if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
                zf.write(path, path.relative_to(folder).as_posix())
            if buf.tell() > max_bytes:
                raise BadInput(f"{folder} holds over {max_bytes / 1e6:.0f} MB of images; tag it in parts")
    return buf.getvalue()


def _catalog_tag(args, settings) -> dict:
    from .catalog.tagging import DEFAULT_VOCAB
    from .images import read_bytes

    if args.out.suffix.lower() not in (".csv", ".xlsx"):
        raise BadInput(f"--out must end in .csv or .xlsx (got {args.out.name})")
    if not args.out.parent.is_dir():
        raise BadInput(f"cannot write {args.out}: folder {args.out.parent} does not exist")
    if not args.source.exists():
        raise BadInput(f"{args.source} does not exist")
    vocab_path = args.vocab or DEFAULT_VOCAB
    if not vocab_path.is_file():
        raise BadInput(f"no vocabulary at {vocab_path}")
    photos = (_zip_folder(args.source, settings.max_upload_bytes) if args.source.is_dir()
              else read_bytes(args.source, settings.max_upload_bytes))  # fmt: skip
    llm = args.llm if args.llm in ("local", "none") else "server"
    engine = _engine(args, settings)
    job = _follow(engine, engine.catalog.tag(photos, vocab_path.read_text(), llm, args.llm if llm == "server" else None,
                                             args.llm_model))  # fmt: skip
    run = job.result["run"]
    table = engine.catalog.tagged(run)
    files = []
    for suffix in (".csv", ".xlsx"):
        dst = args.out.with_suffix(suffix)
        _write(dst, engine.catalog.tagged_file(run, f"results{suffix}"))
        files.append(str(dst))
    statuses = [r["status"] for r in table["rows"]]
    return {
        "run": run,
        "images": table["images"],
        "files": files,
        "skipped": table["skipped"],
        "listed": statuses.count("listed"),
        "listing_failed": statuses.count("listing failed"),
        "seconds": table["seconds"],
    }


def _catalog(args) -> dict:
    from .api import MAX_SAMPLE
    from .catalog.sheets import sheet_bytes

    if args.action == "preview":  # the engine reads the sheet (this process's: building one loads no model)
        raw = sheet_bytes(args.sheet)
        info = _inspect(args, _engine(args, _settings(args)), raw, min(max(args.limit or 5, 0), MAX_SAMPLE))
        columns = _catalog_columns(info)
        preview = [r.model_dump() for r in info.sample]
        mapping = ", ".join(f"{k.removesuffix('_column')}: {v}" for k, v in columns.items() if v)
        data = {"sheet": info.name, "columns": info.columns, "mapping": columns, "rows": info.rows,
                "preview": preview}  # fmt: skip
        intro = [f"{info.name}: {info.rows} rows; columns {', '.join(info.columns)}", f"using {mapping}", ""]
        shown = [{**r, "text": _clip(r["text"], 70)} for r in preview]
        headers = {
            "row": "ROW",
            "id": "ID",
            "text": "TEXT",
            **({"error": "PROBLEM"} if any(r.error for r in info.sample) else {}),
        }
        return Listing(shown, headers, "no rows", data, intro)
    settings = _settings(args)
    if args.action == "tag":
        return _catalog_tag(args, settings)
    if args.action == "similar":
        from .images import read_bytes

        image = read_bytes(args.image, settings.max_upload_bytes) if args.image else None
        found = _engine(args, settings).catalog.similar(image=image, text=args.text, k=args.k)
        shown = {"id", "name", "score", "thumbnail"}
        rows = [{"rank": i, **f, "attributes": ", ".join(f"{k} {v}" for k, v in f.items() if k not in shown)}
                for i, f in enumerate(found, 1)]  # fmt: skip
        return Listing(rows, {"rank": "#", "name": "NAME", "score": "SCORE", "attributes": "ATTRIBUTES"},
                       "no similar products", data={"results": found})  # fmt: skip
    data = sheet_bytes(args.sheet)
    local = {"executor": args.executor, "ray_address": args.ray_address, "workers": args.workers}
    engine = _engine(args, settings, **local)
    info = _inspect(args, engine, data)
    columns = _catalog_columns(info)
    from .catalog.options import CatalogOptions
    from .catalog.prompts import DEFAULT_TEMPLATE
    from .rules.models import rules

    model = rules(args.model)
    language = info.language if args.source_lang == "auto" else args.source_lang  # guessed as the page does
    options = CatalogOptions.build(
        **columns,
        source_lang=language,
        template=args.template or DEFAULT_TEMPLATE,
        seed=args.seed,
        model=args.model,
        steps=args.steps or model.steps,
        size=args.size,
        guidance=args.guidance if args.guidance is not None else model.guidance,
        style=args.style,
        llm=args.llm if args.llm in ("local", "none") else "server",
        llm_url=None if args.llm in ("local", "none") else args.llm,
        llm_model=args.llm_model,
        retries=args.retries,
        limit=args.limit,
    )
    job = _follow(engine, engine.catalog.start(data, args.sheet.name, options))
    run = job.result["run"]
    found = engine.catalog.run(run)
    if args.out:  # a copy of the results here: the tables, the report and the images
        for name in ("results.csv", "results.xlsx", "report.md"):
            _write(args.out / name, engine.catalog.file(run, name))
        for row in found["results"]:
            if row["status"] == "done":
                _write(args.out / row["image"], engine.catalog.image(run, row["id"]))
    return {"run": run, "folder": str(args.out) if args.out else None, "executor": args.executor, **found["summary"]}


def _clip(text: str | None, width: int) -> str:
    text = " ".join(str(text or "").split())
    return text if len(text) <= width else text[: width - 1] + "…"


def _tune(args) -> dict:
    """`tune ...`: the tuning service of the engine here or at --remote (built once the input is checked)."""
    from .tune.cli import run

    settings = _settings(args)
    return run(args, settings, lambda: _engine(args, settings), _follow)


def _serve(args) -> dict:
    from .server.app import check_token

    settings = _settings(args)
    token = check_token(args.token if args.token is not None else settings.api_token)  # refused before any model
    from .hub import check_render_models

    check_render_models(settings)  # offline without the weights: said at once, before the heavy imports
    from .local import LocalEngine
    from .server import serve

    engine = LocalEngine(settings, executor=args.executor, ray_address=args.ray_address, workers=args.workers,
                         max_queued=32, abandon_after=600.0)  # fmt: skip
    engine.load(freeze=True)
    serve(engine, host=args.host, port=args.port, ngrok=args.ngrok, token=token)
    return {"stopped": True}


def _configure_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    if not verbose:
        warnings.filterwarnings("ignore")
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


def main(argv: list[str] | None = None) -> int:
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:  # --help, or a usage error already printed as one line
        return int(exc.code or 0)
    _configure_logging(args.verbose)
    handlers = {
        "generate": _generate,
        "styles": _styles,
        "prepare-tiny": _prepare_tiny,
        "serve": _serve,
        "metrics": _metrics,
        "sweep": _sweep,
        "catalog": _catalog,
        "tune": _tune,
        "segment": _segment,
        "doctor": _doctor,
        "models": _models,
        "describe": _describe,
    }
    try:
        out = handlers[args.command](args)
    except (BadInput, ModelUnavailable) as exc:  # the user can fix it: the input, or the weights on this machine
        print(f"error: {exc.line('cli')}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except EngineError as exc:
        print(f"error: {exc.line('cli')}", file=sys.stderr)
        return EXIT_INTERNAL
    except KeyboardInterrupt:
        print("cancelled", file=sys.stderr)
        return 130
    except Exception as exc:  # the one place a bug turns into one line instead of a traceback
        if args.verbose:
            raise
        print(f"internal error: {type(exc).__name__}: {exc} (run with -v for details)", file=sys.stderr)
        return EXIT_INTERNAL
    if isinstance(out, Listing):
        print(json.dumps(out.data) if args.json else out.table())
    else:
        print(json.dumps(out))
    return getattr(out, "exit_code", EXIT_OK)
