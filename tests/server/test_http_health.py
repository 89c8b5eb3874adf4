"""Issue 30, findings 1 and 10 over HTTP: /health is 503 `degraded` (with the reason) while the job store cannot
be written, and 200 again once it can; `RemoteEngine.capabilities` reads both. A full disk under any request is
one line that says so (507), naming no server folder."""

from __future__ import annotations

import errno
import sqlite3
import time

import httpx

from engine.remote import RemoteEngine
from tests.conftest import TOKEN, Server

AUTH = {"Authorization": f"Bearer {TOKEN}"}


def test_health_is_degraded_while_another_process_locks_the_job_store(server_engine, monkeypatch):
    monkeypatch.setattr(server_engine.jobs, "timeout", 1.0)  # how long a write waits for another's lock (30 s)
    with Server(server_engine) as srv, httpx.Client(base_url=srv.url, headers=AUTH, timeout=60) as http:
        assert http.get("/health").status_code == 200
        lock = sqlite3.connect(server_engine.jobs.path, timeout=1)
        try:
            lock.execute("BEGIN EXCLUSIVE")  # as another process holding jobs.sqlite would
            render = {"request": {"prompt": "locked out", "size": 64, "steps": 1}}
            refused = http.post("/api/renders/submit", json=render)
            assert refused.status_code == 503 and "\n" not in refused.json()["detail"], refused.text
            started = time.monotonic()
            resp = http.get("/health")
            assert time.monotonic() - started < 5
            assert resp.status_code == 503, resp.text
            body = resp.json()
            assert body["status"] == "degraded" and body["store_error"] and body["detail"] == body["store_error"]
            assert "\n" not in body["detail"] and body["profile"]
            caps = RemoteEngine(srv.url, TOKEN).capabilities()  # the Studio's sidebar reads it, not an error
            assert caps.store_error and caps.remote
        finally:
            lock.rollback()
            lock.close()
        deadline = time.monotonic() + 30
        while http.get("/health").status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.2)
        resp = http.get("/health")
        assert resp.status_code == 200 and resp.json()["store_error"] is None


def test_a_full_disk_is_one_line_that_says_so(server_engine, monkeypatch):
    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(server_engine.data_dir / "styles" / "x.png"))

    monkeypatch.setattr(server_engine.styles, "add", no_space)  # no real full disk here: the write fails as one would
    with Server(server_engine) as srv, httpx.Client(base_url=srv.url, headers=AUTH, timeout=60) as http:
        resp = http.post("/api/styles/add", data={"args": '{"name": "full"}'}, files={"image": ("a.png", b"x")})
        assert resp.status_code == 507, resp.text
        detail = resp.json()["detail"]
        assert detail.startswith("the engine's disk is full: free space on the server")
        assert "x.png" in detail and str(server_engine.data_dir) not in detail and "\n" not in detail
