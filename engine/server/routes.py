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
        if op.queues:  # a client over its share of the queue is told so before its body is read
            await run_in_threadpool(engine.jobs.room)
        arguments = await call_arguments(request, op, limit)
        result = await call(**arguments)
        if op.returns_bytes:
            return Response(status_code=204) if result is None else Response(result, media_type=media_type(result))
        return JSONResponse(op.result.dump_python(result, mode="json"))

    route.__name__ = f"{op.service}_{op.name}"
    return route


XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
OCTETS = "application/octet-stream"
SAFETENSORS = "application/vnd.safetensors"  # not registered; what the file part of an uploaded model is sent as


def media_type(data: bytes) -> str:
    if data.startswith(b"\x89PNG"):
        return "image/png"
    if data.startswith(b"\xff\xd8"):
        return "image/jpeg"
    if data.startswith(b"PK"):
        return XLSX
    return OCTETS


REF = "#/components/schemas/{model}"


def shared(schema: dict[str, Any], components: dict[str, Any]) -> dict[str, Any]:
    """A JSON schema with its nested models moved to the OpenAPI's components (where every tool looks for them)."""
    for name, model in schema.pop("$defs", {}).items():
        components.setdefault(name, model)
    return schema


# What a file part holds, by the argument's name: the media types a client sends it as
FILE_TYPES = {
    "image": "image/png, image/jpeg, image/webp",
    "sheet": f"text/csv, {XLSX}",
    "photos": "application/zip",
    "images": "application/zip",
    "captions": "text/csv",
    "data": SAFETENSORS,
}


def given(field: dict[str, Any]) -> dict[str, Any]:
    """What `field` (an argument's schema) is when it counts as given: a list with an item, words with a letter."""
    types = {t.get("type") for t in field.get("anyOf", [field])}
    return {"type": "array", "minItems": 1} if "array" in types else {"type": "string", "pattern": r"\S"}


def one_of(op: Operation, args: dict[str, Any], form: bool) -> list[dict[str, Any]]:
    """The branches of `anyOf` that say "at least one of these arguments" (a file part only in a form)."""
    branches = []
    for name in op.one_of:
        if name in op.files:
            if form:
                branches.append({"required": [name]})
        else:
            own = {"required": [name], "properties": {name: given(args["properties"][name])}}
            branches.append({"required": ["args"], "properties": {"args": own}} if form else own)
    return branches


def needs(op: Operation, args: dict[str, Any], form: bool) -> list[dict[str, Any]]:
    """The branches of `anyOf` that say "this value of that argument needs these others" (none in JSON for a value
    that needs a file part)."""
    if op.needs is None:
        return []
    key, by_value = op.needs
    branches = []
    for value, wanted in by_value.items():
        files = [w for w in wanted if w in op.files]
        plain = [w for w in wanted if w not in op.files]
        own = {
            "properties": {key: {"const": value}, **{w: given(args["properties"][w]) for w in plain}},
            "required": [key, *plain],
        }
        if form:  # the file parts it needs stay out of `required`: a fuzzer cannot send a form so bound
            branches.append({"properties": {"args": own}, "required": ["args"]})
        elif not files:
            branches.append(own)
    return branches


def request_schema(op: Operation, components: dict[str, Any]) -> dict[str, Any]:
    """The OpenAPI body of a route: the JSON arguments, or a form with them and the file parts; and the result."""
    args = shared(op.args.model_json_schema(ref_template=REF), components)
    form: dict[str, Any] = {"type": "object", "properties": {"args": args}, "additionalProperties": False}
    encoding = {"args": {"contentType": "application/json"}}
    for name in op.files:
        form["properties"][name] = {"type": "string", "format": "binary"}
        encoding[name] = {"contentType": FILE_TYPES.get(name, OCTETS)}
    required = [*op.required_files, *(["args"] if args.get("required") else [])]
    if required:
        form["required"] = required
    if op.one_of or op.needs:
        form["anyOf"] = one_of(op, args, form=True) or needs(op, args, form=True)
    content = {"multipart/form-data": {"schema": form, "encoding": encoding}}
    if not op.required_files:  # a call with a file part cannot be JSON
        branches = one_of(op, args, form=False) or needs(op, args, form=False)  # without the file parts
        content = {"application/json": {"schema": {**args, "anyOf": branches} if branches else args}, **content}
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
                "content": {m: binary for m in ("image/png", OCTETS)},
            },
            "204": {"description": "nothing to send"},
        }
    schema = shared(op.result.json_schema(mode="serialization", ref_template=REF), components)
    return {"200": {"description": "the result", "content": {"application/json": {"schema": schema}}}}


def with_components(app: FastAPI, components: dict[str, Any], legacy_one_of: dict[str, tuple[str, ...]]):
    """app.openapi with the interface's nested models in components/schemas, `finished`."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = generate()
            schema.setdefault("components", {}).setdefault("schemas", {}).update(components)
            app.openapi_schema = finished(schema, legacy_one_of)
        return app.openapi_schema

    return openapi


ERROR = {
    "type": "object",
    "properties": {
        "detail": {"type": "string", "description": "one line: what is wrong and, in brackets, the fix"},
        "error": {"type": "string", "description": "the kind: BadInput, NotFound, TooLarge, QueueFull…"},
    },
    "required": ["detail"],
}
ERRORS = {
    "4XX": "refused, in one line: 400 a body that cannot be read, 401 no or a wrong token, 403 a foreign web page, "
    "404 not found, 409 cancelled, 413 too large, 415 not a file of the kind the part takes, 422 bad input, "
    "429 your share of the queue is full",
    "5XX": "the engine cannot do it now: 503 busy or its job store failing, 504 a render over the time limit, "
    "507 its disk is full",
}


def finished(schema: dict[str, Any], legacy_one_of: dict[str, tuple[str, ...]]) -> dict[str, Any]:
    """The last touches every route gets, the hand-written ones too: their errors as they are answered (one line
    in `detail`, not FastAPI's list of validation errors), and their file parts as files of the kinds they take."""
    components = schema["components"]["schemas"]
    components["Error"] = ERROR
    error = {"content": {"application/json": {"schema": {"$ref": REF.format(model="Error")}}}}
    for path, item in schema["paths"].items():
        for method in item.values():
            answers = method.setdefault("responses", {})
            answers.pop("422", None)
            for code, text in ERRORS.items():
                answers.setdefault(code, {"description": text, **error})
            form = method.get("requestBody", {}).get("content", {}).get("multipart/form-data")
            if form and "$ref" in form["schema"]:  # a route's own form (FastAPI's File(): a string of some media)
                body = components[form["schema"]["$ref"].rsplit("/", 1)[1]]
                if path in legacy_one_of:
                    body["anyOf"] = [{"required": [name]} for name in legacy_one_of[path]]
                for name, field in body["properties"].items():  # a form has no null: a field left out is None
                    kinds = [f for f in field.get("anyOf", []) if f.get("type") != "null"]
                    if len(kinds) == 1 and len(field["anyOf"]) == 2:
                        rest = {k: v for k, v in field.items() if k != "anyOf"}
                        body["properties"][name] = {**kinds[0], **rest}
                for name, field in body["properties"].items():
                    if any(f.get("contentMediaType") == OCTETS for f in field.get("anyOf", [field])):
                        body["properties"][name] = {"type": "string", "format": "binary", "title": field["title"]}
                        form.setdefault("encoding", {})[name] = {"contentType": FILE_TYPES["image"]}
    for unused in ("HTTPValidationError", "ValidationError"):
        components.pop(unused, None)
    return schema


def add_routes(
    app: FastAPI,
    engine,
    guarded: list,
    limit: int,
    waits: Waits,
    legacy_one_of: dict[str, tuple[str, ...]] | None = None,
) -> None:
    """A route per interface operation, its uploads within `limit` bytes each; `legacy_one_of`: the hand-written
    routes' "one of these fields" (OpenAPI)."""
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
    app.openapi = with_components(app, components, legacy_one_of or {})
