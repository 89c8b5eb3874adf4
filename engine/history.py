"""The run history: one SQLite row per run, images and sketches on disk in the data folder."""

from __future__ import annotations

import json
import sqlite3
import threading
from contextlib import closing
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY,
    created_at TEXT NOT NULL,
    kind TEXT NOT NULL,
    prompt TEXT NOT NULL,
    negative_prompt TEXT NOT NULL DEFAULT '',
    seeds TEXT NOT NULL,
    profile TEXT NOT NULL,
    sketch_hash TEXT,
    style_ids TEXT NOT NULL,
    outputs TEXT NOT NULL,
    seconds REAL NOT NULL,
    metadata TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS runs_created ON runs(created_at);
"""


class SqliteStore:
    """One SQLite file in WAL mode with `SCHEMA` applied. Each call opens its own connection, so threads (UI
    sessions, server workers) never share one. The file is made on first use, not before: an engine that never
    runs (its models missing) leaves no trace in the data folder."""

    SCHEMA = ""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._ready = False
        self._lock = threading.Lock()

    def _connect(self) -> sqlite3.Connection:
        if not self._ready:
            with self._lock:
                if not self._ready:
                    self.path.parent.mkdir(parents=True, exist_ok=True)
                    with closing(self._open()) as db, db:
                        db.execute("PRAGMA journal_mode=WAL")
                        db.executescript(self.SCHEMA)
                    self._ready = True
        return self._open()

    def _open(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=30)
        db.row_factory = sqlite3.Row
        return db


class History(SqliteStore):
    """The runs, newest first by default."""

    SCHEMA = SCHEMA

    def add(self, run_id: str, meta: dict[str, Any], outputs: list[str]) -> None:
        used = [s["id"] for s in meta.get("styles", []) if s.get("used")]
        with closing(self._connect()) as db, db:
            db.execute(
                "INSERT INTO runs VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    run_id,
                    meta["created_at"],
                    meta["kind"],
                    meta["prompt"],
                    meta.get("negative_prompt", ""),
                    json.dumps(meta["seeds"]),
                    meta["profile"],
                    meta.get("sketch_hash"),
                    json.dumps(used),
                    json.dumps(outputs),
                    meta["timings"]["total"],
                    json.dumps(meta, sort_keys=True),
                ),
            )

    def update_metadata(self, run_id: str, meta: dict[str, Any]) -> None:
        with closing(self._connect()) as db, db:
            db.execute("UPDATE runs SET metadata = ? WHERE id = ?", (json.dumps(meta, sort_keys=True), run_id))

    def get(self, run_id: str) -> dict[str, Any] | None:
        with closing(self._connect()) as db:
            row = db.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone()
        return _row(row) if row else None

    def list(self, limit: int = 50, offset: int = 0) -> list[dict[str, Any]]:
        with closing(self._connect()) as db:
            rows = db.execute(
                "SELECT * FROM runs ORDER BY created_at DESC LIMIT ? OFFSET ?", (limit, offset)
            ).fetchall()
        return [_row(r) for r in rows]

    def in_batch(self, batch: str) -> list[dict[str, Any]]:
        with closing(self._connect()) as db:
            rows = db.execute(
                "SELECT * FROM runs WHERE json_extract(metadata, '$.batch') = ? ORDER BY created_at, rowid", (batch,)
            ).fetchall()
        return [_row(r) for r in rows]


def _row(row: sqlite3.Row) -> dict[str, Any]:
    out = dict(row)
    for key in ("seeds", "style_ids", "outputs", "metadata"):
        out[key] = json.loads(out[key])
    return out


class HistoryIndex:
    """CLIP embeddings of every output in a Chroma collection, so past work is searchable by meaning."""

    def __init__(self, client, embeddings, collection: str):
        from .library import HNSW

        self.embeddings = embeddings
        self.col = client.get_or_create_collection(collection, configuration={"hnsw": HNSW})

    def add(self, run_id: str, images: list, paths: list[str], meta: dict[str, Any]) -> None:
        vectors = self.embeddings.embed_images(images)
        self.col.upsert(
            ids=[f"{run_id}-{i}" for i in range(len(images))],
            embeddings=vectors,
            metadatas=[
                {"run_id": run_id, "index": i, "path": p, "created_at": meta["created_at"]} for i, p in enumerate(paths)
            ],
            documents=[meta["prompt"]] * len(images),
        )

    def search(self, vector: list[float], k: int = 12) -> list[dict[str, Any]]:
        """Outputs ranked by cosine similarity (1 − distance) to `vector`."""
        got = self.col.query(query_embeddings=[vector], n_results=k, include=["metadatas", "distances"])
        return [
            {**m, "score": round(1.0 - float(d), 4)}
            for m, d in zip(got["metadatas"][0], got["distances"][0], strict=True)
        ]

    def vector(self, run_id: str, index: int = 0) -> list[float] | None:
        got = self.col.get(ids=[f"{run_id}-{index}"], include=["embeddings"])
        return [float(v) for v in got["embeddings"][0]] if got["ids"] else None
