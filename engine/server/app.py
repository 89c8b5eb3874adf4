"""The FastAPI app: errors as one line with their status, the body-size limit, the token, then the routers."""

from __future__ import annotations

import errno
import logging
import re
import secrets
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated
from urllib.parse import urlsplit

import fastapi_offline
from fastapi import Depends, FastAPI, Header, HTTPException, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from .. import clients
from ..api import Engine
from ..errors import BadInput, EngineError, status_for
from ..schema import describe_validation_error
from . import legacy, routes
from .routes import BadBody, WrongMediaType

log = logging.getLogger(__name__)
MIN_TOKEN = 16


def error_body(exc: EngineError) -> dict:
    """One line and the error's kind; server-side classes that only pick a status (BadBody…) go as their base."""
    kind = type(exc) if getattr(type(exc), "status", None) is None else type(exc).__mro__[1]
    return {"detail": str(exc), "error": kind.__name__}


def error_response(exc: EngineError) -> JSONResponse:
    return JSONResponse(error_body(exc), status_code=getattr(exc, "status", None) or status_for(exc))


DISK_FULL = {errno.ENOSPC, errno.EDQUOT}


def disk_full(exc: BaseException) -> OSError | None:
    """The ENOSPC/EDQUOT OSError in `exc` or in what caused it, if there is one."""
    seen = 0
    while exc is not None and seen < 10:
        if isinstance(exc, OSError) and exc.errno in DISK_FULL:
            return exc
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return None


def disk_full_response(exc: OSError) -> JSONResponse:
    """507 and one line: the disk is full, and which file was being written (its name, never its folder)."""
    what = f"while writing {Path(exc.filename).name}" if exc.filename else "while writing"
    line = f"the engine's disk is full: free space on the server ({what})"
    return JSONResponse({"detail": line, "error": "DiskFull"}, status_code=507)


def request_problem(exc: RequestValidationError) -> str:
    """FastAPI's list of problems with a form or query as one line: the first one, without the `body.` prefix."""
    errors = [{**e, "loc": tuple(e.get("loc", ()))[1:]} for e in exc.errors()] or [{"msg": "invalid request"}]
    return describe_validation_error(_Errors(errors))


class _Errors:
    """The shape describe_validation_error reads (`errors()`), over FastAPI's list."""

    def __init__(self, errors: list[dict]) -> None:
        self._errors = errors

    def errors(self) -> list[dict]:
        return self._errors


def add_error_handlers(app: FastAPI, limit: int) -> None:
    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if isinstance(exc, BodyTooLarge):
            return too_large(limit)
        if isinstance(exc, CutShort):
            return error_response(BadBody(exc.detail))
        if exc.status_code == 400:  # starlette's own: a multipart body it could not parse
            return error_response(BadBody(f"the request body cannot be read: {str(exc.detail).rstrip('.')}"))
        return await http_exception_handler(request, exc)

    @app.exception_handler(EngineError)
    async def _engine_error(request: Request, exc: EngineError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _request_invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(BadInput(request_problem(exc)))

    @app.exception_handler(ValidationError)
    async def _validation(request: Request, exc: ValidationError) -> JSONResponse:
        return error_response(BadInput(describe_validation_error(exc)))

    @app.exception_handler(UnicodeDecodeError)
    async def _not_utf8(request: Request, exc: UnicodeDecodeError) -> JSONResponse:
        return error_response(BadBody("the request body is not UTF-8 text"))

    @app.exception_handler(RecursionError)
    async def _too_deep(request: Request, exc: RecursionError) -> JSONResponse:
        return error_response(BadInput("the request is nested too deeply"))

    async def _internal(request: Request, exc: Exception) -> JSONResponse:
        full = disk_full(exc)
        if full is not None:
            log.error("disk full on %s: %s", request.url.path, full.strerror)
            return disk_full_response(full)
        log.exception("unhandled error on %s", request.url.path)
        return JSONResponse({"detail": "internal error", "error": "EngineError"}, status_code=500)

    # OSError on its own: answered inside the app (a full disk is no crash); anything else last, by starlette
    app.add_exception_handler(OSError, _internal)
    app.add_exception_handler(Exception, _internal)


class BodyTooLarge(HTTPException):
    def __init__(self) -> None:
        super().__init__(413, "request body over the limit")


def body_limit(app, max_bytes: int):
    """Pure ASGI: a declared body over the limit is refused before it is read; a streamed (chunked) one is stopped
    as soon as it passes the limit, so nothing past it is read or spooled to a temporary file. The limit leaves room
    for base64 inside JSON (4/3) and a form's own parts."""
    limit = int(max_bytes * 1.4) + 64 * 1024

    async def limited_app(scope, receive, send):
        if scope["type"] != "http":
            return await app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > limit:
            return await too_large(max_bytes)(scope, receive, send)
        seen = 0

        async def counted():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise BodyTooLarge  # through the route to the 413 handler
            return message

        return await app(scope, counted, send)

    return limited_app


def too_large(max_bytes: int) -> JSONResponse:
    return JSONResponse({"detail": f"request body over the {max_bytes / 1e6:.0f} MB limit", "error": "TooLarge"}, 413)


BODY_METHODS = {"POST", "PUT", "PATCH", "DELETE"}


def declared_media(app: FastAPI) -> list[tuple[re.Pattern, str, frozenset[str]]]:
    """Each operation of the OpenAPI as (path pattern, method, the media types its body may have): the one place
    the server says what it takes, so the check below cannot drift from /docs."""
    table = []
    for path, item in app.openapi()["paths"].items():
        pattern = re.compile("^" + re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(path)) + "$")
        for method, spec in item.items():
            media = frozenset((spec.get("requestBody") or {}).get("content", {}))
            table.append((pattern, method.upper(), media))
    return table


def media_problem(path: str, method: str, headers: dict, declared: frozenset[str]) -> EngineError | None:
    """Why a request's body cannot be what the route takes (415, or 400 for a form without a boundary), or None."""
    length = headers.get(b"content-length", b"").strip()
    has_body = b"transfer-encoding" in headers or (length not in (b"", b"0"))
    raw = headers.get(b"content-type")
    if not has_body and raw is None:
        return None
    if "multipart/form-data" in declared and "application/json" not in declared:  # a form route takes either form
        declared = declared | {"application/x-www-form-urlencoded"}
    text = raw.decode("latin-1") if raw is not None else ""
    media = text.split(";", 1)[0].strip().lower()
    if not media:  # no type: the interface routes read it as JSON, as they did
        return None if "application/json" in declared or not has_body else WrongMediaType(f"{path} takes no body")
    if media not in declared:
        if not declared:
            return WrongMediaType(f"{path} takes no body (got {media})") if has_body else None
        takes = " or ".join(sorted(declared))
        return WrongMediaType(f"{path} takes {takes}, not {media[:60]}")
    if media == "multipart/form-data" and "boundary=" not in text.lower():
        return BadBody("the multipart body has no boundary in its Content-Type")
    return None


def multipart_boundary(headers: dict) -> bytes | None:
    text = headers.get(b"content-type", b"").decode("latin-1")
    if not text.lower().startswith("multipart/form-data"):
        return None
    match = re.search(r'boundary="?([^";]+)"?', text, re.IGNORECASE)
    return match.group(1).encode("latin-1") if match else None


def body_decoder(app, fastapi_app: FastAPI):
    """Pure ASGI, before any route reads the body: a content type the route does not declare is 415, a form
    without a boundary or cut short before its closing boundary is 400, each one line. What is inside a JSON body
    (UTF-8, an object) the routes check as they decode it (routes.call_arguments)."""
    table: list | None = None

    async def decoded_app(scope, receive, send):
        nonlocal table
        if scope["type"] != "http" or scope["method"] not in BODY_METHODS:
            return await app(scope, receive, send)
        if table is None:
            table = declared_media(fastapi_app)
        path, method = scope["path"], scope["method"]
        declared = next((m for pattern, verb, m in table if verb == method and pattern.match(path)), None)
        headers = dict(scope["headers"])
        problem = None if declared is None else media_problem(path, method, headers, declared)
        if problem is not None:
            return await error_response(problem)(scope, receive, send)
        boundary = multipart_boundary(headers)
        if boundary is None:
            return await app(scope, receive, send)
        closing = b"--" + boundary + b"--"
        tail = b""

        async def checked():
            nonlocal tail
            message = await receive()
            if message["type"] == "http.request":
                tail = (tail + message.get("body", b""))[-(len(closing) + 8) :]
                if not message.get("more_body", False) and closing not in tail:
                    raise CutShort
            return message

        return await app(scope, checked, send)

    return decoded_app


class CutShort(HTTPException):
    def __init__(self) -> None:
        super().__init__(400, "the multipart body is cut short: it has no closing boundary")


def with_client(app):
    """Pure ASGI: the request's client for whatever it does (engine.clients): the cleaned X-Client-Id header, else
    the peer's address. Worker threads see it too (anyio copies the context into run_sync)."""

    async def named_app(scope, receive, send):
        if scope["type"] != "http":
            return await app(scope, receive, send)
        sent = dict(scope["headers"]).get(clients.HEADER.lower().encode(), b"").decode("latin-1")
        client = clients.clean(sent) or (scope.get("client") or ("unknown",))[0]
        with clients.calling(client):
            return await app(scope, receive, send)

    return named_app


LOOPBACK_NAMES = {"127.0.0.1", "localhost", "::1"}


def host_of(value: str) -> str:
    """The host name of a Host header or an Origin (scheme, brackets and port removed), lower-case."""
    value = value.strip().lower()
    if "://" in value:
        value = urlsplit(value).netloc
    if value.startswith("["):
        return value[1 : value.find("]")] if "]" in value else value
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


def add_loopback_guard(app: FastAPI) -> None:
    """Without a token the server trusts only this machine: a request whose Host or Origin names another host is
    refused (403). That stops web pages the designer visits from calling it (a foreign Origin) and DNS rebinding
    (a foreign Host that resolves to 127.0.0.1)."""

    @app.middleware("http")
    async def _loopback_only(request: Request, call_next):
        host = request.headers.get("host", "")
        origin = request.headers.get("origin")
        if host_of(host) not in LOOPBACK_NAMES or (origin is not None and host_of(origin) not in LOOPBACK_NAMES):
            what = f"Origin {origin}" if host_of(host) in LOOPBACK_NAMES else f"Host {host or '(none)'}"
            return JSONResponse(
                {"detail": f"refused: {what} is not this machine; a server without a token answers loopback only",
                 "error": "Forbidden"}, status_code=403,
            )  # fmt: skip
        return await call_next(request)


def check_token(token: str | None) -> str | None:
    """None (no auth: loopback only) or a token long enough to guess at no one's leisure."""
    if token is None:
        return None
    token = token.strip()
    if len(token) < MIN_TOKEN:
        raise EngineError(f"the API token is too short ({len(token)} characters); use at least {MIN_TOKEN}",
                          fix="or leave it unset to have one generated")  # fmt: skip
    return token


def auth_dependency(token: str | None):
    def auth(authorization: Annotated[str | None, Header()] = None) -> None:
        if token is None:
            return
        scheme, _, given = (authorization or "").partition(" ")
        given = given.strip()
        if scheme.lower() != "bearer" or not given or not secrets.compare_digest(given.encode(), token.encode()):
            raise HTTPException(401, "missing or wrong token", headers={"WWW-Authenticate": "Bearer"})

    return auth


DOCS_ASSETS = "/docs-assets"


def add_docs(app: FastAPI) -> None:
    """/docs: Swagger UI from the copy bundled in the fastapi-offline package, not a CDN, so it works offline and on a
    machine that reaches nothing. Public like /openapi.json (the token guards the operations). The interface's
    nested models are in components/schemas, so /docs and generated clients resolve every reference."""
    app.mount(DOCS_ASSETS, StaticFiles(directory=Path(fastapi_offline.__file__).parent / "static"), name="docs-assets")
    title = f"{app.title} · API"

    @app.get("/docs", include_in_schema=False)
    async def _swagger() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url, title=title, swagger_js_url=f"{DOCS_ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{DOCS_ASSETS}/swagger-ui.css", swagger_favicon_url=f"{DOCS_ASSETS}/favicon.png",
        )  # fmt: skip


def create_app(engine: Engine, token: str | None, request_timeout: float = 300.0, max_waits: int = 32) -> FastAPI:
    """An app over `engine`, any engine of the interface (a local one, or a remote one: a proxy), which it starts
    and closes with the app and reaches only through the interface. `token`: the server's own setting (None: no
    auth, loopback only). `max_waits` long polls may be open at once (more answer at once)."""
    token = check_token(token)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        engine.start()
        yield
        engine.close()

    limit = engine.about.limits().max_upload_bytes
    app = FastAPI(
        title="Generative Design Studio engine", version="2", lifespan=lifespan, docs_url=None, redoc_url=None
    )
    app.state.engine = engine
    add_error_handlers(app, limit)
    add_docs(app)
    if token is None:
        add_loopback_guard(app)
    guarded = [Depends(auth_dependency(token))]
    waits = routes.Waits(max_waits)
    legacy.add_routes(app, engine, guarded, limit, request_timeout, waits)
    routes.add_routes(app, engine, guarded, limit, waits, legacy.ONE_OF)
    app.add_middleware(body_decoder, fastapi_app=app)
    app.add_middleware(with_client)
    app.add_middleware(body_limit, max_bytes=limit)  # outermost: nothing past the limit is read
    return app


def is_loopback(host: str) -> bool:
    return host in ("127.0.0.1", "localhost", "::1")


def open_tunnel(port: int) -> str:
    """An ngrok tunnel to `port` (pyngrok, NGROK_AUTHTOKEN); its public https URL."""
    import os

    from pyngrok import conf, ngrok
    from pyngrok.exception import PyngrokError

    auth = os.environ.get("NGROK_AUTHTOKEN")
    if not auth:
        raise EngineError("--ngrok needs an ngrok account token", fix="set NGROK_AUTHTOKEN (dashboard.ngrok.com)")
    conf.get_default().auth_token = auth
    try:
        return ngrok.connect(port, "http").public_url
    except (PyngrokError, OSError) as exc:
        raise EngineError(
            f"the ngrok tunnel could not open ({exc})", fix="check NGROK_AUTHTOKEN and the network"
        ) from None


def serve(
    engine: Engine, host: str = "127.0.0.1", port: int = 8000, ngrok: bool = False, token: str | None = None
) -> None:
    """Run uvicorn; a token is required whenever the server is reachable from outside this machine (`token` None
    there: one is made and printed). The `serve` command passes the settings' `api_token` unless --token is given."""
    import uvicorn

    token = check_token(token)
    if token is None and (ngrok or not is_loopback(host)):
        token = secrets.token_urlsafe(24)
        print(f"API token (send as 'Authorization: Bearer …'): {token}", flush=True)
    app = create_app(engine, token)
    caps = engine.capabilities()
    print(f"Engine: device {caps.device} · {caps.precision or caps.dtype} · profile {caps.profile}", flush=True)
    if ngrok:
        print(f"Public URL: {open_tunnel(port)}", flush=True)
    uvicorn.run(app, host=host, port=port, log_level="info", timeout_keep_alive=30)
