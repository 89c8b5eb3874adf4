"""CLIP fine-tuning for retrieval: the seed's five scenarios, with LoRA through peft.

| scenario       | vision tower | text tower | projection heads |
|----------------|--------------|------------|------------------|
| `zero_shot`    | frozen       | frozen     | frozen           |  no training: the baseline
| `linear_probe` | frozen       | frozen     | train            |
| `dual_lora`    | LoRA         | LoRA       | train            |
| `vision_lora`  | LoRA         | frozen     | train            |
| `text_lora`    | frozen       | LoRA       | train            |

LoRA sits on the attention's q/v projections (`TrainConfig.lora_targets`) of the named towers. The loss is
CLIP's symmetric contrastive loss (InfoNCE over image→text and text→image, scaled by the model's own frozen
`logit_scale`); samples in a batch with the same caption count as positives of each other, so repeated captions
are not pushed apart. AdamW, linear warm-up then cosine decay, gradient clipping, gradient accumulation, and
AMP (bf16 where the GPU has it, else fp16 with a GradScaler) on CUDA only; fp32 on the CPU.

Small sets: a run trains at least `min_steps` optimizer steps (more epochs than asked when the split is small),
and after every epoch measures recall on the held-out `val_split`; the adapter keeps the epoch with the best
validation recall (text→image R@1, then image→image R@1, then the validation loss), the base weights (epoch 0)
included, so an adapter never ends worse on validation than the model it started from.

Deterministic per seed: the LoRA init follows `torch.manual_seed(seed)`, each epoch's order comes from its own
generator seeded with (seed, epoch), and the RNG state travels in every checkpoint, so a run that is killed and
resumed produces the same losses and weights as one that is not. Layout of RUN_DIR::

    checkpoints/epoch-N/   trainable.safetensors, best.safetensors (the best epoch so far), state.pt (optimizer,
                           scheduler, scaler, RNG), state.json (losses, validation recall per epoch, the best)
    adapter/               adapter.safetensors (the kept epoch's tensors) + adapter.json (scenario, base, LoRA)
    train.json             settings, parameter counts, loss per optimizer step, validation recall per epoch,
                           the kept epoch, samples/s and a one-line `note` (written last)
    metrics.json           recall@k of base and tuned (`engine.tune.evaluate`)
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from ..errors import BadInput
from ..schema import Progress
from . import DEFAULT_EPOCHS, DEFAULT_LR, DEFAULT_MIN_STEPS
from .data import ShardDataset, load_manifest, write_json_atomic
from .recall import retrieval_metrics

log = logging.getLogger(__name__)

SCENARIOS: dict[str, tuple[tuple[str, ...], bool]] = {  # scenario → (LoRA towers, projection heads train)
    "zero_shot": ((), False),
    "linear_probe": ((), True),
    "dual_lora": (("vision", "text"), True),
    "vision_lora": (("vision",), True),
    "text_lora": (("text",), True),
}
TOWERS = {"vision": "vision_model", "text": "text_model"}
HEADS = ("visual_projection", "text_projection")
ADAPTER_FORMAT = "design-studio-clip-adapter"
ADAPTER_VERSION = 1
ADAPTER_FILE = "adapter.safetensors"
ADAPTER_META = "adapter.json"
BEST_FILE = "best.safetensors"
MAX_VAL_SAMPLES = 2000  # validation recall after each epoch looks at most at this many pairs of the split
CACHE_BYTES = 256 * 1024 * 1024  # a split whose model inputs fit in this is preprocessed once, not every epoch
NO_VALIDATION = ("", "none")


@dataclass
class TrainConfig:
    """Everything that decides the result (and must match for a resume), plus how to run it."""

    scenario: str = "dual_lora"
    epochs: int = DEFAULT_EPOCHS
    min_steps: int = DEFAULT_MIN_STEPS  # at least this many optimizer steps: a small split trains more epochs
    lr: float = DEFAULT_LR
    weight_decay: float = 0.01
    batch_size: int = 32
    accumulate: int = 1
    warmup: float = 0.1  # share of the optimizer steps spent warming up
    max_grad_norm: float = 1.0
    seed: int = 0
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    lora_targets: tuple[str, ...] = ("q_proj", "v_proj")
    split: str = "train"  # or "mini_train" for a quick run
    val_split: str = "val"  # recall on it after each epoch picks the kept epoch; "none": keep the last
    amp: str = "auto"  # auto (CUDA: bf16 if supported, else fp16; a CPU: bf16 where it has bf16 units), fp16, bf16, off
    workers: int | None = None  # DataLoader workers; None: 0 on the CPU, a few on a GPU
    keep_checkpoints: int = 2
    extra: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> None:
        if self.scenario not in SCENARIOS:
            raise BadInput(f"unknown scenario '{self.scenario}'; choose one of: {', '.join(SCENARIOS)}")
        checks = [
            (self.epochs >= 1 or self.scenario == "zero_shot", f"--epochs must be at least 1 (got {self.epochs})"),
            (self.min_steps >= 0, f"--min-steps must be 0 or more (got {self.min_steps})"),
            (self.lr > 0, f"--lr must be positive (got {self.lr})"),
            (self.batch_size >= 2, f"--batch-size must be at least 2 for a contrastive loss (got {self.batch_size})"),
            (self.accumulate >= 1, f"--accumulate must be at least 1 (got {self.accumulate})"),
            (0 <= self.warmup < 1, f"warm-up must be a share in [0, 1) (got {self.warmup})"),
            (self.lora_r >= 1, f"LoRA rank must be at least 1 (got {self.lora_r})"),
            (self.amp in ("auto", "fp16", "bf16", "off"), f"--amp must be auto, fp16, bf16 or off (got {self.amp})"),
        ]
        for ok, message in checks:
            if not ok:
                raise BadInput(message)

    def planned_epochs(self, steps_per_epoch: int) -> int:
        """Epochs this run trains: `epochs`, or more when that many would stay under `min_steps`."""
        if self.scenario == "zero_shot" or steps_per_epoch < 1:
            return 0
        return max(self.epochs, math.ceil(self.min_steps / steps_per_epoch))

    def identity(self) -> dict[str, Any]:
        """The settings a resumed run must share with the checkpoint."""
        d = asdict(self)
        for k in ("workers", "keep_checkpoints", "extra"):
            d.pop(k)
        d["lora_targets"] = list(self.lora_targets)
        return d


@dataclass
class TrainProgress(Progress):
    """A training step's progress: `step`/`total` are optimizer steps; `loss` that step's mean loss."""

    loss: float = float("nan")
    epoch: int = 0
    lr: float = 0.0


# ---- model -----------------------------------------------------------------------------------------------------------
def features(out) -> torch.Tensor:
    """get_*_features' result: a tensor, or (transformers 5) an output whose pooler_output is the embedding."""
    return out if isinstance(out, torch.Tensor) else out.pooler_output


def lora_config_dict(config: TrainConfig) -> dict[str, Any] | None:
    towers, _ = SCENARIOS[config.scenario]
    if not towers:
        return None
    return {
        "r": config.lora_r,
        "alpha": config.lora_alpha,
        "dropout": config.lora_dropout,
        "targets": list(config.lora_targets),
        "towers": list(towers),
    }


def apply_scenario(model, scenario: str, lora: dict[str, Any] | None, seed: int = 0):
    """Freeze `model` (a CLIPModel) and make trainable what `scenario` trains. Returns (peft_model or None,
    clip): `clip` is the CLIPModel itself, with LoRA layers injected where the scenario has them."""
    if scenario not in SCENARIOS:
        raise BadInput(f"unknown scenario '{scenario}'; choose one of: {', '.join(SCENARIOS)}")
    towers, heads = SCENARIOS[scenario]
    model.requires_grad_(False)
    peft_model = None
    clip = model
    if towers:
        from peft import LoraConfig, get_peft_model

        assert lora is not None
        tower_re = "|".join(TOWERS[t] for t in towers)
        target_re = "|".join(lora["targets"])
        config = LoraConfig(
            r=lora["r"],
            lora_alpha=lora["alpha"],
            lora_dropout=lora["dropout"],
            target_modules=rf"({tower_re})\..*\.({target_re})",
            bias="none",
        )
        torch.manual_seed(seed)
        peft_model = get_peft_model(model, config)
        clip = peft_model.base_model.model
    if heads:
        for name in HEADS:
            getattr(clip, name).requires_grad_(True)
    return peft_model, clip


def trainable_names(clip) -> list[str]:
    return sorted(n for n, p in clip.named_parameters() if p.requires_grad)


def trainable_state(clip) -> dict[str, torch.Tensor]:
    return {n: p.detach().to("cpu", torch.float32).contiguous() for n, p in sorted(clip.named_parameters())
            if p.requires_grad}  # fmt: skip


def trainable_copy(clip) -> dict[str, torch.Tensor]:
    """`trainable_state` detached from the live parameters (on the CPU in fp32 it would share their memory)."""
    return {n: t.clone() for n, t in trainable_state(clip).items()}


def load_trainable(clip, tensors: dict[str, torch.Tensor], where: str) -> None:
    params = {n: p for n, p in clip.named_parameters() if p.requires_grad}
    if set(params) != set(tensors):
        missing, extra = sorted(set(params) - set(tensors)), sorted(set(tensors) - set(params))
        raise BadInput(
            f"{where} does not fit this model and scenario "
            f"({len(missing)} tensors missing, e.g. {missing[:1]}; {len(extra)} unexpected, e.g. {extra[:1]})"
        )
    with torch.no_grad():
        for name, p in params.items():
            t = tensors[name]
            if tuple(t.shape) != tuple(p.shape):
                raise BadInput(f"{where} does not fit the base model: {name} is {tuple(t.shape)}, not {tuple(p.shape)}")
            p.copy_(t.to(p.device, p.dtype))


def contrastive_loss(image_emb, text_emb, logit_scale, groups: torch.Tensor | None = None) -> torch.Tensor:
    """CLIP's symmetric InfoNCE. `groups[i] == groups[j]` marks i and j as the same caption: both are right."""
    image_emb = F.normalize(image_emb.float(), dim=-1)
    text_emb = F.normalize(text_emb.float(), dim=-1)
    scale = logit_scale.float().exp().clamp(max=100)
    logits = scale * image_emb @ text_emb.T
    if groups is None:
        targets = torch.arange(len(logits), device=logits.device)
        return (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets)) / 2
    same = (groups[:, None] == groups[None, :]).float()
    targets = same / same.sum(dim=1, keepdim=True)
    return (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets)) / 2


class Collate:
    """Samples → CLIP inputs, plus a caption-group id per sample (same caption, same id)."""

    def __init__(self, processor):
        self.processor = processor

    def __call__(self, samples) -> dict[str, torch.Tensor]:
        texts = [s.text for s in samples]
        if all(isinstance(s, Prepared) for s in samples):  # pixels made once, up front
            inputs = self.processor(text=texts, return_tensors="pt", padding=True, truncation=True)
            pixels = torch.stack([s.pixels for s in samples])
        else:
            inputs = self.processor(
                text=texts, images=[s.image for s in samples], return_tensors="pt", padding=True, truncation=True
            )
            pixels = inputs["pixel_values"]
        ids: dict[str, int] = {}
        groups = torch.tensor([ids.setdefault(t.casefold(), len(ids)) for t in texts])
        return {"input_ids": inputs["input_ids"], "attention_mask": inputs["attention_mask"],
                "pixel_values": pixels, "groups": groups}  # fmt: skip


@dataclass
class Prepared:
    """A sample as the model takes its image (the processor's pixel tensor), with its caption and meta."""

    text: str
    meta: dict[str, Any]
    pixels: torch.Tensor = field(repr=False)


def preprocess(dataset, processor, limit: int | None = None, max_bytes: int = CACHE_BYTES, chunk: int = 64):
    """The first `limit` samples of `dataset` as `Prepared` ones, or None when their pixels would pass
    `max_bytes` (the images of a small split are decoded and resized once instead of every epoch)."""
    n = len(dataset) if limit is None else min(limit, len(dataset))
    out: list[Prepared] = []
    for start in range(0, n, chunk):
        samples = [dataset[i] for i in range(start, min(start + chunk, n))]
        pixels = processor(images=[s.image for s in samples], return_tensors="pt")["pixel_values"]
        if start == 0 and pixels[0].numel() * pixels.element_size() * n > max_bytes:
            return None
        out += [Prepared(s.text, s.meta, px) for s, px in zip(samples, pixels, strict=True)]
    return out


class Validator:
    """Recall@k (and the contrastive loss) of the model being trained on the held-out validation pairs."""

    def __init__(self, samples, texts: list[str], labels: list[str], collate: Collate, batch_size: int, device: str,
                 autocast):  # fmt: skip
        self.samples = samples  # `Prepared` ones, or a dataset read batch by batch
        self.texts = texts
        self.labels = labels
        self.collate = collate
        self.batch_size = batch_size
        self.device = device
        self.autocast = autocast

    def __len__(self) -> int:
        return len(self.samples)

    @torch.no_grad()
    def __call__(self, clip) -> dict[str, Any]:
        was_training = clip.training
        clip.eval()
        images, texts = [], []
        for start in range(0, len(self.samples), self.batch_size):
            end = min(start + self.batch_size, len(self.samples))
            batch = self.collate([self.samples[i] for i in range(start, end)])
            batch = {k: v.to(self.device) for k, v in batch.items()}
            with self.autocast():
                image = clip.get_image_features(pixel_values=batch["pixel_values"])
                text = clip.get_text_features(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
            images.append(features(image).float())
            texts.append(features(text).float())
        if was_training:
            clip.train()
        image_emb = F.normalize(torch.cat(images), dim=-1).cpu()
        text_emb = F.normalize(torch.cat(texts), dim=-1).cpu()
        metrics = retrieval_metrics(image_emb, text_emb, self.texts, self.labels, ks=(1, 5))
        ids: dict[str, int] = {}
        groups = torch.tensor([ids.setdefault(t.casefold(), len(ids)) for t in self.texts])
        loss = contrastive_loss(image_emb, text_emb, clip.logit_scale.detach().cpu(), groups)
        return {
            "text_to_image": metrics["text_to_image"],
            "image_to_image": metrics["image_to_image"],
            "loss": round(float(loss), 5),
        }


def val_score(val: dict[str, Any]) -> tuple[float, float, float]:
    """Higher is better: text→image R@1, then image→image R@1, then the lower validation loss."""
    i2i = val["image_to_image"]["R@1"]
    return (val["text_to_image"]["R@1"] or 0.0, -1.0 if i2i is None else i2i, -val["loss"])


def micro_batches(n: int, batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    """This epoch's order, cut into batches (an incomplete last batch is dropped unless it is the only one)."""
    gen = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    perm = torch.randperm(n, generator=gen).tolist()
    if n <= batch_size:
        return [perm]
    return [perm[i : i + batch_size] for i in range(0, n - batch_size + 1, batch_size)]


def _amp(device: str, amp: str, engine_dtype=None):
    """(autocast dtype or None, use a GradScaler). On a CPU `auto` follows the engine's precision: bf16 autocast
    where the engine computes in bf16 (a CPU with bf16 units, or DESIGN_STUDIO_DTYPE=bfloat16), none otherwise;
    fp16 autocast is for CUDA only."""
    if amp == "off":
        return None, False
    if device.startswith("cpu"):
        return (
            (torch.bfloat16, False)
            if amp == "bf16" or (amp == "auto" and engine_dtype == torch.bfloat16)
            else (None, False)
        )
    if not device.startswith("cuda"):
        return None, False
    if amp == "bf16" or (amp == "auto" and torch.cuda.is_bf16_supported()):
        return torch.bfloat16, False
    return torch.float16, True


def _ensure_base(settings, model_id: str | None) -> str:
    if model_id is None and settings.profile == "tiny":
        from ..tiny import prepare_tiny

        prepare_tiny(settings.tiny_dir)
    return model_id or settings.models().clip


# ---- checkpoints -----------------------------------------------------------------------------------------------------
def _checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    folder = run_dir / "checkpoints"
    found = []
    for d in folder.glob("epoch-*") if folder.is_dir() else []:
        suffix = d.name.removeprefix("epoch-")
        if suffix.isdigit() and (d / "state.json").is_file() and (d / "trainable.safetensors").is_file():
            found.append((int(suffix), d))
    return sorted(found)


def latest_checkpoint(run_dir: Path) -> Path | None:
    found = _checkpoints(Path(run_dir))
    return found[-1][1] if found else None


def _save_checkpoint(
    run_dir: Path, epoch: int, clip, optimizer, scheduler, scaler, state: dict, keep: int,
    best: dict[str, torch.Tensor] | None = None,
) -> Path:  # fmt: skip
    from safetensors.torch import save_file

    folder = run_dir / "checkpoints"
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / f"epoch-{epoch}"
    tmp = folder / f".epoch-{epoch}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    save_file(trainable_state(clip), str(tmp / "trainable.safetensors"))
    if best is not None:
        save_file(best, str(tmp / BEST_FILE))
    rng = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    torch.save(
        {
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict() if scaler is not None else {},
            "rng": rng,
        },
        tmp / "state.pt",
    )
    (tmp / "state.json").write_text(json.dumps(state))
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    for _, old in _checkpoints(run_dir)[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return final


def _clear_run(run_dir: Path) -> None:
    for name in ("checkpoints", "adapter"):
        shutil.rmtree(run_dir / name, ignore_errors=True)
    for name in ("train.json", "metrics.json"):
        (run_dir / name).unlink(missing_ok=True)


def _identity(config: TrainConfig, fingerprint: str, base: str) -> dict[str, Any]:
    return {"config": config.identity(), "data_fingerprint": fingerprint, "base_model": base}


def _mismatch(run_dir: Path, old: dict, new: dict) -> BadInput:
    diffs = []
    for key in ("config", "data_fingerprint", "base_model"):
        a, b = old.get(key), new.get(key)
        if key == "config" and isinstance(a, dict) and isinstance(b, dict):
            diffs += [f"{k}: {a.get(k)} → {b.get(k)}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
        elif a != b:
            diffs.append("the data" if key == "data_fingerprint" else f"{key}: {a} → {b}")
    return BadInput(
        f"{run_dir} holds a run with other settings ({'; '.join(diffs[:4])})",
        fix="pass --no-resume to start it over, or choose a new --out",
    )


# ---- training --------------------------------------------------------------------------------------------------------
def train(
    data_dir: Path,
    run_dir: Path,
    settings,
    config: TrainConfig | None = None,
    device: str | None = None,
    resume: bool = True,
    on_progress: Callable[[Progress], None] | None = None,
    model_id: str | None = None,
    on_checkpoint: Callable[[int, Path], None] | None = None,
) -> dict[str, Any]:
    """Train `config.scenario` on DATA_DIR's `config.split`; checkpoints, adapter and train.json go to RUN_DIR.

    With `resume`, a run folder holding checkpoints of the same settings continues from its latest complete one
    (and a finished run is returned as it is); without, the folder's previous run is removed first."""
    from safetensors.torch import load_file, save_file
    from transformers import get_cosine_schedule_with_warmup

    from ..models import load_clip, quiet_libraries

    config = config or TrainConfig()
    config.validate()
    data_dir, run_dir = Path(data_dir), Path(run_dir)
    manifest = load_manifest(data_dir)
    if config.split not in manifest["splits"]:
        raise BadInput(f"unknown split '{config.split}'; the data folder has: {', '.join(manifest['splits'])}")
    if run_dir.exists() and not run_dir.is_dir():
        raise BadInput(f"--out {run_dir} is a file; give a folder")
    base = _ensure_base(settings, model_id)
    identity = _identity(config, manifest["fingerprint"], base)
    run_dir.mkdir(parents=True, exist_ok=True)
    if not resume:
        _clear_run(run_dir)
    done_path = run_dir / "train.json"
    if done_path.is_file() and (run_dir / "adapter" / ADAPTER_FILE).is_file():
        summary = json.loads(done_path.read_text())
        if summary.get("identity") != identity:
            raise _mismatch(run_dir, summary.get("identity", {}), identity)
        return {**_brief(summary, run_dir), "already_complete": True}

    device = device or settings.resolve_device()
    quiet_libraries()
    model, processor = load_clip(settings, device, base)
    model.float()
    torch.manual_seed(config.seed)
    peft_model, clip = apply_scenario(model, config.scenario, lora_config_dict(config), config.seed)
    names = trainable_names(clip)
    params = [p for n, p in sorted(clip.named_parameters()) if p.requires_grad]
    n_trainable = sum(p.numel() for p in params)
    n_total = sum(p.numel() for p in clip.parameters())

    dataset = ShardDataset(data_dir, config.split, settings.max_input_pixels)
    n = len(dataset)
    if n < 2 and config.scenario != "zero_shot":
        raise BadInput(f"the {config.split} split holds {n} sample(s); training needs at least 2")
    batches_per_epoch = len(micro_batches(n, config.batch_size, config.seed, 0)) if n else 0
    steps_per_epoch = math.ceil(batches_per_epoch / config.accumulate) if n else 0
    epochs = config.planned_epochs(steps_per_epoch)
    total_steps = steps_per_epoch * epochs
    amp_dtype, use_scaler = _amp(device, config.amp, settings.resolve_dtype(device))
    workers = config.workers if config.workers is not None else (0 if device == "cpu" else min(8, os.cpu_count() or 1))
    collate = Collate(processor)
    kind = "cuda" if device.startswith("cuda") else "cpu"
    autocast = (lambda: torch.autocast(kind, dtype=amp_dtype)) if amp_dtype else contextlib.nullcontext

    validator, val_note = None, None
    if params and epochs:
        validator, val_note = _validator(data_dir, manifest, config, settings, processor, collate, device, autocast)

    losses: list[dict[str, Any]] = []
    history: list[dict[str, Any]] = []  # validation recall per epoch (epoch 0: the base)
    best: dict[str, Any] | None = None
    best_state: dict[str, torch.Tensor] | None = None
    start_epoch, step, prev_elapsed = 0, 0, 0.0
    resumed_from = None
    optimizer = scheduler = scaler = None
    if params and epochs:
        optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
        scheduler = get_cosine_schedule_with_warmup(optimizer, int(config.warmup * total_steps), total_steps)
        scaler = torch.amp.GradScaler("cuda") if use_scaler else None
        for stale in (run_dir / "checkpoints").glob(".epoch-*.tmp-*"):  # a checkpoint a kill cut short
            shutil.rmtree(stale, ignore_errors=True)
        ckpt = latest_checkpoint(run_dir) if resume else None
        if ckpt is not None:
            state = json.loads((ckpt / "state.json").read_text())
            if state.get("identity") != identity:
                raise _mismatch(run_dir, state.get("identity", {}), identity)
            load_trainable(clip, load_file(str(ckpt / "trainable.safetensors")), str(ckpt))
            blob = torch.load(ckpt / "state.pt", map_location="cpu", weights_only=True)
            optimizer.load_state_dict(blob["optimizer"])
            scheduler.load_state_dict(blob["scheduler"])
            if scaler is not None and blob["scaler"]:
                scaler.load_state_dict(blob["scaler"])
            torch.set_rng_state(blob["rng"]["cpu"])
            if "cuda" in blob["rng"] and torch.cuda.is_available():
                torch.cuda.set_rng_state_all(blob["rng"]["cuda"])
            start_epoch, step, losses = state["epoch"], state["step"], state["losses"]
            history, best = state.get("validation", []), state.get("best")
            if best is not None:
                if not (ckpt / BEST_FILE).is_file():
                    raise BadInput(f"{ckpt} lacks {BEST_FILE}", fix="pass --no-resume to start the run over")
                best_state = load_file(str(ckpt / BEST_FILE))
            prev_elapsed = state.get("elapsed", 0.0)
            resumed_from = {"epoch": start_epoch, "step": step, "checkpoint": ckpt.name}
            log.info("resuming %s from %s (step %d)", run_dir, ckpt.name, step)
        else:
            shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
        if validator is not None and best is None:  # the base is the first candidate: epoch 0
            val = validator(clip)
            history = [{"epoch": 0, "step": 0, **val}]
            best, best_state = {"epoch": 0, "step": 0, **val}, trainable_copy(clip)

    logit_scale = clip.logit_scale.detach()
    started = time.perf_counter()
    seen = 0
    clip.train()
    train_set = dataset
    if epochs > start_epoch and workers == 0 and n:
        train_set = preprocess(dataset, processor) or dataset
    for epoch in range(start_epoch, epochs):
        from torch.utils.data import DataLoader

        batches = micro_batches(n, config.batch_size, config.seed, epoch)
        loader = DataLoader(train_set, batch_sampler=batches, collate_fn=collate, num_workers=workers)
        group: list[float] = []
        n_group = 0
        for b, batch in enumerate(loader):
            if not group:
                optimizer.zero_grad(set_to_none=True)
                n_group = min(config.accumulate, len(batches) - b)
            batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
            with autocast():
                image_emb = features(clip.get_image_features(pixel_values=batch["pixel_values"]))
                text_emb = features(
                    clip.get_text_features(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
                )
            loss = contrastive_loss(image_emb, text_emb, logit_scale, batch["groups"])
            scaled = loss / n_group
            (scaler.scale(scaled) if scaler is not None else scaled).backward()
            group.append(float(loss.detach()))
            seen += len(batch["groups"])
            if len(group) < n_group:
                continue
            if scaler is not None:
                scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm)
            if scaler is not None:
                scaler.step(optimizer)
                scaler.update()
            else:
                optimizer.step()
            lr = scheduler.get_last_lr()[0]
            scheduler.step()
            step += 1
            mean = sum(group) / len(group)
            losses.append({"step": step, "epoch": epoch + 1, "loss": mean, "lr": lr})
            group = []
            if on_progress:
                elapsed = prev_elapsed + time.perf_counter() - started
                on_progress(TrainProgress("train", step, total_steps, elapsed, loss=mean, epoch=epoch + 1, lr=lr))
        if validator is not None:
            val = validator(clip)
            history.append({"epoch": epoch + 1, "step": step, **val})
            if val_score(val) > val_score(best):
                best, best_state = {"epoch": epoch + 1, "step": step, **val}, trainable_copy(clip)
        elapsed = prev_elapsed + time.perf_counter() - started
        state = {"identity": identity, "epoch": epoch + 1, "step": step, "losses": losses, "elapsed": elapsed,
                 "validation": history, "best": best}  # fmt: skip
        path = _save_checkpoint(run_dir, epoch + 1, clip, optimizer, scheduler, scaler, state,
                                config.keep_checkpoints, best_state)  # fmt: skip
        if on_checkpoint:
            on_checkpoint(epoch + 1, path)
    seconds = time.perf_counter() - started
    clip.eval()
    if best_state is not None:  # the adapter is the best epoch's weights, not the last's
        load_trainable(clip, best_state, "the best epoch's weights")

    adapter = run_dir / "adapter"
    tmp = run_dir / f".adapter.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    meta = {
        "format": ADAPTER_FORMAT,
        "version": ADAPTER_VERSION,
        "scenario": config.scenario,
        "base_model": base,
        "base_model_explicit": model_id is not None,
        "profile": settings.profile,
        "lora": lora_config_dict(config),
        "heads": SCENARIOS[config.scenario][1],
        "trainable_parameters": n_trainable,
        "base_config": _arch(clip),
        "kept_epoch": best["epoch"] if best is not None else epochs,
    }
    save_file(trainable_state(clip), str(tmp / ADAPTER_FILE), metadata={"format": ADAPTER_FORMAT,
              "scenario": config.scenario})  # fmt: skip
    (tmp / ADAPTER_META).write_text(json.dumps(meta, indent=1))
    shutil.rmtree(adapter, ignore_errors=True)
    os.replace(tmp, adapter)
    validation = None
    if validator is not None:
        validation = {"split": config.val_split, "samples": len(validator), "history": history,
                      "base": history[0], "best": best}  # fmt: skip
    summary = {
        "identity": identity,
        "scenario": config.scenario,
        "epochs": epochs,
        "epochs_requested": config.epochs,
        "min_steps": config.min_steps,
        "lr": config.lr,
        "weight_decay": config.weight_decay,
        "batch_size": config.batch_size,
        "accumulate": config.accumulate,
        "warmup_steps": int(config.warmup * total_steps),
        "max_grad_norm": config.max_grad_norm,
        "seed": config.seed,
        "lora": lora_config_dict(config),
        "split": config.split,
        "base_model": base,
        "profile": settings.profile,
        "data_dir": str(data_dir.resolve()),
        "data_fingerprint": manifest["fingerprint"],
        "train_samples": n,
        "steps_per_epoch": steps_per_epoch,
        "steps": step,
        "kept_epoch": meta["kept_epoch"],
        "kept_step": best["step"] if best is not None else step,
        "validation": validation,
        "validation_skipped": val_note,
        "trainable_parameters": n_trainable,
        "total_parameters": n_total,
        "trainable_tensors": len(names),
        "losses": losses,
        "final_loss": losses[-1]["loss"] if losses else None,
        "samples_per_s": round(seen / seconds, 2) if seen and seconds > 0 else None,
        "seconds": round(prev_elapsed + seconds, 3),
        "device": device,
        "amp": str(amp_dtype).removeprefix("torch.") if amp_dtype else "off",
        "resumed_from": resumed_from,
        "adapter": str(adapter),
    }
    summary["note"] = train_note(summary)
    write_json_atomic(done_path, summary)
    return _brief(summary, run_dir)


def _validator(data_dir, manifest, config, settings, processor, collate, device, autocast):
    """(Validator or None, why there is none): recall on `config.val_split` picks the kept epoch."""
    split = config.val_split
    if split.casefold() in NO_VALIDATION:
        return None, "turned off (--val-split none): the adapter is the last epoch's"
    if split not in manifest["splits"]:
        raise BadInput(f"unknown --val-split '{split}'; the data folder has: {', '.join(manifest['splits'])}")
    if split == config.split or {split, config.split} == {"train", "mini_train"}:
        raise BadInput(f"--val-split {split} overlaps the training split; give a held-out one (val) or none")
    dataset = ShardDataset(data_dir, split, settings.max_input_pixels)
    if len(dataset) < 2:
        why = f"the {split} split holds {len(dataset)} pair(s), fewer than the 2 recall needs"
        return None, f"{why}: the adapter is the last epoch's"
    n = min(MAX_VAL_SAMPLES, len(dataset))
    samples = preprocess(dataset, processor, n)
    if samples is None:  # too large to hold: read batch by batch at every validation
        raw = [dataset.raw(i) for i in range(n)]
        texts, labels = [r["text"] for r in raw], [r["meta"].get("label", "") for r in raw]
        samples = _Head(dataset, n)
    else:
        dataset.close()
        texts, labels = [s.text for s in samples], [s.meta.get("label", "") for s in samples]
    return Validator(samples, texts, labels, collate, config.batch_size, device, autocast), None


class _Head:
    """The first `n` samples of a dataset, read when asked."""

    def __init__(self, dataset, n: int):
        self.dataset, self.n = dataset, n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        return self.dataset[i]


def _r1(val: dict[str, Any] | None, direction: str = "text_to_image") -> float | None:
    return None if val is None else val[direction]["R@1"]


def train_note(summary: dict[str, Any], flags: bool = True) -> str:
    """One line on what a run did: its steps (and why more epochs than asked), and which epoch it kept.
    `flags`: name CLI flags in advice, else plain words (the page)."""
    steps, epochs, asked = summary.get("steps") or 0, summary.get("epochs") or 0, summary.get("epochs_requested")
    if summary.get("scenario") == "zero_shot":
        return "zero_shot trains nothing: the adapter is the base model, a baseline to compare with."
    trained = f"Trained {steps} steps in {epochs} epoch{'s' if epochs != 1 else ''}"
    if asked is not None and epochs > asked:
        floor = f"--min-steps {summary['min_steps']}" if flags else f"the minimum of {summary['min_steps']} steps"
        trained += (f" (raised from {asked}: {floor} with {summary['train_samples']} training pairs at"
                    f" {summary['steps_per_epoch']} steps an epoch)")  # fmt: skip
    val = summary.get("validation")
    if not val:
        return f"{trained}; no validation recall ({summary.get('validation_skipped') or 'none'})."
    base, best = val["base"], val["best"]
    where = f"{val['samples']} validation pairs"
    change = f"text→image R@1 {_r1(base):.2f} → {_r1(best):.2f}"
    more = max(300, 3 * steps)
    advice = (f"try --min-steps {more} or a higher --lr than {summary['lr']:g}" if flags
              else f"try more epochs ({more} steps) or a higher learning rate than {summary['lr']:g}")  # fmt: skip
    if best["epoch"] == 0:
        return (
            f"{trained}; no epoch beat the base on {where} ({change}), so the adapter keeps the base weights: {advice}."
        )
    if _r1(best) <= _r1(base):
        return (f"{trained}; kept epoch {best['epoch']} (step {best['step']}), but validation recall did not rise"
                f" ({change} on {where}): {advice}.")  # fmt: skip
    kept = "the last" if best["epoch"] == epochs else "the best"
    return f"{trained}; kept epoch {best['epoch']} ({kept}, step {best['step']}): {change} on {where}."


def _arch(clip) -> dict[str, int]:
    c = clip.config
    return {
        "projection_dim": c.projection_dim,
        "vision_hidden": c.vision_config.hidden_size,
        "vision_layers": c.vision_config.num_hidden_layers,
        "text_hidden": c.text_config.hidden_size,
        "text_layers": c.text_config.num_hidden_layers,
    }


def _brief(summary: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    """What the CLI prints: the summary without the per-step losses."""
    keys = ("scenario", "epochs", "epochs_requested", "min_steps", "steps", "kept_epoch", "kept_step",
            "train_samples", "trainable_parameters", "final_loss", "samples_per_s", "seconds", "device", "amp",
            "resumed_from", "base_model", "adapter")  # fmt: skip
    val = summary.get("validation")
    brief = {"run": str(run_dir), **{k: summary.get(k) for k in keys}}
    brief["validation"] = (
        {"split": val["split"], "samples": val["samples"], "base": _val_brief(val["base"]),
         "kept": _val_brief(val["best"])} if val else None
    )  # fmt: skip
    brief["note"] = summary.get("note") or train_note(summary)
    return brief


def _val_brief(val: dict[str, Any]) -> dict[str, Any]:
    return {"epoch": val["epoch"], "text_to_image_R@1": _r1(val), "image_to_image_R@1": _r1(val, "image_to_image")}


# ---- use -------------------------------------------------------------------------------------------------------------
def read_adapter(run_dir: Path) -> dict[str, Any]:
    """RUN_DIR's adapter.json (BadInput when the folder holds no trained adapter)."""
    run_dir = Path(run_dir)
    adapter = run_dir / "adapter"
    if not (adapter / ADAPTER_FILE).is_file() or not (adapter / ADAPTER_META).is_file():
        raise BadInput(
            f"{run_dir} holds no trained adapter (adapter/{ADAPTER_FILE})",
            fix="train one first: python -m engine tune train DATASET --name NAME",
        )
    try:
        meta = json.loads((adapter / ADAPTER_META).read_text())
    except ValueError:
        raise BadInput(f"{adapter / ADAPTER_META} is damaged; train again") from None
    if meta.get("format") != ADAPTER_FORMAT:
        raise BadInput(f"{adapter} is not a retrieval adapter made by `tune train`")
    return meta


def base_model_for(meta: dict[str, Any], settings, model_id: str | None = None) -> str:
    """The base CLIP an adapter goes on: `model_id`, else the recorded one (for the tiny profile: this data
    folder's tiny CLIP, since the recorded path belongs to the data folder it was trained in)."""
    if model_id:
        return model_id
    if meta.get("profile") == "tiny" and settings.profile == "tiny" and not meta.get("base_model_explicit"):
        return _ensure_base(settings, None)
    return meta["base_model"]


def load_tuned(run_dir: Path, settings, device: str | None = None, model_id: str | None = None):
    """(CLIPModel with the run's adapter merged in, processor), in eval mode on `device`: a drop-in for the base
    model (`get_text_features` / `get_image_features`, `ClipEmbeddings(model, processor, device)`)."""
    from safetensors.torch import load_file

    from ..models import load_clip

    meta = read_adapter(run_dir)
    device = device or settings.resolve_device()
    base = base_model_for(meta, settings, model_id)
    model, processor = load_clip(settings, device, base)
    model.float()
    peft_model, clip = apply_scenario(model, meta["scenario"], meta.get("lora"))
    load_trainable(clip, load_file(str(Path(run_dir) / "adapter" / ADAPTER_FILE)), f"the adapter in {run_dir}")
    merged = peft_model.merge_and_unload() if peft_model is not None else clip
    merged.requires_grad_(False)
    return merged.to(device).eval(), processor
