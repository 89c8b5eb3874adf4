"""`send_model`: a checkpoint or LoRA onto an engine in parts, through the interface alone (`renders.upload_begin`,
`upload_part`, `upload_finish`), so it works the same on a local engine and over HTTP; the sidebar's uploader and
the CLI's `--checkpoint FILE` / `--lora FILE` both call it.

The file is named by its SHA-256: a file the engine has already costs one call and no bytes, and an upload cut
short (a dropped tunnel, Ctrl-C) goes on from where the engine's copy ends. Parts are 4 MB at most (never more
than the engine takes) and shrink while they are slow, so no call comes near a tunnel's time limit."""

from __future__ import annotations

import hashlib
import io
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

from .errors import Busy, Conflict, ModelUnavailable

PART = 4 * 1024 * 1024  # bytes per part at first (the engine's `max_part` when lower)
SMALLEST_PART = 256 * 1024
SLOW = 20.0  # seconds: a part that took longer halves the next ones (a tunnel cuts calls at ~60-100 s)
RETRIES = 5  # a part that fails to arrive (the network, a busy engine) is tried again this many times


Source = bytes | bytearray | memoryview | str | os.PathLike | BinaryIO


def _open(source: Source) -> tuple[BinaryIO, bool]:
    """A seekable binary file over the source, and whether we opened it (and so close it)."""
    if isinstance(source, bytes | bytearray | memoryview):
        return io.BytesIO(source), True
    if isinstance(source, str | os.PathLike):
        return Path(source).open("rb"), True
    return source, False


def file_digest(f: BinaryIO) -> tuple[str, int]:
    """SHA-256 and size of a file, read from its start in 1 MB blocks."""
    f.seek(0)
    h, size = hashlib.sha256(), 0
    for block in iter(lambda: f.read(1 << 20), b""):
        h.update(block)
        size += len(block)
    return h.hexdigest(), size


def send_model(
    engine,
    kind: str,
    name: str,
    source: Source,
    on_progress: Callable[[int, int], Any] | None = None,
    part: int = PART,
) -> dict[str, Any]:
    """Add a `.safetensors` checkpoint or LoRA (`kind`) to `engine` under `name`, from a path, bytes or a binary
    file. `on_progress(bytes the engine holds, size)` is called after each part (and once at the start). What
    `add_model` answers ({name, kind, added}) plus `sent`: the bytes this call sent (0 for a file already there)."""
    f, owned = _open(source)
    try:
        sha, size = file_digest(f)
        status = engine.renders.upload_begin(kind, name, sha, size)
        if on_progress is not None:
            on_progress(status.received, size)
        if status.model is not None:
            return {**status.model, "sent": 0}
        sent, model = _send_rest(engine, kind, name, sha, size, f, status, on_progress, part)
        return {**(model or engine.renders.upload_finish(kind, name, sha)), "sent": sent}
    finally:
        if owned:
            f.close()


def _send_rest(engine, kind, name, sha, size, f, status, on_progress, part) -> tuple[int, dict | None]:
    """The parts from where the engine's copy ends to the file's end: the bytes sent, and the model when another
    caller finished the same file meanwhile."""
    step = max(1, min(part, status.max_part))
    offset, sent, failures = status.received, 0, 0
    while offset < size:
        f.seek(offset)
        chunk = f.read(min(step, size - offset))
        started = time.monotonic()
        try:
            status = engine.renders.upload_part(sha, offset, chunk)
        except (ModelUnavailable, Busy, Conflict) as exc:
            # not there (the network, a busy engine) or not where we thought: ask where the copy ends, go on there
            failures += 1
            if failures > RETRIES:
                raise
            if not isinstance(exc, Conflict):
                time.sleep(min(8.0, 0.5 * 2**failures))
                step = max(SMALLEST_PART, step // 2) if step > SMALLEST_PART else step
            status = engine.renders.upload_begin(kind, name, sha, size)
            if status.model is not None:  # another caller finished the same file meanwhile
                return sent, status.model
            offset = status.received
            continue
        took = time.monotonic() - started
        failures = 0
        sent += len(chunk)
        offset = status.received
        if took > SLOW:
            step = max(min(SMALLEST_PART, step), step // 2)
        elif took < SLOW / 8:
            step = min(max(1, min(part, status.max_part)), step * 2)
        if on_progress is not None:
            on_progress(offset, size)
    return sent, None
