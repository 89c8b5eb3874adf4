"""The server under load and through a crash: nothing lost, nothing mixed up."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest

from engine.remote import RemoteEngine
from engine.schema import GenerateRequest
from tests.conftest import REPO, free_port, make_data_dir
from tests.server.test_server import TOKEN, Server, client


def test_twenty_concurrent_jobs_all_complete_each_with_its_own_seed(server_engine, engine):
    with Server(server_engine) as srv:

        def one(seed: int):  # twenty clients: one client alone may have 8 jobs waiting (its share of the queue)
            req = GenerateRequest.build(prompt=f"chair number {seed}", size=64, steps=2, seed=seed, use_style=False)
            return seed, RemoteEngine(srv.url, TOKEN).generate(req)

        with ThreadPoolExecutor(max_workers=20) as pool:
            results = list(pool.map(one, range(100, 120)))
    assert len(results) == 20
    for seed, result in results:
        assert result.seeds == [seed] and result.metadata["prompt"] == f"chair number {seed}"
    # spot-check pixels against the in-process engine: each image is its own seed's
    for seed, result in results[:3]:
        local = engine.generate(
            GenerateRequest.build(prompt=f"chair number {seed}", size=64, steps=2, seed=seed, use_style=False)
        )
        assert np.array_equal(np.asarray(result.images()[0]), np.asarray(local.images()[0]))


def _start(data_dir, port) -> subprocess.Popen:
    env = {**os.environ, "DESIGN_STUDIO_API_TOKEN": TOKEN, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "engine", "serve", "--profile", "tiny", "--data-dir", str(data_dir),
         "--device", "cpu", "--port", str(port)],
        cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", headers={"Authorization": f"Bearer {TOKEN}"}).is_success:
                return proc
        except httpx.HTTPError:
            time.sleep(0.3)
    proc.kill()
    raise RuntimeError("server did not start")


def test_sigkill_with_jobs_queued_then_restart_runs_every_job(tmp_path, tiny_models):
    data_dir = make_data_dir(tmp_path / "data", tiny_models, warm=True)
    port = free_port()
    proc = _start(data_dir, port)

    class Srv:
        url = f"http://127.0.0.1:{port}"

    c = client(Srv)
    options = {"size": 256, "steps": 30, "use_style": False}
    try:
        ids = [
            c.post("/jobs", data={"prompt": f"job {i}", "options": json.dumps({**options, "seed": i})}).json()["id"]
            for i in range(4)
        ]
        deadline = time.time() + 60
        while time.time() < deadline:  # kill as soon as one renders while the others wait for the GPU
            jobs = [c.get(f"/jobs/{i}").json() for i in ids]
            if any(j["state"] == "running" and j.get("step", 0) >= 1 for j in jobs):
                break
            time.sleep(0.05)
        states = [j["state"] for j in jobs]
        assert set(states) <= {"queued", "running"}, states
    finally:
        proc.send_signal(signal.SIGKILL)  # also when the test fails: no server outlives it
        proc.wait(timeout=30)

    proc = _start(data_dir, port)
    try:
        deadline = time.time() + 300
        while time.time() < deadline:
            states = [c.get(f"/jobs/{i}").json()["state"] for i in ids]
            if all(s == "done" for s in states):
                break
            assert not {"failed", "cancelled"} & set(states), states
            time.sleep(0.5)
        assert states == ["done"] * 4
        for n, job_id in enumerate(ids):
            meta = c.get(f"/jobs/{job_id}/result").json()["metadata"]
            assert meta["prompt"] == f"job {n}" and meta["seed"] == n
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch):
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
