"""The model doctor: every model the settings name, whether each is on this machine (the hub cache or a folder), in
which format, how big, what needs it, and the command that fetches just its files; and `pull`, which fetches them.

The report reads the file system only: no model loads and nothing asks the network, so it answers on a fresh
machine where the engine could not start (the first page, `python -m engine doctor`, `about.doctor`).

The list is data: `ENTRIES` holds one `Entry` per model a setting names (its id from the settings, the files it is
made of, the features that need it). A new model is one entry, e.g. a depth estimator:
`Entry("depth", "Depth estimator", "DESIGN_STUDIO_DEPTH_MODEL", lambda s: s.depth_model, TRANSFORMERS, "the depth
control")`.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from fnmatch import fnmatch
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import BadInput, ModelUnavailable
from .rules.controlnets import CONTROLS, DEFAULT_CONTROL
from .settings import Settings

if TYPE_CHECKING:
    from .api import DoctorReport, ModelCheck

log = logging.getLogger(__name__)

GB, MB = 1e9, 1e6
PULL = "python -m engine models pull"


# ---- what a model is made of ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Weights:
    """A model's weights in a folder: `stem.safetensors` (or `sharded`: `stem-0000N-of-0000M.safetensors` with its
    index), else the pickle `pickle.bin`; diffusers' fp16 variant inserts `.fp16` (`stem.fp16.safetensors`)."""

    folder: str = ""
    stem: str = "diffusion_pytorch_model"
    pickle: str = "diffusion_pytorch_model"
    sharded: bool = False

    def path(self, name: str) -> str:
        return f"{self.folder}/{name}" if self.folder else name

    def patterns(self, fp16: bool = False) -> list[str]:
        """What a fetch asks the hub for: the safetensors file, or its shards (the index is a config)."""
        variant = ".fp16" if fp16 else ""
        return [
            self.path(f"{self.stem}{variant}-*.safetensors" if self.sharded else f"{self.stem}{variant}.safetensors")
        ]


DIFFUSERS = Weights()
TRANSFORMERS = Weights(stem="model", pickle="pytorch_model")


@dataclass(frozen=True)
class File:
    """One named weight file (a LoRA, an IP-Adapter); a glob (`*.safetensors`) takes any file that matches."""

    path: str

    def patterns(self, fp16: bool = False) -> list[str]:
        return [self.path]


@dataclass(frozen=True)
class Layout:
    """The files a model is made of: `configs` must be there, each of `weights` in some form; a fetch asks for
    `fetch` (the configs where not given: globs for tokenizers, schedulers, shard indexes) and the weights.
    `variants`: the loader takes diffusers' fp16 variant where only that is on disk, so a fetch on a GPU takes it
    (half the download)."""

    configs: tuple[str, ...]
    weights: tuple[Weights | File, ...]
    fetch: tuple[str, ...] | None = None
    variants: bool = False


def _diffusers_model(variants: bool = False) -> Layout:
    return Layout(("config.json",), (DIFFUSERS,), variants=variants)


CONTROLNET = _diffusers_model(variants=True)
SD15 = Layout(
    configs=("model_index.json", "scheduler/scheduler_config.json", "tokenizer/tokenizer_config.json",
             "feature_extractor/preprocessor_config.json", "text_encoder/config.json", "unet/config.json",
             "vae/config.json"),
    weights=(Weights("text_encoder", "model", "pytorch_model"), Weights("unet"), Weights("vae")),
    fetch=("*.json", "*.txt"),
    variants=True,
)  # fmt: skip
FLUX = Layout(
    configs=("model_index.json", "scheduler/scheduler_config.json", "tokenizer/tokenizer_config.json",
             "tokenizer_2/tokenizer_config.json", "text_encoder/config.json", "text_encoder_2/config.json",
             "transformer/config.json", "vae/config.json"),
    weights=(Weights("text_encoder", "model", "pytorch_model"),
             Weights("text_encoder_2", "model", "pytorch_model", sharded=True), Weights("transformer", sharded=True),
             Weights("vae")),
    fetch=("*.json", "*.txt", "*.model"),
)  # fmt: skip
CLIP = Layout(("config.json", "tokenizer_config.json"), (TRANSFORMERS,), fetch=("*.json", "*.txt"))
SAM2 = Layout(("config.json", "preprocessor_config.json"), (TRANSFORMERS,), fetch=("*.json",))
CAUSAL_LM = Layout(("config.json", "tokenizer_config.json"), (Weights("", "model", "pytorch_model", sharded=True),),
                   fetch=("*.json", "*.model", "*.jinja"))  # fmt: skip


def _ip_adapter(s: Settings) -> Layout:
    return Layout((), (File(f"{s.ip_adapter_subfolder}/{s.ip_adapter_weight}"),))


def _image_encoder(s: Settings) -> Layout:
    return Layout((f"{s.ip_adapter_image_encoder}/config.json",), (Weights(s.ip_adapter_image_encoder, "model",
                                                                          "pytorch_model"),))  # fmt: skip


def _fast_lora(s: Settings) -> Layout:
    return Layout((), (File(s.fast_lora_weight),))


LORA = Layout((), (File("*.safetensors"),))


# ---- the models the settings name --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Entry:
    name: str  # `models pull NAME`
    label: str
    setting: str
    model: Callable[[Settings], str | None]  # its id or folder in force (None: this setting names none)
    layout: Layout | Callable[[Settings], Layout]
    features: str  # what needs it, in words
    needed: Callable[[Settings], bool] = lambda s: False  # the engine loads it at start (every render needs it)
    default: str | None = None  # the default id, whose download size is known
    download_size: tuple[float, float] | None = None  # of the default id: (fp32, fp16), bytes

    def layout_for(self, settings: Settings) -> Layout:
        return self.layout(settings) if callable(self.layout) else self.layout


def _default(name: str) -> str | None:
    return Settings.model_fields[name].default


# The sizes of the default ids, as the hub lists them (fp32, fp16 where a variant is published).
SD15_BYTES = (4.27 * GB, 2.13 * GB)  # UNet 3.44 GB, text encoder 0.49, VAE 0.33
CONTROLNET_BYTES = (1.45 * GB, 0.72 * GB)  # every SD 1.5 ControlNet: the UNet's encoder half


def _controlnet(name: str) -> Entry:
    control = CONTROLS[name]
    main = name == DEFAULT_CONTROL
    return Entry(
        f"controlnet-{name}", f"ControlNet: {control.label}",
        "DESIGN_STUDIO_CONTROLNET_MODEL" if main else f'DESIGN_STUDIO_CONTROLNETS ("{name}")',
        lambda s: s.models().controlnet_for(name), CONTROLNET,
        "renders that follow a sketch" if main else f"renders with the {control.label} control",
        needed=(lambda s: True) if main else (lambda s: False),
        default=control.default_id, download_size=CONTROLNET_BYTES,
    )  # fmt: skip


ENTRIES: list[Entry] = [
    Entry("base", "Stable Diffusion 1.5 (base)", "DESIGN_STUDIO_BASE_MODEL", lambda s: s.models().base, SD15,
          "every SD 1.5 render", needed=lambda s: True, default=_default("base_model"), download_size=SD15_BYTES),
    *[_controlnet(name) for name in CONTROLS],
    Entry("ip-adapter", "IP-Adapter", "DESIGN_STUDIO_IP_ADAPTER_WEIGHT", lambda s: s.models().ip_adapter,
          _ip_adapter, "style references (loaded with the base model)", needed=lambda s: True,
          default=_default("ip_adapter_model"), download_size=(44 * MB, 44 * MB)),
    Entry("image-encoder", "IP-Adapter image encoder", "DESIGN_STUDIO_IP_ADAPTER_IMAGE_ENCODER",
          lambda s: s.models().ip_adapter, _image_encoder, "style references (loaded with the base model)",
          needed=lambda s: True, default=_default("ip_adapter_model"), download_size=(2.53 * GB, 2.53 * GB)),
    Entry("clip", "CLIP (style retrieval)", "DESIGN_STUDIO_CLIP_MODEL", lambda s: s.models().clip, CLIP,
          "style retrieval and the scores", needed=lambda s: True, default=_default("clip_model"),
          download_size=(605 * MB, 605 * MB)),
    Entry("taesd", "TAESD (tiny autoencoder)", "DESIGN_STUDIO_TAESD_MODEL", lambda s: s.models().taesd,
          _diffusers_model(), "step previews and live mode", needed=lambda s: s.previews,
          default=_default("taesd_model"), download_size=(10 * MB, 10 * MB)),
    Entry("fast-lora", "Few-step LoRA", "DESIGN_STUDIO_FAST_LORA", lambda s: s.models().fast_lora, _fast_lora,
          "fast and live modes", default=_default("fast_lora"), download_size=(135 * MB, 135 * MB)),
    Entry("sam2", "SAM2 (regions)", "DESIGN_STUDIO_SAM2_MODEL", lambda s: s.models().sam2, SAM2,
          "regions: masks from clicks", default=_default("sam2_model"), download_size=(156 * MB, 156 * MB)),
    Entry("flux", "FLUX.1-schnell", "DESIGN_STUDIO_FLUX_MODEL", lambda s: s.flux_paths()[0], FLUX,
          "FLUX text-to-image (a large GPU)", default=_default("flux_model"), download_size=(33.7 * GB, 33.7 * GB)),
    Entry("flux-lora", "FLUX LoRA", "DESIGN_STUDIO_FLUX_LORA", lambda s: s.flux_paths()[1], LORA,
          "FLUX text-to-image"),
    Entry("catalog-clip", "CLIP (catalog scores)", "DESIGN_STUDIO_CATALOG_CLIP_MODEL",
          lambda s: None if s.profile == "tiny" else s.catalog_clip_model, CLIP, "catalog runs: the scores",
          default=_default("catalog_clip_model"), download_size=(1.71 * GB, 1.71 * GB)),
    Entry("llm", "Local LLM (catalog attributes)", "DESIGN_STUDIO_LLM_MODEL", lambda s: s.llm_model_path(),
          CAUSAL_LM, "catalog runs: attributes from the local model", default=_default("llm_model"),
          download_size=(7.64 * GB, 7.64 * GB)),
]  # fmt: skip


# ---- looking on disk ---------------------------------------------------------------------------------------------
def hub_cache() -> Path:
    from .hub import hub_cache as cache

    return cache()


def is_hub_id(model: str) -> bool:
    from .hub import is_hub_id as hub_id

    return hub_id(model)


def snapshot(model_id: str) -> Path | None:
    """The hub cache's snapshot of `model_id` (the one `main` points at), read offline; None when there is none."""
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(model_id, local_files_only=True, cache_dir=hub_cache()))
    except Exception:  # noqa: BLE001 (not cached, a broken cache, an invalid id: not there, either way)
        return None


@dataclass
class Found:
    files: list[Path] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    formats: set[str] = field(default_factory=set)
    fp16_only: bool = False


def _weights(root: Path, w: Weights) -> tuple[str, str, list[Path]] | None:
    """(format, variant, files) of the first complete form of `w` in `root`: safetensors before pickle, the plain
    weights before the fp16 variant; None when there is none."""
    folder = root / w.folder if w.folder else root
    for fmt, stem, ext in (("safetensors", w.stem, "safetensors"), ("pickle", w.pickle, "bin")):
        for variant in ("", ".fp16"):
            single = folder / f"{stem}{variant}.{ext}"
            if single.is_file():
                return fmt, variant, [single]
            index = folder / f"{stem}.{ext}.index{variant}.json"
            if index.is_file():
                try:
                    shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
                except (OSError, ValueError, KeyError, AttributeError):
                    continue
                files = [folder / s for s in shards]
                if all(f.is_file() for f in files):
                    return fmt, variant, [index, *files]
    return None


def inspect_folder(root: Path, layout: Layout) -> Found:
    found = Found()
    for config in layout.configs:
        path = root / config
        (found.files.append(path) if path.is_file() else found.missing.append(config))
    variants = []
    for w in layout.weights:
        if isinstance(w, File):
            matches = sorted(p for p in root.glob(w.path) if p.is_file())
            if matches:
                found.files += matches
                found.formats.add("safetensors" if matches[0].suffix == ".safetensors" else "pickle")
            else:
                found.missing.append(w.path)
            continue
        hit = _weights(root, w)
        if hit is None:
            found.missing.append(w.path(f"{w.stem}.safetensors"))
            continue
        fmt, variant, files = hit
        found.formats.add(fmt)
        found.files += files
        variants.append(variant)
    found.fp16_only = bool(variants) and any(v == ".fp16" for v in variants)
    if layout.fetch:  # tokenizers, schedulers: counted in the size (matched as the hub matches them)
        seen = set(found.files)
        found.files += [
            p for name, p in _listing(root) if p not in seen and any(fnmatch(name, f) for f in layout.fetch)
        ]
    return found


def _listing(root: Path, depth: int = 2, cap: int = 2000) -> list[tuple[str, Path]]:
    """The files in `root` and its subfolders `depth` deep, by their relative names (at most `cap`: a folder that
    is no model's is not walked whole)."""
    out: list[tuple[str, Path]] = []
    folders = [(root, "")]
    for _ in range(depth):
        deeper = []
        for folder, prefix in folders:
            try:
                entries = sorted(folder.iterdir())
            except OSError:
                continue
            for p in entries:
                if len(out) >= cap:
                    return out
                if p.is_dir():
                    deeper.append((p, f"{prefix}{p.name}/"))
                elif p.is_file():
                    out.append((f"{prefix}{p.name}", p))
        folders = deeper
    return out


def _size(files: list[Path]) -> int:
    total = 0
    for f in files:
        with contextlib.suppress(OSError):
            total += f.stat().st_size  # a hub snapshot's links resolve to their blobs
    return total


def _quote(pattern: str) -> str:
    return f'"{pattern}"'


def patterns(layout: Layout, fp16: bool = False) -> list[str]:
    """The files a fetch asks the hub for: the configs (or the layout's globs) and the weights (their fp16 variants
    where the loader takes them)."""
    out = list(layout.configs if layout.fetch is None else layout.fetch)
    for w in layout.weights:
        out += w.patterns(fp16 and layout.variants)
    return list(dict.fromkeys(out))


def hf_command(model_id: str, layout: Layout, fp16: bool = False) -> str:
    return f"hf download {model_id} --include {' '.join(map(_quote, patterns(layout, fp16)))}"


def check(entry: Entry, settings: Settings) -> ModelCheck | None:
    """One entry as this machine has it; None when the settings name no model for it."""
    from .api import ModelCheck  # (the loaders read the layouts above: the interface's types load with a report)

    model = entry.model(settings)
    if not model:
        return None
    layout = entry.layout_for(settings)
    tiny = settings.profile == "tiny"
    hub = not tiny and is_hub_id(model)
    root = snapshot(model) if hub else Path(model).expanduser()
    shown = settings.shown_model(model) or model
    sizes = entry.download_size if entry.default == model else None
    common = {
        "name": entry.name, "label": entry.label, "model": shown, "needed": entry.needed(settings),
        "features": entry.features, "setting": entry.setting,
        "download_size": int(sizes[0]) if sizes else None,
    }  # fmt: skip
    if tiny:
        from .tiny import is_built

        common["source"] = "tiny"
        common["fetch"] = "python -m engine prepare-tiny"
        if not is_built(settings.tiny_dir):
            return ModelCheck(**common, status="to build", note="the tiny profile is built locally on first use")
    else:
        common["source"] = "hub" if hub else "folder"
        if hub:
            common["fetch"] = f"{PULL} {entry.name}"
            common["download"] = hf_command(model, layout)
    if root is None or not root.is_dir():
        status, found = "missing", Found()
    else:
        found = inspect_folder(root, layout)
        status = "incomplete" if found.missing else "present"
    if status == "present" and "pickle" in found.formats and not settings.allow_pickle:
        status = "pickle-only"
        common["note"] = "pickled weights can run code when loaded: refused unless DESIGN_STUDIO_ALLOW_PICKLE=true"
    if status == "missing" and not hub and not tiny:
        common["note"] = f"no such folder on the engine's machine: set {entry.setting} to the folder that holds it"
    fmt = ("pickle" if "pickle" in found.formats else "safetensors") if found.formats else None
    return ModelCheck(
        **common, status=status, format=fmt, variant="fp16" if found.fp16_only else None,
        size=_size(found.files) if found.files else None, missing_files=found.missing[:5],
    )  # fmt: skip


def diagnose(settings: Settings) -> DoctorReport:
    """Every model the settings name, as this machine has it: from the file system alone."""
    from .api import DoctorReport

    checks = [c for e in ENTRIES if (c := check(e, settings)) is not None]
    missing = [c.name for c in checks if c.needed and not c.usable]
    hub_missing = [c for c in checks if c.name in missing and c.source == "hub"]
    optional = sum(1 for c in checks if not c.needed and not c.usable)
    if missing:
        summary = f"{len(missing)} missing — see Models"
    elif optional:
        summary = f"models: all needed present ({optional} optional missing)"
    else:
        summary = "models: all present"
    return DoctorReport(
        ok=not missing,
        profile=settings.profile,
        models=checks,
        missing=missing,
        fetch_all=PULL if hub_missing else "",
        cache=_shown_cache(),
        summary=summary,
    )


def _shown_cache() -> str:
    home = Path.home()
    cache = hub_cache()
    try:
        return "~/" + cache.relative_to(home).as_posix()
    except ValueError:
        return str(cache)


# ---- fetching ----------------------------------------------------------------------------------------------------
@dataclass
class Step:
    """One model of a pull: what it asks the hub for (or why it asks nothing)."""

    name: str
    model: str
    include: list[str]
    download_size: int | None
    action: str  # "download", "present", "folder", "build"
    layout: Layout | None = None

    def as_dict(self) -> dict:
        return {"name": self.name, "model": self.model, "action": self.action, "include": self.include,
                "download_size": self.download_size}  # fmt: skip


def plan(settings: Settings, names: list[str], every: bool = False, fp16: bool = False) -> list[Step]:
    """What `models pull NAMES` fetches (no names: the models the enabled features need; `every`: all the
    settings name). A model already here, or a folder, is not fetched; the tiny profile is built, not fetched."""
    known = {e.name: e for e in ENTRIES}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise BadInput(f"no model named {', '.join(unknown)}", fix=f"pick from {', '.join(known)}")
    chosen = [known[n] for n in dict.fromkeys(names)] if names else [e for e in ENTRIES if every or e.needed(settings)]
    steps = []
    for entry in chosen:
        found = check(entry, settings)
        if found is None:
            continue
        model = entry.model(settings) or ""
        layout = entry.layout_for(settings)
        include = patterns(layout, fp16)
        if found.source == "tiny":
            steps.append(Step(entry.name, found.model, [], None, "build" if found.status == "to build" else "present"))
        elif found.source == "folder":
            steps.append(Step(entry.name, found.model, [], None, "folder"))
        elif found.status == "present":
            steps.append(Step(entry.name, model, include, None, "present"))
        else:
            size = entry.download_size if entry.default == model else None
            half = fp16 and layout.variants
            sized = int(size[1 if half else 0]) if size else None
            steps.append(Step(entry.name, model, include, sized, "download", layout))
    return steps


def pull(settings: Settings, steps: list[Step], progress: Callable[[str], None] = lambda line: None) -> list[dict]:
    """Fetch the steps' files (safetensors only) into the hub cache; the tiny profile is built instead."""
    from .hub import hub_online, why_offline

    todo = [s for s in steps if s.action == "download"]
    if any(s.action == "build" for s in steps):
        from .tiny import prepare_tiny

        progress(f"building the tiny profile in {settings.tiny_dir}")
        prepare_tiny(settings.tiny_dir)
    if todo and not hub_online():
        raise ModelUnavailable(
            f"cannot download: {why_offline()}",
            fix=f"run `{PULL} {' '.join(s.name for s in todo)}` where the hub is reachable, then copy its "
            f"hub cache ({_shown_cache()}) here; or point the settings at folders that hold the models",
        )
    from huggingface_hub import snapshot_download

    def fetch(step: Step, include: list[str]) -> Path:
        try:
            return Path(snapshot_download(step.model, allow_patterns=include, cache_dir=hub_cache()))
        except Exception as exc:  # noqa: BLE001 (a gated repo, a typo, a dropped connection: one line each)
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
            raise ModelUnavailable(
                f"downloading '{step.model}' failed: {first}",
                fix=f"check that the hub has {step.model} and lets you download it (a gated model needs "
                "`hf auth login` after accepting its terms)",
            ) from None

    done = []
    for step in todo:
        progress(f"downloading {step.name} ({step.model})")
        folder = fetch(step, step.include)
        found = inspect_folder(folder, step.layout) if step.layout else Found()
        if found.missing and step.layout and step.layout.variants:  # a repo without the fp16 variant: the full files
            progress(f"{step.name}: no fp16 variant on the hub, downloading the full-precision files")
            found = inspect_folder(fetch(step, patterns(step.layout)), step.layout)
        if found.missing:
            raise ModelUnavailable(
                f"'{step.model}' has no {', '.join(found.missing[:3])} on the hub (safetensors only are fetched)",
                fix=f"set {next(e.setting for e in ENTRIES if e.name == step.name)} to a model in safetensors, or "
                "fetch and convert this one yourself (DESIGN_STUDIO_ALLOW_PICKLE=true loads pickles you trust)",
            )
        done.append({"name": step.name, "model": step.model, "size": _size(found.files)})
    return done


def variant(model: str, layout: Layout, dtype) -> dict:
    """What a diffusers load of `model` adds: `variant="fp16"` where its weights are on disk as the fp16 variant
    only (as `models pull` fetches them on a GPU), or where the engine runs in fp16 and the variant is there too."""
    if not layout.variants:
        return {}
    root = snapshot(model) if is_hub_id(model) else Path(model).expanduser()
    if root is None or not root.is_dir():
        return {}
    weights = [w for w in layout.weights if isinstance(w, Weights)]
    forms = [_weights(root, w) for w in weights]
    if not forms or any(f is None for f in forms):
        return {}
    if all(f[1] == ".fp16" for f in forms):
        return {"variant": "fp16"}
    both = all((root / w.folder / f"{w.stem}.fp16.safetensors").is_file() for w in weights)
    return {"variant": "fp16"} if both and str(dtype).removeprefix("torch.") == "float16" else {}


def fp16_device(settings: Settings) -> bool:
    """Whether this machine runs the engine in fp16 (a GPU): a pull there fetches the fp16 variants."""
    device = settings.resolve_device()
    return str(settings.resolve_dtype(device)).removeprefix("torch.") == "float16"
