"""The style library: reference images and their CLIP vectors in persistent Chroma collections.

Visible styles' vectors live in `<name>` (cosine space, searched through langchain-chroma), hidden
ones in `<name>-hidden`, so a search needs no metadata filter (a filter makes Chroma scan: 20–30 ms
instead of 2 ms over 100k styles). Each reference image lives base64-encoded in `<name>-images`
under the same id, so a library shared through a `chroma run` server carries its images with it.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import io
import json
import logging
import os
import re
import threading
import time
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path

import chromadb
from chromadb.config import Settings as ChromaSettings
from langchain_chroma import Chroma
from PIL import Image

from .embeddings import ClipEmbeddings
from .errors import BadInput, Conflict, EngineError, NotFound
from .images import decode, fit, png_bytes
from .schema import StyleHit, StyleInfo

log = logging.getLogger(__name__)

# Chroma's default HNSW settings miss the exact top hit for ~11 % of queries on clustered data;
# these found it for all of them at ~2.5 ms over 20k vectors (measured on chromadb 1.5.9).
HNSW = {"space": "cosine", "ef_search": 200, "ef_construction": 200, "max_neighbors": 32}
SHIPPED_DIR = Path(os.environ.get("DESIGN_STUDIO_STYLES_KB", Path(__file__).resolve().parent.parent / "styles_kb"))
NAME_RE = re.compile(r"^[\w .,'&()+-]{1,60}$")


def chroma_client(path: Path | None = None, host: str | None = None, port: int = 8000):
    """Embedded persistent Chroma by default; a `chroma run` server when a host is given."""
    settings = ChromaSettings(anonymized_telemetry=False)
    if host:
        try:
            return chromadb.HttpClient(host=host, port=port, settings=settings)
        except Exception as exc:  # chromadb raises plain ValueError/ConnectError variants
            raise EngineError(
                f"cannot reach the Chroma server at {host}:{port} ({exc})",
                fix="start it with `chroma run --path DIR --port N` or unset DESIGN_STUDIO_CHROMA_HOST",
            ) from None
    assert path is not None
    path.mkdir(parents=True, exist_ok=True)
    return chromadb.PersistentClient(path=str(path), settings=settings)


def style_id(image: bytes, name: str, description: str, tags: list[str]) -> str:
    """Content hash: the same style gives the same id; any change gives a new one."""
    h = hashlib.sha256(image)
    h.update(json.dumps([name, description, sorted(tags)]).encode())
    return h.hexdigest()[:32]


_registry = threading.Lock()
_thread_locks: dict[str, threading.RLock] = {}
_held = threading.local()  # per thread: the guards it holds now (a guard taken again inside itself is not re-locked)


class WriteGuard:
    """One writer at a time on a library's collections, so that a check and the write it decides (a name is free, a
    style is visible) cannot be split by another writer: a lock shared by every library over the same store in this
    process and, for an embedded store, an advisory lock file in its folder for the other processes on that data
    folder (the Studio, a server, a CLI command). A `chroma run` server shared by several machines has no such file:
    there, writers on other machines are not held back."""

    def __init__(self, client, collection: str):
        settings = client.get_settings()
        persistent = getattr(settings, "is_persistent", False) and getattr(settings, "persist_directory", None)
        self.path = Path(settings.persist_directory) / f".{collection}.write-lock" if persistent else None
        self.key = str(self.path) if self.path else f"{id(client)}:{collection}"
        with _registry:
            self.lock = _thread_locks.setdefault(self.key, threading.RLock())

    @contextlib.contextmanager
    def __call__(self) -> Iterator[None]:
        held: set[str] = _held.__dict__.setdefault("keys", set())
        if self.key in held:  # this thread holds it already
            yield
            return
        with self.lock, self._file():
            held.add(self.key)
            try:
                yield
            finally:
                held.discard(self.key)

    @contextlib.contextmanager
    def _file(self) -> Iterator[None]:
        try:
            import fcntl
        except ImportError:  # not on POSIX: this process's lock only
            fcntl = None  # type: ignore[assignment]
        if self.path is None or fcntl is None:
            yield
            return
        with open(self.path, "a+b") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)


def _info(sid: str, meta: dict) -> StyleInfo:
    return StyleInfo(
        id=sid,
        name=meta.get("name", sid),
        description=meta.get("description", ""),
        tags=[t for t in meta.get("tags", "").split(",") if t],
        source=meta.get("source", "user"),
        hidden=bool(meta.get("hidden", False)),
        created_at=float(meta.get("created_at", 0.0)),
    )


class StyleLibrary:
    """Ingest, add, hide, remove and search styles; one collection per retrieval model."""

    def __init__(
        self,
        client,
        embeddings: ClipEmbeddings,
        collection: str = "styles",
        max_pixels: int = 64_000_000,
        max_bytes: int = 20 * 1024 * 1024,
    ):
        self.client = client
        self.embeddings = embeddings
        self.max_pixels = max_pixels
        self.max_bytes = max_bytes
        self.vectors = client.get_or_create_collection(collection, configuration={"hnsw": HNSW})
        self.hidden = client.get_or_create_collection(f"{collection}-hidden", configuration={"hnsw": HNSW})
        self.images = client.get_or_create_collection(f"{collection}-images")
        self.store = Chroma(client=client, collection_name=collection, embedding_function=embeddings)
        self._image_cache = lru_cache(maxsize=64)(self._load_image)
        self.writing = WriteGuard(client, collection)  # add, remove, hide and ingest: one at a time

    # ---- reading -------------------------------------------------------------------------
    def list(self, include_hidden: bool = False) -> list[StyleInfo]:
        styles = []
        for col in (self.vectors, self.hidden) if include_hidden else (self.vectors,):
            got = col.get(include=["metadatas"])
            styles += [_info(i, m or {}) for i, m in zip(got["ids"], got["metadatas"], strict=True)]
        return sorted(styles, key=lambda s: (s.source != "shipped", s.name.lower()))

    def count(self) -> int:
        """Visible styles."""
        return self.vectors.count()

    def vector(self, sid: str) -> list[float]:
        for col in (self.vectors, self.hidden):
            got = col.get(ids=[sid], include=["embeddings"])
            if got["ids"]:
                return [float(v) for v in got["embeddings"][0]]
        raise NotFound(f"style {sid} is not in the library")

    def find(self, name_or_id: str, missing: type[BadInput] = NotFound) -> StyleInfo:
        """A style by id or by name (case-insensitive); `missing` (NotFound unless the caller says) if there is none.
        A render that names an unknown style passes BadInput: the request is wrong, not a missing resource."""
        wanted = name_or_id.strip().lower()
        for s in self.list(include_hidden=True):
            if s.id == name_or_id or s.name.lower() == wanted:
                return s
        names = ", ".join(s.name for s in self.list()[:12])
        raise missing(f"unknown style '{name_or_id}'; known styles: {names or 'none (the library is empty)'}")

    def image(self, sid: str) -> Image.Image:
        return self._image_cache(sid).copy()

    def _load_image(self, sid: str) -> Image.Image:
        got = self.images.get(ids=[sid], include=["documents"])
        if not got["ids"]:
            raise NotFound(f"style {sid} has no stored image; add it again")
        return Image.open(io.BytesIO(base64.b64decode(got["documents"][0]))).convert("RGB")

    # ---- searching -----------------------------------------------------------------------
    def search_vector(self, vector: list[float], k: int = 3) -> list[StyleHit]:
        """Top-k visible styles; score = cosine similarity = 1 − Chroma's cosine distance, in [−1, 1]."""
        pairs = self.store.similarity_search_by_vector_with_relevance_scores(vector, k=k)
        hits = []
        for doc, distance in pairs:
            info = _info(doc.id, doc.metadata)
            hits.append(StyleHit(info.id, info.name, 1.0 - float(distance), info.description, info.tags, info.source))
        return hits

    def search_text(self, text: str, k: int = 3) -> list[StyleHit]:
        return self.search_vector(self.embeddings.embed_query(text), k)

    def search_image(self, image: Image.Image, k: int = 3) -> list[StyleHit]:
        return self.search_vector(self.embeddings.embed_images([image])[0], k)

    # ---- writing -------------------------------------------------------------------------
    def _put(self, entries: list[tuple[str, bytes, dict]]) -> None:
        """Embed and store; each entry goes to the visible or hidden collection by its `hidden` flag."""
        if not entries:
            return
        images = [Image.open(io.BytesIO(data)).convert("RGB") for _, data, _ in entries]
        vectors = self.embeddings.embed_images(images)
        ids = [sid for sid, _, _ in entries]
        docs = [f"{m['name']}: {m.get('description', '')}" for _, _, m in entries]
        self.images.upsert(
            ids=ids,
            documents=[base64.b64encode(data).decode() for _, data, _ in entries],
            embeddings=[[0.0, 1.0]] * len(ids),  # this collection is a key-value store, never searched
        )
        for hidden, col in ((False, self.vectors), (True, self.hidden)):
            picked = [i for i, (_, _, m) in enumerate(entries) if bool(m.get("hidden")) == hidden]
            if picked:
                col.upsert(
                    ids=[ids[i] for i in picked],
                    embeddings=[vectors[i] for i in picked],
                    metadatas=[entries[i][2] for i in picked],
                    documents=[docs[i] for i in picked],
                )

    def _delete(self, ids: list[str]) -> None:
        if ids:
            for col in (self.vectors, self.hidden, self.images):
                col.delete(ids=ids)
            self._image_cache.cache_clear()

    def ingest(self, manifest_path: Path = SHIPPED_DIR / "manifest.json") -> dict[str, int]:
        """Make the shipped styles match the manifest: new ones added, changed ones replaced, gone ones removed."""
        with self.writing():
            return self._ingest(manifest_path)

    def _ingest(self, manifest_path: Path) -> dict[str, int]:
        manifest = json.loads(Path(manifest_path).read_text())
        visible = self.vectors.get(where={"source": "shipped"}, include=[])
        hidden = self.hidden.get(where={"source": "shipped"}, include=["metadatas"])
        hidden_names = {m["name"] for m in hidden["metadatas"] if m}
        current = set(visible["ids"]) | set(hidden["ids"])
        wanted: dict[str, tuple[bytes, dict]] = {}
        for entry in manifest["styles"]:
            data = (Path(manifest_path).parent / entry["image"]).read_bytes()
            tags = list(entry.get("tags", []))
            sid = style_id(data, entry["name"], entry.get("description", ""), tags)
            meta = {
                "name": entry["name"],
                "description": entry.get("description", ""),
                "tags": ",".join(tags),
                "source": "shipped",
                "hidden": entry["name"] in hidden_names,
                "created_at": 0.0,
            }
            wanted[sid] = (data, meta)
        self._delete(sorted(current - wanted.keys()))
        new = [(sid, data, meta) for sid, (data, meta) in wanted.items() if sid not in current]
        self._put(new)
        stats = {"added": len(new), "removed": len(current - wanted.keys()), "unchanged": len(current & wanted.keys())}
        log.info("style library ingest: %s", stats)
        return stats

    def add(self, image: bytes, name: str, description: str = "", tags: list[str] | None = None) -> StyleInfo:
        """A user's own style; the image is validated like any upload and kept at ≤ 512 px."""
        name = name.strip()
        if not NAME_RE.match(name):
            raise BadInput("style name must be 1–60 letters, digits, spaces or .,'&()+- characters")
        tags = [t.strip().lower() for t in (tags or []) if t.strip()]
        if any("," in t for t in tags):
            raise BadInput("a tag cannot contain a comma")
        self._name_free(name)  # before the image is decoded: the cheap refusal first
        img = decode(image, self.max_pixels, self.max_bytes, name="style image")
        if min(img.size) > 512:
            img = fit(img, 512)
        data = png_bytes(img)
        sid = style_id(data, name, description, tags)
        meta = {
            "name": name,
            "description": description,
            "tags": ",".join(tags),
            "source": "user",
            "hidden": False,
            "created_at": time.time(),
        }
        with self.writing():  # the name checked again and the style stored as one step: two adds of a name store one
            self._name_free(name)
            self._put([(sid, data, meta)])
        return _info(sid, meta)

    def _name_free(self, name: str) -> None:
        """BadInput when a style (visible or hidden) has this name, case aside."""
        for s in self.list(include_hidden=True):
            if s.name.lower() == name.lower():
                raise Conflict(f"a style named '{s.name}' already exists; remove it or choose another name")

    def remove(self, name_or_id: str) -> StyleInfo:
        with self.writing():
            style = self.find(name_or_id)
            if style.source == "shipped":
                raise BadInput(f"'{style.name}' ships with the studio; hide it instead (`styles hide`)")
            self._delete([style.id])
        return style

    def set_hidden(self, name_or_id: str, hidden: bool = True) -> StyleInfo:
        """Move a style between the visible and the hidden collection (its vector travels with it). Copied to the
        other collection before it leaves this one, and one move at a time: a hide meeting an unhide leaves the style
        in one of the two, never in neither."""
        with self.writing():
            style = self.find(name_or_id)
            src, dst = (self.vectors, self.hidden) if hidden else (self.hidden, self.vectors)
            got = src.get(ids=[style.id], include=["metadatas", "embeddings", "documents"])
            if got["ids"]:
                meta = {**got["metadatas"][0], "hidden": hidden}
                dst.upsert(ids=[style.id], embeddings=got["embeddings"], metadatas=[meta], documents=got["documents"])
                src.delete(ids=[style.id])
        style.hidden = hidden
        return style
