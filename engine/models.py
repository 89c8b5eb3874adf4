"""Load every model once per process, through `from_pretrained` / `load_ip_adapter`, for any profile."""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

from .doctor import CONTROLNET, SD15, variant
from .errors import Busy, ModelUnavailable
from .hub import PICKLE_SUFFIXES, cached, hub_online, quiet_libraries, require, safetensors_kw, unavailable
from .rules.controlnets import DEFAULT_CONTROL
from .settings import Settings

log = logging.getLogger(__name__)


def load_pipeline(settings: Settings, device: str, dtype):
    """SD1.5 + ControlNet (canny) + IP-Adapter, on `device` in `dtype`, progress bars off."""
    from diffusers import ControlNetModel, StableDiffusionControlNetPipeline

    ids = settings.models()
    kw = {"dtype": dtype, **safetensors_kw(settings)}
    offline = require(ids.controlnet, "DESIGN_STUDIO_CONTROLNET_MODEL", settings)
    base_offline = require(ids.base, "DESIGN_STUDIO_BASE_MODEL", settings)
    # the fp16 variant where only it is on disk (`models pull` on a GPU), or where this engine runs in fp16 anyway
    offline |= variant(ids.controlnet, CONTROLNET, dtype)
    base_offline |= variant(ids.base, SD15, dtype)
    try:
        controlnet = ControlNetModel.from_pretrained(ids.controlnet, **kw, **offline)
    except (OSError, ValueError) as exc:
        raise unavailable(ids.controlnet, "DESIGN_STUDIO_CONTROLNET_MODEL", settings, exc) from None
    try:
        pipe = StableDiffusionControlNetPipeline.from_pretrained(
            ids.base, controlnet=controlnet, safety_checker=None, requires_safety_checker=False, **kw, **base_offline
        )
    except (OSError, ValueError) as exc:
        raise unavailable(ids.base, "DESIGN_STUDIO_BASE_MODEL", settings, exc) from None

    add_ip_adapter(pipe, settings)
    pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def add_ip_adapter(pipe, settings: Settings) -> None:
    """The IP-Adapter (and its image encoder, unless the pipeline has one already) into a loaded pipeline."""
    ids = settings.models()
    if ids.ip_adapter_weight.endswith(PICKLE_SUFFIXES) and not settings.allow_pickle:
        raise ModelUnavailable(
            f"IP-Adapter weight '{ids.ip_adapter_weight}' is a pickled checkpoint, which can run code when loaded",
            fix="use ip-adapter_sd15.safetensors, or set DESIGN_STUDIO_ALLOW_PICKLE=true if you trust the file",
        )
    offline = require(ids.ip_adapter, "DESIGN_STUDIO_IP_ADAPTER_MODEL", settings)
    try:
        pipe.load_ip_adapter(
            ids.ip_adapter,
            subfolder=ids.ip_adapter_subfolder,
            weight_name=ids.ip_adapter_weight,
            image_encoder_folder=ids.ip_adapter_image_encoder,
            **offline,
        )
    except (OSError, ValueError) as exc:
        raise unavailable(ids.ip_adapter, "DESIGN_STUDIO_IP_ADAPTER_MODEL", settings, exc) from None


def load_checkpoint(settings: Settings, checkpoint: str, default, device: str, dtype):
    """A designer's own SD 1.5 checkpoint: one `.safetensors` file (`from_single_file`, configured by the default
    base's folder, so nothing is fetched) or a hub id the settings allow (`from_pretrained` on its folder in the hub
    cache: see `hub_checkpoint`). The ControlNet, the image encoder and the IP-Adapter's weights are the default
    pipeline's; the UNet, VAE and text encoder are the checkpoint's."""
    from diffusers import StableDiffusionControlNetPipeline

    ids = settings.models()
    shared = {"controlnet": default.controlnet, "safety_checker": None, "requires_safety_checker": False}
    if checkpoint.endswith(".safetensors") or Path(checkpoint).is_absolute():
        from .checkpoint import load_single_file

        pipe = load_single_file(
            checkpoint, ids.base, default.controlnet, dtype=dtype, allow_pickle=settings.allow_pickle
        )
    else:
        folder = hub_checkpoint(settings, checkpoint)
        try:
            pipe = StableDiffusionControlNetPipeline.from_pretrained(
                folder, dtype=dtype, **shared, **safetensors_kw(settings), local_files_only=True
            )
        except (OSError, ValueError) as exc:
            raise unavailable(checkpoint, "the checkpoint name", settings, exc) from None
    pipe.register_modules(image_encoder=default.image_encoder, feature_extractor=default.feature_extractor)
    add_ip_adapter(pipe, settings)
    pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def hub_checkpoint(settings: Settings, model_id: str) -> str:
    """A checkpoint a request names by hub id → its snapshot folder in the hub cache. Only ids the settings allow
    (`allowed_checkpoints`: the base model and DESIGN_STUDIO_ALLOWED_MODELS); fetched from the hub only where the
    operator allows downloads (DESIGN_STUDIO_ALLOW_MODEL_DOWNLOADS) and the hub answers, else from the cache alone.
    Never a folder of that name in the engine's working directory: the id is looked up in the cache, not on disk."""
    from diffusers import StableDiffusionControlNetPipeline

    if model_id not in settings.allowed_checkpoints():
        raise ModelUnavailable(
            f"checkpoint '{model_id}' is not one this engine offers",
            fix="upload the .safetensors file, or ask the operator to add the id to DESIGN_STUDIO_ALLOWED_MODELS",
        )
    download = settings.allow_model_downloads and hub_online()
    if not download and not cached(model_id):
        raise ModelUnavailable(
            f"checkpoint '{model_id}' is not in this engine's model cache, and downloads of the models a render "
            "names are off",
            fix="the operator downloads it once (`hf download ID`), or sets DESIGN_STUDIO_ALLOW_MODEL_DOWNLOADS=true",
        )
    try:
        return str(
            StableDiffusionControlNetPipeline.download(
                model_id, local_files_only=not download, **safetensors_kw(settings)
            )
        )
    except (OSError, ValueError) as exc:
        raise unavailable(model_id, "the checkpoint name", settings, exc) from None


def load_controlnet(settings: Settings, control: str, device: str, dtype):
    """A ControlNet of another registry type (engine/rules/controlnets.py), on the first render that asks for it."""
    from diffusers import ControlNetModel

    model_id = settings.models().controlnet_for(control)
    setting = f'DESIGN_STUDIO_CONTROLNETS ("{control}")'
    offline = require(model_id, setting, settings) | variant(model_id, CONTROLNET, dtype)
    try:
        controlnet = ControlNetModel.from_pretrained(model_id, dtype=dtype, **safetensors_kw(settings), **offline)
    except (OSError, ValueError) as exc:
        raise unavailable(model_id, setting, settings, exc) from None
    return controlnet.to(device).eval()


def load_fast_lora(pipe, settings: Settings, adapter: str) -> None:
    """The few-step LoRA (LCM-LoRA or Hyper-SD) into the loaded pipeline's UNet as the named adapter, once: the
    modes fuse it in and take it out again (engine/render/sd15.py), never reload it."""
    ids = settings.models()
    if ids.fast_lora_weight.endswith(PICKLE_SUFFIXES) and not settings.allow_pickle:
        raise ModelUnavailable(
            f"LoRA weight '{ids.fast_lora_weight}' is a pickled checkpoint, which can run code when loaded",
            fix="use its .safetensors file, or set DESIGN_STUDIO_ALLOW_PICKLE=true if you trust the file",
        )
    offline = require(ids.fast_lora, "DESIGN_STUDIO_FAST_LORA", settings)
    try:
        pipe.load_lora_weights(ids.fast_lora, weight_name=ids.fast_lora_weight, adapter_name=adapter, **offline)
    except (OSError, ValueError) as exc:
        raise unavailable(ids.fast_lora, "DESIGN_STUDIO_FAST_LORA", settings, exc) from None


def load_taesd(settings: Settings, device: str, dtype):
    """The tiny autoencoder (TAESD): live mode's decode and the step previews."""
    from diffusers import AutoencoderTiny

    model_id = settings.models().taesd
    offline = require(model_id, "DESIGN_STUDIO_TAESD_MODEL", settings)
    try:
        vae = AutoencoderTiny.from_pretrained(model_id, dtype=dtype, **safetensors_kw(settings), **offline)
    except (OSError, ValueError) as exc:
        raise unavailable(model_id, "DESIGN_STUDIO_TAESD_MODEL", settings, exc) from None
    return vae.to(device).eval()


def load_depth(settings: Settings, device: str):
    """The depth ControlNet's estimator (Depth Anything V2 by default): model + image processor, fp32 (a small model;
    its map is normalised to 8 bits anyway), on `device`."""
    from transformers import AutoImageProcessor, AutoModelForDepthEstimation

    model_id = settings.models().depth
    offline = require(model_id, "DESIGN_STUDIO_DEPTH_MODEL", settings)
    try:
        model = AutoModelForDepthEstimation.from_pretrained(model_id, **safetensors_kw(settings), **offline)
        processor = AutoImageProcessor.from_pretrained(model_id, **offline)
    except (OSError, ValueError) as exc:
        raise unavailable(model_id, "DESIGN_STUDIO_DEPTH_MODEL", settings, exc) from None
    return model.to(device).eval(), processor


def load_clip(settings: Settings, device: str, model_id: str | None = None, setting: str = "DESIGN_STUDIO_CLIP_MODEL"):
    """A CLIP (model + processor), fp32 for stable similarities: the retrieval one unless `model_id` says."""
    from transformers import CLIPModel, CLIPProcessor

    model_id = model_id or settings.models().clip
    offline = require(model_id, setting, settings)
    try:
        model = CLIPModel.from_pretrained(model_id, **safetensors_kw(settings), **offline)
        processor = CLIPProcessor.from_pretrained(model_id, **offline)
    except (OSError, ValueError) as exc:
        raise unavailable(model_id, setting, settings, exc) from None
    return model.to(device).eval(), processor


def load_segmenter(settings: Settings, device: str, dtype):
    """SAM2 for regions (point and box prompts, automatic masks)."""
    from .regions import load_sam2

    model_id = settings.models().sam2
    require(model_id, "DESIGN_STUDIO_SAM2_MODEL", settings)
    try:
        return load_sam2(model_id, device, dtype, safetensors_kw(settings)["use_safetensors"])
    except (OSError, ValueError) as exc:
        raise unavailable(model_id, "DESIGN_STUDIO_SAM2_MODEL", settings, exc) from None


def physical_cores() -> int:
    """The physical cores among the CPUs this process may run on (Linux topology; elsewhere the logical count)."""
    allowed = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else range(os.cpu_count() or 1)
    cores = set()
    for cpu in allowed:
        topology = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology")
        try:
            cores.add(((topology / "physical_package_id").read_text(), (topology / "core_id").read_text()))
        except OSError:
            cores.add(("cpu", str(cpu)))
    return max(1, len(cores))


_threads_set = False


def configure_threads(threads: int = 0) -> int:
    """Give PyTorch one thread per physical core (or `threads`), once per process, before any model runs."""
    global _threads_set
    import torch

    if not _threads_set:
        torch.set_num_threads(threads or physical_cores())
        _threads_set = True
        log.info("PyTorch uses %d CPU threads", torch.get_num_threads())
    return torch.get_num_threads()


class ModelStore:
    """Loads lazily, once, thread-safely; the tiny profile is built on first use if missing."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.device = settings.resolve_device()
        self.dtype = settings.resolve_dtype(self.device)
        self._lock = threading.RLock()
        self._pipe = None
        self._checkpoint: tuple[str, object] | None = None  # the one checkpoint loaded besides the default
        self._controlnets: dict[str, object] = {}
        self._clip = None
        self._flux = None
        self._segmenter = None
        self._depth = None
        self._taesd = None
        self._upscaler = None
        self._fast_lora: set[int] = set()  # the pipelines (by id) the few-step LoRA is loaded into
        configure_threads(settings.threads)
        quiet_libraries()

    def _ensure_tiny(self) -> None:
        if self.settings.profile == "tiny":
            from .tiny import prepare_tiny

            prepare_tiny(self.settings.tiny_dir)

    def _held(self, name: str, load):
        """The model kept in `name`, made by `load()` on the first ask (the tiny profile built first, if it is the
        one in force)."""
        with self._lock:
            if getattr(self, name) is None:
                self._ensure_tiny()
                setattr(self, name, load())
            return getattr(self, name)

    @property
    def pipeline(self):
        return self._held("_pipe", lambda: load_pipeline(self.settings, self.device, self.dtype))

    def checkpoint(self, checkpoint: str):
        """A checkpoint's pipeline (engine/model_files.py resolved its name); one is held at a time besides the
        default, so switching between two costs a load, not the memory of both."""
        with self._lock:
            if self._checkpoint is None or self._checkpoint[0] != checkpoint:
                default = self.pipeline
                self._checkpoint = None
                _free(self.device)
                self._checkpoint = (
                    checkpoint,
                    load_checkpoint(self.settings, checkpoint, default, self.device, self.dtype),
                )
            return self._checkpoint[1]

    def controlnet(self, control: str):
        """The ControlNet of a type: the default one is the pipeline's own; the others are loaded on first use."""
        with self._lock:
            if control == DEFAULT_CONTROL:
                return self.pipeline.controlnet
            if control not in self._controlnets:
                self._ensure_tiny()
                self._controlnets[control] = load_controlnet(self.settings, control, self.device, self.dtype)
            return self._controlnets[control]

    def fast_lora(self, pipe, adapter: str) -> None:
        """Load the few-step LoRA into `pipe` on its first fast or live render."""
        with self._lock:
            if id(pipe) not in self._fast_lora:
                self._ensure_tiny()
                load_fast_lora(pipe, self.settings, adapter)
                self._fast_lora.add(id(pipe))

    @property
    def taesd(self):
        """TAESD, loaded on the first live render or step preview."""
        return self._held("_taesd", lambda: load_taesd(self.settings, self.device, self.dtype))

    @property
    def clip(self):
        return self._held("_clip", lambda: load_clip(self.settings, self.device))

    @property
    def flux(self):
        """FLUX.1-schnell with its LoRA, loaded on the first FLUX request only."""

        def load():
            model, lora = self.settings.flux_paths()
            require(model, "DESIGN_STUDIO_FLUX_MODEL", self.settings)
            if lora and self.settings.profile != "tiny":
                hub_online()  # decided before the LoRA's hub id is looked up
            return load_flux(model, lora, self.device, self.dtype, self.settings.allow_pickle, self.settings)

        return self._held("_flux", load)

    @property
    def segmenter(self):
        """SAM2, loaded on the first region click only."""
        return self._held("_segmenter", lambda: load_segmenter(self.settings, self.device, self.dtype))

    @property
    def depth(self):
        """The depth estimator (model, image processor), loaded on the first depth map only."""
        return self._held("_depth", lambda: load_depth(self.settings, self.device))

    @property
    def upscaler(self):
        """The upscaler (engine/upscaler.py), loaded on the first upscale only."""

        def load():
            from .upscaler import load_upscaler

            return load_upscaler(self.settings, self.device, self.dtype)

        return self._held("_upscaler", load)

    def loaded(self) -> dict[str, bool]:
        return {
            "pipeline": self._pipe is not None,
            "clip": self._clip is not None,
            "flux": self._flux is not None,
            "sam2": self._segmenter is not None,
            "depth_estimator": self._depth is not None,
            "fast_lora": bool(self._fast_lora),
            "taesd": self._taesd is not None,
            "checkpoint": self._checkpoint is not None,
            "upscaler": self._upscaler is not None,
            **{f"controlnet_{c}": True for c in self._controlnets},
        }


def _free(device: str) -> None:
    import gc

    gc.collect()
    if device.startswith("cuda"):
        import torch

        torch.cuda.empty_cache()


# FLUX.1: the pipeline and its LoRA (engine/render/flux.py renders with them)
MODEL_SETTING = "DESIGN_STUDIO_FLUX_MODEL"
LORA_SETTING = "DESIGN_STUDIO_FLUX_LORA"
LORA_FILE = "pytorch_lora_weights.safetensors"  # the name diffusers' own LoRA loader looks for first


def _settings_for(settings, allow_pickle: bool):
    # Without settings, the fixes name the hub download (not the tiny profile's prepare step).
    base = settings if settings is not None else Settings(profile="default")
    return base.model_copy(update={"allow_pickle": allow_pickle})


def _one_line(exc: Exception, limit: int = 200) -> str:
    text = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _resolve_lora(lora: str, settings) -> tuple[str, str | None]:
    """(folder or hub id, weight file name or None), refusing what cannot load before the base model is loaded."""
    from diffusers.utils import USE_PEFT_BACKEND
    from diffusers.utils.constants import MIN_PEFT_VERSION
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import HFValidationError

    if lora.endswith(PICKLE_SUFFIXES) and not settings.allow_pickle:
        raise ModelUnavailable(
            f"LoRA '{lora}' is a pickled checkpoint, which can run code when loaded",
            fix="use a .safetensors LoRA, or set DESIGN_STUDIO_ALLOW_PICKLE=true if you trust the file",
        )
    if not USE_PEFT_BACKEND:  # diffusers applies LoRAs through peft; without it load_lora_weights is a ValueError
        raise ModelUnavailable(
            f"loading the LoRA '{lora}' needs the peft package",
            fix=f"pip install -U peft (diffusers needs peft {MIN_PEFT_VERSION} or newer)",
        )
    path = Path(lora).expanduser()
    if path.is_file():
        return str(path.parent), path.name
    if path.is_dir():
        return str(path), None
    try:
        # Offline, diffusers cannot guess the weight file of a hub id ("you must specify a `weight_name`"),
        # but it can pick it from the cached snapshot's folder.
        return snapshot_download(lora, local_files_only=True), None
    except HFValidationError as exc:  # neither a local path nor a hub id
        raise unavailable(lora, LORA_SETTING, settings, exc) from None
    except OSError as exc:
        if constants.HF_HUB_OFFLINE:
            raise unavailable(lora, LORA_SETTING, settings, exc) from None
        return lora, None  # not cached yet: diffusers downloads it


def load_flux(model_id: str, lora: str | None, device: str, dtype, allow_pickle: bool = False, settings=None):
    """A `diffusers.FluxPipeline` from `model_id` (hub id or folder), with the LoRA `lora` (hub id, folder or
    .safetensors file) applied when given, on `device` in `dtype`, progress bar off.

    `allow_pickle` decides whether pickled weights (.bin/.pt) may load; `settings` only shapes the fix in error
    messages (default profile when None). Every failure is a one-line `ModelUnavailable` (or `Busy` when the
    GPU cannot hold the model).
    """
    import torch
    from diffusers import FluxPipeline
    from safetensors import SafetensorError

    quiet_libraries()
    model_id, lora = str(model_id), str(lora) if lora else None
    cfg = _settings_for(settings, allow_pickle)
    source = _resolve_lora(lora, cfg) if lora else None
    kw = safetensors_kw(cfg)
    try:
        pipe = FluxPipeline.from_pretrained(model_id, dtype=dtype, **kw)
    except (OSError, ValueError) as exc:
        raise unavailable(model_id, MODEL_SETTING, cfg, exc) from None
    if source is not None:
        where, weight_name = source
        try:
            pipe.load_lora_weights(where, weight_name=weight_name, **kw)
        except (OSError, SafetensorError) as exc:
            raise unavailable(lora, LORA_SETTING, cfg, exc) from None
        except ValueError as exc:
            log.debug("applying the LoRA %s failed", lora, exc_info=exc)
            raise ModelUnavailable(
                f"LoRA '{lora}' does not fit the FLUX model '{model_id}': {_one_line(exc)}",
                fix=f"use a LoRA trained for this FLUX model, or set {LORA_SETTING} to another one",
            ) from None
    try:
        pipe.to(device)
    except torch.cuda.OutOfMemoryError:
        del pipe
        torch.cuda.empty_cache()
        raise Busy(
            f"the GPU cannot hold the FLUX model '{model_id}' in {str(dtype).removeprefix('torch.')}",
            fix="use the SD 1.5 model on this GPU, or close other GPU programs (FLUX.1 needs about 34 GB in bf16)",
        ) from None
    pipe.set_progress_bar_config(disable=True)
    return pipe
