"""Shared fixtures: the tiny profile built once per run, engines over throwaway data folders."""

from __future__ import annotations

import io
import os
import shutil
import socket
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing may reach for the hub in tests

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> Path:
    """The tiny profile, built once through the same code as `python -m engine prepare-tiny`."""
    from engine.tiny import prepare_tiny

    return prepare_tiny(tmp_path_factory.mktemp("models") / "tiny")


def free_port() -> int:
    """A TCP port nobody listens on, for a server a test starts on loopback."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_data_dir(root: Path, tiny_models: Path) -> Path:
    """A fresh data folder that reuses the session's tiny models."""
    (root / "models").mkdir(parents=True, exist_ok=True)
    link = root / "models" / "tiny"
    if not link.exists():
        link.symlink_to(tiny_models, target_is_directory=True)
    return root


def make_engine(data_dir: Path, **overrides):
    from engine.engine import LocalEngine
    from engine.settings import Settings

    return LocalEngine(Settings(profile="tiny", data_dir=data_dir, device="cpu", **overrides))


@pytest.fixture(scope="session")
def engine(tmp_path_factory, tiny_models):
    """One engine for read-mostly tests (the UI keeps one per process the same way)."""
    eng = make_engine(make_data_dir(tmp_path_factory.mktemp("data"), tiny_models))
    eng.load()
    return eng


@pytest.fixture
def fresh_engine(tmp_path, tiny_models):
    """An engine with its own data folder, for tests that change the library or history."""
    return make_engine(make_data_dir(tmp_path / "data", tiny_models))


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
