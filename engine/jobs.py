"""Jobs: the in-process GPU queue (one pipeline run at a time, FIFO, with positions) and the
server's persistent job queue in SQLite with its worker."""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

from .errors import Cancelled

log = logging.getLogger(__name__)


class GpuQueue:
    """A ticket queue: `with queue.slot(on_wait, cancel):` runs when every earlier caller is done."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._next_ticket = 0
        self._serving = 0
        self._abandoned: set[int] = set()

    def __len__(self) -> int:
        """Runs holding or waiting for the GPU."""
        with self._cond:
            return self._next_ticket - self._serving - len(self._abandoned)

    @contextmanager
    def slot(
        self,
        on_wait: Callable[[int], None] | None = None,
        cancel: threading.Event | None = None,
    ) -> Iterator[None]:
        with self._cond:
            ticket = self._next_ticket
            self._next_ticket += 1
            last = -1
            while ticket != self._serving:
                position = ticket - self._serving - sum(1 for t in self._abandoned if t < ticket)
                if on_wait and position != last:
                    on_wait(position)
                    last = position
                if cancel is not None and cancel.is_set():
                    self._abandoned.add(ticket)
                    raise Cancelled("cancelled while waiting for the GPU")
                self._cond.wait(timeout=0.2)
        try:
            yield
        finally:
            with self._cond:
                self._serving += 1
                while self._serving in self._abandoned:
                    self._abandoned.discard(self._serving)
                    self._serving += 1
                self._cond.notify_all()


# ---- persistent jobs (the HTTP server's queue) ---------------------------------------------------

TERMINAL = ("done", "failed", "cancelled")
JOBS_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT UNIQUE NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    state TEXT NOT NULL,
    request TEXT NOT NULL,
    step INTEGER NOT NULL DEFAULT 0,
    total INTEGER NOT NULL DEFAULT 0,
    error TEXT,
    run_id TEXT,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    polled_at REAL NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs(state, seq);
"""


class JobStore:
    """Jobs in SQLite: a restart or a crash loses no queued job, and finished results stay fetchable."""

    def __init__(self, path: Path, max_queued: int = 32, abandon_after: float = 600.0):
        self.path = Path(path)
        self.max_queued = max_queued
        self.abandon_after = abandon_after
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with closing(self._db()) as db, db:
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(JOBS_SCHEMA)

    def _db(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=30, isolation_level="IMMEDIATE")
        db.row_factory = sqlite3.Row
        return db

    def submit(self, request_json: str, steps: int) -> str:
        from .errors import QueueFull

        job_id = uuid.uuid4().hex
        now = time.time()
        with closing(self._db()) as db, db:
            waiting = db.execute("SELECT COUNT(*) FROM jobs WHERE state IN ('queued', 'running')").fetchone()[0]
            if waiting >= self.max_queued:
                raise QueueFull(f"{waiting} jobs are waiting; the queue holds {self.max_queued}", fix="retry later")
            db.execute(
                "INSERT INTO jobs (id, created_at, updated_at, state, request, total, polled_at)"
                " VALUES (?, ?, ?, 'queued', ?, ?, ?)",
                (job_id, now, now, request_json, steps, now),
            )
        return job_id

    def get(self, job_id: str, polled: bool = False) -> dict[str, Any] | None:
        """A job with its queue position; `polled` records that a client is still waiting for it."""
        with closing(self._db()) as db, db:
            if polled:
                db.execute("UPDATE jobs SET polled_at = ? WHERE id = ?", (time.time(), job_id))
            row = db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None:
                return None
            job = dict(row)
            job["position"] = (
                db.execute(
                    "SELECT COUNT(*) FROM jobs WHERE state IN ('queued', 'running') AND seq < ?", (row["seq"],)
                ).fetchone()[0]
                if row["state"] == "queued"
                else 0
            )
        return job

    def claim_next(self) -> dict[str, Any] | None:
        """The oldest queued job, now marked running (atomically, so two workers never share one).
        Queued jobs nobody has asked about for `abandon_after` seconds are cancelled instead."""
        with closing(self._db()) as db, db:
            db.execute(
                "UPDATE jobs SET state = 'cancelled', error = ? WHERE state = 'queued' AND polled_at < ?",
                (f"cancelled: nobody asked for it for {self.abandon_after:.0f} s", time.time() - self.abandon_after),
            )
            row = db.execute("SELECT * FROM jobs WHERE state = 'queued' ORDER BY seq LIMIT 1").fetchone()
            if row is None:
                return None
            db.execute("UPDATE jobs SET state = 'running', updated_at = ? WHERE id = ?", (time.time(), row["id"]))
        return dict(row)

    def progress(self, job_id: str, step: int, total: int) -> bool:
        """Record progress; True when the job was asked to stop, or nobody polls it any more."""
        now = time.time()
        with closing(self._db()) as db, db:
            db.execute("UPDATE jobs SET step = ?, total = ?, updated_at = ? WHERE id = ?", (step, total, now, job_id))
            row = db.execute("SELECT cancel_requested, polled_at FROM jobs WHERE id = ?", (job_id,)).fetchone()
            return bool(row[0]) or row[1] < now - self.abandon_after

    def finish(self, job_id: str, state: str, error: str | None = None, run_id: str | None = None) -> None:
        with closing(self._db()) as db, db:
            db.execute(
                "UPDATE jobs SET state = ?, error = ?, run_id = ?, updated_at = ? WHERE id = ?",
                (state, error, run_id, time.time(), job_id),
            )

    def cancel(self, job_id: str) -> str | None:
        """A queued job is cancelled at once; a running one stops at its next step. Returns the state."""
        with closing(self._db()) as db, db:
            row = db.execute("SELECT state FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None:
                return None
            if row["state"] == "queued":
                db.execute("UPDATE jobs SET state = 'cancelled', updated_at = ? WHERE id = ?", (time.time(), job_id))
                return "cancelled"
            if row["state"] == "running":
                db.execute("UPDATE jobs SET cancel_requested = 1 WHERE id = ?", (job_id,))
            return row["state"]

    def requeue_interrupted(self) -> int:
        """After a crash, jobs left 'running' run again from the start."""
        with closing(self._db()) as db, db:
            return db.execute(
                "UPDATE jobs SET state = 'queued', step = 0, cancel_requested = 0, polled_at = ?"
                " WHERE state = 'running'",
                (time.time(),),
            ).rowcount

    def queued(self) -> int:
        with closing(self._db()) as db:
            return db.execute("SELECT COUNT(*) FROM jobs WHERE state IN ('queued', 'running')").fetchone()[0]


class JobRunner:
    """One worker thread that takes queued jobs in order and runs them on the engine."""

    def __init__(self, engine, store: JobStore):
        self.engine = engine
        self.store = store
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="job-runner", daemon=True)

    def start(self) -> None:
        n = self.store.requeue_interrupted()
        if n:
            log.warning("re-queued %d job(s) interrupted by a restart", n)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    def notify(self) -> None:
        self._wake.set()

    def _loop(self) -> None:
        while not self._stop.is_set():
            job = self.store.claim_next()
            if job is None:
                self._wake.wait(timeout=0.5)
                self._wake.clear()
                continue
            self._run(job)

    def _run(self, job: dict[str, Any]) -> None:
        from .errors import Cancelled, EngineError
        from .schema import GenerateRequest

        cancel = threading.Event()

        def on_progress(p) -> None:
            if p.stage == "denoise" and self.store.progress(job["id"], p.step, p.total):
                cancel.set()

        try:
            request = GenerateRequest.model_validate_json(job["request"])
            result = self.engine.generate(request, on_progress=on_progress, cancel=cancel)
            self.store.finish(job["id"], "done", run_id=result.run_id)
        except Cancelled as exc:
            self.store.finish(job["id"], "cancelled", error=str(exc))
        except EngineError as exc:
            self.store.finish(job["id"], "failed", error=str(exc))
        except Exception as exc:  # recorded, never a crash of the worker
            log.exception("job %s failed", job["id"])
            self.store.finish(job["id"], "failed", error=f"internal error: {type(exc).__name__}")


def job_view(job: dict[str, Any]) -> dict[str, Any]:
    """What clients see of a job."""
    return {
        "id": job["id"],
        "state": job["state"],
        "position": job.get("position", 0),
        "step": job["step"],
        "total": job["total"],
        "error": job["error"],
        "run_id": job["run_id"],
    }
