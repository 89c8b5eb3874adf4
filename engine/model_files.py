"""The designer's own models on the engine: base checkpoints (one `.safetensors` file each, as A1111 and Civitai
share them) and LoRAs, kept by name in the data folder (`models/checkpoints/`, `models/loras/`), plus the
ControlNet types a render can follow (engine/rules/controlnets.py). Callers name them; the engine resolves the
names to its files.

No torch here: the plan resolves names when a request arrives (a missing LoRA is a 422 at once), the loaders in
engine/models.py read the files."""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import tempfile
import threading
from collections.abc import Collection
from pathlib import Path

from .errors import BadInput, Conflict, NotFound, TooLarge
from .rules.controlnets import CONTROLS

FOLDERS: dict[str, str] = {"checkpoint": "checkpoints", "lora": "loras"}
# A file name as shown in the sidebar and in `<lora:name:weight>`: letters, digits, spaces and . _ - + ( )
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._+()-]{0,119}$")
# A hub id: owner/name
HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")
SAFETENSORS_HEADER_MAX = 100 * 1024 * 1024  # safetensors' own limit on the JSON header


def check_name(name: str, what: str) -> str:
    name = name.strip().removesuffix(".safetensors")
    if not NAME.match(name):
        raise BadInput(
            f"{what} name '{name[:60]}' has characters that are not allowed",
            fix="use letters, digits, spaces and . _ - + ( ), up to 120",
        )
    return name


def check_safetensors(data: bytes, name: str, total: int | None = None) -> None:
    """The bytes are a safetensors file (its header is length-prefixed JSON): anything else is refused unread.
    `total`: the whole file's length when `data` is only its beginning (an upload's first part, a file's header):
    what that beginning holds is checked, the tensors' extent against `total`."""
    import json
    import struct

    total = len(data) if total is None else total
    if total < 8:
        raise BadInput(f"'{name}' is not a .safetensors file (it is {total} bytes)")
    if len(data) < 8:
        return  # nothing to read yet
    (size,) = struct.unpack("<Q", data[:8])
    if size > min(SAFETENSORS_HEADER_MAX, total - 8):
        raise BadInput(f"'{name}' is not a .safetensors file", fix="export the model as .safetensors")
    if len(data) < 8 + size:
        return  # the header goes on past what is here
    try:
        header = json.loads(data[8 : 8 + size])
    except ValueError:
        raise BadInput(f"'{name}' is not a .safetensors file", fix="export the model as .safetensors") from None
    if not isinstance(header, dict) or not any(k != "__metadata__" for k in header):
        raise BadInput(f"'{name}' holds no tensors")
    ends = [
        t.get("data_offsets", [0, 0])[1] if isinstance(t, dict) else None
        for k, t in header.items()
        if k != "__metadata__"
    ]
    need = max((e for e in ends if isinstance(e, int)), default=0)
    if any(not isinstance(e, int) for e in ends) or need != total - 8 - size:
        # a file cut short in the copy (or padded): its tensors would fail to load at the first render
        raise BadInput(
            f"'{name}' is not a whole .safetensors file (its tensors need {need} bytes, it has {total - 8 - size})",
            fix="copy or export it again",
        )


def check_safetensors_file(path: Path, name: str) -> None:
    """`check_safetensors` for a file on disk, reading its header only."""
    import struct

    total = path.stat().st_size
    with path.open("rb") as f:
        head = f.read(8)
        size = struct.unpack("<Q", head)[0] if len(head) == 8 else 0
        check_safetensors(head, name, total)  # the length first: a huge one is refused before it is read
        check_safetensors(head + f.read(size), name, total)


class ModelFiles:
    """The checkpoints and LoRAs in `root` (the data folder's `models/`). `allowed`: the hub ids a request may name as
    its checkpoint (the settings' `allowed_checkpoints()`); any other name must be a file in `root`."""

    def __init__(self, root: Path, max_bytes: int, allowed: Collection[str] = ()):
        self.root = Path(root)
        self.max_bytes = max_bytes
        self.allowed = frozenset(allowed)
        self._placing = threading.Lock()  # only where the file system cannot link a file in place (see `_place`)
        self._digests: dict[tuple[str, int], tuple[int, str]] = {}  # (path, size) → (mtime, SHA-256)

    def folder(self, kind: str) -> Path:
        return self.root / FOLDERS[kind]

    def names(self, kind: str) -> list[str]:
        folder = self.folder(kind)
        if not folder.is_dir():
            return []
        return sorted((p.stem for p in folder.glob("*.safetensors") if NAME.match(p.stem)), key=str.lower)

    def list(self) -> dict:
        """What the sidebar offers: each file's name and size, and the ControlNet types with what they expect."""
        out: dict = {}
        for kind in FOLDERS:
            out[kind + "s"] = [
                {"name": n, "mb": round(self.path(kind, n).stat().st_size / 1e6, 1)} for n in self.names(kind)
            ]
        out["controls"] = [{"name": c.name, "label": c.label, "expects": c.expects} for c in CONTROLS.values()]
        out["folders"] = {kind: str(self.folder(kind)) for kind in FOLDERS}
        return out

    def path(self, kind: str, name: str) -> Path:
        return self.folder(kind) / f"{name}.safetensors"

    def resolve(self, kind: str, name: str) -> str:
        """A name → the file on this engine; a checkpoint may also be a hub id the operator allows (`allowed`), loaded
        from the hub's cache, never a folder of that name on the engine's machine. Errors name no engine path."""
        if kind == "checkpoint" and HUB_ID.match(name.strip()):
            if name.strip() in self.allowed:
                return name.strip()
            raise BadInput(
                f"checkpoint '{name.strip()}' is not one this engine offers: a render names a checkpoint uploaded to "
                "the engine, or a hub id its operator allows",
                fix="upload the .safetensors file, or ask the operator to add the id to DESIGN_STUDIO_ALLOWED_MODELS",
            )
        name = check_name(name, kind)
        path = self.path(kind, name)
        if not path.is_file():
            have = self.names(kind)
            raise NotFound(
                f"no {kind} '{name}' on the engine" + (f" (it has: {', '.join(have[:8])})" if have else ""),
                fix=f"upload it (CLI: --{kind} FILE), or copy the .safetensors file into {FOLDERS[kind]}/ in the "
                "engine's models folder",
            )
        return str(path)

    def add(self, kind: str, name: str, data: bytes) -> dict:
        """Keep an uploaded file under `name` (safetensors only; the same bytes again are not written twice; another
        file by that name is refused, never overwritten). Uploads under one name at once each write their own
        temporary file and the first to be put in place wins: the others are "added": False when their bytes are the
        same, refused when not; the stored file is always one complete upload."""
        name = check_name(name, kind)  # a plain name: one with a folder in it is refused, not cut to its end
        if len(data) > self.max_bytes:
            raise TooLarge(
                f"'{name}' is {len(data) / 1e6:.0f} MB, over the {self.max_bytes / 1e6:.0f} MB upload limit",
                fix=f"copy the file into {FOLDERS[kind]}/ in the engine's models folder",
            )
        check_safetensors(data, name)
        path = self.path(kind, name)
        if path.is_file():
            return self._same(kind, name, path, data)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{name}.", suffix=".part")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            if not self._place(Path(tmp), path):
                return self._same(kind, name, path, data)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        return {"name": name, "kind": kind, "added": True}

    def check_new(self, kind: str, name: str, size: int) -> str:
        """The checks of `add` that need only the name and the size (an upload in parts makes them first)."""
        if kind not in FOLDERS:
            raise BadInput(f"a model is a checkpoint or a lora (not '{kind}')")
        name = check_name(name, kind)
        if size > self.max_bytes:
            raise TooLarge(
                f"'{name}' is {size / 1e6:.0f} MB, over the {self.max_bytes / 1e6:.0f} MB upload limit",
                fix=f"copy the file into {FOLDERS[kind]}/ in the engine's models folder",
            )
        return name

    def holding(self, kind: str, name: str, sha256: str, size: int) -> dict | None:
        """What `add` would answer for a file with this SHA-256 and size, without its bytes: the same file under
        `name` ("added": False), or the same file under another name of that kind (then linked under `name`, kept
        once: "added": True); None when the engine holds no such file. Another file under `name` is refused."""
        name = self.check_new(kind, name, size)
        path = self.path(kind, name)
        if path.is_file():
            if path.stat().st_size == size and self.digest(path) == sha256:
                return {"name": name, "kind": kind, "added": False}
            raise Conflict(f"a different {kind} named '{name}' is already on the engine", fix="rename the file")
        folder = self.folder(kind)
        for other in sorted(folder.glob("*.safetensors")) if folder.is_dir() else []:
            if other.stat().st_size == size and self.digest(other) == sha256:
                try:
                    os.link(other, path)  # one file, two names: never a move of the other name's file
                except FileExistsError:  # placed meanwhile by another upload under this name
                    return self._same_file(kind, name, path, size, sha256)
                except OSError:
                    return None  # no hard links here: the bytes are sent again
                return {"name": name, "kind": kind, "added": True}
        return None

    def add_file(self, kind: str, name: str, source: Path, sha256: str) -> dict:
        """`add` for a whole file on the engine's disk (a finished upload in parts, whose SHA-256 was checked): the
        same checks, and the file is linked into place (copied where it cannot be), never read into memory."""
        name = self.check_new(kind, name, source.stat().st_size)
        check_safetensors_file(source, name)
        path = self.path(kind, name)
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.is_file() or not _linkable(source, path):
            if path.is_file():
                return self._same_file(kind, name, path, source.stat().st_size, sha256)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{name}.", suffix=".part")
            os.close(fd)
            try:
                shutil.copyfile(source, tmp)
                placed = self._place(Path(tmp), path)
            finally:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)
        else:
            placed = self._place(source, path)
        if not placed:
            return self._same_file(kind, name, path, source.stat().st_size, sha256)
        self._digests[(str(path), source.stat().st_size)] = (path.stat().st_mtime_ns, sha256)
        return {"name": name, "kind": kind, "added": True}

    def digest(self, path: Path) -> str:
        """A model file's SHA-256, remembered while the file stays as it was."""
        stat = path.stat()
        key = (str(path), stat.st_size)
        known = self._digests.get(key)
        if known is not None and known[0] == stat.st_mtime_ns:
            return known[1]
        found = _sha256(path)
        self._digests[key] = (stat.st_mtime_ns, found)
        return found

    def _same_file(self, kind: str, name: str, path: Path, size: int, sha256: str) -> dict:
        if path.stat().st_size == size and self.digest(path) == sha256:
            return {"name": name, "kind": kind, "added": False}
        raise Conflict(f"a different {kind} named '{name}' is already on the engine", fix="rename the file")

    def _place(self, tmp: Path, path: Path) -> bool:
        """Put the complete file `tmp` at `path` unless a file is there already (False then), atomically: a hard link
        fails when the name is taken, so two uploads can never both think they placed it."""
        try:
            os.link(tmp, path)
            return True
        except FileExistsError:
            return False
        except OSError:  # a file system without hard links: one process's uploads take turns instead
            with self._placing:
                if path.exists():
                    return False
                os.replace(tmp, path)
                return True

    @staticmethod
    def _same(kind: str, name: str, path: Path, data: bytes) -> dict:
        """The answer to an upload under a taken name: nothing to do for the same bytes, a refusal for others."""
        if path.stat().st_size == len(data) and _sha256(path) == hashlib.sha256(data).hexdigest():
            return {"name": name, "kind": kind, "added": False}
        raise Conflict(f"a different {kind} named '{name}' is already on the engine", fix="rename the file")


def _linkable(source: Path, target: Path) -> bool:
    """Whether a hard link from `source` can put it at `target` (the same file system)."""
    try:
        return source.stat().st_dev == target.parent.stat().st_dev
    except OSError:
        return False


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
