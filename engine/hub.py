"""Model-loading helpers every loader shares: safetensors by default, pickles only on opt-in, whether the hub can be
reached (decided once per process, in about two seconds at most), and one line with the fix when weights cannot be
found.

Offline, the hub client retries every file it asks for (about a minute before a missing model fails, and again on
every load). So before the first model that names a hub id loads, one short TCP connection to the hub (HF_ENDPOINT,
or the proxy in HTTPS_PROXY) says whether it answers; when it does not, the process works offline from then on
(`HF_HUB_OFFLINE=1`: the cache only, no retries), and a model the cache lacks fails at once, named with the fix.
An explicit HF_HUB_OFFLINE is obeyed: 1 works offline without probing, 0 never probes (the network is trusted)."""

from __future__ import annotations

import logging
import os
import re
import socket
import sys
import threading
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

from .errors import ModelUnavailable
from .settings import Settings

log = logging.getLogger(__name__)

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt")
DEFAULT_ENDPOINT = "https://huggingface.co"
PROBE_SECONDS = 2.0  # how long the one probe may take; a hub that cannot answer in that is as good as absent
HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")
_TRUE = {"1", "ON", "YES", "TRUE"}

_lock = threading.Lock()
_probed: dict[str, bool] = {}  # endpoint (or proxy) → reachable, for this process


def endpoint() -> str:
    return (os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")


def _offline_setting() -> bool | None:
    """HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE) as set: True, False, or None when neither is set."""
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        value = os.environ.get(name, "").strip()
        if value:
            return value.upper() in _TRUE
    return None


def _target(url: str) -> tuple[str, int] | None:
    """Where a connection to `url` goes first: its host, or the proxy the environment names for it."""
    parts = urlsplit(url)
    if not parts.hostname:
        return None
    proxy = urllib.request.getproxies().get(parts.scheme)
    if proxy and not urllib.request.proxy_bypass(parts.hostname):
        via = urlsplit(proxy if "://" in proxy else f"http://{proxy}")
        if via.hostname:
            return via.hostname, via.port or 80
    return parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)


def _connects(target: tuple[str, int], seconds: float) -> bool:
    """One TCP connection, name lookup included, in at most `seconds` (a lookup that hangs is left behind)."""
    answered: list[bool] = []

    def attempt() -> None:
        try:
            socket.create_connection(target, timeout=seconds).close()
            answered.append(True)
        except OSError:
            answered.append(False)

    thread = threading.Thread(target=attempt, name="hub-probe", daemon=True)
    thread.start()
    thread.join(seconds + 0.2)
    return bool(answered and answered[0])


def go_offline() -> None:
    """Offline for the rest of the process: the hub client raises at once instead of retrying (ours and Ray
    workers', which inherit the environment)."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    from huggingface_hub import constants

    constants.HF_HUB_OFFLINE = True
    for name in ("diffusers.loaders.lora_base", "diffusers.utils.hub_utils"):  # copied the flag when imported
        module = sys.modules.get(name)
        if module is not None and hasattr(module, "HF_HUB_OFFLINE"):
            module.HF_HUB_OFFLINE = True


def hub_online() -> bool:
    """Whether models may come from the hub in this process: HF_HUB_OFFLINE when set, else one probe (cached)."""
    setting = _offline_setting()
    if setting is not None:
        if setting:
            go_offline()  # set after huggingface_hub was imported, the flag still has to reach it
        return not setting
    url = endpoint()
    target = _target(url)
    if target is None:
        return True  # not a URL we can probe: let the hub client say what is wrong
    key = f"{target[0]}:{target[1]}"
    with _lock:
        if key not in _probed:
            _probed[key] = _connects(target, PROBE_SECONDS)
            if not _probed[key]:
                log.info("the hub at %s does not answer: working offline, from the local cache only", url)
                go_offline()
        return _probed[key]


def why_offline() -> str:
    if _offline_setting() and not any(v is False for v in _probed.values()):
        return "HF_HUB_OFFLINE is set"
    return f"the hub ({endpoint()}) is unreachable"


def is_hub_id(model_id: str) -> bool:
    """A hub id (owner/name) rather than a folder on this machine."""
    return bool(HUB_ID.match(model_id)) and not Path(model_id).expanduser().exists()


def hub_cache() -> Path:
    """Where the hub client keeps downloads (read from the environment now, as a subprocess would)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def cached(model_id: str) -> bool:
    """The hub cache holds a snapshot of `model_id` (whole or not: loading says which file is missing)."""
    snapshots = hub_cache() / f"models--{model_id.replace('/', '--')}" / "snapshots"
    try:
        return any(any(p.iterdir()) for p in snapshots.iterdir() if p.is_dir())
    except OSError:
        return False


def render_models(settings: Settings) -> list[tuple[str, str]]:
    """The models every render loads (model id, the setting that names it): the retrieval CLIP, SD 1.5, the canny
    ControlNet, the IP-Adapter and (for the step previews) TAESD. The others load on first use."""
    ids = settings.models()
    found = [
        (ids.clip, "DESIGN_STUDIO_CLIP_MODEL"),
        (ids.base, "DESIGN_STUDIO_BASE_MODEL"),
        (ids.controlnet, "DESIGN_STUDIO_CONTROLNET_MODEL"),
        (ids.ip_adapter, "DESIGN_STUDIO_IP_ADAPTER_MODEL"),
    ]
    if settings.previews:  # the step previews decode with it
        found.append((ids.taesd, "DESIGN_STUDIO_TAESD_MODEL"))
    return found


def check_render_models(settings: Settings) -> None:
    """Before anything heavy loads: offline, the render models the cache lacks fail here at once, all named."""
    if settings.profile == "tiny":
        return
    hub_ids = [(m, s) for m, s in render_models(settings) if is_hub_id(m)]
    if not hub_ids or hub_online():
        return
    missing = [(m, s) for m, s in hub_ids if not cached(m)]
    if missing:
        raise not_cached(missing, settings)


def require(model_id: str, setting: str, settings: Settings) -> dict:
    """Before `model_id` loads: a hub id makes the process decide whether the hub answers; offline, one the cache
    lacks fails at once (rather than after the hub client's retries). Returns what the load call adds: offline,
    `local_files_only` (the cache, without asking the hub for its latest revision first)."""
    if settings.profile == "tiny" or not is_hub_id(model_id) or hub_online():
        return {}
    if not cached(model_id):
        raise not_cached([(model_id, setting)], settings)
    return {"local_files_only": True}


def not_cached(missing: list[tuple[str, str]], settings: Settings) -> ModelUnavailable:
    names = [m for m, _ in missing]
    quoted = ", ".join(f"'{m}'" for m in names)
    message = (
        f"model {quoted} cannot be loaded: it is not in the local cache and {why_offline()}"
        if len(names) == 1
        else f"models {quoted} cannot be loaded: they are not in the local cache and {why_offline()}"
    )
    return ModelUnavailable(message, **_fixes(_download(names, missing[0][1] if len(missing) == 1 else None), settings))


def _download(names: list[str], setting: str | None) -> str:
    hf_home = os.environ.get("HF_HOME", "~/.cache/huggingface")
    real = f"for real images, run it once where the hub is reachable: it downloads the models into `HF_HOME={hf_home}`"
    if setting:
        real += f" (or `hf download {names[0]}` there, or set {setting} to a local folder)"
    return real


def _fixes(real: str, settings: Settings) -> dict:
    """The fix in each entry point's words (the app is started with `make run`, the CLI takes --profile): the demo
    profile first, then `real`, how to get the model itself."""
    if settings.profile == "tiny":
        return {"fix": "run `python -m engine prepare-tiny` to build the tiny profile"}
    return {
        "fix": f"set DESIGN_STUDIO_PROFILE=tiny to try it with random-weight demo models; {real}",
        "fixes": {
            "cli": f"add --profile tiny to try it with random-weight demo models; {real}",
            "app": "to try the app with random-weight demo models, start it with `DESIGN_STUDIO_PROFILE=tiny make run`;"
            f" {real.replace('run it once', 'start it once')}",
        },
    }


def unavailable(model_id: str, setting: str, settings: Settings, exc: Exception) -> ModelUnavailable:
    """A load that failed: why, in one line, with the fix."""
    log.debug("loading %s failed", model_id, exc_info=exc)
    where_to = f"set {setting} to a folder that holds the model, or to a hub id (`hf download OWNER/NAME` fetches one)"
    if Path(model_id).expanduser().exists():
        where, real = f"the folder {model_id} does not hold it in the layout it needs", where_to
    elif not is_hub_id(model_id):
        where, real = "no such folder, and it is not a hub id (owner/name)", f"check the path, or {where_to}"
    elif hub_online():
        first = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        where = f"the hub did not give it ({first})"
        real = f"check that the hub has {model_id} and lets you download it (`hf download {model_id}` says why not)"
    else:
        where, real = f"not found in the local cache, and {why_offline()}", _download([model_id], setting)
    return ModelUnavailable(f"model '{model_id}' cannot be loaded: {where}", **_fixes(real, settings))


FALLBACK_NOTICE = "requires torchvision (not installed); falling back to"


class _NoFallbackNotice(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return FALLBACK_NOTICE not in record.getMessage()


def quiet_import_notices() -> None:
    """Drop two notices the libraries print at import or load that nobody using the engine can act on (these only):

    - transformers without torchvision: importing diffusers' pipelines and its IP-Adapter loader imports
      `CLIPImageProcessor` and `SiglipImageProcessor`, names that now mean the torchvision backend, so transformers
      falls back to the PIL processors and says so. The PIL ones are what this engine has always used (torchvision is
      no dependency: the CPU torch build is installed alone), so the notice is about a choice already made.
    - huggingface_hub: diffusers still passes `local_dir_use_symlinks` when it reads a hub id's config, and
      huggingface_hub, which ignores that argument now, warns on every such load.

    Runs when this module is imported, before anything imports diffusers' pipelines (engine/local.py, ui/shared.py
    import this module first)."""
    import warnings

    notices = logging.getLogger("transformers.utils.import_utils")
    if not any(isinstance(f, _NoFallbackNotice) for f in notices.filters):
        notices.addFilter(_NoFallbackNotice())
    warnings.filterwarnings(
        "ignore", message="The `local_dir_use_symlinks` argument is deprecated", category=UserWarning
    )


quiet_import_notices()


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
