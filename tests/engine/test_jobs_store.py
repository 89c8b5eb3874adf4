"""The job store failing under the workers: jobs.sqlite locked by another process for longer than the runner waits
(as a backup tool or a second engine might hold it) stalls the workers, never kills them; the store's state is
seen (`store_error`, the engine's capabilities) while it fails and clears once it works again. A full disk is one
line that says so."""

from __future__ import annotations

import errno
import subprocess
import sys
import textwrap
import threading
import time
from contextlib import closing

import pytest

from engine.errors import status_for
from engine.jobs import DISK_FULL, JobRunner, StoreUnavailable
from tests.conftest import make_data_dir, make_engine

LOCKER = textwrap.dedent(
    """
    import sqlite3, sys, time
    db = sqlite3.connect(sys.argv[1], isolation_level=None)
    db.execute("BEGIN EXCLUSIVE")  # no other connection may write until this one ends
    print("locked", flush=True)
    time.sleep(float(sys.argv[2]))
    db.execute("COMMIT")
    """
)


def lock_store(path, seconds: float) -> subprocess.Popen:
    """Another process holding jobs.sqlite's write lock for `seconds` (returns once it holds it)."""
    proc = subprocess.Popen(
        [sys.executable, "-c", LOCKER, str(path), str(seconds)], stdout=subprocess.PIPE, text=True
    )  # fmt: skip
    assert proc.stdout.readline().strip() == "locked"
    return proc


def until(check, timeout: float = 15.0, every: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(every)
    raise AssertionError("timed out waiting")


def finished(runner: JobRunner, job_id: str, timeout: float = 15.0):
    return until(lambda: (job := runner.get(job_id)).done and job, timeout)


def test_workers_outlive_a_store_locked_by_another_process_and_finish_every_job(tmp_path):
    gate = threading.Event()

    def held(payload, ctx):
        gate.wait(10)
        return {"n": payload["n"]}

    store = tmp_path / "jobs.sqlite"
    runner = JobRunner(store, {"held": held, "quick": lambda p, ctx: {"n": p["n"]}}, workers=2, timeout=0.2)
    try:
        a = runner.submit("held", {"n": 1})
        b = runner.submit("held", {"n": 2})
        until(lambda: all(runner.get(j.id).state == "running" for j in (a, b)))
        locker = lock_store(store, 2.5)
        gate.set()  # both jobs end while the store cannot be written: their ends cannot be recorded yet
        until(lambda: runner.store_error is not None)
        assert runner.store_error == "the job store cannot be written: database is locked"
        assert runner.get(a.id).state == "done"  # the caller already sees how it ended
        with pytest.raises(StoreUnavailable) as refused:  # a submit now: one line, 503, not a hang or a 500
            runner.submit("quick", {"n": 3})
        assert status_for(refused.value) == 503 and "database is locked" in str(refused.value)
        assert locker.wait(timeout=10) == 0
        until(lambda: runner.store_error is None)  # the store works again: the workers say so by themselves
        assert all(t.is_alive() for t in runner._threads) and len(runner._threads) == 2
        c = runner.submit("quick", {"n": 4})
        assert finished(runner, c.id).result == {"n": 4}
        for job, n in ((a, 1), (b, 2)):  # the ends kept while the store failed are written now
            with closing(runner._db()) as db:
                row = db.execute("SELECT state, result FROM job WHERE id = ?", (job.id,)).fetchone()
            assert row["state"] == "done" and row["result"] == f'{{"n": {n}}}'
    finally:
        gate.set()
        runner.stop()


def test_the_engine_reports_a_failing_store_in_its_capabilities_until_it_works_again(tmp_path, tiny_models):
    from engine.schema import GenerateRequest

    engine = make_engine(make_data_dir(tmp_path / "data", tiny_models), engine_options={"store_timeout": 0.2})
    engine.jobs.start()  # as the server does when it starts
    try:
        assert engine.capabilities().store_error is None
        request = GenerateRequest(prompt="a chair", size=64, steps=1)
        first = engine.renders.submit(request)  # a first render loads what planning needs, before the lock
        until(lambda: engine.jobs.get(first.id).done, timeout=120)
        locker = lock_store(engine.jobs.path, 5.0)
        with pytest.raises(StoreUnavailable):
            engine.renders.submit(request)
        assert engine.capabilities().store_error == "the job store cannot be written: database is locked"
        assert locker.wait(timeout=20) == 0
        until(lambda: engine.capabilities().store_error is None)
        assert all(t.is_alive() for t in engine.jobs._threads)
    finally:
        engine.close()


def test_a_job_that_fills_the_disk_fails_with_one_line_that_says_so_and_the_worker_goes_on(tmp_path):
    def full(payload, ctx):
        raise OSError(errno.ENOSPC, "No space left on device", "/srv/data/outputs/x.png")

    runner = JobRunner(tmp_path / "jobs.sqlite", {"full": full, "quick": lambda p, ctx: {"n": p["n"]}}, workers=1)
    try:
        job = finished(runner, runner.submit("full", {}).id)
        assert job.state == "failed" and job.error == DISK_FULL
        assert "/srv" not in job.error and "\n" not in job.error
        assert finished(runner, runner.submit("quick", {"n": 1}).id).result == {"n": 1}
    finally:
        runner.stop()


def test_a_full_disk_under_the_store_reads_as_a_full_disk():
    import sqlite3

    from engine.jobs import store_line

    assert store_line(sqlite3.OperationalError("database or disk is full")) == DISK_FULL
    assert store_line(OSError(errno.ENOSPC, "No space left on device", "/srv/x")) == DISK_FULL
    assert status_for(StoreUnavailable(DISK_FULL)) == 503  # the engine cannot take it now: not the client's fault
