"""Serialise the GPU: one pipeline run at a time, callers wait in FIFO order and see their position."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from .errors import Cancelled


class GpuQueue:
    """A ticket queue: `with queue.slot(on_wait, cancel):` runs when every earlier caller is done."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._next_ticket = 0
        self._serving = 0
        self._abandoned: set[int] = set()

    def __len__(self) -> int:
        """Runs holding or waiting for the GPU."""
        with self._cond:
            return self._next_ticket - self._serving - len(self._abandoned)

    @contextmanager
    def slot(
        self,
        on_wait: Callable[[int], None] | None = None,
        cancel: threading.Event | None = None,
    ) -> Iterator[None]:
        with self._cond:
            ticket = self._next_ticket
            self._next_ticket += 1
            last = -1
            while ticket != self._serving:
                position = ticket - self._serving - sum(1 for t in self._abandoned if t < ticket)
                if on_wait and position != last:
                    on_wait(position)
                    last = position
                if cancel is not None and cancel.is_set():
                    self._abandoned.add(ticket)
                    raise Cancelled("cancelled while waiting for the GPU")
                self._cond.wait(timeout=0.2)
        try:
            yield
        finally:
            with self._cond:
                self._serving += 1
                while self._serving in self._abandoned:
                    self._abandoned.discard(self._serving)
                    self._serving += 1
                self._cond.notify_all()
