"""Model-loading helpers every loader shares: safetensors by default, pickles only on opt-in, and one line with
the fix when weights cannot be found offline."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from .errors import ModelUnavailable
from .settings import Settings

log = logging.getLogger(__name__)

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt")


def fix_for(model_id: str, setting: str, settings: Settings) -> str:
    if settings.profile == "tiny":
        return "run `python -m engine prepare-tiny` to build the tiny profile"
    hf_home = os.environ.get("HF_HOME", "~/.cache/huggingface")
    return (
        f"download it once where the hub is reachable (`hf download {model_id}`, cached under HF_HOME={hf_home}), "
        f"or set {setting} to a local folder, or use --profile tiny for a demo"
    )


def unavailable(model_id: str, setting: str, settings: Settings, exc: Exception) -> ModelUnavailable:
    log.debug("loading %s failed", model_id, exc_info=exc)
    where = "the folder" if Path(model_id).exists() else "the local cache, and the hub is unreachable"
    return ModelUnavailable(
        f"model '{model_id}' cannot be loaded: not found in {where}",
        fix=fix_for(model_id, setting, settings),
    )


def quiet_libraries() -> None:
    """Model loading prints progress bars and advice; the engine reports through its own logging."""
    import diffusers
    import transformers

    diffusers.utils.logging.disable_progress_bar()
    diffusers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()


def safetensors_kw(settings: Settings) -> dict:
    # use_safetensors=True refuses pickled weights; None prefers safetensors but may fall back.
    return {"use_safetensors": None if settings.allow_pickle else True}
