"""The designer's LoRAs, and fusing the few-step LoRA exactly: back in quality mode the base UNet's own weights are
read back from its checkpoint, so the base model is bit for bit what was loaded."""

from __future__ import annotations

import contextlib
import logging
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


def load_user_lora(pipe, name: str, file: str, adapter: str) -> None:
    """One of the designer's LoRAs (A1111/kohya or diffusers keys) into the pipeline as the named adapter."""
    path = Path(file)
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
