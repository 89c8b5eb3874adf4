"""The engine's services, each over what it owns (a store, a folder, a model), all built once by `LocalEngine` and
handed the parts they share through one `Core`, as InvokeAI hands its services around in one object."""

from __future__ import annotations

import io
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PIL import Image

from ..errors import BadInput, NotFound

if TYPE_CHECKING:
    from ..catalog_models import CatalogModels
    from ..history import History
    from ..jobs import JobRunner
    from ..models import ModelStore
    from ..render.pipeline import RenderPipeline
    from ..render.plan import Plan
    from ..render.record import Recorder
    from ..schema import GenerateRequest
    from ..settings import Settings

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,119}$")


@dataclass(frozen=True)
class Core:
    """What the services share, built whole before any service (the job runner first, its handlers added once the
    services exist)."""

    settings: Settings
    data_dir: Path
    models: ModelStore
    retrieval: Any  # services.retrieval.RetrievalState (it is built over this package: typed by name only)
    history: History  # the History store (SQLite)
    recorder: Recorder
    pipeline: RenderPipeline
    jobs: JobRunner
    catalog_models: Callable[[], CatalogModels]  # the catalog's translator, LLM and scorer, loaded on first use

    def check(self, request: GenerateRequest) -> Plan:
        """Everything that would fail later, now: the plan (sketch, sizes, masks) and the styles it names."""
        planned = self.pipeline.plan(request)
        library = self.retrieval.library
        for name in [request.style] if request.style else [b.style for b in request.blend]:
            library.find(name, missing=BadInput)
        for region in request.regions:
            if region.style:
                library.find(region.style, missing=BadInput)
        return planned

    def folder(self, *parts: str) -> Path:
        return self.data_dir.joinpath("runs", *parts)

    def in_data_folder(self, path: str | Path) -> str:
        """A file of the engine as callers may see it: relative to the data folder ("outputs/…/RUN-0.png"), or by
        its name alone when it lies elsewhere; never the engine's own path."""
        try:
            return Path(path).relative_to(self.data_dir).as_posix()
        except ValueError:
            return Path(path).name

    def sketch_of(self, run_id: str) -> bytes | None:
        row = self.history.get(run_id)
        path = self.recorder.sketch_path(row["sketch_hash"]) if row else None
        return path.read_bytes() if path else None


def named(root: Path, name: str, what: str) -> Path:
    """`root/name` for a name a caller gave (a run, a batch, a dataset): only plain names, never a path."""
    if not isinstance(name, str) or not NAME.match(name) or name in (".", ".."):
        article = "an" if what[:1] in "aeiou" else "a"
        raise BadInput(f"'{name}' is not {article} {what} name (letters, digits, '.', '_' and '-')")
    path = root / name
    if not path.is_dir():
        raise NotFound(f"no {what} '{name}'")
    return path


def newest_json(root: Path, pattern: str) -> Iterator[tuple[Path, Any]]:
    """Each JSON file under `root` matching `pattern`, newest first, with its content; unreadable ones are skipped
    (a run still being written, a file someone broke)."""
    for path in sorted(root.glob(pattern), key=lambda p: -p.stat().st_mtime):
        try:
            yield path, json.loads(path.read_text())
        except (OSError, ValueError):
            continue


def read_file(path: Path, what: str) -> bytes:
    if not path.is_file():
        raise NotFound(f"{what} is not there (any more)")
    return path.read_bytes()


def thumbnail(data: bytes, px: int) -> bytes:
    """A JPEG no larger than px × px (px 0: the bytes as they are)."""
    if px <= 0:
        return data
    if not 16 <= px <= 1024:
        raise BadInput(f"px must be between 16 and 1024 (got {px})")
    with Image.open(io.BytesIO(data)) as im:
        im = im.convert("RGB")
        im.thumbnail((px, px))
        buf = io.BytesIO()
        im.save(buf, "JPEG", quality=82)
    return buf.getvalue()


def png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, "PNG")
    return buf.getvalue()
