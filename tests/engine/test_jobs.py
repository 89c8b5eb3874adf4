"""The job runner on its own (no models): a poison job stops after its retry limit, a wait returns at each step,
a key keeps one job per piece of work, and an abandoned job is cancelled."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import time

import pytest

from engine.errors import NotFound
from engine.jobs import JobRunner
from tests.conftest import REPO

CRASHING_ENGINE = textwrap.dedent(
    """
    import os, sys, time
    from engine.jobs import JobRunner

    def crash(payload, ctx):
        os._exit(3)  # the process dies in the middle of the job, as a segfault or an OOM kill would

    runner = JobRunner(sys.argv[1], {"poison": crash}, workers=1)
    if sys.argv[2] == "submit":
        print(runner.submit("poison", {}).id, flush=True)
    runner.start()
    time.sleep(5)  # the crash ends the process long before this
    """
)


def test_a_job_that_kills_its_engine_fails_after_three_attempts_with_the_reason(tmp_path):
    store = tmp_path / "jobs.sqlite"
    script = tmp_path / "engine_proc.py"
    script.write_text(CRASHING_ENGINE)

    def engine_process(*args) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, str(script), str(store), *args], cwd=REPO, env={"PYTHONPATH": str(REPO)},
                              capture_output=True, text=True, timeout=60)  # fmt: skip

    first = engine_process("submit")
    assert first.returncode == 3
    job_id = first.stdout.strip()
    for _ in range(2):  # restarts take the crashed job over and crash again
        assert engine_process("restart").returncode == 3
    # the fourth start does not run it again: the job failed, with why
    runner = JobRunner(store, {"poison": lambda payload, ctx: None}, workers=1)
    runner.start()
    try:
        job = runner.get(job_id)
        assert job.state == "failed"
        assert job.error == "the engine stopped 3 times while running this job; not tried again"
    finally:
        runner.stop()


def stepping(steps: int, pause: float):
    def handler(payload, ctx):
        for i in range(1, steps + 1):
            time.sleep(pause)
            ctx.report(_progress(i, steps))
            if ctx.cancel.is_set():
                from engine.errors import Cancelled

                raise Cancelled("cancelled")
        return {"steps": steps}

    return handler


def _progress(step: int, total: int):
    from engine.schema import Progress

    return Progress("denoise", step, total, 0.0)


@pytest.fixture
def runner(tmp_path):
    r = JobRunner(tmp_path / "jobs.sqlite", {"steps": stepping(5, 0.3), "quick": lambda p, ctx: {"n": p["n"]}})
    yield r
    r.stop()


def test_a_wait_returns_at_the_next_step_not_at_its_timeout(runner):
    job = runner.submit("steps", {})
    seen, began = [], time.monotonic()
    while not job.done:
        t0 = time.monotonic()
        job = runner.wait(job.id, timeout=15)
        seen.append((job.step, time.monotonic() - t0))
    assert job.state == "done" and job.result == {"steps": 5}
    assert [s for s, _ in seen][-1] == 5 and len(seen) >= 4  # one answer per step (or so), not one at the end
    assert max(waited for _, waited in seen) < 2.0  # each wait ended at a step (0.3 s apart), far under 15 s
    assert time.monotonic() - began < 5


def test_a_key_keeps_one_job_per_piece_of_work_and_unknown_ids_are_not_found(runner):
    a = runner.submit("steps", {}, key="run-1")
    b = runner.submit("steps", {}, key="run-1")
    assert a.id == b.id
    runner.cancel(a.id)
    with pytest.raises(NotFound):
        runner.get("no-such-job")


def test_cancel_stops_a_running_job_at_its_next_step(runner):
    job = runner.submit("steps", {})
    while runner.get(job.id).step < 1:
        time.sleep(0.05)
    runner.cancel(job.id)
    job = runner.wait(job.id, timeout=5)
    while not job.done:
        job = runner.wait(job.id, timeout=5)
    assert job.state == "cancelled" and job.step < 5


def test_a_job_nobody_asks_about_is_cancelled(tmp_path):
    r = JobRunner(tmp_path / "jobs.sqlite", {"steps": stepping(50, 0.1)}, abandon_after=0.5)
    try:
        job = r.submit("steps", {})
        deadline = time.time() + 20
        state = job.state
        while time.time() < deadline:
            time.sleep(0.3)  # look without asking: the store itself, not runner.get (that counts as asking)
            import sqlite3

            with sqlite3.connect(r.path) as db:
                state = db.execute("SELECT state FROM job WHERE id = ?", (job.id,)).fetchone()[0]
            if state == "cancelled":
                break
        assert state == "cancelled"
        assert "nobody asked for it" in r.get(job.id).error
    finally:
        r.stop()


def test_many_threads_submitting_at_once_each_get_their_own_result(runner):
    results: dict[int, dict] = {}

    def one(n: int) -> None:
        job = runner.submit("quick", {"n": n})
        while not job.done:
            job = runner.wait(job.id, timeout=5)
        results[n] = job.result

    threads = [threading.Thread(target=one, args=(n,)) for n in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert results == {n: {"n": n} for n in range(16)}
