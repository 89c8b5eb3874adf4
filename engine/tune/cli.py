"""`python -m engine tune ...`: prepare, train, eval, use, through the engine interface (the tuning service), so each
works the same on the engine in this process and on the one served at --remote URL.

Datasets and adapters are named and live on the engine (for the engine in this process: under its data folder).
A folder of images and its captions (or a `catalog tag` table) are read here and sent up as a zip and a CSV.
Imports stay light until a command runs."""

from __future__ import annotations

import argparse
import csv
import io
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path, PurePosixPath

from . import DEFAULT_EPOCHS, DEFAULT_LR, DEFAULT_MIN_STEPS

SPLITS = ("train", "val", "test", "mini_train")


def add_parsers(tune: argparse.ArgumentParser, common: list[argparse.ArgumentParser], parser_class) -> None:
    """The `tune` sub-commands, added under the `tune` parser of `python -m engine` (`common`: the options every
    engine command takes, --remote and --token among them)."""
    sub = tune.add_subparsers(dest="action", required=True, parser_class=parser_class)
    _prepare_parser(sub.add_parser("prepare", parents=common, help="image–text pairs → a cleaned, split dataset"))
    _train_parser(sub.add_parser("train", parents=common, help="fine-tune the retrieval CLIP (LoRA) on a dataset"))

    e = sub.add_parser("eval", parents=common, help="recall@1/5/10 of the base and the tuned model")
    e.add_argument("adapter", metavar="ADAPTER", help="an adapter on the engine (`tune train --name`)")
    e.add_argument("--data", metavar="DATASET", help="default: the dataset it was trained on")
    e.add_argument("--split", default="test", choices=SPLITS)
    e.add_argument("-k", default="1,5,10", help="comma-separated k values")

    u = sub.add_parser("use", parents=common, help="switch retrieval to a tuned adapter (or back to the base)")
    u.add_argument("adapter", nargs="?", metavar="ADAPTER", help="an adapter on the engine")
    u.add_argument("--base", action="store_true", help="switch back to the base model")


def _prepare_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("--images", type=Path, help="the images folder (or the tagged folder / .zip for --tagging)")
    p.add_argument("--captions", type=Path, help="CSV: an image column (file, relative to --images), a caption column,"
                   " optionally a label column for the stratified split")  # fmt: skip
    p.add_argument("--tagging", type=Path, help="a `catalog tag` table (.csv): image + attributes + title → captions")
    p.add_argument("--library", action="store_true", help="the engine's style library (image + name, description,"
                   " tags) instead of images sent from here")  # fmt: skip
    p.add_argument("--name", default="", help="the dataset's name on the engine (default: data-DATE-TIME); "
                   "preparing a name again resumes it")  # fmt: skip
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
                   help="clean captions: the engine's local LLM, an OpenAI-compatible server URL, or none")  # fmt: skip
    p.add_argument("--llm-model", default="local-model", help="the model name to ask that server for")
    p.add_argument("--overwrite", action="store_true", help="replace the dataset's shards when they hold other data")


def _train_parser(t: argparse.ArgumentParser) -> None:
    t.add_argument("dataset", metavar="DATASET", help="a dataset on the engine (`tune prepare --name`)")
    t.add_argument("--name", default="", help="the adapter's name on the engine (default: DATASET-SCENARIO); "
                   "training a name again resumes it")  # fmt: skip
    t.add_argument("--scenario", default="dual_lora",
                   help="zero_shot, linear_probe, dual_lora (default), vision_lora or text_lora")  # fmt: skip
    t.add_argument("--epochs", type=int, default=DEFAULT_EPOCHS,
                   help=f"passes over the data (default {DEFAULT_EPOCHS}; more if --min-steps needs)")  # fmt: skip
    t.add_argument("--min-steps", type=int, default=DEFAULT_MIN_STEPS,
                   help=f"train at least this many optimizer steps: a small set trains more epochs than asked"
                   f" (default {DEFAULT_MIN_STEPS}; 0: exactly --epochs)")  # fmt: skip
    t.add_argument("--lr", type=float, default=DEFAULT_LR, help=f"learning rate (default {DEFAULT_LR:g})")
    t.add_argument("--val-split", default="val", choices=("val", "test", "none"),
                   help="held-out split whose recall after each epoch picks the kept epoch, the base included"
                   " (default val; none: keep the last epoch)")  # fmt: skip
    t.add_argument("--weight-decay", type=float, default=0.01)
    t.add_argument("--batch-size", type=int, default=32)
    t.add_argument("--accumulate", type=int, default=1, help="micro-batches per optimizer step")
    t.add_argument("--warmup", type=float, default=0.1, help="share of the steps spent warming up")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--lora-r", type=int, default=8)
    t.add_argument("--lora-alpha", type=int, default=16)
    t.add_argument("--split", default="train", choices=("train", "mini_train"), help="what to train on")
    t.add_argument("--amp", default="auto", help="mixed precision on CUDA: auto, fp16, bf16, off")
    t.add_argument("--workers", type=int, help="data loader workers (default: 0 on the CPU, up to 8 on a GPU)")
    t.add_argument("--resume", action=argparse.BooleanOptionalAction, default=True,
                   help="continue from the adapter's latest checkpoint (default); --no-resume starts over")  # fmt: skip


def say(line: str | None) -> None:
    """One plain line for the person at the terminal (stderr; stdout stays one JSON line)."""
    if line:
        print(line, file=sys.stderr, flush=True)


def _options(cls, **values):
    """`cls(**values)`, a pydantic error said as one line."""
    from pydantic import ValidationError

    from ..errors import BadInput
    from ..schema import describe_validation_error

    try:
        return cls(**values)
    except ValidationError as exc:
        raise BadInput(describe_validation_error(exc)) from None


# ---- prepare ---------------------------------------------------------------------------------------------------------
def _local_pairs(args) -> tuple[list, Path]:
    """The pairs that --captions or --tagging name, read here (columns checked), and where their images are."""
    from ..errors import BadInput
    from .data import pairs_from_folder, pairs_from_tagging

    if args.captions is not None and args.tagging is not None:
        raise BadInput("give --captions or --tagging, not both (prepare each into its own dataset)")
    if args.captions is not None:
        if args.images is None:
            raise BadInput("--captions needs --images, the folder its file names are relative to")
        pairs = pairs_from_folder(args.images, args.captions, args.file_column, args.text_column, args.label_column)
        return pairs, args.images
    root = args.images or args.tagging.parent
    return pairs_from_tagging(args.tagging, root), root


def _archive_name(name: str, i: int) -> str:
    """The name an image gets in the zip: its own when it is a plain relative path, else a numbered one."""
    path = PurePosixPath(name.replace("\\", "/"))
    if path.is_absolute() or ".." in path.parts or not path.parts:
        return f"{i:06d}-{path.name or 'image'}"
    return path.as_posix()


def _upload(pairs: list, root: Path, max_bytes: int) -> tuple[bytes, bytes]:
    """The pairs as (a zip of their images, a captions CSV naming each by its place in the zip). An image that is
    not here stays in the CSV: the engine drops it and says so."""
    from ..errors import BadInput

    if root.is_file() and root.suffix.lower() == ".zip":
        images, names = root.read_bytes(), [p.name for p in pairs]
    else:
        buf, names, added = io.BytesIO(), [], set()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
            for i, pair in enumerate(pairs):
                name = _archive_name(pair.name, i)
                names.append(name)
                path = Path(pair.name) if Path(pair.name).is_absolute() else root / pair.name
                if name not in added and path.is_file():
                    zf.write(path, name)
                    added.add(name)
                if buf.tell() > max_bytes:
                    break
        images = buf.getvalue()
    if len(images) > max_bytes:
        raise BadInput(f"the images come to over {max_bytes / 1e6:.0f} MB; prepare them in parts",
                       fix="or raise DESIGN_STUDIO_MAX_UPLOAD_BYTES where the engine runs")  # fmt: skip
    table = io.StringIO()
    writer = csv.writer(table)
    writer.writerow(["file", "caption", "label"])
    writer.writerows([name, pair.text, pair.label] for name, pair in zip(names, pairs, strict=True))
    return images, table.getvalue().encode()


def _source(args, max_bytes: int) -> dict:
    """The tuning service's prepare arguments for what the command names: the engine's library, or pairs sent up."""
    from ..errors import BadInput

    if args.library:
        if args.images or args.captions or args.tagging:
            raise BadInput("--library prepares the engine's style library on its own; leave out --images, "
                           "--captions and --tagging (or prepare them into another dataset)")  # fmt: skip
        return {"source": "library"}
    if args.captions is None and args.tagging is None:
        if args.images is not None:
            raise BadInput("--images needs --captions CSV (file, caption[, label]) or --tagging CSV")
        raise BadInput("tune prepare needs data: --images DIR --captions CSV, --tagging CSV, or --library")
    pairs, root = _local_pairs(args)
    if not pairs:
        raise BadInput("the table names no images; it needs one row per image")
    images, captions = _upload(pairs, root, max_bytes)
    return {"source": "upload", "images": images, "captions": captions}


def _prepare(args, engine_for, follow, settings) -> dict:
    from ..api import PrepareOptions

    llm = args.llm if args.llm in ("none", "local") else "server"
    options = _options(PrepareOptions, seed=args.seed, val=args.val, test=args.test, mini_train=args.mini_train,
                       shard_size=args.shard_size, max_side=args.max_side, overwrite=args.overwrite, llm=llm,
                       llm_url=args.llm if llm == "server" else None, llm_model=args.llm_model)  # fmt: skip
    source = _source(args, settings.max_upload_bytes)
    engine = engine_for()
    result = follow(engine, engine.tuning.prepare(args.name, options=options, **source)).result
    splits = ", ".join(f"{k} {v}" for k, v in result["splits"].items() if k != "mini_train")
    say(f"dataset '{result['dataset']}': {result['samples']} pairs ({splits}); {result['dropped']} dropped")
    return result


# ---- train, eval, use ------------------------------------------------------------------------------------------------
def _train(args, engine_for, follow, settings) -> dict:
    from ..api import TrainOptions
    from .train import TrainConfig

    names = ("min_steps", "weight_decay", "accumulate", "warmup", "seed", "lora_r", "lora_alpha", "split",
             "val_split", "amp", "workers")  # fmt: skip
    extra = {k: getattr(args, k) for k in names}
    basics = {"scenario": args.scenario, "epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr}
    TrainConfig(**basics, **extra).validate()  # said in the CLI's words, before anything is sent
    options = _options(TrainOptions, **extra, resume=args.resume)
    engine = engine_for()
    job = engine.tuning.train(args.dataset, args.name, options=options, **basics)
    result = follow(engine, job).result
    say(result.get("note"))
    say(result.get("verdict"))
    say(f"adapter '{result['adapter']}' trained on dataset '{result['dataset']}'")
    return {"adapter": result["adapter"], "dataset": result["dataset"], **result["training"],
            **{k: result.get(k) for k in ("metrics", "recall_change", "verdict", "note")}}  # fmt: skip


def _eval(args, engine_for, follow, settings) -> dict:
    from ..errors import BadInput

    try:
        ks = [int(k) for k in args.k.split(",")]
    except ValueError:
        raise BadInput(f"-k takes comma-separated integers, e.g. 1,5,10 (got '{args.k}')") from None
    engine = engine_for()
    result = follow(engine, engine.tuning.evaluate(args.adapter, args.data, args.split, ks)).result
    say(result.get("verdict"))
    return {"adapter": result["adapter"], **result["metrics"],
            **{k: result.get(k) for k in ("recall_change", "verdict", "note")}}  # fmt: skip


def _use(args, engine_for, follow, settings) -> dict:
    """Switch retrieval (styles, history, products) to an adapter, or back to the base with --base."""
    from ..errors import BadInput

    if args.base == (args.adapter is not None):
        raise BadInput("tune use takes an ADAPTER (see `tune train --name`), or --base to switch back to the base")
    engine = engine_for()
    result = follow(engine, engine.tuning.use(args.adapter)).result
    say(f"retrieval now uses {result['label']}")
    return {**result, "retrieval_now": result["label"]}


ACTIONS = {"prepare": _prepare, "train": _train, "eval": _eval, "use": _use}


def run(args, settings, engine_for: Callable, follow: Callable) -> dict:
    """Run one `tune` action; returns the JSON the CLI prints (errors raise BadInput / EngineError).
    `engine_for()`: the engine the command talks to (built only once the input is checked); `follow(engine, job)`:
    the job once it has ended, with the progress bar."""
    from ..errors import BadInput

    action = ACTIONS.get(args.action)
    if action is None:
        raise BadInput(f"unknown tune action '{args.action}'")
    return action(args, engine_for, follow, settings)
