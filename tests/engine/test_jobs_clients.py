"""The queue is fair: each client (named by the server for a request, `engine.clients`) may have `max_per_client`
jobs queued or running, beside the global `max_queued`; one client filling its share does not keep another out."""

from __future__ import annotations

import sqlite3
import threading
from contextlib import closing

import pytest

from engine import clients
from engine.errors import QueueFull, status_for
from engine.jobs import JobRunner


@pytest.fixture
def runner(tmp_path):
    gate = threading.Event()
    r = JobRunner(tmp_path / "jobs.sqlite", {"held": lambda p, ctx: gate.wait(10) and {}}, workers=1, max_queued=12)
    yield r
    gate.set()
    r.stop()


def test_one_client_filling_its_share_is_refused_while_another_is_still_accepted(runner):
    assert runner.per_client == 4  # a quarter of the queue, at least 4
    with clients.calling("a"):
        mine = [runner.submit("held", {}) for _ in range(4)]
        with pytest.raises(QueueFull) as refused:
            runner.submit("held", {})
    line = str(refused.value)
    assert line.startswith("you have 4 jobs waiting; one client may have 4 at once") and "\n" not in line
    assert status_for(refused.value) == 429
    with clients.calling("b"):
        assert runner.submit("held", {}).state == "queued"
    assert runner.submit("held", {}).state == "queued"  # no client (the UI's own engine, the CLI): the global bound
    runner.cancel(mine[-1].id)  # one of a's ends: a may queue again
    with clients.calling("a"):
        assert runner.submit("held", {}).state == "queued"


def test_the_global_bound_still_holds_for_many_clients(runner):
    runner.max_per_client = 2
    for n in range(6):
        with clients.calling(f"c{n}"):
            runner.submit("held", {})
            runner.submit("held", {})
    with clients.calling("late"), pytest.raises(QueueFull, match="12 jobs are waiting; the queue holds 12"):
        runner.submit("held", {})


def test_a_store_from_before_gains_the_client_column(tmp_path):
    path = tmp_path / "jobs.sqlite"
    with closing(sqlite3.connect(path)) as db, db:
        db.execute(
            "CREATE TABLE job (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT UNIQUE NOT NULL, kind TEXT NOT NULL,"
            " title TEXT NOT NULL DEFAULT '', state TEXT NOT NULL, payload TEXT NOT NULL, result TEXT, error TEXT,"
            " error_kind TEXT, step INTEGER NOT NULL DEFAULT 0, total INTEGER NOT NULL DEFAULT 0,"
            " stage TEXT NOT NULL DEFAULT '', attempts INTEGER NOT NULL DEFAULT 0, created_at REAL NOT NULL,"
            " updated_at REAL NOT NULL)"
        )  # the store as the first version made it: no owner, key or client
        db.execute(
            "INSERT INTO job (id, kind, state, payload, created_at, updated_at)"
            " VALUES ('old', 'held', 'done', '{\"big\": \"inputs\"}', 0, 0)"
        )
    r = JobRunner(path, {"quick": lambda p, ctx: {"ok": True}}, workers=1)
    try:
        with clients.calling("a"):
            job = r.submit("quick", {})
        assert r.get("old").state == "done"
        with closing(sqlite3.connect(path)) as db:
            assert db.execute("SELECT client FROM job WHERE id = ?", (job.id,)).fetchone()[0] == "a"
            assert db.execute("SELECT payload FROM job WHERE id = 'old'").fetchone()[0] == "{}"  # inputs dropped
    finally:
        r.stop()
