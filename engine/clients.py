"""Who is asking. The server names the calling client for the length of a request (`calling`), and whatever the
request does in this process reads it (`current`): the job runner bounds each client's share of the queue with it.

A client is what the server can tell apart: the `X-Client-Id` a `RemoteEngine` sends (one per engine object, so one
per Studio session), else the peer's address. A client that changes its id every call still meets the global
bound; the per-client one keeps a careless or greedy client from filling the queue for everyone else.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

HEADER = "X-Client-Id"
_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")
_current: ContextVar[str | None] = ContextVar("design_studio_client", default=None)


def clean(value: str | None) -> str | None:
    """A client id as sent, if it is one (1–64 of letters, digits and `._:-`); anything else is no id."""
    value = (value or "").strip()
    return value if _ID.fullmatch(value) else None


def current() -> str | None:
    """The client of the request in hand; None outside a request (the UI's own engine, the CLI)."""
    return _current.get()


@contextmanager
def calling(client: str | None) -> Iterator[None]:
    token = _current.set(client)
    try:
        yield
    finally:
        _current.reset(token)
