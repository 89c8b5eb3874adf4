"""Jobs: every long piece of work (a render, a sweep, a catalog run, tagging, tuning, a retrieval switch) is one
kind of job, in one store, run by one runner, seen through one `JobInfo`.

- The store is SQLite in the data folder: a restart (even after `kill -9`) runs every queued job again and keeps
  finished ones; a job interrupted too often is failed with the reason instead of looping forever.
- A runner runs the jobs submitted to it (several processes may share a data folder: the UI, a CLI command, the
  server); one that `adopts` takes over, at start, the jobs of runners whose process has died.
- The runner takes queued jobs in order with a few worker threads (renders among them still take turns on the GPU
  through the executor's queue) and keeps each running job's progress in memory, where `get` and `wait` read it.
- A job is cancelled at once while queued, and between two steps while running.
- Jobs nobody asks about may be cancelled (`abandon_after`: their caller is gone), except the `unattended` kinds, which
  finish another job's work (a render's metrics) whether or not anyone follows them.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .api import UNATTENDED, JobInfo, Jobs
from .errors import Cancelled, EngineError, NotFound, QueueFull
from .schema import Progress

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS job (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT UNIQUE NOT NULL,
    kind TEXT NOT NULL,
    title TEXT NOT NULL DEFAULT '',
    state TEXT NOT NULL,
    payload TEXT NOT NULL,
    result TEXT,
    error TEXT,
    error_kind TEXT,
    step INTEGER NOT NULL DEFAULT 0,
    total INTEGER NOT NULL DEFAULT 0,
    stage TEXT NOT NULL DEFAULT '',
    attempts INTEGER NOT NULL DEFAULT 0,
    owner TEXT NOT NULL DEFAULT '',
    key TEXT,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS job_state ON job(state, seq);
"""


@dataclass
class JobContext:
    """What a running job's handler gets: where to report progress, and the cancel it must heed between steps."""

    id: str
    kind: str = ""
    cancel: threading.Event = field(default_factory=threading.Event)
    progress: Progress | None = None
    started: float = field(default_factory=time.perf_counter)
    report_to: Callable[[], None] | None = None
    reason: str | None = None  # why it was cancelled, when the runner did it

    def report(self, p: Progress) -> None:
        self.progress = p
        if self.report_to:
            self.report_to()

    def check(self) -> None:
        """Between two steps of work that has no cancel of its own."""
        if self.cancel.is_set():
            raise Cancelled("cancelled")


Handler = Callable[[dict[str, Any], JobContext], dict[str, Any]]


class JobRunner(Jobs):
    """The store, the worker threads and the live state of running jobs. `handlers` maps a kind to the function
    that does it: `handler(payload, context) -> result` (plain data both ways)."""

    def __init__(
        self,
        path: Path,
        handlers: dict[str, Handler],
        workers: int = 4,
        max_queued: int = 64,
        abandon_after: float | None = None,
        max_attempts: int = 3,
        adopt: bool = True,
        unattended: tuple[str, ...] = UNATTENDED,
    ):
        self.path = Path(path)
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.adopt = adopt
        self.handlers = handlers
        self.workers = workers
        self.max_queued = max_queued
        self.abandon_after = abandon_after  # a queued or running job nobody asks about for this long is cancelled
        self.unattended = set(unattended)  # … unless it is of one of these kinds
        self.max_attempts = max_attempts
        self._ready = False
        self._changed = threading.Condition()  # a job moved (a step, an end): followers wake
        self._work = threading.Condition()  # a job was queued, or the runner stops: idle workers wake
        self._live: dict[str, JobContext] = {}
        self._polled: dict[str, float] = {}
        self._threads: list[threading.Thread] = []
        self._stop = threading.Event()
        self._started = False
        self._start_lock = threading.Lock()
        self._file_lock = threading.Lock()

    def _db(self) -> sqlite3.Connection:
        with self._file_lock if not self._ready else contextlib.nullcontext():
            self._prepare()
        return self._open()

    def _prepare(self) -> None:
        """The file and its table, made on first use: an engine that never runs leaves no file behind."""
        if not self._ready:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with closing(self._open()) as db, db:
                db.execute("PRAGMA journal_mode=WAL")
                db.executescript(SCHEMA)
                columns = {r["name"] for r in db.execute("PRAGMA table_info(job)")}
                for column, kind in (("owner", "TEXT NOT NULL DEFAULT ''"), ("key", "TEXT")):  # a store from before
                    if column not in columns:
                        db.execute(f"ALTER TABLE job ADD COLUMN {column} {kind}")
            self._ready = True

    def _open(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=30, isolation_level="IMMEDIATE")
        db.row_factory = sqlite3.Row
        return db

    # ---- the worker threads -------------------------------------------------------------------------------------
    def start(self) -> None:
        """Take over what a crash left, then start the workers (also done by the first submit; again after stop)."""
        with self._start_lock:
            if self._started:
                return
            self._started = True
            self._stop.clear()
            self._recover()
            self._threads = [
                threading.Thread(target=self._loop, name=f"job-worker-{i}", daemon=True) for i in range(self.workers)
            ]
            for t in self._threads:
                t.start()

    def stop(self) -> None:
        """The workers finish the job in hand and stop; queued jobs wait for the next start."""
        with self._start_lock:
            self._stop.set()
            self._notify()
            self._wake_workers()
            for t in self._threads:
                t.join(timeout=0.2)
            self._threads = []
            self._started = False

    def _recover(self) -> None:
        """Take over the jobs of runners whose process is gone: queued ones as they are, running ones again from
        the start (a job that has been running through `max_attempts` crashes fails instead, with the reason)."""
        if not self.adopt:
            return
        now = time.time()
        with closing(self._db()) as db, db:
            rows = db.execute("SELECT id, owner, state, attempts FROM job WHERE state IN ('queued', 'running')")
            orphans = [dict(r) for r in rows if not owner_alive(r["owner"])]
            for job in orphans:
                if job["state"] == "running" and job["attempts"] >= self.max_attempts:
                    db.execute(
                        "UPDATE job SET state = 'failed', error_kind = 'EngineError', error = ?, updated_at = ?"
                        " WHERE id = ?",
                        (f"the engine stopped {job['attempts']} times while running this job; not tried again", now,
                         job["id"]),
                    )  # fmt: skip
                else:
                    db.execute(
                        "UPDATE job SET state = 'queued', step = 0, stage = '', owner = ? WHERE id = ?",
                        (self.owner, job["id"]),
                    )
        if orphans:
            log.warning("took over %d job(s) of an engine that stopped", len(orphans))

    def _loop(self) -> None:
        while not self._stop.is_set():
            row = self._claim()
            if row is None:
                with self._work:
                    self._work.wait(timeout=2.0)  # a submit wakes them at once; this is for the abandon check
                continue
            self._run(row)

    def _claim(self) -> dict[str, Any] | None:
        """The oldest queued job, now running (atomically, so two workers never share one)."""
        self._abandon()
        while True:
            with closing(self._db()) as db, db:
                row = db.execute(
                    "SELECT * FROM job WHERE state = 'queued' AND owner = ? ORDER BY seq LIMIT 1", (self.owner,)
                ).fetchone()
                if row is None:
                    return None
                taken = db.execute(
                    "UPDATE job SET state = 'running', attempts = attempts + 1, updated_at = ?"
                    " WHERE id = ? AND state = 'queued'",
                    (time.time(), row["id"]),
                ).rowcount
            if taken:  # else another worker took it between the two statements: look again
                return dict(row)

    def _abandon(self) -> None:
        """Queued jobs nobody has asked about for `abandon_after` seconds are cancelled (their caller is gone)."""
        if self.abandon_after is None:
            return
        cutoff = time.time() - self.abandon_after
        with closing(self._db()) as db:
            queued = [
                r["id"]
                for r in db.execute("SELECT id, kind FROM job WHERE state = 'queued' AND owner = ?", (self.owner,))
                if r["kind"] not in self.unattended
            ]
        for job_id in queued:
            if self._polled.setdefault(job_id, time.time()) < cutoff:
                self._finish(
                    job_id, "cancelled", error=f"cancelled: nobody asked for it for {self.abandon_after:.0f} s"
                )

    def _run(self, row: dict[str, Any]) -> None:
        ctx = JobContext(row["id"], row["kind"])
        ctx.report_to = lambda: self._reported(ctx)
        with self._changed:
            self._live[ctx.id] = ctx
        try:
            result = self.handlers[row["kind"]](json.loads(row["payload"]), ctx)
            self._finish(ctx.id, "done", result=result, ctx=ctx)
        except Cancelled as exc:
            self._finish(ctx.id, "cancelled", error=ctx.reason or str(exc), ctx=ctx)
        except EngineError as exc:
            self._finish(ctx.id, "failed", error=str(exc), kind=type(exc).__name__, ctx=ctx)
        except Exception as exc:  # recorded, never a crash of the worker
            log.exception("job %s (%s) failed", ctx.id, row["kind"])
            self._finish(ctx.id, "failed", error=f"internal error: {type(exc).__name__}: {exc}", kind="EngineError")
        finally:
            with self._changed:
                self._live.pop(ctx.id, None)
                self._changed.notify_all()

    def _finish(self, job_id, state, result=None, error=None, kind=None, ctx: JobContext | None = None) -> None:
        p = ctx.progress if ctx else None
        with closing(self._db()) as db, db:
            db.execute(
                "UPDATE job SET state = ?, result = ?, error = ?, error_kind = ?, step = ?, total = ?, stage = ?,"
                " updated_at = ? WHERE id = ?",
                (
                    state,
                    json.dumps(result) if result is not None else None,
                    error,
                    kind,
                    p.step if p else 0,
                    p.total if p else 0,
                    p.stage if p else "",
                    time.time(),
                    job_id,
                ),
            )
        self._polled.pop(job_id, None)
        self._notify()

    def _reported(self, ctx: JobContext) -> None:
        if self.stale(ctx):  # nobody follows it any more: stop at the next step
            ctx.reason = f"cancelled: nobody asked for it for {self.abandon_after:.0f} s"
            ctx.cancel.set()
        self._notify()

    def _notify(self) -> None:
        with self._changed:
            self._changed.notify_all()

    def _wake_workers(self) -> None:
        with self._work:
            self._work.notify_all()

    def _watched(self, job_id: str) -> None:
        """A caller asked about the job: it is still wanted; a running job nobody asks about any more stops."""
        self._polled[job_id] = time.time()

    # ---- the interface ------------------------------------------------------------------------------------------
    def submit(self, kind: str, payload: dict[str, Any], title: str = "", key: str | None = None) -> JobInfo:
        """Queue a job. With `key`, a job of this runner with the same key that is still queued or running is
        returned instead of a second one (one catalog run per run folder, say)."""
        if kind not in self.handlers:
            raise EngineError(f"this engine runs no '{kind}' jobs")
        job_id = uuid.uuid4().hex
        now = time.time()
        with closing(self._db()) as db, db:
            if key is not None:
                same = db.execute(
                    "SELECT id FROM job WHERE key = ? AND owner = ? AND state IN ('queued', 'running')",
                    (key, self.owner),
                ).fetchone()
                if same is not None:
                    return self.get(same["id"])
            waiting = db.execute("SELECT COUNT(*) FROM job WHERE state IN ('queued', 'running')").fetchone()[0]
            if waiting >= self.max_queued:
                raise QueueFull(f"{waiting} jobs are waiting; the queue holds {self.max_queued}", fix="retry later")
            db.execute(
                "INSERT INTO job (id, kind, title, state, payload, owner, key, created_at, updated_at)"
                " VALUES (?, ?, ?, 'queued', ?, ?, ?, ?, ?)",
                (job_id, kind, title[:200], json.dumps(payload), self.owner, key, now, now),
            )
        self.start()
        self._notify()
        self._wake_workers()
        return self.get(job_id)

    def get(self, job_id: str) -> JobInfo:
        with closing(self._db()) as db:
            row = db.execute("SELECT * FROM job WHERE id = ?", (job_id,)).fetchone()
            if row is None:
                raise NotFound(f"no job '{job_id}'")
            position = (
                db.execute(
                    "SELECT COUNT(*) FROM job WHERE state IN ('queued', 'running') AND seq < ?", (row["seq"],)
                ).fetchone()[0]
                if row["state"] == "queued"
                else 0
            )
        if row["state"] in ("queued", "running"):
            self._watched(job_id)
        return self._info(row, position)

    def _info(self, row: sqlite3.Row, position: int = 0) -> JobInfo:
        info = JobInfo(
            id=row["id"],
            kind=row["kind"],
            title=row["title"],
            state=row["state"],
            stage=row["stage"],
            step=row["step"],
            total=row["total"],
            position=position,
            error=row["error"],
            error_kind=row["error_kind"],
            result=json.loads(row["result"]) if row["result"] else None,
            created_at=row["created_at"],
        )
        ctx = self._live.get(row["id"])
        if ctx is not None and info.state == "running":
            p = ctx.progress
            info.elapsed = round(time.perf_counter() - ctx.started, 3)
            if p is not None:
                info.stage, info.step, info.total = p.stage, p.step, p.total
                info.seconds_per_step = p.seconds_per_step
                info.preview, info.preview_step = p.preview, p.preview_step
                if p.stage == "queued":  # running, but waiting for the GPU behind others
                    info.position = max(p.step - 1, 0)
        return info

    def wait(self, job_id: str, timeout: float = 10.0) -> JobInfo:
        """The job as soon as it ends or moves (state, stage, step or place in the queue), or after `timeout`:
        a follower holds one request open instead of polling, and still sees every step."""
        deadline = time.monotonic() + max(0.0, min(timeout, 20.0))
        info = self.get(job_id)

        def where(i: JobInfo) -> tuple:
            return i.state, i.stage, i.step, i.position, i.preview_step

        seen = where(info)
        while not info.done and (left := deadline - time.monotonic()) > 0:
            with self._changed:
                self._changed.wait(timeout=min(left, 0.5))
            info = self.get(job_id)
            if where(info) != seen:
                break
        return info

    def cancel(self, job_id: str) -> JobInfo:
        info = self.get(job_id)
        if info.state == "queued":
            with closing(self._db()) as db, db:
                db.execute(
                    "UPDATE job SET state = 'cancelled', error = 'cancelled before it started', updated_at = ?"
                    " WHERE id = ? AND state = 'queued'",
                    (time.time(), job_id),
                )
            self._notify()
        elif info.state == "running" and job_id in self._live:
            self._live[job_id].cancel.set()
        return self.get(job_id)

    def list(self, active: bool = True, limit: int = 50) -> list[JobInfo]:
        where = "WHERE state IN ('queued', 'running')" if active else ""
        with closing(self._db()) as db:
            rows = db.execute(f"SELECT * FROM job {where} ORDER BY seq DESC LIMIT ?", (limit,)).fetchall()  # noqa: S608
        return [self._info(r) for r in rows]

    def waiting(self) -> int:
        with closing(self._db()) as db:
            return db.execute("SELECT COUNT(*) FROM job WHERE state IN ('queued', 'running')").fetchone()[0]

    def stale(self, ctx: JobContext) -> bool:
        """A running job nobody has asked about for `abandon_after` seconds (its caller is gone)."""
        if self.abandon_after is None or ctx.kind in self.unattended:
            return False
        return self._polled.get(ctx.id, time.time()) < time.time() - self.abandon_after


def owner_alive(owner: str) -> bool:
    """Whether the process of a runner (host:pid:id) still runs; another host's runners count as alive."""
    host, _, rest = owner.partition(":")
    pid = rest.partition(":")[0]
    if not owner or host != socket.gethostname() or not pid.isdigit():
        return bool(owner) and host != socket.gethostname()
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
