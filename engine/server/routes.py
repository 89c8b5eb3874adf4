"""One router per service, one route per operation of the interface: `POST /api/{service}/{operation}` (see
engine/rpc.py). The arguments are validated as the interface declares them, uploads are read within the limit, and
the work runs in a worker thread, never on the event loop."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from ..errors import BadInput, TooLarge
from ..rpc import Operation, operations


class BadBody(BadInput):
    """A body that cannot be read at all: not UTF-8, a form without its boundary or cut short (400)."""

    status = 400


class WrongMediaType(BadInput):
    """A content type the route does not declare (415)."""

    status = 415


def parse_object(raw: bytes, what: str = "the request body") -> dict[str, Any]:
    """A JSON object from raw bytes: 400 when they are not UTF-8, 422 when they are not a JSON object."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise BadBody(f"{what} is not UTF-8 text") from None
    try:
        parsed = json.loads(text or "{}")
    except (ValueError, RecursionError):
        raise BadInput(f"{what} is not JSON: send the arguments as a JSON object") from None
    if not isinstance(parsed, dict):
        raise BadInput(f"{what} must be a JSON object, not a {type(parsed).__name__}")
    return parsed


async def read_limited(upload: UploadFile, name: str, limit: int) -> bytes:
    """An uploaded part, read at most one byte past the limit."""
    data = await upload.read(limit + 1)
    if len(data) > limit:
        raise TooLarge(f"{name} is over the {limit / 1e6:.0f} MB limit")
    return data


async def call_arguments(request: Request, op: Operation, limit: int) -> dict[str, Any]:
    """The operation's arguments from a multipart form (`args` JSON + file parts) or a JSON body."""
    files: dict[str, bytes] = {}
    if request.headers.get("content-type", "").startswith("multipart/form-data"):
        form = await request.form(max_files=len(op.files) + 1, max_fields=len(op.files) + 2,
                                  max_part_size=int(limit * 1.4) + 4096)  # fmt: skip
        text = form.get("args") or "{}"
        raw = (await read_limited(text, "args", int(limit * 1.4))) if isinstance(text, UploadFile) else text.encode()
        for name in op.files:
            part = form.get(name)
            if isinstance(part, UploadFile):
                files[name] = await read_limited(part, name, limit)
            elif part is not None:
                raise BadInput(f"{name} must be sent as a file part")
        unknown = sorted(set(form) - {"args", *op.files})
        if unknown:
            raise BadInput(f"{op.path} takes no '{unknown[0]}'")
        parsed = parse_object(raw, "args")
    else:
        parsed = parse_object(await request.body())
    missing = [name for name in op.required_files if name not in files]
    if missing:
        raise BadInput(f"{op.path} needs '{missing[0]}': send it as a file part (multipart/form-data)")
    plain = op.args.model_validate_json(json.dumps(parsed))
    return {**{k: getattr(plain, k) for k in type(plain).model_fields}, **files}


class Waits:
    """Long polls on the event loop, at most `bound` at once. A waiting request holds no worker thread: it reads the
    job (a short call in the threadpool) every `every` seconds and sleeps in between, so open waits can never take
    the threads that /health and every other call need. Past the bound a wait answers at once with the job as it
    is (the client simply asks again)."""

    def __init__(self, bound: int = 32, every: float = 0.2) -> None:
        self.bound = bound
        self.every = every
        self.open = 0

    def take(self) -> bool:
        """A slot for one more long poll, if there is one (the event loop is one thread: no lock needed)."""
        if self.open >= self.bound:
            return False
        self.open += 1
        return True

    def give(self) -> None:
        self.open -= 1

    async def wait(self, jobs, job_id: str, timeout: float = 10.0):
        """As Jobs.wait: the job as soon as it ends or moves, or after `timeout` (at most 20 s)."""
        info = await run_in_threadpool(jobs.get, job_id)
        if info.done or not self.take():
            return info
        try:
            seen = where(info)
            deadline = time.monotonic() + max(0.0, min(timeout, 20.0))
            while not info.done and (left := deadline - time.monotonic()) > 0:
                await asyncio.sleep(min(left, self.every))
                info = await run_in_threadpool(jobs.get, job_id)
                if where(info) != seen:
                    break
            return info
        finally:
            self.give()


def where(info) -> tuple:
    """What a follower waits to see change."""
    return info.state, info.stage, info.step, info.position, info.preview_step


def make_route(engine, op: Operation, limit: int, waits: Waits):
    service = getattr(engine, op.service)
    method = getattr(service, op.name)
    if (op.service, op.name) == ("jobs", "wait"):

        async def call(**arguments):
            return await waits.wait(service, **arguments)
    else:

        async def call(**arguments):
            return await run_in_threadpool(method, **arguments)

    async def route(request: Request) -> Response:
        arguments = await call_arguments(request, op, limit)
        result = await call(**arguments)
        if op.returns_bytes:
            return Response(status_code=204) if result is None else Response(result, media_type=media_type(result))
        return JSONResponse(op.result.dump_python(result, mode="json"))

    route.__name__ = f"{op.service}_{op.name}"
    return route


def media_type(data: bytes) -> str:
    if data.startswith(b"\x89PNG"):
        return "image/png"
    if data.startswith(b"\xff\xd8"):
        return "image/jpeg"
    if data.startswith(b"PK"):
        return "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
    return "application/octet-stream"


REF = "#/components/schemas/{model}"


def shared(schema: dict[str, Any], components: dict[str, Any]) -> dict[str, Any]:
    """A JSON schema with its nested models moved to the OpenAPI's components (where every tool looks for them)."""
    for name, model in schema.pop("$defs", {}).items():
        components.setdefault(name, model)
    return schema


def request_schema(op: Operation, components: dict[str, Any]) -> dict[str, Any]:
    """The OpenAPI body of a route: the JSON arguments, or a form with them and the file parts; and the result."""
    args = shared(op.args.model_json_schema(ref_template=REF), components)
    form: dict[str, Any] = {"type": "object", "properties": {"args": args}, "additionalProperties": False}
    for name in op.files:
        form["properties"][name] = {"type": "string", "format": "binary"}
    required = [*op.required_files, *(["args"] if args.get("required") else [])]
    if required:
        form["required"] = required
    content = {"multipart/form-data": {"schema": form, "encoding": {"args": {"contentType": "application/json"}}}}
    if not op.required_files:  # a call with a file part cannot be JSON
        content = {"application/json": {"schema": args}, **content}
    return {
        "requestBody": {"required": bool(required), "content": content},
        "responses": responses(op, components),
    }


def responses(op: Operation, components: dict[str, Any]) -> dict[str, Any]:
    """What a call answers: the result as the interface types it, or the file's bytes (204: no file)."""
    if op.returns_bytes:
        binary = {"schema": {"type": "string", "format": "binary"}}
        return {
            "200": {
                "description": "the file",
                "content": {m: binary for m in ("image/png", "application/octet-stream")},
            },
            "204": {"description": "nothing to send"},
        }
    schema = shared(op.result.json_schema(mode="serialization", ref_template=REF), components)
    return {"200": {"description": "the result", "content": {"application/json": {"schema": schema}}}}


def with_components(app: FastAPI, components: dict[str, Any]):
    """app.openapi with the interface's nested models in components/schemas."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = generate()
            schema.setdefault("components", {}).setdefault("schemas", {}).update(components)
            app.openapi_schema = schema
        return app.openapi_schema

    return openapi


def add_routes(app: FastAPI, engine, guarded: list, waits: Waits) -> None:
    limit = engine.settings.max_upload_bytes
    components: dict[str, Any] = {}
    for service, ops in operations().items():
        router = APIRouter(prefix=f"/api/{service}", tags=[service], dependencies=guarded)
        for name, op in ops.items():
            router.add_api_route(
                f"/{name}",
                make_route(engine, op, limit, waits),
                methods=["POST"],
                summary=(op.doc.splitlines() or [f"{service}.{name}"])[0],
                description=op.doc,
                openapi_extra=request_schema(op, components),
            )
        app.include_router(router)
    app.openapi = with_components(app, components)
