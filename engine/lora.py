"""The designer's LoRAs, and fusing the few-step LoRA exactly: back in quality mode the base UNet's own weights are
read back from its checkpoint, so the base model is bit for bit what was loaded."""

from __future__ import annotations

import contextlib
import logging
import re
from pathlib import Path

from .errors import ModelUnavailable
from .settings import Settings

log = logging.getLogger(__name__)


def unet_weight_files(settings: Settings) -> list[Path]:
    """The safetensors file(s) the base UNet was loaded from: a local folder's, or the hub cache's (offline)."""
    base = settings.models().base
    folder = Path(base) / "unet"
    if not folder.is_dir():
        from huggingface_hub import snapshot_download

        folder = Path(snapshot_download(base, allow_patterns=["unet/*"], local_files_only=True)) / "unet"
    files = sorted(folder.glob("*.safetensors"))
    plain = [f for f in files if ".fp16." not in f.name]
    return plain or files


def restore_base_weights(unet, files: list[Path]) -> int:
    """Put the base UNet's own weights back into the layers a fused LoRA changed, read from its checkpoint (the page
    cache has it after the first time) and cast as `from_pretrained` cast them: bit for bit the weights it loaded.
    Unfusing subtracts the LoRA's delta again, which leaves fp32 rounding in every weight."""
    import torch
    from peft.tuners.tuners_utils import BaseTunerLayer
    from safetensors import safe_open

    wanted: dict[str, torch.Tensor] = {}
    for name, module in unet.named_modules():
        if isinstance(module, BaseTunerLayer):
            wanted[f"{name}.weight"] = module.get_base_layer().weight
    restored = 0
    with torch.no_grad():
        for path in files:
            with safe_open(str(path), framework="pt") as f:
                for key in wanted.keys() & set(f.keys()):
                    target = wanted[key]
                    target.copy_(f.get_tensor(key).to(dtype=target.dtype))
                    restored += 1
    if restored != len(wanted):
        raise ModelUnavailable(
            f"the base UNet's weights could not all be restored after the few-step LoRA ({restored} of {len(wanted)})",
            fix="set DESIGN_STUDIO_FUSE_LORA=false (the LoRA then runs unfused, a little slower)",
        )
    return restored


# Markers of the model family a LoRA was trained for, in its tensor names (diffusers' and kohya's spellings alike).
# SD 1.5's own UNet has `transformer_blocks` too, so only FLUX's own block names and its `transformer.` root count.
FAMILIES = (
    ("FLUX", re.compile(r"^transformer\.|single_transformer_blocks|(^|[._])(double|single)_blocks[._]")),
    ("SDXL", re.compile(r"^(lora_te2_|text_encoder_2\.)|add_embedding|(^|[._])label_emb[._]")),
    ("SD 3", re.compile(r"(^|[._])joint_blocks[._]|context_embedder")),
)


def lora_family(path: Path) -> str | None:
    """The other model family a LoRA file was trained for ("FLUX", "SDXL", "SD 3"), from its tensor names only (the
    safetensors header: no weight is read); None when nothing in them says it is not for SD 1.5."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            keys = list(f.keys())
    except (OSError, SafetensorError):
        return None  # unreadable: loading says so
    for family, marker in FAMILIES:
        if any(marker.search(k) for k in keys):
            return family
    return None


def _misfit(name: str, why: str) -> ModelUnavailable:
    return ModelUnavailable(
        f"LoRA '{name}' {why}; it does not fit this SD 1.5 model", fix="use a LoRA trained for SD 1.5"
    )


def load_user_lora(pipe, name: str, file: str, adapter: str) -> None:
    """One of the designer's LoRAs (A1111/kohya or diffusers keys) into the pipeline as the named adapter. A LoRA of
    another family, or one none of whose tensors found a layer, is refused in one line (diffusers would load nothing
    from it and fail later, when the adapter is switched on)."""
    path = Path(file)
    family = lora_family(path)
    if family is not None:
        raise _misfit(name, f"is a {family} LoRA")
    try:
        pipe.load_lora_weights(str(path.parent), weight_name=path.name, adapter_name=adapter)
    except Exception as exc:  # diffusers/peft raise anything from IndexError to RuntimeError for a file that misfits
        log.debug("loading LoRA %s failed", file, exc_info=exc)
        with contextlib.suppress(Exception):  # leave no half-made adapter behind
            pipe.delete_adapters(adapter)
        raise ModelUnavailable(
            f"LoRA '{name}' does not fit this SD 1.5 model ({type(exc).__name__})",
            fix="use a LoRA trained for SD 1.5 (not SDXL or FLUX)",
        ) from None
    loaded = {a for names in pipe.get_list_adapters().values() for a in names}
    if adapter not in loaded:
        raise _misfit(name, "has no tensor for any layer of the UNet or text encoder")
