"""Fixtures the engine tests share."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from tests.engine.test_catalog_llm import Reply, ScriptedServer


@pytest.fixture
def serve() -> Iterator[Callable[..., ScriptedServer]]:
    """Start scripted OpenAI-compatible servers on loopback; all stop when the test ends."""
    servers: list[ScriptedServer] = []

    def start(script: Callable[[int, dict], Reply], delay: float = 0.0) -> ScriptedServer:
        servers.append(ScriptedServer(script, delay))
        return servers[-1]

    yield start
    for s in servers:
        s.stop()
