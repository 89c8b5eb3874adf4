"""The calls the seed client and the first API made, kept as they were (README, "Remote engine"), each a thin
translation onto the engine interface: /health, /styles…, /generate, /jobs…, /analyze, /segment."""

from __future__ import annotations

import asyncio
import json
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, FastAPI, File, Form, HTTPException, Query, Request, UploadFile
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool

from ..api import TERMINAL, JobInfo
from ..errors import BadInput, NotFound
from ..masks import parse_json_list
from ..schema import MAX_PROMPT, GenerateRequest
from .routes import Waits, read_limited

# What the forms' fields take, as the OpenAPI says it; the engine checks them and says what is wrong in its own words
_NUMBER = r" ?(0|[1-9][0-9]{0,4})(\.[0-9]{1,4})? ?"  # as JSON writes it: no leading zeros
POINTS = {"pattern": rf"^\[ ?\[{_NUMBER},{_NUMBER}\]( ?, ?\[{_NUMBER},{_NUMBER}\]){{0,63}} ?\]$"}
LABELS = {"pattern": r"^\[ ?[01]( ?, ?[01]){0,63} ?\]$"}
BOX = {"pattern": rf"^\[{_NUMBER}(,{_NUMBER}){{3}}\]$"}
PROMPT = {"pattern": r"\S", "maxLength": MAX_PROMPT}
STYLE_NAME = {"pattern": r"^[\w.,'&()+-][\w .,'&()+-]{0,59}$"}
# Each route's form fields of which a call gives at least one
ONE_OF = {"/segment": ("points", "box")}
# A JSON object in a form field
JSON_OBJECT = {"contentMediaType": "application/json", "contentSchema": {"type": "object"}}


def job_view(job: JobInfo) -> dict[str, Any]:
    """What the job API's clients see of a job."""
    return {
        "id": job.id,
        "kind": job.kind,
        "state": job.state,
        "position": job.position,
        "stage": job.stage,
        "step": job.step,
        "total": job.total,
        "elapsed": job.elapsed,
        "seconds_per_step": job.seconds_per_step,
        "error": job.error,
        "run_id": (job.result or {}).get("run_id"),
    }


def build_request(prompt: str, sketch: bytes | None, options: str | None) -> GenerateRequest:
    try:
        extra = json.loads(options) if options else {}
    except ValueError:
        raise BadInput("options must be a JSON object") from None
    if extra is None:  # `null`: none
        extra = {}
    if not isinstance(extra, dict):
        raise BadInput("options must be a JSON object")
    extra = {k: v for k, v in extra.items() if k not in ("prompt", "sketch")}
    return GenerateRequest.build(prompt=prompt, sketch=sketch, **extra)


def add_style_routes(router: APIRouter, engine, limit: int) -> None:
    @router.get("/styles")
    def list_styles(include_hidden: bool = False) -> list[dict[str, Any]]:
        return [s.__dict__ for s in engine.styles.list(include_hidden)]

    @router.post("/styles", status_code=201)
    async def add_style(
        file: Annotated[UploadFile, File()],
        name: Annotated[str, Form(json_schema_extra=STYLE_NAME)],
        description: Annotated[str, Form()] = "",
        tags: Annotated[str, Form()] = "",
    ) -> dict[str, Any]:
        data = await read_limited(file, "style image", limit)
        tag_list = [t for t in tags.split(",") if t.strip()]
        return (await run_in_threadpool(engine.styles.add, data, name, description, tag_list)).__dict__

    @router.delete("/styles/{name_or_id}")
    def remove_style(name_or_id: str) -> dict[str, Any]:
        return engine.styles.remove(name_or_id).__dict__

    @router.post("/styles/{name_or_id}/hide")
    def hide_style(name_or_id: str, hidden: bool = True) -> dict[str, Any]:
        return engine.styles.hide(name_or_id, hidden).__dict__

    @router.get("/styles/{name_or_id}/image")
    def style_image(name_or_id: str) -> Response:
        return Response(engine.styles.image(name_or_id), media_type="image/png")

    @router.get("/styles/search")
    def search_styles(
        text: Annotated[str, Query(pattern=r"\S")], k: Annotated[int, Query(ge=1, le=100)] = 3
    ) -> list[dict[str, Any]]:
        return [h.as_dict() for h in engine.styles.search(text=text, k=k)]


def room_first(engine):
    """A dependency: a client over its share of the queue is told so before its form is checked."""

    async def room() -> None:
        await run_in_threadpool(engine.jobs.room)

    return Depends(room)


def add_render_routes(router: APIRouter, engine, limit: int, request_timeout: float) -> None:
    @router.post("/generate", dependencies=[room_first(engine)])
    async def generate(
        request: Request,
        prompt: Annotated[str, Form(json_schema_extra=PROMPT)],
        file: Annotated[UploadFile | None, File()] = None,
        options: Annotated[str | None, Form(json_schema_extra=JSON_OBJECT)] = None,
    ) -> Response:
        """The seed client's one call: multipart `file` + `prompt` → the PNG (or JSON with base64 images)."""
        sketch = await read_limited(file, "sketch", limit) if file is not None else None
        job = await run_in_threadpool(engine.renders.submit, build_request(prompt, sketch, options))
        cancel = threading.Event()
        try:
            await asyncio.wait_for(run_in_threadpool(engine.follow, job, None, cancel), timeout=request_timeout)
        except TimeoutError:
            cancel.set()
            await run_in_threadpool(engine.jobs.cancel, job.id)  # the render stops at its next step
            raise HTTPException(
                504, f"the render took over {request_timeout:g} s; use POST /jobs for long runs"
            ) from None
        result = await run_in_threadpool(engine.renders.result, job.id)
        used = quote(", ".join(s.name for s in result.styles if s.used), safe=" ,'&()+-.")  # headers are latin-1
        headers = {"X-Retrieved-Style": used, "X-Seed": str(result.seeds[0]), "X-Run-Id": result.run_id}
        if "application/json" in request.headers.get("accept", ""):
            return JSONResponse(result_payload(result), headers=headers)
        return Response(result.png[0], media_type="image/png", headers=headers)

    @router.post("/analyze")
    async def analyze(
        file: Annotated[UploadFile, File()],
        concepts: Annotated[str | None, Form()] = None,
        k: Annotated[int, Form()] = 5,
        segment: Annotated[bool, Form()] = True,
        grid: Annotated[int, Form(ge=1, le=32)] = 8,
    ) -> dict[str, Any]:
        """CLIP concepts for the image and, as the seed's service did, its SAM2 segmentation: masks (RLE),
        polygons and scores, each region with its own concepts."""
        data = await read_limited(file, "image", limit)
        wanted = concepts.split(",") if concepts else None
        return await run_in_threadpool(engine.renders.analyze, data, wanted, max(1, min(k, 50)), segment, grid)

    @router.post("/segment")
    async def segment(
        file: Annotated[UploadFile, File()],
        points: Annotated[
            str | None, Form(description="JSON [[x, y], ...] in pixels", json_schema_extra=POINTS)
        ] = None,
        labels: Annotated[str | None, Form(description="JSON [1, 0, ...]: 1 inside", json_schema_extra=LABELS)] = None,
        box: Annotated[str | None, Form(description="JSON [x0, y0, x1, y1]", json_schema_extra=BOX)] = None,
        mask_format: Annotated[str, Form(pattern="^(rle|png)$")] = "png",
    ) -> dict[str, Any]:
        """SAM2 point and box prompts → one mask (PNG or RLE), its polygons and its score."""
        import base64

        from ..masks import rle_encode

        data = await read_limited(file, "image", limit)
        pts = parse_json_list(points, "points")  # checks the pairs, the labels and the box too
        found = await run_in_threadpool(
            engine.renders.segment, data, pts, parse_json_list(labels, "labels"), parse_json_list(box, "box", 4)
        )
        out = found.model_dump(exclude={"mask_png"})
        if mask_format == "png":
            out["mask_png"] = base64.b64encode(found.mask_png).decode()
        else:
            out["rle"] = rle_encode(found.mask())
        return out


def result_payload(result) -> dict[str, Any]:
    import base64

    return {
        "run_id": result.run_id,
        "images": [base64.b64encode(b).decode() for b in result.png],
        "metadata": result.metadata,
    }


def add_job_routes(router: APIRouter, engine, limit: int, waits: Waits) -> None:
    @router.post("/jobs", status_code=202, dependencies=[room_first(engine)])
    async def submit(
        prompt: Annotated[str, Form(json_schema_extra=PROMPT)],
        file: Annotated[UploadFile | None, File()] = None,
        options: Annotated[str | None, Form(json_schema_extra=JSON_OBJECT)] = None,
    ) -> dict[str, Any]:
        sketch = await read_limited(file, "sketch", limit) if file is not None else None
        return job_view(await run_in_threadpool(engine.renders.submit, build_request(prompt, sketch, options)))

    @router.get("/jobs/{job_id}")
    def job_state(job_id: str) -> dict[str, Any]:
        return job_view(engine.jobs.get(job_id))

    @router.get("/jobs/{job_id}/events")
    async def job_events(job_id: str) -> StreamingResponse:
        """Server-sent events: one `data:` line per change of state or step, until the job ends. A stream is a
        long poll: it holds no worker thread, and past the bound on open waits it sends the job as it is and ends
        (the client reconnects)."""
        await run_in_threadpool(engine.jobs.get, job_id)

        async def stream():
            last = None
            held = waits.take()
            try:
                while True:
                    view = job_view(await run_in_threadpool(engine.jobs.get, job_id))
                    key = (view["state"], view["step"], view["position"])
                    if key != last:
                        yield f"data: {json.dumps(view)}\n\n"
                        last = key
                    if view["state"] in TERMINAL or not held:
                        return
                    await asyncio.sleep(waits.every)
            finally:
                if held:
                    waits.give()

        return StreamingResponse(stream(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})

    @router.get("/jobs/{job_id}/result")
    def job_result(job_id: str) -> dict[str, Any]:
        job = engine.jobs.get(job_id)
        if job.state != "done":
            detail = job.error or f"the job is {job.state}"
            raise HTTPException(409 if job.state not in ("failed", "cancelled") else 410, detail)
        if job.kind != "render":
            raise NotFound(f"job '{job_id}' is a {job.kind} job; its result is {job.result}")
        return result_payload(engine.renders.result(job_id))

    @router.delete("/jobs/{job_id}")
    def cancel_job(job_id: str) -> dict[str, Any]:
        return job_view(engine.jobs.cancel(job_id))


def add_routes(app: FastAPI, engine, guarded: list, limit: int, request_timeout: float, waits: Waits) -> None:
    """The seed API's routes, their uploads within `limit` bytes each."""
    router = APIRouter(dependencies=guarded, tags=["seed API"])
    health_threads = ThreadPoolExecutor(2, thread_name_prefix="health")  # its own: a busy threadpool cannot starve it

    @router.get("/health", responses={503: {"description": "degraded: the job store cannot be written"}})
    async def health() -> Response:
        """What the engine is. 200 while it works; 503 with the same body plus `status: degraded` and the reason
        (`store_error`) while the job store cannot be written: submits would not run."""
        caps = await asyncio.get_running_loop().run_in_executor(health_threads, engine.capabilities)
        body = caps.model_dump(mode="json")
        problem = getattr(caps, "store_error", None)
        if problem:
            return JSONResponse({**body, "status": "degraded", "detail": problem, "error": "Degraded"}, 503)
        return JSONResponse(body)

    add_style_routes(router, engine, limit)
    add_render_routes(router, engine, limit, request_timeout)
    add_job_routes(router, engine, limit, waits)
    app.include_router(router)
