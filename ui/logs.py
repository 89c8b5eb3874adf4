"""The app server's log without the traceback a closed browser tab can leave.

Streamlit's websocket endpoint (streamlit/web/server/starlette/starlette_websocket.py) reads each message with
`receive_bytes()` and takes any RuntimeError there for a text frame: it closes the socket and raises. Starlette's
`WebSocketDisconnected` is a RuntimeError too. When a tab closes right after it sent a message while the page is still
being drawn, the send to the gone tab fails first (the socket is marked closed), the message the tab sent is read,
the next `receive_bytes()` raises `WebSocketDisconnected`, the endpoint's `close()` raises it again, and uvicorn logs
"Exception in ASGI application" with its traceback. Nothing is wrong (the tab is gone and its session is cleaned up as
usual), and none of it runs through this app's code, so the one record is dropped here; every other error still logs.
"""

from __future__ import annotations

import logging

from starlette.websockets import WebSocketDisconnected

# where that traceback is logged: uvicorn's ASGI error, and Streamlit's websocket sender
LOGGERS = ("uvicorn.error", "streamlit.web.server.starlette.starlette_websocket")


class ClosedTabFilter(logging.Filter):
    """Drops a record whose exception is a websocket already closed by the browser."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not isinstance(exc, WebSocketDisconnected)


def quiet_closed_tabs() -> None:
    """Install the filter once per process (app.py calls this on every run)."""
    for name in LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, ClosedTabFilter) for f in logger.filters):
            logger.addFilter(ClosedTabFilter())
