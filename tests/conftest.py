"""Shared fixtures: the tiny profile built once per run, engines over throwaway data folders."""

from __future__ import annotations

import io
import os
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing may reach for the hub in tests
# The same numbers on every CI machine: fp32, whatever the processor (an AMX one would pick bf16 by itself);
# tests/engine/test_precision.py runs the bf16 paths on purpose.
os.environ.setdefault("DESIGN_STUDIO_DTYPE", "float32")
# `make test` runs three workers on a two-core machine (a third keeps the cores busy while another test waits on a
# browser or a server); each engine, in a worker or in a process a test starts, computes with one thread, as two
# per engine would put six on two cores.
os.environ.setdefault("DESIGN_STUDIO_THREADS", "1")

REPO = Path(__file__).resolve().parent.parent


def _scan_components_once() -> None:
    """Each `AppTest` scans every installed package's metadata for Streamlit components (0.4 s here, ~15 % of a
    page test; `streamlit run` does it once at start). The packages cannot change during a test run, so the scan's
    answer is kept for the process: the same components, registered the same way."""
    import functools

    from streamlit.components.v2 import manifest_scanner

    scan = functools.cache(manifest_scanner.scan_component_manifests)
    manifest_scanner.scan_component_manifests = lambda max_workers=None: list(scan(max_workers))


_scan_components_once()


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> Path:
    """The tiny profile, built once through the same code as `python -m engine prepare-tiny`."""
    from engine.tiny import prepare_tiny

    return prepare_tiny(tmp_path_factory.mktemp("models") / "tiny")


TOKEN = "test-token-0123456789"


def free_port() -> int:
    """A TCP port nobody listens on, for a server a test starts on loopback."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_data_dir(root: Path, tiny_models: Path, warm: bool = False) -> Path:
    """A fresh data folder that reuses the session's tiny models. `warm`: its style store already holds the shipped
    styles, as after an app's first start (the embedding and indexing that ingest does cost ~1.5 s a folder)."""
    (root / "models").mkdir(parents=True, exist_ok=True)
    link = root / "models" / "tiny"
    if not link.exists():
        link.symlink_to(tiny_models, target_is_directory=True)
    if warm and not (root / "chroma").exists():
        shutil.copytree(warm_store(tiny_models), root / "chroma")
    return root


def warm_store(tiny_models: Path) -> Path:
    """A style store with the shipped styles ingested by the tiny CLIP, made once per test run."""
    store = tiny_models.parent / "warm-chroma"
    if not store.exists():
        data = make_data_dir(tiny_models.parent / "warm-data", tiny_models)
        engine = make_engine(data)
        engine.retrieval.library.ingest()  # the first look ingests; this one finds everything in place
        shutil.copytree(data / "chroma", store)
    return store


def make_engine(data_dir: Path, engine_options: dict | None = None, **overrides):
    from engine.local import LocalEngine
    from engine.settings import Settings

    settings = Settings(profile="tiny", data_dir=data_dir, device="cpu", **overrides)
    return LocalEngine(settings, **(engine_options or {}))


@pytest.fixture(scope="session")
def engine(tmp_path_factory, tiny_models):
    """One engine for read-mostly tests (the UI keeps one per process the same way)."""
    eng = make_engine(make_data_dir(tmp_path_factory.mktemp("data"), tiny_models, warm=True))
    eng.load()
    return eng


@pytest.fixture
def fresh_engine(tmp_path, tiny_models):
    """An engine with its own data folder, for tests that change the library or history."""
    return make_engine(make_data_dir(tmp_path / "data", tiny_models, warm=True))


def png(img: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG", **kw)
    return buf.getvalue()


def line_sketch(width: int = 96, height: int = 64) -> Image.Image:
    """Dark pen strokes on white, as a designer draws: a box, a roof and a door."""
    img = Image.new("RGB", (width, height), "white")
    d = ImageDraw.Draw(img)
    d.rectangle([width * 0.2, height * 0.4, width * 0.8, height * 0.9], outline="black", width=2)
    d.line([(width * 0.15, height * 0.45), (width * 0.5, height * 0.1), (width * 0.85, height * 0.45)], "black", 2)
    d.rectangle([width * 0.45, height * 0.6, width * 0.55, height * 0.9], outline="black", width=2)
    return img


@pytest.fixture
def sketch_bytes() -> bytes:
    return png(line_sketch())


@pytest.fixture
def kb_copy(tmp_path) -> Path:
    """A writable copy of the shipped style library folder."""
    dst = tmp_path / "styles_kb"
    shutil.copytree(REPO / "styles_kb", dst, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    return dst


class Server:
    """uvicorn in a thread, as `python -m engine serve` runs it (the queue's size and how long a job nobody asks
    about waits are the engine's: set here for the server's lifetime)."""

    def __init__(self, engine, token=TOKEN, max_queued=32, abandon_after=600.0, request_timeout=300.0):
        import uvicorn

        from engine.server import create_app

        self.engine = engine
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.limits = {"max_queued": max_queued, "abandon_after": abandon_after}
        app = create_app(engine, token, request_timeout=request_timeout)
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self):
        local = hasattr(self.engine.jobs, "max_queued")  # a RemoteEngine (a proxy) has its server's queue
        self.before = {k: getattr(self.engine.jobs, k) for k in self.limits if local}
        for k in self.before:
            setattr(self.engine.jobs, k, self.limits[k])
        self.thread.start()
        deadline = time.time() + 30
        while not self.server.started and time.time() < deadline:
            time.sleep(0.05)
        return self

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(timeout=30)
        for k, v in self.before.items():
            setattr(self.engine.jobs, k, v)


def at_once(calls):
    """Run the calls in threads released together; each one's result or the exception it raised, in order."""
    start = threading.Barrier(len(calls))
    out: list = [None] * len(calls)

    def run(i: int) -> None:
        start.wait(10)
        try:
            out[i] = calls[i]()
        except Exception as exc:  # noqa: BLE001 (collected for the assertions)
            out[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not any(t.is_alive() for t in threads)
    return out


# The longest test files, started first: `make test` hands each worker one file at a time in collection order
# (`--dist loadfile`), so a long file collected late leaves the other workers idle at the end. Longest first, the
# rest fill in around them (longest-processing-time-first scheduling). Times from `make test --durations`.
LONGEST_FIRST = (
    "tests/e2e/test_browser.py",  # ~140 s in 12 tests
    "tests/server/test_fuzz.py",  # ~75 s
    "tests/e2e/test_gate_uploads.py",  # ~60 s, mostly waiting for a session to end
    "tests/e2e/test_designer_tools.py",
    "tests/engine/test_catalog_run.py",
    "tests/e2e/test_first_hour_layout.py",
    "tests/pages/test_app.py",
    "tests/pages/test_studio.py",
    "tests/e2e/test_reload.py",
    "tests/e2e/test_remote.py",
)


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}

    def order(item) -> int:
        path = Path(str(item.fspath)).relative_to(REPO).as_posix()
        return rank.get(path, len(rank))

    items.sort(key=order)  # stable: within a file, and among the others, the collected order stays
