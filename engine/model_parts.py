"""Big model files arriving in parts (`renders.upload_begin` / `upload_part` / `upload_finish`): a LoRA or a
checkpoint over a request's size limit, through tunnels that cut long or large requests.

An upload is addressed by its file's SHA-256, so the same file is never sent twice and an interrupted one goes on
where it stopped, from any client: the data folder's `uploads/` holds `SHA.part` (the bytes received, in order)
and `SHA.json` (the announced size). Every bound is held here, whoever calls: the total (the model upload limit),
each part's size, each part's offset (exactly where the copy ends), the count of uploads in progress; a part
starting at 0 is checked as the start of a safetensors file, so a file of another kind is refused at once. A whole
upload's SHA-256 is checked, then the file goes through `ModelFiles.add_file` (the checks `add_model` makes).
Uploads nobody touched for a day are removed. No torch here."""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import threading
import time
from pathlib import Path
from typing import Any

from .errors import BadInput, Conflict, NotFound, QueueFull, TooLarge
from .model_files import ModelFiles, check_safetensors

MAX_PART = 8 * 1024 * 1024  # the most one part may carry (less where the engine's request limit is lower)
MAX_PENDING = 32  # uploads in progress at once, every caller together
STALE_AFTER = 24 * 3600.0  # seconds an upload may sit untouched before it is removed
LOCKS = 64
SHA256 = re.compile(r"^[0-9a-f]{64}$")


def check_sha(sha256: str) -> str:
    sha = str(sha256).strip().lower()
    if not SHA256.match(sha):
        raise BadInput(f"'{str(sha256)[:80]}' is not a SHA-256 (64 hex digits)")
    return sha


class ModelParts:
    """The uploads in progress under `root`, placed through `files` when whole. `max_part`: the largest part."""

    def __init__(self, root: Path, files: ModelFiles, max_part: int = MAX_PART, stale_after: float = STALE_AFTER):
        self.root = Path(root)
        self.files = files
        self.max_part = max(1, min(MAX_PART, max_part))
        self.stale_after = stale_after
        self._lock = threading.Lock()  # guards the count of uploads in progress
        self._locks = [threading.Lock() for _ in range(LOCKS)]  # an upload's parts are written in turn
        self._hashers: dict[str, tuple[int, Any]] = {}  # SHA → (bytes hashed, the running hash), while in memory

    # ---- the three calls ---------------------------------------------------------------------------------------

    def begin(self, kind: str, name: str, sha256: str, size: int) -> dict[str, Any]:
        """Where the upload of this file stands: the model itself when the engine has it, else the bytes held."""
        sha = check_sha(sha256)
        name = self.files.check_new(kind, name, size)
        if size < 16:
            raise BadInput(f"'{name}' is not a .safetensors file (it is {size} bytes)")
        self.sweep()
        held = self.files.holding(kind, name, sha, size)
        if held is not None:
            return self._status(sha, size, size, held)
        with self._upload_lock(sha):
            meta = self._meta(sha)
            if meta is not None and meta["size"] != size:  # one file cannot have two sizes: start again
                self._discard(sha)
                meta = None
            if meta is None:
                with self._lock:
                    if len(list(self.root.glob("*.json"))) >= MAX_PENDING:
                        raise QueueFull(
                            f"{MAX_PENDING} model uploads are in progress on the engine",
                            fix="finish one, or wait: unfinished uploads are removed after a day",
                        )
                    self.root.mkdir(parents=True, exist_ok=True)
                    self._meta_path(sha).write_text(json.dumps({"size": size, "name": name}))
                    self._part_path(sha).touch()
            return self._status(sha, size, self._received(sha))

    def part(self, sha256: str, offset: int, chunk: bytes) -> dict[str, Any]:
        """The next bytes of a begun upload, appended where its copy ends."""
        sha = check_sha(sha256)
        if not chunk:
            raise BadInput("an upload part holds no bytes")
        if len(chunk) > self.max_part:
            raise TooLarge(
                f"a part of {len(chunk) / 1e6:.1f} MB is over the {self.max_part / 1e6:.1f} MB a part may carry",
                fix="send smaller parts",
            )
        with self._upload_lock(sha):
            meta = self._begun(sha)
            size = meta["size"]
            received = self._received(sha)
            if offset != received:
                raise Conflict(
                    f"the engine holds {received} bytes of this upload: the next part starts there, not at {offset}",
                    fix="ask upload_begin where it stands and send from there",
                )
            if offset + len(chunk) > size:
                raise TooLarge(f"the parts add up to more than the {size} bytes announced for this upload")
            if offset == 0:  # a file of another kind is refused at its first part, not after the last
                try:
                    check_safetensors(chunk, meta.get("name") or "the upload", size)
                except BadInput:
                    self._discard(sha)  # it can never become a model: nothing of it is kept
                    raise
            with self._part_path(sha).open("ab") as f:
                f.write(chunk)
            hashed, hasher = self._hashers.get(sha, (0, hashlib.sha256()))
            if hashed == offset:  # the running hash (after a restart it is computed again at the end)
                hasher.update(chunk)
                self._hashers[sha] = (offset + len(chunk), hasher)
            return self._status(sha, size, offset + len(chunk))

    def finish(self, kind: str, name: str, sha256: str) -> dict[str, Any]:
        """The whole upload, its SHA-256 checked, added as a model; its parts go."""
        sha = check_sha(sha256)
        with self._upload_lock(sha):
            meta = self._meta(sha)
            if meta is None:
                path = self.files.path(kind, self.files.check_new(kind, name, 0))
                if path.is_file() and self.files.digest(path) == sha:  # finished already (a retried call)
                    return {"name": path.stem, "kind": kind, "added": False}
                self._begun(sha)  # raises: not begun
            size, received = meta["size"], self._received(sha)
            if received < size:  # the call is right, the engine's copy is not there yet
                raise Conflict(
                    f"the upload is not whole: the engine holds {received} of its {size} bytes",
                    fix="send the rest with upload_part",
                )
            got = self._digest(sha, size)
            if got != sha:
                self._discard(sha)
                raise BadInput(
                    f"the bytes received have SHA-256 {got[:12]}…, not the {sha[:12]}… announced; they were dropped",
                    fix="send the file again",
                )
            try:
                added = self.files.add_file(kind, name, self._part_path(sha), sha)
            except Conflict:  # another file has the name: the bytes stay for an upload under another name
                raise
            except BadInput:  # the file itself is refused: nothing to keep it for
                self._discard(sha)
                raise
            self._discard(sha)  # placed (linked or copied): the upload's own copy goes
            return added

    # ---- housekeeping ------------------------------------------------------------------------------------------

    def sweep(self, now: float | None = None) -> int:
        """Remove uploads nobody touched for `stale_after` seconds (and stray parts); how many went."""
        if not self.root.is_dir():
            return 0
        now = time.time() if now is None else now
        gone = 0
        for sha in sorted({p.name.split(".")[0] for p in self.root.iterdir()}):
            if not SHA256.match(sha):
                continue
            with self._upload_lock(sha):
                times = [p.stat().st_mtime for p in (self._part_path(sha), self._meta_path(sha)) if p.exists()]
                if times and (now - max(times) > self.stale_after or not self._meta_path(sha).exists()):
                    self._discard(sha)
                    gone += 1
        return gone

    def _status(self, sha: str, size: int, received: int, model: dict | None = None) -> dict[str, Any]:
        return {"sha256": sha, "size": size, "received": received, "max_part": self.max_part, "model": model}

    def _upload_lock(self, sha: str) -> threading.Lock:
        """The lock of this upload (one of LOCKS: the memory for locks stays bounded whatever callers send)."""
        return self._locks[int(sha[:8], 16) % LOCKS]

    def _part_path(self, sha: str) -> Path:
        return self.root / f"{sha}.part"

    def _meta_path(self, sha: str) -> Path:
        return self.root / f"{sha}.json"

    def _meta(self, sha: str) -> dict | None:
        try:
            meta = json.loads(self._meta_path(sha).read_text())
        except (OSError, ValueError):
            return None
        return meta if isinstance(meta, dict) and isinstance(meta.get("size"), int) else None

    def _begun(self, sha: str) -> dict:
        meta = self._meta(sha)
        if meta is None:
            raise NotFound(
                f"no upload of {sha[:12]}… is in progress on the engine (none was begun, or it was finished or "
                "removed after a day)",
                fix="begin it with upload_begin",
            )
        return meta

    def _received(self, sha: str) -> int:
        try:
            return self._part_path(sha).stat().st_size
        except FileNotFoundError:
            return 0

    def _digest(self, sha: str, size: int) -> str:
        hashed, hasher = self._hashers.get(sha, (0, None))
        if hasher is not None and hashed == size:
            return hasher.hexdigest()
        h = hashlib.sha256()
        with self._part_path(sha).open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        return h.hexdigest()

    def _discard(self, sha: str) -> None:
        self._hashers.pop(sha, None)
        for path in (self._part_path(sha), self._meta_path(sha)):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
