"""Issue 30, finding 16: the queue is fair over HTTP. Each client (its `X-Client-Id`, else its address) has its
own share of the queue: one client that fills its share gets 429 with one line, while another client's submit is
still accepted."""

from __future__ import annotations

import httpx

from engine.remote import RemoteEngine
from tests.conftest import TOKEN, Server

AUTH = {"Authorization": f"Bearer {TOKEN}"}
RENDER = {"request": {"prompt": "fair", "size": 64, "steps": 1, "use_style": False}}


def submit(http: httpx.Client, client: str) -> httpx.Response:
    return http.post("/api/renders/submit", json=RENDER, headers={"X-Client-Id": client})


def test_one_client_filling_its_share_leaves_room_for_another(server_engine):
    with Server(server_engine, max_queued=32) as srv, httpx.Client(base_url=srv.url, headers=AUTH, timeout=60) as http:
        ids = []
        try:
            with server_engine.executor.queue.slot():  # the GPU is busy: nothing ends while the queue fills
                refused = None
                for _ in range(33):  # bounded: the global bound refuses the 33rd whatever happens
                    resp = submit(http, "client-a")
                    if resp.status_code == 429:
                        refused = resp
                        break
                    assert resp.status_code in (200, 202), resp.text
                    ids.append(resp.json()["id"])
                assert refused is not None and 1 <= len(ids) < 32, "client a met its own bound before the queue's"
                body = refused.json()
                assert body["error"] == "QueueFull" and "\n" not in body["detail"]
                assert "you have" in body["detail"], body["detail"]

                last_of_a = ids[-1]  # queued (the first may be running, waiting for the GPU)
                other = submit(http, "client-b")
                assert other.status_code in (200, 202), other.text
                ids.append(other.json()["id"])
                assert submit(http, "client-a").status_code == 429  # still a's own bound, not the queue's
                # over its share, a client is refused before its body is read (even a body that is not JSON), and
                # can still follow and cancel its jobs to make room
                garbage = http.post(
                    "/api/renders/submit", content=b"\xff\xfe", headers={"X-Client-Id": "client-a",
                                                                         "Content-Type": "application/json"},
                )  # fmt: skip
                assert garbage.status_code == 429, garbage.text
                mine = {"X-Client-Id": "client-a"}
                assert http.post("/api/jobs/get", json={"job_id": last_of_a}, headers=mine).status_code == 200
                cancelled = http.post("/api/jobs/cancel", json={"job_id": last_of_a}, headers=mine)
                assert cancelled.status_code == 200 and cancelled.json()["state"] == "cancelled", cancelled.text
                again = submit(http, "client-a")
                assert again.status_code in (200, 202), again.text
                ids.append(again.json()["id"])

                remote = RemoteEngine(srv.url, TOKEN)  # a RemoteEngine is a client of its own
                job = remote.renders.submit(RENDER["request"])
                ids.append(job.id)
        finally:
            for job_id in ids:
                http.post("/api/jobs/cancel", json={"job_id": job_id})
