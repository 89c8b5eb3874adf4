"""Nothing kept for ended jobs: a render planned at submit holds its decoded sketch in memory until its job runs; a
render cancelled while queued (the live canvas cancels every superseded frame) must give all of it back."""

from __future__ import annotations

import gc

from engine.schema import GenerateRequest
from tests.conftest import line_sketch, make_data_dir, make_engine, png

MB = 1024 * 1024


def rss() -> int:
    """This process's resident memory in bytes, after a full collection."""
    gc.collect()
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc/self/status")


def storm(engine, sketch: bytes, renders: int, batch: int = 20) -> None:
    """`renders` renders of the 2000×2000 sketch submitted and cancelled while queued, `batch` at a time; live
    frames (keep: false) and kept renders alike."""
    for start in range(0, renders, batch):
        jobs = [
            engine.renders.submit(GenerateRequest(prompt="a chair", sketch=sketch, size=64, steps=1, keep=i % 2 == 0))
            for i in range(start, min(start + batch, renders))
        ]  # fmt: skip
        for job in jobs:
            assert engine.jobs.cancel(job.id).state == "cancelled"


def test_renders_cancelled_while_queued_give_back_their_memory(tmp_path, tiny_models):
    engine = make_engine(make_data_dir(tmp_path / "data", tiny_models, warm=True))
    engine.jobs.workers = 0  # no worker takes them: every render stays queued until it is cancelled
    sketch = png(line_sketch(2000, 2000))
    try:
        storm(engine, sketch, 20)  # warm-up: models, caches and the allocator's pools in place
        before = rss()
        storm(engine, sketch, 200)
        grown = rss() - before
        assert grown < 50 * MB, f"200 cancelled renders kept {grown / MB:.0f} MB"
        assert engine.renders._plans == {}
        assert engine.jobs._polled == {} and engine.jobs._live == {} and engine.jobs._pending == {}
        assert engine.jobs.waiting() == 0
    finally:
        engine.close()
