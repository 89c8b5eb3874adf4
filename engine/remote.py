"""`RemoteEngine`: the engine interface over HTTP, against `python -m engine serve` on a GPU box or behind a tunnel.

Every operation of every service is implemented, from the same declarations the server makes its routes of
(engine/rpc.py): the arguments go out as the interface types them, files as file parts, and the result comes back
as the same type (files as bytes). Errors come back as the `EngineError` the server raised. No call is held open
longer than ~20 s, so tunnels that cut long requests do no harm: long work is a job, followed by short waits.
"""

from __future__ import annotations

import secrets
import threading
from typing import Any

import httpx
from pydantic import ValidationError

from . import api, clients
from .api import Capabilities, Engine
from .errors import BadInput, EngineError, ModelUnavailable, error_class
from .rpc import Operation, operations
from .schema import describe_validation_error


def is_degraded(resp: httpx.Response) -> bool:
    try:
        body = resp.json()
    except ValueError:
        return False
    return isinstance(body, dict) and body.get("status") == "degraded"


class Transport:
    """One HTTP client per engine: the base URL, the token, TLS verification on, errors as `EngineError`s."""

    def __init__(self, url: str, token: str | None = None, timeout: float = 60.0):
        self.url = url.rstrip("/")
        # one client id per engine object (one per Studio session): the server bounds each client's queue share
        self.headers = {"ngrok-skip-browser-warning": "true", clients.HEADER: f"remote-{secrets.token_hex(8)}"}
        if token:
            self.headers["Authorization"] = f"Bearer {token}"
        self.timeout = timeout
        self.http = self.client()
        self.opening = threading.Lock()

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers=self.headers, timeout=self.timeout, verify=True)

    def open(self) -> None:
        """A new client after `close` (the same client id: the server sees the same caller)."""
        if self.http.is_closed:
            with self.opening:
                if self.http.is_closed:
                    self.http = self.client()

    def close(self) -> None:
        self.http.close()

    def request(self, method: str, path: str, degraded_ok: bool = False, **kw) -> httpx.Response:
        """The response; an error status raised as the `EngineError` the server named. `degraded_ok`: a 503 whose
        body says `status: degraded` (/health while the job store fails) is an answer, not an error."""
        self.open()  # a call after `close` opens again
        try:
            resp = self.http.request(method, path, **kw)
        except httpx.HTTPError as exc:
            raise ModelUnavailable(
                f"cannot reach the engine at {self.url} ({type(exc).__name__})",
                fix="check the URL, that the server runs, and the tunnel",
            ) from None
        if resp.status_code == 401:
            raise EngineError("the engine refused the token (401)", fix="paste the token the server printed")
        if degraded_ok and resp.status_code == 503 and is_degraded(resp):
            return resp
        if resp.status_code >= 400:
            try:
                body = resp.json()
                detail, kind = body.get("detail", resp.text), body.get("error")
            except ValueError:
                detail, kind = resp.text[:200], None
            if not isinstance(detail, str):  # FastAPI's own validation errors: a list of problems
                detail = "; ".join(str(d.get("msg", d)) for d in detail) if isinstance(detail, list) else str(detail)
            raise error_class(kind, resp.status_code)(detail)
        return resp

    def call(self, op: Operation, *args: Any, **kwargs: Any) -> Any:
        plain, files = op.bind(*args, **kwargs)
        try:
            body = op.args(**plain).model_dump_json()
        except ValidationError as exc:  # refused here as the server would: one line
            raise BadInput(describe_validation_error(exc)) from None
        if files:
            parts = {name: (name, data, "application/octet-stream") for name, data in files.items()}
            resp = self.request("POST", op.path, data={"args": body}, files=parts)
        else:
            resp = self.request("POST", op.path, content=body, headers={"content-type": "application/json"})
        if op.returns_bytes:
            return None if resp.status_code == 204 else resp.content
        return op.result.validate_json(resp.content)


def _method(transport: Transport, op: Operation):
    def method(self, *args, **kwargs):
        return transport.call(op, *args, **kwargs)

    method.__name__ = op.name
    method.__doc__ = op.doc
    return method


def remote_service(transport: Transport, name: str):
    """An implementation of service `name` whose every operation is an HTTP call."""
    base = api.SERVICES[name]
    methods = {op_name: _method(transport, op) for op_name, op in operations()[name].items()}
    return type(f"Remote{base.__name__}", (base,), methods)()


class RemoteEngine(Engine):
    """Talks to `python -m engine serve`; TLS verification stays on."""

    def __init__(self, url: str, token: str | None = None, timeout: float = 60.0, poll: float | None = None):
        self.transport = Transport(url, token, timeout)
        self.url = self.transport.url
        self.poll = poll
        for name in api.SERVICES:
            setattr(self, name, remote_service(self.transport, name))

    def start(self) -> None:
        self.transport.open()

    def close(self) -> None:
        """Its connections close; a later call opens new ones."""
        self.transport.close()

    def capabilities(self) -> Capabilities:
        """What the server's engine is; a degraded one (503, `status: degraded`) too: `store_error` says why."""
        info = self.transport.request("GET", "/health", degraded_ok=True).json()
        known = {k: v for k, v in info.items() if k in Capabilities.model_fields}
        return Capabilities(**{**known, "remote": True})

    def follow(self, job, on_progress=None, cancel=None, every: float | None = None):
        return super().follow(job, on_progress, cancel, every=self.poll if every is None else every)
