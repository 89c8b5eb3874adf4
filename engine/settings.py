"""Settings: environment variables (prefix DESIGN_STUDIO_), an optional TOML file, then defaults."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from .rules.controlnets import CONTROLS, DEFAULT_CONTROL

SETTINGS_FILE_ENV = "DESIGN_STUDIO_SETTINGS_FILE"
HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")  # owner/name
DEFAULT_DATA_DIR = Path.home() / ".design-studio"
TINY_UPSCALER = "RealESRGAN_x4plus.safetensors"  # the tiny profile's upscaler file, in models/tiny/real-esrgan/


@dataclass(frozen=True)
class ModelIds:
    """Where each model comes from: a hub id or a local folder."""

    base: str
    controlnet: str
    ip_adapter: str
    ip_adapter_subfolder: str
    ip_adapter_weight: str
    ip_adapter_image_encoder: str
    clip: str
    sam2: str = "facebook/sam2.1-hiera-tiny"
    fast_lora: str = "latent-consistency/lcm-lora-sdv1-5"
    fast_lora_weight: str = "pytorch_lora_weights.safetensors"
    taesd: str = "madebyollin/taesd"
    depth: str = "depth-anything/Depth-Anything-V2-Small-hf"  # the depth ControlNet's estimator (engine-side)
    # every ControlNet type of the registry (engine/rules/controlnets.py) → its id; the others load on first use
    controlnets: dict[str, str] = field(default_factory=dict)

    def controlnet_for(self, control: str) -> str:
        return self.controlnets[control]


class Settings(BaseSettings):
    """Everything the engine can be told; one field per variable, e.g. DESIGN_STUDIO_PROFILE."""

    model_config = SettingsConfigDict(env_prefix="DESIGN_STUDIO_", extra="ignore")

    profile: Literal["default", "tiny"] = "default"
    data_dir: Path = DEFAULT_DATA_DIR
    device: str = Field("auto", description="auto, cpu, cuda, cuda:N or mps")
    # auto: fp16 on a GPU, bf16 on a CPU with bf16 units (AMX, AVX512-BF16), fp32 on any other CPU
    dtype: Literal["auto", "float16", "bfloat16", "float32"] = "auto"

    base_model: str = "stable-diffusion-v1-5/stable-diffusion-v1-5"
    # The ControlNet loaded with the base model (the registry's first type, canny edges)
    controlnet_model: str = CONTROLS[DEFAULT_CONTROL].default_id
    # The other types' ids, where not the registry's default, e.g. DESIGN_STUDIO_CONTROLNETS='{"lineart": "/m/la"}'
    controlnets: dict[str, str] = Field(default_factory=dict)
    ip_adapter_model: str = "h94/IP-Adapter"
    ip_adapter_subfolder: str = "models"
    ip_adapter_weight: str = "ip-adapter_sd15.safetensors"
    ip_adapter_image_encoder: str = "models/image_encoder"
    clip_model: str = "openai/clip-vit-base-patch32"
    # The depth ControlNet's map: a monocular depth estimator (transformers' AutoModelForDepthEstimation), engine-side;
    # Depth-Anything-V2-Base-hf / -Large-hf are finer and slower
    depth_model: str = "depth-anything/Depth-Anything-V2-Small-hf"
    # Regions: SAM2 point/box prompts (the larger facebook/sam2.1-hiera-small / -base-plus / -large work too).
    sam2_model: str = "facebook/sam2.1-hiera-tiny"
    # Upscaling (engine/upscaler.py): an ESRGAN-class model, by default Real-ESRGAN's RealESRGAN_x4plus converted to
    # safetensors (the official weights; the official release is a pickled .pth, loaded only with allow_pickle). A hub
    # id and the file in it, a folder and the file in it, or a file's path. spandrel, where it imports, loads other
    # architectures too.
    upscaler_model: str = "wkrettek/real-esrgan-models"
    upscaler_weight: str = "realesrgan_x4plus.safetensors"
    # The upscaler's tiles (input pixels a side) and their overlap: the model's memory is that of one tile
    upscale_tile: int = Field(288, ge=32, le=2048)
    upscale_overlap: int = Field(32, ge=0, le=256)

    # The few-step modes (fast, live): a LoRA on the UNet and its scheduler, and the tiny autoencoder (live mode's
    # decode and every mode's step previews). Hyper-SD instead: fast_lora=ByteDance/Hyper-SD,
    # fast_lora_weight=Hyper-SD15-8steps-lora.safetensors, and scheduler tcd in the request.
    fast_lora: str = "latent-consistency/lcm-lora-sdv1-5"
    fast_lora_weight: str = "pytorch_lora_weights.safetensors"
    # Fuse the LoRA into the UNet's weights for the few-step modes (no extra matmuls per layer); back in quality mode
    # the base weights are read back from the checkpoint, exactly. False: an unfused adapter, switched per render.
    fuse_lora: bool = True
    taesd_model: str = "madebyollin/taesd"
    # Step previews: the tiny autoencoder decodes the render as it forms (off: a little less work per render).
    previews: bool = True

    # FLUX.1-schnell (+ a LoRA) for text-to-image, chosen per request (`model: flux`) where the GPU holds it.
    flux_model: str = "black-forest-labs/FLUX.1-schnell"
    flux_lora: str | None = "aihpi/flux-fashion-lora"

    # Catalog runs: translation (None: Helsinki-NLP/opus-mt-<lang>-en for the sheet's language) and the
    # attribute LLM (a local transformers model, unless a run names an OpenAI-compatible URL).
    translation_model: str | None = None
    llm_model: str = "microsoft/Phi-3-mini-4k-instruct"
    llm_api_key: str | None = None
    # The longest reply the local LLM may write (an attribute object needs ~150 tokens). Unset: 256, and 48 on the
    # tiny profile, whose random weights never end a reply by themselves (so every reply would run to the cap).
    llm_max_new_tokens: int | None = Field(default=None, ge=16, le=4096)
    # The catalog scores its renders with a larger CLIP, as the seed pipeline did.
    catalog_clip_model: str = "openai/clip-vit-large-patch14"

    # Pickled checkpoints (.bin/.pt) can run code when loaded: refused unless the user opts in.
    allow_pickle: bool = False

    # Hub ids a request may name as its checkpoint (comma-separated, e.g. "owner/model-a,owner/model-b"), besides
    # the base model above: a client never makes the engine fetch or open any other repository or folder.
    allowed_models: str = ""
    # May an allowed hub id a request names be downloaded when the cache lacks it? Off: from the local cache only.
    allow_model_downloads: bool = False

    # A team library: point at a `chroma run` server instead of the embedded store.
    chroma_host: str | None = None
    chroma_port: int = 8000

    # Required by the HTTP server whenever it is reachable beyond loopback (generated if unset).
    api_token: str | None = None

    # PyTorch's CPU threads; 0: one per physical core this process may use (hyper-threads only add contention).
    threads: int = Field(0, ge=0, le=1024)

    max_upload_bytes: int = 20 * 1024 * 1024
    # Your own checkpoints and LoRAs (models/checkpoints, models/loras in the data folder): the largest file an
    # upload may add (over HTTP in parts of a few MB each: renders.upload_begin/upload_part/upload_finish)
    max_model_bytes: int = 8 * 1024**3
    max_input_pixels: int = 64_000_000

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        toml_file = os.environ.get(SETTINGS_FILE_ENV)
        if toml_file:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml_file))
        return tuple(sources)

    def allowed_checkpoints(self) -> frozenset[str]:
        """The hub ids a request may name as its checkpoint: the base model (when it is a hub id) and the operator's
        `allowed_models`. A name outside this set is refused before anything loads (engine/model_files.py)."""
        named = [self.models().base, *self.allowed_models.split(",")]
        return frozenset(m.strip() for m in named if HUB_ID.match(m.strip()))

    @property
    def models_dir(self) -> Path:
        """The designer's own checkpoints and LoRAs (engine/model_files.py)."""
        return self.data_dir / "models"

    def shown_model(self, model: str | None) -> str | None:
        """A model as callers see it (/health, a run's record): a hub id as it is, a folder under the data folder
        relative to it ("models/tiny/taesd"), any other folder by its name; never the engine's own paths."""
        if not model or not Path(model).is_absolute():
            return model
        path = Path(model)
        try:
            return path.relative_to(self.data_dir).as_posix()
        except ValueError:
            return path.name

    @property
    def tiny_dir(self) -> Path:
        return self.data_dir / "models" / "tiny"

    def models(self) -> ModelIds:
        """The model ids in force: the configured ones, or the tiny profile's local folders (same file names)."""
        if self.profile == "tiny":
            root = self.tiny_dir
            return ModelIds(
                base=str(root / "stable-diffusion-v1-5"),
                controlnet=str(root / CONTROLS[DEFAULT_CONTROL].tiny_folder),
                ip_adapter=str(root / "IP-Adapter"),
                ip_adapter_subfolder=self.ip_adapter_subfolder,
                ip_adapter_weight=self.ip_adapter_weight,
                ip_adapter_image_encoder=self.ip_adapter_image_encoder,
                clip=str(root / "clip-vit-base-patch32"),
                sam2=str(root / "sam2.1-hiera-tiny"),
                fast_lora=str(root / "lcm-lora-sdv1-5"),
                fast_lora_weight=self.fast_lora_weight,
                taesd=str(root / "taesd"),
                depth=str(root / "Depth-Anything-V2-Small-hf"),
                controlnets={name: str(root / c.tiny_folder) for name, c in CONTROLS.items()},
            )
        return ModelIds(
            base=self.base_model,
            controlnet=self.controlnet_model,
            ip_adapter=self.ip_adapter_model,
            ip_adapter_subfolder=self.ip_adapter_subfolder,
            ip_adapter_weight=self.ip_adapter_weight,
            ip_adapter_image_encoder=self.ip_adapter_image_encoder,
            clip=self.clip_model,
            sam2=self.sam2_model,
            fast_lora=self.fast_lora,
            fast_lora_weight=self.fast_lora_weight,
            taesd=self.taesd_model,
            depth=self.depth_model,
            controlnets={
                name: self.controlnet_model if name == DEFAULT_CONTROL else self.controlnets.get(name, c.default_id)
                for name, c in CONTROLS.items()
            },
        )

    def upscaler_paths(self) -> tuple[str, str]:
        """The upscaler (hub id, folder or file) and its weight file: the configured ones, or the tiny profile's
        random-weight RRDBNet in the same file layout."""
        if self.profile == "tiny":
            return str(self.tiny_dir / "real-esrgan"), TINY_UPSCALER
        return self.upscaler_model, self.upscaler_weight

    def translation_model_for(self, lang: str) -> str:
        if self.profile == "tiny":
            return str(self.tiny_dir / "opus-mt-de-en")
        return self.translation_model or f"Helsinki-NLP/opus-mt-{lang}-en"

    def flux_paths(self) -> tuple[str, str | None]:
        """The FLUX model and its LoRA: the configured ids, or the tiny profile's folders."""
        if self.profile == "tiny":
            return str(self.tiny_dir / "FLUX.1-schnell"), str(self.tiny_dir / "flux-lora")
        return self.flux_model, self.flux_lora or None

    def catalog_clip_path(self) -> str:
        return self.models().clip if self.profile == "tiny" else self.catalog_clip_model

    def llm_reply_tokens(self) -> int:
        if self.llm_max_new_tokens is not None:
            return self.llm_max_new_tokens
        return 48 if self.profile == "tiny" else 256

    def llm_model_path(self) -> str:
        if self.profile == "tiny":
            return str(self.tiny_dir / "Phi-3-mini-4k-instruct")
        return self.llm_model

    def resolve_device(self) -> str:
        if self.device != "auto":
            return self.device
        import torch

        if torch.cuda.is_available():
            return "cuda"
        return "cpu"

    def resolve_dtype(self, device: str):
        """The dtype set, or for `auto` the one the hardware runs fastest (engine/precision.py: CUDA and MPS fp16,
        a CPU with bf16 units bf16, any other CPU fp32)."""
        from .precision import choose_dtype

        return choose_dtype(device, self.dtype)
