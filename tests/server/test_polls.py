"""Issue 30, finding 4: long polls never freeze the server. Open `/api/jobs/wait` calls hold no worker thread
(they wait on the event loop), their number is bounded (past it a wait answers at once with the job as it is),
and /health answers at once however many are open."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx

from tests.conftest import TOKEN, Server

AUTH = {"Authorization": f"Bearer {TOKEN}"}
WAITS = 60


def test_sixty_open_waits_leave_health_and_other_calls_answering(server_engine):
    before = threading.active_count()  # what the tests before this one in this process left running
    with Server(server_engine) as srv, httpx.Client(base_url=srv.url, headers=AUTH, timeout=60) as http:
        with server_engine.executor.queue.slot():  # the GPU is busy: the job waits, nothing about it moves
            job = http.post("/api/renders/submit", json={"request": {"prompt": "waits", "size": 64, "steps": 1}})
            assert job.status_code in (200, 202), job.text
            job_id = job.json()["id"]
            time.sleep(0.5)  # let it plan and reach the GPU queue, where it stays

            def wait(_):
                started = time.monotonic()
                resp = httpx.post(f"{srv.url}/api/jobs/wait", json={"job_id": job_id, "timeout": 6}, headers=AUTH,
                                  timeout=60)  # fmt: skip
                return resp.status_code, time.monotonic() - started

            with ThreadPoolExecutor(WAITS) as pool:
                waits = pool.map(wait, range(WAITS))
                time.sleep(1.5)  # every wait is open (or already answered, past the bound)
                health = []
                for _ in range(3):
                    started = time.monotonic()
                    resp = http.get("/health")
                    health.append((resp.status_code, time.monotonic() - started))
                    listed = http.post("/api/jobs/list", json={})
                    assert listed.status_code == 200
                done = list(waits)
        assert all(status == 200 for status, _ in health), health
        assert max(seconds for _, seconds in health) < 1.0, health
        assert all(status == 200 for status, _ in done)
        held = [seconds for _, seconds in done if seconds > 4]
        answered_at_once = [seconds for _, seconds in done if seconds < 2]
        assert held and answered_at_once, "some waits are held to their timeout, those past the bound answer at once"
        assert len(held) <= 32
        assert threading.active_count() - before < 100  # the waits held no thread of their own
