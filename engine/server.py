"""The engine over HTTP: FastAPI, bearer-token auth, upload limits, a persistent job queue.

python -m engine serve [--host 127.0.0.1] [--port 8000] [--ngrok]
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import secrets
import threading
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import Depends, FastAPI, File, Form, Header, HTTPException, Query, Request, UploadFile
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import ValidationError

from .errors import BadInput, Busy, Cancelled, EngineError, ModelUnavailable, QueueFull, TooLarge, UnsupportedImage
from .jobs import TERMINAL, JobRunner, JobStore, job_view
from .schema import GenerateRequest, describe_validation_error

log = logging.getLogger(__name__)


def status_for(exc: EngineError) -> int:
    if isinstance(exc, TooLarge):
        return 413
    if isinstance(exc, UnsupportedImage):
        return 415
    if isinstance(exc, BadInput):
        return 422
    if isinstance(exc, QueueFull):
        return 429
    if isinstance(exc, Cancelled):
        return 409
    if isinstance(exc, (Busy, ModelUnavailable)):
        return 503
    return 500


def create_app(
    engine,
    token: str | None,
    max_queued: int = 32,
    abandon_after: float = 600.0,
    jobs_path: Path | None = None,
    request_timeout: float = 300.0,
) -> FastAPI:
    """An app over `engine` (a LocalEngine). `token` None means no auth (loopback only)."""
    settings = engine.settings
    jobs_path = jobs_path or Path(settings.data_dir).expanduser() / "jobs.sqlite"
    store = JobStore(jobs_path, max_queued=max_queued, abandon_after=abandon_after)
    runner = JobRunner(engine, store)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        runner.start()
        yield
        runner.stop()

    app = FastAPI(title="Generative Design Studio engine", version="1", lifespan=lifespan)
    app.state.engine, app.state.store, app.state.runner = engine, store, runner

    @app.exception_handler(EngineError)
    async def _engine_error(request: Request, exc: EngineError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=status_for(exc))

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s", request.url.path)
        return JSONResponse({"detail": "internal error"}, status_code=500)

    @app.middleware("http")
    async def _limit_body(request: Request, call_next):
        length = request.headers.get("content-length")
        if length and length.isdigit() and int(length) > settings.max_upload_bytes + 64 * 1024:
            limit = settings.max_upload_bytes / 1e6
            return JSONResponse({"detail": f"request body over the {limit:.0f} MB limit"}, status_code=413)
        return await call_next(request)

    def auth(authorization: Annotated[str | None, Header()] = None) -> None:
        if token is None:
            return
        scheme, _, given = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not secrets.compare_digest(given.encode(), token.encode()):
            raise HTTPException(401, "missing or wrong token", headers={"WWW-Authenticate": "Bearer"})

    guarded = [Depends(auth)]

    async def read_upload(upload: UploadFile | None, name: str) -> bytes | None:
        if upload is None:
            return None
        data = await upload.read(settings.max_upload_bytes + 1)
        if len(data) > settings.max_upload_bytes:
            raise TooLarge(f"{name} is over the {settings.max_upload_bytes / 1e6:.0f} MB limit")
        return data

    def build_request(prompt: str, sketch: bytes | None, options: str | None) -> GenerateRequest:
        try:
            extra = json.loads(options) if options else {}
        except ValueError:
            raise BadInput("options must be a JSON object") from None
        if not isinstance(extra, dict):
            raise BadInput("options must be a JSON object")
        extra = {k: v for k, v in extra.items() if k not in ("prompt", "sketch")}
        request = GenerateRequest.build(prompt=prompt, sketch=sketch, **extra)
        # refuse what would fail anyway now, not minutes later in the queue: the sketch, the region masks
        if sketch is not None or request.regions:
            engine.prepare(request)
        for name in [request.style] if request.style else [b.style for b in request.blend]:
            engine.library.find(name)
        return request

    @app.get("/health", dependencies=guarded)
    def health() -> dict[str, Any]:
        return {**engine.health(), "jobs_waiting": store.queued()}

    @app.get("/styles", dependencies=guarded)
    def list_styles(include_hidden: bool = False) -> list[dict[str, Any]]:
        return [s.__dict__ for s in engine.list_styles(include_hidden)]

    @app.post("/styles", dependencies=guarded, status_code=201)
    async def add_style(
        file: Annotated[UploadFile, File()],
        name: Annotated[str, Form()],
        description: Annotated[str, Form()] = "",
        tags: Annotated[str, Form()] = "",
    ) -> dict[str, Any]:
        data = await read_upload(file, "style image")
        return engine.add_style(data, name, description, [t for t in tags.split(",") if t.strip()]).__dict__

    @app.delete("/styles/{name_or_id}", dependencies=guarded)
    def remove_style(name_or_id: str) -> dict[str, Any]:
        return engine.remove_style(name_or_id).__dict__

    @app.post("/styles/{name_or_id}/hide", dependencies=guarded)
    def hide_style(name_or_id: str, hidden: bool = True) -> dict[str, Any]:
        return engine.hide_style(name_or_id, hidden).__dict__

    @app.get("/styles/{name_or_id}/image", dependencies=guarded)
    def style_image(name_or_id: str) -> Response:
        from .images import png_bytes

        return Response(png_bytes(engine.style_image(name_or_id)), media_type="image/png")

    @app.get("/styles/search", dependencies=guarded)
    def search_styles(text: str, k: Annotated[int, Query(ge=1, le=100)] = 3) -> list[dict[str, Any]]:
        return [h.as_dict() for h in engine.search_styles(text=text, k=k)]

    @app.post("/generate", dependencies=guarded)
    async def generate(
        request: Request,
        prompt: Annotated[str, Form()],
        file: Annotated[UploadFile | None, File()] = None,
        options: Annotated[str | None, Form()] = None,
    ) -> Response:
        """The seed client's one call: multipart `file` + `prompt` → the PNG (or JSON with base64 images)."""
        req = build_request(prompt, await read_upload(file, "sketch"), options)
        cancel = threading.Event()
        try:
            result = await asyncio.wait_for(
                asyncio.to_thread(engine.generate, req, None, cancel), timeout=request_timeout
            )
        except TimeoutError:
            cancel.set()  # the render stops at its next step
            detail = f"the render took over {request_timeout:g} s; use POST /jobs for long runs"
            raise HTTPException(504, detail) from None
        used = quote(", ".join(s.name for s in result.styles if s.used), safe=" ,'&()+-.")  # headers are latin-1
        headers = {"X-Retrieved-Style": used, "X-Seed": str(result.seeds[0]), "X-Run-Id": result.run_id}
        if "application/json" in request.headers.get("accept", ""):
            return JSONResponse(result_payload(result.run_id), headers=headers)
        return Response(Path(result.paths[0]).read_bytes(), media_type="image/png", headers=headers)

    @app.post("/jobs", dependencies=guarded, status_code=202)
    async def submit(
        prompt: Annotated[str, Form()],
        file: Annotated[UploadFile | None, File()] = None,
        options: Annotated[str | None, Form()] = None,
    ) -> dict[str, Any]:
        req = build_request(prompt, await read_upload(file, "sketch"), options)
        job_id = store.submit(req.model_dump_json(), req.steps)
        runner.notify()
        return job_view(store.get(job_id))

    def get_job(job_id: str) -> dict[str, Any]:
        job = store.get(job_id, polled=True)
        if job is None:
            raise HTTPException(404, f"no job '{job_id}'")
        return job

    @app.get("/jobs/{job_id}", dependencies=guarded)
    def job_state(job_id: str) -> dict[str, Any]:
        return job_view(get_job(job_id))

    @app.get("/jobs/{job_id}/events", dependencies=guarded)
    async def job_events(job_id: str) -> StreamingResponse:
        """Server-sent events: one `data:` line per change of state or step, until the job ends."""
        get_job(job_id)

        async def stream():
            last = None
            while True:
                view = job_view(store.get(job_id, polled=True))
                key = (view["state"], view["step"], view["position"])
                if key != last:
                    yield f"data: {json.dumps(view)}\n\n"
                    last = key
                if view["state"] in TERMINAL:
                    return
                await asyncio.sleep(0.1)

        return StreamingResponse(stream(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})

    def result_payload(run_id: str) -> dict[str, Any]:
        run = engine.run(run_id)
        images = [base64.b64encode(Path(p).read_bytes()).decode() for p in run["outputs"]]
        return {"run_id": run_id, "images": images, "metadata": run["metadata"]}

    @app.get("/jobs/{job_id}/result", dependencies=guarded)
    def job_result(job_id: str) -> dict[str, Any]:
        job = get_job(job_id)
        if job["state"] != "done":
            detail = job["error"] or f"the job is {job['state']}"
            raise HTTPException(409 if job["state"] not in ("failed", "cancelled") else 410, detail)
        return result_payload(job["run_id"])

    @app.delete("/jobs/{job_id}", dependencies=guarded)
    def cancel_job(job_id: str) -> dict[str, Any]:
        if store.cancel(job_id) is None:
            raise HTTPException(404, f"no job '{job_id}'")
        return job_view(store.get(job_id))

    @app.post("/analyze", dependencies=guarded)
    async def analyze(
        file: Annotated[UploadFile, File()],
        concepts: Annotated[str | None, Form()] = None,
        k: Annotated[int, Form()] = 5,
        segment: Annotated[bool, Form()] = True,
        grid: Annotated[int, Form()] = 8,
        mask_format: Annotated[str, Form(pattern="^(rle|png)$")] = "rle",
    ) -> dict[str, Any]:
        """CLIP concepts for the image and, as the seed's service did, its SAM2 segmentation: masks (RLE or
        PNG), polygons and scores, each region with its own concepts."""
        data = await read_upload(file, "image")
        wanted = [c for c in concepts.split(",")] if concepts else None
        k = max(1, min(k, 50))
        out: dict[str, Any] = {"concepts": await asyncio.to_thread(engine.analyze, data, wanted, k)}
        if segment:
            found = await asyncio.to_thread(engine.segment_all, data, wanted, min(k, 5), grid)
            out["segmentation"] = {
                "width": found["width"],
                "height": found["height"],
                "masks": [s.as_dict(mask_format) for s in found["segments"]],
            }
        return out

    @app.post("/segment", dependencies=guarded)
    async def segment(
        file: Annotated[UploadFile, File()],
        points: Annotated[str | None, Form(description="JSON [[x, y], ...] in image pixels")] = None,
        labels: Annotated[str | None, Form(description="JSON [1, 0, ...]: 1 inside, 0 outside")] = None,
        box: Annotated[str | None, Form(description="JSON [x0, y0, x1, y1]")] = None,
        mask_format: Annotated[str, Form(pattern="^(rle|png)$")] = "png",
    ) -> dict[str, Any]:
        """SAM2 point and box prompts → one mask (PNG or RLE), its polygons and its score."""
        from .regions import parse_json_list

        data = await read_upload(file, "image")
        pts = parse_json_list(points, "points")
        if pts is not None and not all(isinstance(p, list) and len(p) == 2 for p in pts):
            raise BadInput("points must be a JSON list of [x, y] pairs, e.g. [[120, 80], [200, 90]]")
        found = await asyncio.to_thread(
            engine.segment, data, pts, parse_json_list(labels, "labels"), parse_json_list(box, "box", 4)
        )
        return found.as_dict(mask_format)

    @app.exception_handler(ValidationError)
    async def _validation(request: Request, exc: ValidationError) -> JSONResponse:
        return JSONResponse({"detail": describe_validation_error(exc)}, status_code=422)

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

    token = token or engine.settings.api_token
    if token is None and (ngrok or not is_loopback(host)):
        token = secrets.token_urlsafe(24)
        print(f"API token (send as 'Authorization: Bearer …'): {token}", flush=True)
    if ngrok:
        print(f"Public URL: {open_tunnel(port)}", flush=True)
    app = create_app(engine, token)
    uvicorn.run(app, host=host, port=port, log_level="info", timeout_keep_alive=30)
