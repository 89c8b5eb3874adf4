"""IP-Adapter image embeddings kept in memory and on disk, so a known style is encoded once per data folder, not once
per process: the image encoder (ViT-H) costs seconds a reference on a CPU, the file a millisecond to read.

    store = StyleEmbeds(folder, encoder_id(settings))      # or StyleEmbeds(None, ...): memory only
    key = store.key(image, dtype, device)                  # the pixels, the encoder, its dtype and device type
    embed = store.get(key)                                 # memory → disk → None (then encode and `put`)
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from collections import OrderedDict
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from PIL import Image

log = logging.getLogger(__name__)

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")  # what `from_pretrained` reads, in its order


def pixels_hash(image: Image.Image) -> str:
    """The hash of an image's pixels, size and mode: the same picture from any file or request is the same style."""
    return hashlib.sha1(image.tobytes() + repr((image.size, image.mode)).encode()).hexdigest()


def encoder_id(settings) -> str:
    """The IP-Adapter image encoder in force: its model id and folder, and its weights file's resolved path, size and
    modification time (a hub download is a blob named by its hash; a local folder rebuilt in place is another
    encoder), so one encoder's embeddings never reach another."""
    ids = settings.models()
    # load_ip_adapter's rule: a folder name without "/" lives under the IP-Adapter's subfolder
    folder = ids.ip_adapter_image_encoder
    if "/" not in folder:
        folder = f"{ids.ip_adapter_subfolder}/{folder}"
    return f"{ids.ip_adapter}/{folder}@{_weights_version(ids.ip_adapter, folder)}"


def _weights_version(repo: str, folder: str) -> str:
    for name in WEIGHT_FILES:
        path = Path(repo, folder, name)
        if not path.is_file():  # a hub id: the file in the local hub cache, if downloaded
            try:
                from huggingface_hub import try_to_load_from_cache

                cached = try_to_load_from_cache(repo, f"{folder}/{name}")
            except Exception:  # not a hub id either
                cached = None
            if not isinstance(cached, str):
                continue
            path = Path(cached)
        stat = path.resolve().stat()
        return f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}"
    return "unresolved"


@dataclass(frozen=True)
class Key:
    """What an embedding depends on. Another encoder, dtype or device kind computes other numbers, and the same
    request must give the same pixels whether its embedding was encoded now or read back."""

    pixels: str
    encoder: str
    dtype: str
    device: str

    @property
    def name(self) -> str:
        return hashlib.sha256(repr(sorted(asdict(self).items())).encode()).hexdigest()[:40]


class StyleEmbeds:
    """Image embeddings by `Key`: the newest `size` in memory, every one as a safetensors file under `folder` (none:
    memory only). A file that cannot be read, or was written for another key, is missing, never an error."""

    def __init__(self, folder: Path | None, encoder: str, size: int = 64):
        self.folder = Path(folder) if folder is not None else None
        self.encoder = encoder
        self.size = size
        self._memory: OrderedDict[Key, torch.Tensor] = OrderedDict()

    def key(self, image: Image.Image, dtype: torch.dtype, device: torch.device) -> Key:
        return Key(pixels_hash(image), self.encoder, str(dtype).removeprefix("torch."), torch.device(device).type)

    def path(self, key: Key) -> Path | None:
        return self.folder / f"{key.name}.safetensors" if self.folder is not None else None

    def get(self, key: Key, device: torch.device | str = "cpu") -> torch.Tensor | None:
        """The embedding from memory, else from disk (then kept in memory on `device`), else None."""
        if key in self._memory:
            self._memory.move_to_end(key)
            return self._memory[key]
        embed = self._read(key)
        if embed is not None:
            embed = embed.to(device)
            self._remember(key, embed)
        return embed

    def put(self, key: Key, embed: torch.Tensor) -> None:
        """Keep an embedding in memory and on disk (atomically: a reader never sees half a file)."""
        self._remember(key, embed)
        path = self.path(key)
        if path is None:
            return
        from safetensors.torch import save_file

        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{key.name}.", suffix=".tmp")
            os.close(fd)
            try:
                save_file({"embed": embed.detach().cpu().contiguous()}, tmp, metadata=asdict(key))
                os.replace(tmp, path)
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)
        except OSError as exc:  # a full or read-only disk costs the next process an encode, not this render
            log.warning("could not keep a style embedding in %s: %s", path.parent, exc)

    def _remember(self, key: Key, embed: torch.Tensor) -> None:
        self._memory[key] = embed
        self._memory.move_to_end(key)
        while len(self._memory) > self.size:
            self._memory.popitem(last=False)

    def _read(self, key: Key) -> torch.Tensor | None:
        path = self.path(key)
        if path is None or not path.is_file():
            return None
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt") as f:
                if f.metadata() != asdict(key):
                    raise ValueError("written for another key")
                embed = f.get_tensor("embed")
            if str(embed.dtype).removeprefix("torch.") != key.dtype or embed.ndim != 2:
                raise ValueError(f"a {embed.dtype} tensor of shape {tuple(embed.shape)}")
        except Exception as exc:  # truncated, corrupt, foreign: encode again and overwrite it
            log.info("style embedding %s unreadable (%s): encoding again", path.name, exc)
            return None
        return embed
