"""One router per service, one route per operation of the interface: `POST /api/{service}/{operation}` (see
engine/rpc.py). The arguments are validated as the interface declares them, uploads are read within the limit, and
the work runs in a worker thread, never on the event loop."""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from ..errors import BadInput, TooLarge
from ..rpc import Operation, operations


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
        if isinstance(text, UploadFile):
            text = (await read_limited(text, "args", int(limit * 1.4))).decode()
        for name in op.files:
            part = form.get(name)
            if isinstance(part, UploadFile):
                files[name] = await read_limited(part, name, limit)
            elif part is not None:
                raise BadInput(f"{name} must be sent as a file part")
        unknown = sorted(set(form) - {"args", *op.files})
        if unknown:
            raise BadInput(f"{op.path} takes no '{unknown[0]}'")
    else:
        text = (await request.body()).decode() or "{}"
    try:
        parsed = json.loads(text)
    except ValueError:
        raise BadInput("args must be a JSON object") from None
    if not isinstance(parsed, dict):
        raise BadInput("args must be a JSON object")
    missing = [name for name in op.required_files if name not in files]
    if missing:
        raise BadInput(f"{op.path} needs '{missing[0]}': send it as a file part (multipart/form-data)")
    plain = op.args.model_validate_json(json.dumps(parsed))
    return {**{k: getattr(plain, k) for k in type(plain).model_fields}, **files}


def make_route(engine, op: Operation, limit: int):
    service = getattr(engine, op.service)
    method = getattr(service, op.name)

    async def route(request: Request) -> Response:
        arguments = await call_arguments(request, op, limit)
        result = await run_in_threadpool(method, **arguments)
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


def request_schema(op: Operation) -> dict[str, Any]:
    """The OpenAPI body of a route: the JSON arguments, or a form with them and the file parts."""
    args = op.args.model_json_schema()
    form = {"type": "object", "properties": {"args": {"type": "string", "description": "JSON: " + op.args.__name__}}}
    for name in op.files:
        form["properties"][name] = {"type": "string", "format": "binary"}
    return {
        "requestBody": {
            "required": False,
            "content": {"application/json": {"schema": args}, "multipart/form-data": {"schema": form}},
        }
    }


def add_routes(app: FastAPI, engine, guarded: list) -> None:
    limit = engine.settings.max_upload_bytes
    for service, ops in operations().items():
        router = APIRouter(prefix=f"/api/{service}", tags=[service], dependencies=guarded)
        for name, op in ops.items():
            router.add_api_route(
                f"/{name}",
                make_route(engine, op, limit),
                methods=["POST"],
                summary=(op.doc.splitlines() or [f"{service}.{name}"])[0],
                description=op.doc,
                openapi_extra=request_schema(op),
            )
        app.include_router(router)
