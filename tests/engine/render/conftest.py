"""Fixtures of the render path's unit tests: in-memory dummy components (tests/engine/render/dummies.py)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from engine.render.sd15 import Generator
from tests.engine.render.dummies import dummy_components, dummy_pipeline


@pytest.fixture
def make_generator() -> Callable[[int], Generator]:
    """A new Generator over fresh dummy components built under a seed; no ModelStore (embeddings kept in memory)."""
    return lambda seed=0: Generator(dummy_pipeline(dummy_components(seed)))


@pytest.fixture(scope="module")
def generator() -> Generator:
    """One Generator over the seed-0 dummy components, shared by a test module (it keeps no state a render sees)."""
    return Generator(dummy_pipeline(dummy_components(0)))
