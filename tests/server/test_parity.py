"""Local and Remote are one product: the same request and seed give the same pixels in process and over HTTP (a
render, a sweep cell, a catalog row), and a server on Ray spreads a team's jobs over its workers."""

from __future__ import annotations

import io
import threading
import time

import numpy as np
import pytest
from PIL import Image

from engine.catalog.options import CatalogOptions
from engine.errors import Cancelled
from engine.remote import RemoteEngine
from engine.schema import GenerateRequest
from tests.conftest import TOKEN, Server, line_sketch, make_data_dir, make_engine, png

SHEET = b"id,description\nP-1,a red cotton shirt\nP-2,a black leather jacket\nP-3,\n"


def pixels(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert("RGB"))


@pytest.fixture(scope="module")
def both(tmp_path_factory, tiny_models):
    """A local engine, and a remote one: a server over another engine on its own data folder."""
    local = make_engine(make_data_dir(tmp_path_factory.mktemp("local"), tiny_models, warm=True))
    behind = make_engine(make_data_dir(tmp_path_factory.mktemp("server"), tiny_models, warm=True))
    behind.load()
    with Server(behind) as server:
        yield local, RemoteEngine(server.url, TOKEN)
    behind.jobs.stop()
    local.jobs.stop()


def request(**kw) -> GenerateRequest:
    values = {"prompt": "a concrete pavilion", "sketch": png(line_sketch()), "size": 64, "steps": 2, "seed": 5}
    return GenerateRequest.build(**{**values, **kw})


def test_a_render_is_the_same_in_process_and_over_http(both):
    results = [engine.generate(request(variations=2)) for engine in both]
    for a, b in zip(results[0].png, results[1].png, strict=True):
        assert np.array_equal(pixels(a), pixels(b))
    assert results[0].metadata["params"] == results[1].metadata["params"]
    assert [s.id for s in results[0].styles if s.used] == [s.id for s in results[1].styles if s.used]


def test_a_sweep_cell_is_the_same_in_process_and_over_http(both):
    cells = []
    for engine in both:
        job = engine.follow(engine.sweeps.start(request(), [0.5, 1.5], [0.6], [2]))
        sweep = engine.sweeps.get(job.result["batch"])
        cells.append([engine.history.image(c["run_id"], 0) for c in sweep["cells"]])
        assert len(engine.sweeps.file(job.result["batch"], "contact.png")) > 1000
    for a, b in zip(*cells, strict=True):
        assert np.array_equal(pixels(a), pixels(b))


def test_a_catalog_row_is_the_same_in_process_and_over_http(both):
    options = CatalogOptions.build(text_column="description", id_column="id", llm="none", source_lang="en", steps=2,
                                   size=64)  # fmt: skip
    rows = []
    for engine in both:
        job = engine.follow(engine.catalog.start(SHEET, "shirts.csv", options))
        run = engine.catalog.run(job.result["run"])
        assert [(r["id"], r["status"]) for r in run["results"]] == [("P-1", "done"), ("P-2", "done"), ("P-3", "failed")]
        rows.append([engine.catalog.image(job.result["run"], item) for item in ("P-1", "P-2")])
        assert engine.catalog.file(job.result["run"], "results.csv").startswith(b"row,id,status")
    for a, b in zip(*rows, strict=True):
        assert np.array_equal(pixels(a), pixels(b))


def test_a_ray_server_spreads_four_jobs_from_two_clients_over_its_workers(tmp_path, tiny_models):
    """`serve --executor ray` with two CPU workers: every job finishes, both workers render, one render per worker
    at a time, the pixels are the in-process ones, and a cancel reaches the worker between two steps."""
    import ray

    from engine.local import LocalEngine

    data = make_data_dir(tmp_path / "ray", tiny_models, warm=True)
    served = LocalEngine(make_engine(data).settings, executor="ray", workers=2)
    local = make_engine(make_data_dir(tmp_path / "local", tiny_models, warm=True))
    try:
        with Server(served) as server:
            clients = [RemoteEngine(server.url, TOKEN) for _ in range(2)]
            results: dict[int, object] = {}

            def client(i: int) -> None:
                for seed in (10 + i, 20 + i):
                    results[seed] = clients[i].generate(request(seed=seed, steps=3))

            threads = [threading.Thread(target=client, args=(i,)) for i in range(2)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(timeout=600)
            assert sorted(results) == [10, 11, 20, 21]
            workers = {r.metadata["executor"]["worker"] for r in results.values()}
            assert workers == {0, 1}  # each job rendered whole on one worker, and both worked
            for seed, remote in results.items():
                mine = local.generate(request(seed=seed, steps=3))
                diff = np.abs(pixels(remote.png[0]).astype(int) - pixels(mine.png[0]).astype(int))
                assert diff.max() <= 1 and (diff > 0).mean() < 0.001  # a worker's 1 thread vs 2 here: rounding

            long = clients[0].renders.submit(request(steps=150, size=256))
            deadline = time.time() + 120
            while clients[0].jobs.get(long.id).step < 2 and time.time() < deadline:
                time.sleep(0.1)
            with pytest.raises(Cancelled, match=r"cancelled after \d+ of 150 steps"):
                clients[0].follow(clients[0].jobs.cancel(long.id))
    finally:
        served.close()
        ray.shutdown()
        local.jobs.stop()
