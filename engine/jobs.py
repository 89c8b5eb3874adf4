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
- A job's inputs (its payload) stay in the store only while it is queued or running; once it ends, in any state, the
  payload is dropped and the `on_end` listeners release what services held for it in memory.
- Each client (`engine.clients`: the server names one per request) may have `max_per_client` jobs queued or running,
  beside the global `max_queued`: one client cannot fill the queue for everyone.
- The workers never die of a storage error (a full disk, the file locked by another process): they log it once,
  back off and go on; `store_error` says what is wrong until the store takes writes again (/health: degraded).
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import shutil
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

from . import clients
from .api import UNATTENDED, JobInfo, Jobs
from .errors import Busy, Cancelled, EngineError, NotFound, QueueFull
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
    client TEXT,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS job_state ON job(state, seq);
"""
ACTIVE = "state IN ('queued', 'running')"
STORE_ERRORS = (sqlite3.Error, OSError)  # what a store that cannot be read or written raises
MIN_FREE = 1 << 20  # a disk with less free space than this is still full


class StoreUnavailable(Busy):
    """The job store cannot be written now (the disk is full, or another process holds the file): try again."""


def disk_full(exc: BaseException) -> bool:
    """Whether an error means the disk is full (the OS's ENOSPC or quota, or SQLite's own words for it)."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    return isinstance(exc, sqlite3.Error) and "disk is full" in str(exc)


DISK_FULL = "the disk is full: nothing more can be written to the data folder (free some space on its disk)"


def store_line(exc: BaseException) -> str:
    """One line for a store that failed: the disk full, or why it cannot be written (no path in it)."""
    if disk_full(exc):
        return DISK_FULL
    reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc) or type(exc).__name__
    return f"the job store cannot be written: {reason}"


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
Outcome = tuple[str, Any, str | None, str | None, Progress | None]  # state, result, error, error kind, progress


class JobRunner(Jobs):
    """The store, the worker threads and the live state of running jobs. `handlers` maps a kind to the function
    that does it: `handler(payload, context) -> result` (plain data both ways). `on_end` listeners are called with
    a job's id when it ends in any state (done, failed, cancelled queued or running, abandoned). `timeout`: how long
    a call waits for another process's lock on the store before it counts as failing."""

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
        max_per_client: int | None = None,
        timeout: float = 30.0,
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
        self.max_per_client = max_per_client  # None: a quarter of the queue, at least 4 (`per_client`)
        self.timeout = timeout
        self.on_end: list[Callable[[str], None]] = []
        self.store_error: str | None = None  # one line while the store cannot be written, else None
        self._pending: dict[str, Outcome] = {}  # ends the store refused to record: written when it works again
        self._ready = False
        self._changed = threading.Condition()  # a job moved (a step, an end): followers wake
        self._work = threading.Condition()  # a job was queued, or the runner stops: idle workers wake
        self._live: dict[str, JobContext] = {}
        # cancels that came while a worker was taking the job (claimed, not yet live): honoured as it starts
        self._cancel_asked: set[str] = set()
        self._polled: dict[str, float] = {}
        self._threads: list[threading.Thread] = []
        self._stop = threading.Event()
        self._started = False
        self._start_lock = threading.Lock()
        self._file_lock = threading.Lock()

    def _db(self, timeout: float | None = None) -> sqlite3.Connection:
        """A connection that waits at most `timeout` seconds (default: the runner's) for another's lock."""
        with self._file_lock if not self._ready else contextlib.nullcontext():
            self._prepare()
        return self._open(timeout)

    def _prepare(self) -> None:
        """The file and its table, made on first use: an engine that never runs leaves no file behind."""
        if not self._ready:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with closing(self._open()) as db, db:
                db.execute("PRAGMA journal_mode=WAL")
                db.executescript(SCHEMA)
                columns = {r["name"] for r in db.execute("PRAGMA table_info(job)")}
                for column, kind in (("owner", "TEXT NOT NULL DEFAULT ''"), ("key", "TEXT"), ("client", "TEXT")):
                    if column not in columns:  # a store from before
                        db.execute(f"ALTER TABLE job ADD COLUMN {column} {kind}")
                # a store from before kept every ended job's inputs: drop them (freed pages are used again)
                db.execute(f"UPDATE job SET payload = '{{}}' WHERE NOT {ACTIVE} AND payload != '{{}}'")  # noqa: S608
            self._ready = True

    @property
    def per_client(self) -> int:
        """How many jobs one client may have queued or running at once."""
        if self.max_per_client is not None:
            return self.max_per_client
        return max(4, self.max_queued // 4)

    def _open(self, timeout: float | None = None) -> sqlite3.Connection:
        db = sqlite3.connect(
            self.path, timeout=self.timeout if timeout is None else timeout, isolation_level="IMMEDIATE"
        )
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
            try:
                self._recover()
            except STORE_ERRORS as exc:  # the workers start anyway: a store that fails now may work in a moment
                self._store_failed(exc)
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
                        "UPDATE job SET state = 'failed', error_kind = 'EngineError', error = ?, updated_at = ?,"
                        " payload = '{}' WHERE id = ?",
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
        """Claim and run jobs until stopped. A store that fails (a full disk, a lock held too long) costs a short
        pause, never the worker: the next pass tries again."""
        pause = 0.0
        while not self._stop.is_set():
            try:
                self._step()
                pause = 0.0
            except STORE_ERRORS as exc:
                self._store_failed(exc)
                pause = min(max(pause * 2, 0.1), 2.0)
                self._stop.wait(pause)
            except Exception:  # a bug here must not end the worker either
                log.exception("a job worker's pass failed; it goes on")
                self._stop.wait(1.0)

    def _step(self) -> None:
        """One pass: record the ends the store refused before, see whether a failing store works again, then run
        the oldest queued job (or wait for one)."""
        self._flush()
        if self.store_error is not None:
            self._probe()
        row = self._claim()
        if row is None:
            with self._work:
                self._work.wait(timeout=2.0)  # a submit wakes them at once; this is for the abandon check
            return
        self._run(row)

    def _probe(self) -> None:
        """Clears `store_error` once the store takes writes again (its write lock, and room on the disk)."""
        with closing(self._db()) as db:
            db.execute("BEGIN IMMEDIATE")
            db.rollback()
        if self.store_error == DISK_FULL and shutil.disk_usage(self.path.parent).free < MIN_FREE:
            raise OSError(errno.ENOSPC, "No space left on device")
        self._store_ok()

    def _store_failed(self, exc: BaseException) -> None:
        line = store_line(exc)
        if line != self.store_error:  # logged once per kind of failure, not once per retry
            log.warning("%s; the job workers go on and try again", line)
        self.store_error = line

    def _store_ok(self) -> None:
        if self.store_error is not None:
            log.warning("the job store works again")
            self.store_error = None

    @contextlib.contextmanager
    def _guarded(self):
        """A caller's store access: a failing store is one line (StoreUnavailable: 503), and noted."""
        try:
            yield
        except STORE_ERRORS as exc:
            self._store_failed(exc)
            line = store_line(exc)
            raise StoreUnavailable(line, fix=None if line == DISK_FULL else "try again in a moment") from None

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
                self._store_ok()
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
                error = f"cancelled: nobody asked for it for {self.abandon_after:.0f} s"
                self._finish(job_id, ("cancelled", None, error, None, None))

    def _run(self, row: dict[str, Any]) -> None:
        ctx = JobContext(row["id"], row["kind"])
        ctx.report_to = lambda: self._reported(ctx)
        with self._changed:
            self._live[ctx.id] = ctx
            if ctx.id in self._cancel_asked:
                self._cancel_asked.discard(ctx.id)
                ctx.cancel.set()
        try:
            outcome = self._outcome(row, ctx)
            try:
                self._finish(ctx.id, outcome)
            except STORE_ERRORS as exc:  # the end is known but cannot be written: kept until the store works again
                self._pending[ctx.id] = outcome
                self._store_failed(exc)
        finally:
            with self._changed:
                self._live.pop(ctx.id, None)
                self._cancel_asked.discard(ctx.id)
                self._changed.notify_all()
            self._ended(ctx.id)

    def _outcome(self, row: dict[str, Any], ctx: JobContext) -> Outcome:
        """Run the job's handler: how it ended, as the store records it (a full disk is one line that says so)."""
        try:
            result = self.handlers[row["kind"]](json.loads(row["payload"]), ctx)
            return "done", result, None, None, ctx.progress
        except Cancelled as exc:
            return "cancelled", None, ctx.reason or str(exc), None, ctx.progress
        except EngineError as exc:
            return "failed", None, str(exc), type(exc).__name__, ctx.progress
        except Exception as exc:  # recorded, never a crash of the worker
            if disk_full(exc):
                log.warning("job %s (%s) failed: %s", ctx.id, row["kind"], DISK_FULL)
                return "failed", None, DISK_FULL, "EngineError", None
            if isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc):  # history.sqlite, say
                log.warning("job %s (%s) failed: a store was locked: %s", ctx.id, row["kind"], exc)
                line = f"a store in the data folder cannot be written: {exc} (another process holds it; try again)"
                return "failed", None, line, "Busy", None
            log.exception("job %s (%s) failed", ctx.id, row["kind"])
            return "failed", None, f"internal error: {type(exc).__name__}: {exc}", "EngineError", None

    def _flush(self) -> None:
        """Write the ends the store refused before (it raises again while the store still fails)."""
        for job_id, outcome in list(self._pending.items()):
            self._finish(job_id, outcome)
            self._pending.pop(job_id, None)

    def _finish(self, job_id: str, outcome: Outcome) -> None:
        """Record how a job ended, and drop its inputs from the store."""
        state, result, error, kind, p = outcome
        with closing(self._db()) as db, db:
            db.execute(
                "UPDATE job SET state = ?, result = ?, error = ?, error_kind = ?, step = ?, total = ?, stage = ?,"
                " payload = '{}', updated_at = ? WHERE id = ?",
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
        self._store_ok()
        self._ended(job_id)
        self._notify()

    def _ended(self, job_id: str) -> None:
        """A job ended (in any state): forget it here and let the services release what they held for it."""
        self._polled.pop(job_id, None)
        for listener in list(self.on_end):
            try:
                listener(job_id)
            except Exception:  # one listener's bug must not keep the others from releasing theirs
                log.exception("releasing job %s failed", job_id)

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
        client = clients.current()
        with self._guarded(), closing(self._db()) as db, db:
            if key is not None:
                same = db.execute(
                    f"SELECT id FROM job WHERE key = ? AND owner = ? AND {ACTIVE}",  # noqa: S608
                    (key, self.owner),
                ).fetchone()
                if same is not None:
                    return self.get(same["id"])
            self._bound(db, client)
            db.execute(
                "INSERT INTO job (id, kind, title, state, payload, owner, key, client, created_at, updated_at)"
                " VALUES (?, ?, ?, 'queued', ?, ?, ?, ?, ?, ?)",
                (job_id, kind, title[:200], json.dumps(payload), self.owner, key, client, now, now),
            )
        self._store_ok()
        self.start()
        self._notify()
        self._wake_workers()
        return self.get(job_id)

    def room(self) -> None:
        """QueueFull now if a submit by the current client would be refused for the queue: the server asks before it
        reads a body, so a client over its share costs it no decoding."""
        with self._guarded(), closing(self._db()) as db:
            self._bound(db, clients.current())

    def _bound(self, db: sqlite3.Connection, client: str | None) -> None:
        """QueueFull when the caller's own share of the queue is taken, or the whole queue is."""
        if client is not None:
            mine = db.execute(f"SELECT COUNT(*) FROM job WHERE client = ? AND {ACTIVE}", (client,)).fetchone()[0]  # noqa: S608
            if mine >= self.per_client:
                raise QueueFull(
                    f"you have {mine} jobs waiting; one client may have {self.per_client} at once",
                    fix="wait for one to end, or cancel one",
                )
        waiting = db.execute(f"SELECT COUNT(*) FROM job WHERE {ACTIVE}").fetchone()[0]  # noqa: S608
        if waiting >= self.max_queued:
            raise QueueFull(f"{waiting} jobs are waiting; the queue holds {self.max_queued}", fix="retry later")

    def get(self, job_id: str) -> JobInfo:
        with self._guarded(), closing(self._db()) as db:
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
        ended = self._pending.get(row["id"])
        if ended is not None:  # it ended, but the store could not record it yet
            info.state, info.result, info.error, info.error_kind = ended[0], ended[1], ended[2], ended[3]
            return info
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
        cancelled = 0
        if info.state == "queued":
            with self._guarded(), closing(self._db()) as db, db:
                cancelled = db.execute(
                    "UPDATE job SET state = 'cancelled', error = 'cancelled before it started', payload = '{}',"
                    " updated_at = ? WHERE id = ? AND state = 'queued'",
                    (time.time(), job_id),
                ).rowcount
            if cancelled:
                self._ended(job_id)
            self._notify()
        if info.state in ("queued", "running") and not cancelled:
            # running here, or taken by a worker of ours between the read and the update: its cancel is set now, or
            # as it starts (a job of another process is that process's to stop)
            owned = self._owned(job_id)  # read before the lock: workers take it to start and end jobs
            with self._changed:
                if job_id in self._live:
                    self._live[job_id].cancel.set()
                elif owned:
                    self._cancel_asked.add(job_id)
        return self.get(job_id)

    def _owned(self, job_id: str) -> bool:
        """Whether the job is this runner's and not ended (a worker of ours is about to run it)."""
        with self._guarded(), closing(self._db()) as db:
            row = db.execute(
                f"SELECT 1 FROM job WHERE id = ? AND owner = ? AND {ACTIVE}",  # noqa: S608
                (job_id, self.owner),
            ).fetchone()
        return row is not None

    def list(self, active: bool = True, limit: int = 50) -> list[JobInfo]:
        where = f"WHERE {ACTIVE}" if active else ""
        with self._guarded(), closing(self._db()) as db:
            rows = db.execute(f"SELECT * FROM job {where} ORDER BY seq DESC LIMIT ?", (limit,)).fetchall()  # noqa: S608
        return [self._info(r) for r in rows]

    def waiting(self) -> int:
        """Jobs queued or running (0 while the store cannot be read: `store_error` says why). It waits at most a
        second for a lock: /health asks it and must answer at once."""
        try:
            with closing(self._db(min(self.timeout, 1.0))) as db:
                return db.execute(f"SELECT COUNT(*) FROM job WHERE {ACTIVE}").fetchone()[0]  # noqa: S608
        except STORE_ERRORS as exc:
            self._store_failed(exc)
            return 0

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
