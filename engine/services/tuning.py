"""Retrieval tuning as jobs over folders the engine names: datasets (runs/tune/data/NAME), adapters
(runs/tune/runs/NAME), uploads kept beside them; and the switch of retrieval to an adapter and back."""

from __future__ import annotations

import json
import re
from datetime import datetime
from pathlib import Path
from typing import Any

from ..api import JobInfo, PrepareOptions, TrainOptions, Tuning
from ..errors import BadInput, Cancelled, Conflict, EngineError
from ..jobs import JobContext
from ..retrieval import find_runs
from ..schema import Progress
from ..tune import DEFAULT_EPOCHS, DEFAULT_LR
from . import Core, named, newest_json

SCENARIOS = ("dual_lora", "vision_lora", "text_lora", "linear_probe", "zero_shot")
FAILED = "failed.json"  # in an adapter's folder: why its recall could not be measured (gone once it is)


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", (text or "").strip()).strip("-.")[:60]


def heeding(ctx: JobContext, stopped: str):
    """A progress callback that also stops the work at its next report when the job is cancelled."""

    def report(p: Progress) -> None:
        ctx.report(p)
        if ctx.cancel.is_set():
            raise Cancelled(stopped)

    return report


class TuningService(Tuning):
    def __init__(self, core: Core):
        self.core = core
        self.data = core.folder("tune", "data")
        self.runs = core.folder("tune", "runs")
        self.uploads = core.folder("tune", "uploads")

    def handlers(self):
        return {"tune-prepare": self._prepare, "tune-train": self._train, "tune-eval": self._eval,
                "retrieval": self._use}  # fmt: skip

    def prepare(self, name, source, images=None, captions=None, tagging_run=None, options=None) -> JobInfo:
        """Refused now, in one line, when the source holds too few pairs for recall to be measured (the job checks
        again once unreadable and duplicate pairs are dropped)."""
        from ..tune.data import check_enough, pairs_from_folder, pairs_from_library, pairs_from_tagging

        options = _validated(PrepareOptions, options)
        if options.llm == "server" and not options.llm_url:
            raise BadInput("cleaning captions with a server needs its URL (llm_url)")
        name = slug(name) or f"data-{datetime.now():%Y%m%d-%H%M%S}"
        payload: dict[str, Any] = {"name": name, "source": source, "options": options.model_dump()}
        if source == "upload":
            if not images or not captions:
                raise BadInput("give a .zip of the images and the captions CSV (file, caption[, label])")
            limit = self.core.settings.max_upload_bytes
            if len(images) > limit or len(captions) > limit:
                raise BadInput(f"an upload is over the {limit / 1e6:.0f} MB limit")
            folder = self.uploads / name
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "images.zip").write_bytes(images)
            (folder / "captions.csv").write_bytes(captions)
            raw = pairs_from_folder(folder / "images.zip", folder / "captions.csv")
            fix = "add rows to the captions CSV"
        elif source == "tagging":
            tags = named(self.core.folder("tags"), tagging_run or "", "tagging run")
            if not (tags / "results.csv").is_file():
                raise BadInput(f"tagging run {tagging_run} has no table yet (has it finished?)")
            payload["tagging_run"] = tagging_run
            raw = pairs_from_tagging(tags / "results.csv", tags / "upload.zip")
            fix = "tag more photos, or upload images with captions"
        elif source == "library":
            raw = pairs_from_library(self.core.retrieval.library)
            fix = "add styles to the library first, or upload images with captions"
        else:
            raise BadInput(f"pairs come from the library, an upload or a tagging run (not '{source}')")
        check_enough(sum(1 for r in raw if r.text), _fractions(options), fix=fix,
                     error=BadInput if source == "upload" else Conflict)  # fmt: skip
        return self.core.jobs.submit("tune-prepare", payload, title=f"prepare {name}")

    def _prepare(self, payload: dict[str, Any], ctx: JobContext) -> dict[str, Any]:
        from ..tune.data import prepare

        s = self.core.settings
        kw: dict[str, Any] = {}
        if payload["source"] == "library":
            kw["library"] = self.core.retrieval.library
        elif payload["source"] == "upload":
            folder = self.uploads / payload["name"]
            kw.update(images=folder / "images.zip", captions=folder / "captions.csv")
        else:
            tags = self.core.folder("tags", payload["tagging_run"])
            kw.update(tagging=tags / "results.csv", images=tags / "upload.zip")
        options = PrepareOptions(**payload.get("options", {}))
        stopped = "cancelled; preparing again resumes where it stopped"
        out = prepare(
            self.data / payload["name"], **kw, seed=options.seed, fractions=_fractions(options),
            mini_train=options.mini_train, shard_size=options.shard_size, max_side=options.max_side,
            overwrite=options.overwrite, clean=self._cleaner(options), max_pixels=s.max_input_pixels,
            max_bytes=s.max_upload_bytes, on_progress=heeding(ctx, stopped),
        )  # fmt: skip
        return {
            "dataset": payload["name"],
            "samples": out["samples"],
            "splits": {k: v["samples"] for k, v in out["splits"].items()},
            "labels": out["labels"],
            "dropped": out["dropped"],
            "dropped_examples": out["dropped_examples"][:5],
            "cleaned": out["cleaned"],
            "written_shards": out["written_shards"],
            "kept_shards": out["kept_shards"],
            "seconds": out["seconds"],
        }

    def _cleaner(self, options: PrepareOptions):
        """The caption cleaner the options ask for: None, or an LLM (the local one or a server's)."""
        if options.llm == "none":
            return None
        from ..tune.data import llm_caption_cleaner

        backend = self.core.catalog_models().backend(options.llm_url if options.llm == "server" else None,
                                                     options.llm_model)  # fmt: skip
        return llm_caption_cleaner(backend)

    def datasets(self) -> list[dict[str, Any]]:
        found = []
        for manifest, m in newest_json(self.data, "*/manifest.json"):
            splits = {k: (v.get("samples", v) if isinstance(v, dict) else v) for k, v in m.get("splits", {}).items()}
            found.append({"name": manifest.parent.name, "samples": m.get("samples"), "splits": splits})
        return found

    def train(self, dataset, name, scenario, epochs=DEFAULT_EPOCHS, batch_size=32, lr=DEFAULT_LR,
              options=None) -> JobInfo:  # fmt: skip
        """At least the engine's minimum of optimizer steps (a small set trains more epochs than asked); the
        adapter keeps the epoch with the best recall on the dataset's validation split, the base included."""
        from ..tune.data import load_manifest
        from ..tune.splits import MIN_HELD_OUT, min_pairs

        folder = named(self.data, dataset, "dataset")
        test = load_manifest(folder).get("splits", {}).get("test", {}).get("samples", 0)
        if test < MIN_HELD_OUT:
            raise BadInput(
                f"'{dataset}' holds {test} test pair(s); recall needs at least {MIN_HELD_OUT}, so training it would "
                f"leave an adapter without scores",
                fix=f"prepare it again from at least {min_pairs()} pairs",
            )
        if scenario not in SCENARIOS:
            raise BadInput(f"scenario must be one of {', '.join(SCENARIOS)} (got '{scenario}')")
        options = _validated(TrainOptions, options)
        payload = {"dataset": dataset, "scenario": scenario, "epochs": int(epochs), "batch_size": int(batch_size),
                   "lr": float(lr), "options": options.model_dump()}  # fmt: skip
        _config(payload).validate()  # before any model loads
        payload["run"] = slug(name) or f"{dataset}-{scenario}"
        return self.core.jobs.submit("tune-train", payload, title=f"train {payload['run']}")

    def _train(self, payload: dict[str, Any], ctx: JobContext) -> dict[str, Any]:
        from ..tune.evaluate import evaluate
        from ..tune.train import train

        report = heeding(ctx, "cancelled; training resumes from its last checkpoint when started again")
        run_dir, device = self.runs / payload["run"], self.core.models.device
        resume = payload.get("options", {}).get("resume", True)
        trained = train(self.data / payload["dataset"], run_dir, self.core.settings, _config(payload), device=device,
                        resume=resume, on_progress=report)  # fmt: skip
        metrics = _measured(run_dir, lambda: evaluate(run_dir, self.core.settings, device=device, on_progress=report))
        training = {k: v for k, v in trained.items() if k not in LEFT_OUT}
        return {"adapter": payload["run"], "dataset": payload["dataset"], "metrics": _brief(metrics),
                "steps": trained["steps"], "kept_epoch": trained["kept_epoch"], "training": training,
                **_said(run_dir, metrics)}  # fmt: skip

    def evaluate(self, adapter: str, dataset: str | None = None, split: str = "test", ks=None) -> JobInfo:
        named(self.runs, adapter, "adapter")
        if dataset is not None:
            named(self.data, dataset, "dataset")
        ks = list(ks or (1, 5, 10))
        if not all(isinstance(k, int) and k >= 1 for k in ks):
            raise BadInput(f"k must be positive integers (got {ks})")
        payload = {"run": adapter, "dataset": dataset, "split": split, "ks": ks}
        return self.core.jobs.submit("tune-eval", payload, title=f"measure {adapter}")

    def _eval(self, payload: dict[str, Any], ctx: JobContext) -> dict[str, Any]:
        from ..tune.evaluate import evaluate

        run_dir = self.runs / payload["run"]
        data_dir = self.data / payload["dataset"] if payload.get("dataset") else None
        kw = {"data_dir": data_dir, "split": payload.get("split", "test"), "ks": tuple(payload.get("ks") or (1, 5, 10))}
        device = self.core.models.device
        metrics = _measured(run_dir, lambda: evaluate(run_dir, self.core.settings, device=device,
                                                      on_progress=ctx.report, **kw))  # fmt: skip
        return {"adapter": payload["run"], "metrics": _brief(metrics), **_said(run_dir, metrics)}

    def adapters(self) -> list[dict[str, Any]]:
        active = (self.core.retrieval.active or {}).get("id") if self.core.retrieval.loaded else None
        if not self.core.retrieval.loaded:
            from ..retrieval import read_active

            active = (read_active(self.core.data_dir) or {}).get("id")
        out = []
        for info in find_runs(self.runs):
            run_dir = Path(info["run_dir"])
            metrics_path = run_dir / "metrics.json"
            metrics = json.loads(metrics_path.read_text()) if metrics_path.is_file() else None
            said = _said(run_dir, metrics) if metrics else {"recall_change": None, "verdict": None, "note": None}
            # usable: measured, so it can be switched to; failed: why its measurement failed, when it did
            out.append({"name": run_dir.name, "scenario": info["scenario"], "id": info["id"],
                        "active": info["id"] == active, "metrics": metrics, "usable": metrics is not None,
                        "failed": _failure(run_dir) if metrics is None else None, **said})  # fmt: skip
        return out

    def use(self, adapter: str | None) -> JobInfo:
        if adapter is not None:
            run_dir = named(self.runs, adapter, "adapter")
            if not (run_dir / "metrics.json").is_file():
                why = _failure(run_dir)
                raise BadInput(
                    f"adapter '{adapter}' has no recall scores"
                    + (f" (its measurement failed: {why})" if why else "")
                    + "; measure its recall before retrieval uses it"
                )
        title = f"retrieval → {adapter}" if adapter else "retrieval → base CLIP"
        return self.core.jobs.submit("retrieval", {"run": adapter}, title=title)

    def _use(self, payload: dict[str, Any], ctx: JobContext) -> dict[str, Any]:
        run_dir = self.runs / payload["run"] if payload["run"] else None
        out = self.core.retrieval.use(run_dir, on_progress=ctx.report)
        info = out.get("retrieval")
        return {**out, "retrieval": {"name": info["name"], "scenario": info["scenario"], "id": info["id"]} if info
                else None, "label": self.core.retrieval.label()}  # fmt: skip


def _measured(run_dir: Path, measure) -> dict[str, Any]:
    """`measure()`'s metrics; when it fails (not cancelled), the reason is kept beside the adapter for the list."""
    try:
        metrics = measure()
    except Cancelled:
        raise
    except EngineError as exc:
        (run_dir / FAILED).write_text(json.dumps({"reason": str(exc)}, ensure_ascii=False))
        raise
    (run_dir / FAILED).unlink(missing_ok=True)
    return metrics


def _failure(run_dir: Path) -> str | None:
    try:
        return json.loads((run_dir / FAILED).read_text()).get("reason") or None
    except (OSError, ValueError, AttributeError):
        return None


def _brief(metrics: dict[str, Any]) -> dict[str, Any]:
    """Recall base → tuned, and on what: the split and its size (no folder of the engine's)."""
    return {key: metrics.get(key) for key in ("base", "tuned", "delta", "split", "samples", "queries")}


# What training reports that the job's result leaves out: the engine's folders, and the note in the CLI's words
# (the result's own `note` says it in the page's)
LEFT_OUT = ("run", "adapter", "base_model", "note")


def _validated(cls, options):
    """`options` (None: the defaults; a dict from a caller in this process) as `cls`, or one line saying why not."""
    from pydantic import ValidationError

    from ..schema import describe_validation_error

    try:
        return cls.model_validate(options or {})
    except ValidationError as exc:
        raise BadInput(describe_validation_error(exc)) from None


def _fractions(options: PrepareOptions) -> tuple[float, float, float]:
    return round(1 - options.val - options.test, 6), options.val, options.test


def _config(payload: dict[str, Any]):
    """The TrainConfig a train job's payload asks for."""
    from ..tune.train import TrainConfig

    options = {k: v for k, v in payload.get("options", {}).items() if k != "resume"}
    return TrainConfig(scenario=payload["scenario"], epochs=payload["epochs"], batch_size=payload["batch_size"],
                       lr=payload["lr"], **options)  # fmt: skip


def _said(run_dir: Path, metrics: dict[str, Any]) -> dict[str, Any]:
    """In the page's words (no CLI flags): whether the adapter changed recall (`recall_change`: improved,
    unchanged or worse), the one line saying so with what to try (`verdict`), and what training did (`note`)."""
    from ..tune.evaluate import verdict
    from ..tune.train import train_note

    path = run_dir / "train.json"
    try:
        summary = json.loads(path.read_text()) if path.is_file() else {}
    except ValueError:
        summary = {}
    change, line = verdict(metrics, summary, flags=False)
    return {"recall_change": change, "verdict": line, "note": train_note(summary, flags=False) if summary else None}
