"""Which retrieval model is active (the base CLIP or a tuned adapter) and moving the collections between them.

Each retrieval model has its own Chroma collections (styles, history, products): vectors from two models do not
mix. Switching brings the target's collections in step with the active ones (new items embedded with the target
model, removed ones removed, hidden flags copied) and then points retrieval at them. The base collections stay,
so switching back only re-embeds what changed meanwhile, usually nothing.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PIL import Image

from .errors import BadInput
from .files import write_atomic
from .schema import Progress

log = logging.getLogger(__name__)

ACTIVE_FILE = "retrieval.json"
BATCH = 32


def adapter_info(run_dir: Path) -> dict[str, Any]:
    """What names an adapter in collections and metadata: its run folder, name, scenario and a content id."""
    from .tune.train import ADAPTER_FILE, read_adapter

    run_dir = Path(run_dir).expanduser().resolve()
    meta = read_adapter(run_dir)
    digest = hashlib.sha256((run_dir / "adapter" / ADAPTER_FILE).read_bytes()).hexdigest()[:10]
    return {"run_dir": str(run_dir), "name": run_dir.name, "scenario": meta.get("scenario"), "id": digest}


def read_active(data_dir: Path) -> dict[str, Any] | None:
    """The adapter retrieval uses now (None: the base CLIP). A missing adapter folder falls back to the base."""
    path = Path(data_dir) / ACTIVE_FILE
    if not path.is_file():
        return None
    try:
        info = json.loads(path.read_text()).get("adapter")
    except (OSError, ValueError):
        log.warning("%s is damaged; retrieval uses the base model", path)
        return None
    if info and not Path(info["run_dir"]).is_dir():
        log.warning("the active adapter %s is gone; retrieval uses the base model", info["run_dir"])
        return None
    return info


def write_active(data_dir: Path, info: dict[str, Any] | None) -> None:
    record = {"adapter": info, "switched_at": time.time()}
    write_atomic(Path(data_dir) / ACTIVE_FILE, json.dumps(record, indent=2).encode())


def suffix(info: dict[str, Any] | None) -> str:
    """The collection-name suffix of a retrieval model: none for the base, `-tuned-ID` for an adapter."""
    return f"-tuned-{info['id']}" if info else ""


def _all(col, include: list[str]) -> dict[str, Any]:
    return col.get(include=include)


def _report(on_progress, stage: str, done: int, total: int, started: float) -> None:
    if on_progress:
        on_progress(Progress(stage, done, total, time.perf_counter() - started))


def sync_library(src, dst, on_progress: Callable[[Progress], None] | None = None) -> dict[str, int]:
    """Make `dst` (another model's style library) hold the styles of `src`: missing ones embedded with `dst`'s
    model from the stored images, ones gone from `src` removed, hidden flags copied."""
    import base64

    started = time.perf_counter()
    want = {s.id: s for s in src.list(include_hidden=True)}
    have = {s.id: s for s in dst.list(include_hidden=True)}
    dst._delete(sorted(have.keys() - want.keys()))
    missing = sorted(want.keys() - have.keys())
    for i in range(0, len(missing), BATCH):
        ids = missing[i : i + BATCH]
        images = src.images.get(ids=ids, include=["documents"])
        data = dict(zip(images["ids"], images["documents"], strict=True))
        metas = {}
        for col in (src.vectors, src.hidden):
            got = col.get(ids=ids, include=["metadatas"])
            metas.update(zip(got["ids"], got["metadatas"], strict=True))
        dst._put([(sid, base64.b64decode(data[sid]), metas[sid]) for sid in ids if sid in data and sid in metas])
        _report(on_progress, "styles", min(i + BATCH, len(missing)), len(missing), started)
    flipped = 0
    for sid in want.keys() & have.keys():
        if want[sid].hidden != have[sid].hidden:
            dst.set_hidden(sid, want[sid].hidden)
            flipped += 1
    return {"embedded": len(missing), "removed": len(have.keys() - want.keys()), "hidden_changed": flipped}


def sync_index(src_col, dst_col, embeddings, path_key: str, stage: str, on_progress=None) -> dict[str, int]:
    """The same for an image index (history outputs, tagged products): images re-read from `path_key`."""
    started = time.perf_counter()
    want = _all(src_col, ["metadatas", "documents"])
    have = set(dst_col.get(include=[])["ids"])
    gone = sorted(have - set(want["ids"]))
    if gone:
        dst_col.delete(ids=gone)
    todo = [
        (i, m, d) for i, m, d in zip(want["ids"], want["metadatas"], want["documents"], strict=True) if i not in have
    ]
    embedded = skipped = 0
    for b in range(0, len(todo), BATCH):
        batch, images = [], []
        for item in todo[b : b + BATCH]:
            try:
                with Image.open(item[1][path_key]) as im:
                    images.append(im.convert("RGB"))
                batch.append(item)
            except (OSError, KeyError):
                skipped += 1  # the file is gone: it cannot be searched with either model
        if batch:
            dst_col.upsert(
                ids=[i for i, _, _ in batch],
                embeddings=embeddings.embed_images(images),
                metadatas=[m for _, m, _ in batch],
                documents=[d for _, _, d in batch] if any(d for _, _, d in batch) else None,
            )
            embedded += len(batch)
        _report(on_progress, stage, min(b + BATCH, len(todo)), len(todo), started)
    return {"embedded": embedded, "removed": len(gone), "skipped": skipped}


def find_runs(root: Path) -> list[dict[str, Any]]:
    """Trained adapters under `root` (a RUN_DIR holds adapter/adapter.safetensors), newest first."""
    from .tune.train import ADAPTER_FILE

    found = []
    for weights in sorted(Path(root).glob(f"**/adapter/{ADAPTER_FILE}"), key=lambda p: -p.stat().st_mtime):
        try:
            found.append(adapter_info(weights.parent.parent))
        except BadInput:
            continue
    return found


def check_run(run_dir: Path | None) -> None:
    if run_dir is not None and not Path(run_dir).expanduser().is_dir():
        raise BadInput(f"{run_dir} is not a folder; give the RUN_DIR of `tune train`")
