"""The FastAPI app: errors as one line with their status, the body-size limit, the token, then the routers."""

from __future__ import annotations

import logging
import secrets
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated
from urllib.parse import urlsplit

import fastapi_offline
from fastapi import Depends, FastAPI, Header, HTTPException, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..errors import BadInput, EngineError, status_for
from ..schema import describe_validation_error
from . import legacy, routes

log = logging.getLogger(__name__)
MIN_TOKEN = 16


def error_body(exc: EngineError) -> dict:
    return {"detail": str(exc), "error": type(exc).__name__}


def add_error_handlers(app: FastAPI, limit: int) -> None:
    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if isinstance(exc, BodyTooLarge):
            return too_large(limit)
        return await http_exception_handler(request, exc)

    @app.exception_handler(EngineError)
    async def _engine_error(request: Request, exc: EngineError) -> JSONResponse:
        return JSONResponse(error_body(exc), status_code=status_for(exc))

    @app.exception_handler(ValidationError)
    async def _validation(request: Request, exc: ValidationError) -> JSONResponse:
        return JSONResponse(error_body(BadInput(describe_validation_error(exc))), status_code=422)

    @app.exception_handler(RecursionError)
    async def _too_deep(request: Request, exc: RecursionError) -> JSONResponse:
        return JSONResponse(error_body(BadInput("the request is nested too deeply")), status_code=422)

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s", request.url.path)
        return JSONResponse({"detail": "internal error", "error": "EngineError"}, status_code=500)


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
    machine that reaches nothing. Public like /openapi.json (the token guards the operations). No /redoc: ReDoc 2
    cannot resolve the `$defs` references in the interface routes' request schemas."""
    app.mount(DOCS_ASSETS, StaticFiles(directory=Path(fastapi_offline.__file__).parent / "static"), name="docs-assets")
    title = f"{app.title} · API"

    @app.get("/docs", include_in_schema=False)
    async def _swagger() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url, title=title, swagger_js_url=f"{DOCS_ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{DOCS_ASSETS}/swagger-ui.css", swagger_favicon_url=f"{DOCS_ASSETS}/favicon.png",
        )  # fmt: skip


def create_app(engine, token: str | None, request_timeout: float = 300.0) -> FastAPI:
    """An app over `engine` (a LocalEngine). `token` None means no auth (loopback only)."""
    token = check_token(token)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        engine.jobs.start()
        yield
        engine.jobs.stop()

    limit = engine.settings.max_upload_bytes
    app = FastAPI(
        title="Generative Design Studio engine", version="2", lifespan=lifespan, docs_url=None, redoc_url=None
    )
    app.state.engine = engine
    add_error_handlers(app, limit)
    add_docs(app)
    if token is None:
        add_loopback_guard(app)
    guarded = [Depends(auth_dependency(token))]
    legacy.add_routes(app, engine, guarded, request_timeout)
    routes.add_routes(app, engine, guarded)
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


def serve(engine, host: str = "127.0.0.1", port: int = 8000, ngrok: bool = False, token: str | None = None) -> None:
    """Run uvicorn; a token is required whenever the server is reachable from outside this machine."""
    import uvicorn

    if token is None:
        token = engine.settings.api_token
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
