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
    metadata TEXT NOT NULL,
    starred INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS runs_created ON runs(created_at);
"""
COLUMNS = (
    "id, created_at, kind, prompt, negative_prompt, seeds, profile, sketch_hash, style_ids, outputs, seconds, metadata"
)
# Columns later versions added, with how to add them to a database an older version made.
ADDED_COLUMNS = {"starred": "INTEGER NOT NULL DEFAULT 0"}
# A run's styles that were used, by name (the history's own record, so removed styles still count)
USED_STYLES = (
    "SELECT json_extract(s.value, '$.name') FROM json_each(runs.metadata, '$.styles') AS s "
    "WHERE json_extract(s.value, '$.used')"
)


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
                        self.migrate(db)
                    self._ready = True
        return self._open()

    def migrate(self, db: sqlite3.Connection) -> None:
        """Bring a database an older version made up to `SCHEMA` (runs once per process, after `SCHEMA`)."""

    def _open(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=30)
        db.row_factory = sqlite3.Row
        return db


class History(SqliteStore):
    """The runs, newest first by default."""

    SCHEMA = SCHEMA

    def _open(self) -> sqlite3.Connection:
        db = super()._open()
        db.create_function("casefold", 1, lambda text: text.casefold() if isinstance(text, str) else text,
                           deterministic=True)  # fmt: skip
        return db

    def migrate(self, db: sqlite3.Connection) -> None:
        have = {row["name"] for row in db.execute("PRAGMA table_info(runs)")}
        for column, decl in ADDED_COLUMNS.items():
            if column not in have:
                try:
                    db.execute(f"ALTER TABLE runs ADD COLUMN {column} {decl}")
                except sqlite3.OperationalError as exc:  # another process added it meanwhile
                    if "duplicate column" not in str(exc):
                        raise

    def add(self, run_id: str, meta: dict[str, Any], outputs: list[str]) -> None:
        used = [s["id"] for s in meta.get("styles", []) if s.get("used")]
        with closing(self._connect()) as db, db:
            db.execute(
                f"INSERT INTO runs ({COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
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

    def ids(self) -> list[str]:
        """Every run's id, newest first (ids only: a remeasure of every run reads each row when it comes to it)."""
        with closing(self._connect()) as db:
            return [r[0] for r in db.execute("SELECT id FROM runs ORDER BY created_at DESC, rowid DESC")]

    def existing(self, run_ids: list[str]) -> set[str]:
        """Those of `run_ids` that are runs in the history (asked in chunks: SQLite bounds a query's parameters)."""
        found: set[str] = set()
        with closing(self._connect()) as db:
            for start in range(0, len(run_ids), 500):
                chunk = run_ids[start : start + 500]
                marks = ",".join("?" * len(chunk))
                found.update(r[0] for r in db.execute(f"SELECT id FROM runs WHERE id IN ({marks})", chunk))  # noqa: S608
        return found

    def star(self, run_id: str, starred: bool = True) -> bool:
        """Keep a run as a favourite (or not); False when there is no such run."""
        with closing(self._connect()) as db, db:
            return db.execute("UPDATE runs SET starred = ? WHERE id = ?", (int(starred), run_id)).rowcount > 0

    def list(
        self, limit: int = 50, offset: int = 0, starred: bool = False, text: str = "", style: str | None = None
    ) -> list[dict[str, Any]]:
        """Newest first; with filters: starred runs only, prompts holding every word of `text` (case aside), runs
        that used the style named `style`."""
        where, args = _filters(starred, text, style)
        with closing(self._connect()) as db:
            rows = db.execute(
                f"SELECT * FROM runs {where} ORDER BY created_at DESC, rowid DESC LIMIT ? OFFSET ?",
                (*args, limit, offset),
            ).fetchall()
        return [_row(r) for r in rows]

    def in_batch(
        self, batch: str, starred: bool = False, text: str = "", style: str | None = None
    ) -> list[dict[str, Any]]:
        """Every run of a batch, oldest first (with the same filters as `list`)."""
        where, args = _filters(starred, text, style, batch)
        with closing(self._connect()) as db:
            rows = db.execute(f"SELECT * FROM runs {where} ORDER BY created_at, rowid", args).fetchall()
        return [_row(r) for r in rows]

    def facets(self) -> dict[str, list[str]]:
        """What the history can be filtered by: its batches (newest first) and the styles its runs used."""
        with closing(self._connect()) as db:
            batches = db.execute(
                "SELECT json_extract(metadata, '$.batch') AS b FROM runs WHERE b IS NOT NULL AND b != '' "
                "GROUP BY b ORDER BY MAX(created_at) DESC"
            ).fetchall()
            styles = db.execute(
                "SELECT DISTINCT json_extract(s.value, '$.name') FROM runs, json_each(runs.metadata, '$.styles') AS s "
                "WHERE json_extract(s.value, '$.used')"
            ).fetchall()
        return {"batches": [r[0] for r in batches], "styles": sorted(r[0] for r in styles if r[0])}


def _filters(starred: bool, text: str, style: str | None, batch: str | None = None) -> tuple[str, tuple[Any, ...]]:
    """A WHERE clause and its arguments for the history's filters (none given: no clause)."""
    clauses: list[str] = []
    args: list[Any] = []
    if batch:
        clauses.append("json_extract(metadata, '$.batch') = ?")
        args.append(batch)
    if starred:
        clauses.append("starred != 0")
    for word in (text or "").casefold().split():
        clauses.append("instr(casefold(prompt), ?) > 0")
        args.append(word)
    if style:
        clauses.append(f"? IN ({USED_STYLES})")
        args.append(style)
    return ("WHERE " + " AND ".join(clauses) if clauses else ""), tuple(args)


def _row(row: sqlite3.Row) -> dict[str, Any]:
    out = dict(row)
    for key in ("seeds", "style_ids", "outputs", "metadata"):
        out[key] = json.loads(out[key])
    out["starred"] = bool(out.get("starred"))
    return out


class HistoryIndex:
    """CLIP embeddings of every output in a Chroma collection, so past work is searchable by meaning."""

    def __init__(self, client, embeddings, collection: str):
        from .library import HNSW

        self.embeddings = embeddings
        self.col = client.get_or_create_collection(collection, configuration={"hnsw": HNSW})

    def add(self, run_id: str, images: list, paths: list[str], meta: dict[str, Any], vectors=None) -> None:
        """Index a run's outputs (`vectors`: their embeddings by this index's model, when the caller has them)."""
        vectors = vectors if vectors is not None else self.embeddings.embed_images(images)
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
