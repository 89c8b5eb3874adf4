"""`python -m engine tune ...`: prepare, train, eval, use. Imports stay light until a command runs."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import DEFAULT_EPOCHS, DEFAULT_LR, DEFAULT_MIN_STEPS


def add_parsers(tune: argparse.ArgumentParser, common: argparse.ArgumentParser, parser_class) -> None:
    """The `tune` sub-commands, added under the `tune` parser of `python -m engine`."""
    sub = tune.add_subparsers(dest="action", required=True, parser_class=parser_class)

    p = sub.add_parser("prepare", parents=[common], help="image–text pairs → cleaned, split WebDataset shards")
    p.add_argument("--images", type=Path, help="the images folder (or the tagged folder / .zip for --tagging)")
    p.add_argument("--captions", type=Path, help="CSV: an image column (file, relative to --images), a caption column,"
                   " optionally a label column for the stratified split")  # fmt: skip
    p.add_argument("--tagging", type=Path, help="a `catalog tag` table (.csv): image + attributes + title → captions")
    p.add_argument(
        "--library", action="store_true", help="also use the style library (image + name, description, tags)"
    )
    p.add_argument("--out", type=Path, required=True, help="DATA_DIR: shards per split + manifest.json (resumable)")
    p.add_argument("--file-column", help="the image column of --captions (guessed: file, image, path, ...)")
    p.add_argument("--text-column", help="the caption column of --captions (guessed: caption, text, title, ...)")
    p.add_argument("--label-column", help="the label column for stratification (guessed: label, category, class)")
    p.add_argument("--seed", type=int, default=0, help="the split's seed")
    p.add_argument("--val", type=float, default=0.1, help="share of the validation split")
    p.add_argument("--test", type=float, default=0.1, help="share of the test split")
    p.add_argument("--mini-train", type=int, default=1000, help="samples in the mini_train subset of train")
    p.add_argument("--shard-size", type=int, default=1000, help="samples per shard")
    p.add_argument("--max-side", type=int, default=512, help="larger images are stored downscaled to this side")
    p.add_argument("--llm", metavar="URL|local|none", default="none",
                   help="clean captions: the local LLM, an OpenAI-compatible server URL, or none")  # fmt: skip
    p.add_argument("--llm-model", default="local-model", help="the model name to ask that server for")
    p.add_argument("--overwrite", action="store_true", help="replace shards of other data already in --out")

    t = sub.add_parser("train", parents=[common], help="fine-tune the retrieval CLIP (LoRA) on prepared shards")
    t.add_argument("data", type=Path, metavar="DATA_DIR")
    t.add_argument("--out", type=Path, required=True, help="RUN_DIR: checkpoints, adapter/, train.json")
    t.add_argument("--scenario", default="dual_lora",
                   help="zero_shot, linear_probe, dual_lora (default), vision_lora or text_lora")  # fmt: skip
    t.add_argument("--epochs", type=int, default=DEFAULT_EPOCHS,
                   help=f"passes over the data (default {DEFAULT_EPOCHS}; more if --min-steps needs)")  # fmt: skip
    t.add_argument("--min-steps", type=int, default=DEFAULT_MIN_STEPS,
                   help=f"train at least this many optimizer steps: a small set trains more epochs than asked"
                   f" (default {DEFAULT_MIN_STEPS}; 0: exactly --epochs)")  # fmt: skip
    t.add_argument("--lr", type=float, default=DEFAULT_LR, help=f"learning rate (default {DEFAULT_LR:g})")
    t.add_argument("--val-split", default="val",
                   help="held-out split whose recall after each epoch picks the kept epoch, the base included"
                   " (default val; none: keep the last epoch)")  # fmt: skip
    t.add_argument("--weight-decay", type=float, default=0.01)
    t.add_argument("--batch-size", type=int, default=32)
    t.add_argument("--accumulate", type=int, default=1, help="micro-batches per optimizer step")
    t.add_argument("--warmup", type=float, default=0.1, help="share of the steps spent warming up")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--lora-r", type=int, default=8)
    t.add_argument("--lora-alpha", type=int, default=16)
    t.add_argument("--split", default="train", help="train (default) or mini_train")
    t.add_argument("--amp", default="auto", help="mixed precision on CUDA: auto, fp16, bf16, off")
    t.add_argument("--workers", type=int, help="data loader workers (default: 0 on the CPU, up to 8 on a GPU)")
    t.add_argument("--resume", action=argparse.BooleanOptionalAction, default=True,
                   help="continue from RUN_DIR's latest checkpoint (default); --no-resume starts over")  # fmt: skip

    e = sub.add_parser("eval", parents=[common], help="recall@1/5/10 of the base and the tuned model")
    e.add_argument("run", type=Path, metavar="RUN_DIR")
    e.add_argument("--data", type=Path, metavar="DATA_DIR", help="default: the data the run was trained on")
    e.add_argument("--split", default="test")
    e.add_argument("-k", default="1,5,10", help="comma-separated k values")

    u = sub.add_parser("use", parents=[common], help="switch retrieval to a tuned adapter (or back to the base)")
    u.add_argument("run", type=Path, nargs="?", metavar="RUN_DIR")
    u.add_argument("--base", action="store_true", help="switch back to the base model")


def _bar():
    from ..progress import ProgressBar

    return ProgressBar()


def _prepare(args, settings) -> dict:
    from ..errors import BadInput
    from .data import prepare

    if args.captions is None and args.tagging is None and not args.library:
        raise BadInput("tune prepare needs data: --images DIR --captions CSV, --tagging CSV, or --library")
    fractions = (round(1 - args.val - args.test, 6), args.val, args.test)
    library = None
    engine = None
    if args.library or args.llm != "none":
        from ..local import LocalEngine

        engine = LocalEngine(settings)
        if args.library:
            library = engine.retrieval.library
    clean = None
    if args.llm != "none":
        from .data import llm_caption_cleaner

        backend = engine.catalog_models().backend(None if args.llm == "local" else args.llm, args.llm_model)
        clean = llm_caption_cleaner(backend)
    bar = _bar()
    try:
        result = prepare(
            args.out,
            images=args.images,
            captions=args.captions,
            tagging=args.tagging,
            library=library,
            seed=args.seed,
            fractions=fractions,
            mini_train=args.mini_train,
            shard_size=args.shard_size,
            max_side=args.max_side,
            max_pixels=settings.max_input_pixels,
            max_bytes=settings.max_upload_bytes,
            clean=clean,
            overwrite=args.overwrite,
            file_column=args.file_column,
            text_column=args.text_column,
            label_column=args.label_column,
            on_progress=bar,
        )
    finally:
        bar.close()
    return {
        "folder": result["folder"],
        "samples": result["samples"],
        "splits": {s: v["samples"] for s, v in result["splits"].items()},
        "labels": result["labels"],
        "dropped": result["dropped"],
        "dropped_examples": result["dropped_examples"][:5],
        "cleaned": result["cleaned"],
        "written_shards": result["written_shards"],
        "kept_shards": result["kept_shards"],
        "seconds": result["seconds"],
    }


def _train(args, settings) -> dict:
    from .train import TrainConfig, train

    config = TrainConfig(
        scenario=args.scenario,
        epochs=args.epochs,
        min_steps=args.min_steps,
        lr=args.lr,
        weight_decay=args.weight_decay,
        batch_size=args.batch_size,
        accumulate=args.accumulate,
        warmup=args.warmup,
        seed=args.seed,
        lora_r=args.lora_r,
        lora_alpha=args.lora_alpha,
        split=args.split,
        val_split=args.val_split,
        amp=args.amp,
        workers=args.workers,
    )
    config.validate()  # before any model loads
    bar = _bar()
    try:
        out = train(args.data, args.out, settings, config, resume=args.resume, on_progress=bar)
    finally:
        bar.close()
    say(out["note"])
    return out


def _eval(args, settings) -> dict:
    from ..errors import BadInput
    from .evaluate import evaluate

    try:
        ks = tuple(int(k) for k in args.k.split(","))
    except ValueError:
        raise BadInput(f"-k takes comma-separated integers, e.g. 1,5,10 (got '{args.k}')") from None
    out = evaluate(args.run, settings, data_dir=args.data, split=args.split, ks=ks)
    say(out["verdict"])
    return out


def say(line: str) -> None:
    """One plain line for the person at the terminal (stderr; stdout stays one JSON line)."""
    print(line, file=sys.stderr, flush=True)


def _use(args, settings) -> dict:
    """Switch retrieval (styles, history, products) to RUN_DIR's adapter, or back to the base with --base."""
    from ..errors import BadInput
    from ..local import LocalEngine

    if args.base == (args.run is not None):
        raise BadInput("tune use takes a RUN_DIR, or --base to switch back to the base model")
    engine = LocalEngine(settings)
    bar = _bar()
    try:
        out = engine.retrieval.use(args.run, on_progress=bar)
    finally:
        bar.close()
    return {**out, "retrieval_now": engine.retrieval.label()}


def run(args, settings) -> dict:
    """Run one `tune` action; returns the JSON the CLI prints (errors raise BadInput / EngineError)."""
    from ..errors import BadInput

    if getattr(args, "remote", None):
        raise BadInput("tune runs on the local engine; run it on the machine that holds the data")
    if args.action == "prepare":
        return _prepare(args, settings)
    if args.action == "train":
        return _train(args, settings)
    if args.action == "eval":
        return _eval(args, settings)
    if args.action == "use":
        return _use(args, settings)
    raise BadInput(f"unknown tune action '{args.action}'")
