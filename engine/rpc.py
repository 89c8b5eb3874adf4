"""The interface's operations as HTTP calls, described once from `engine/api.py` and read by both ends: the server
makes a route of each (engine/server/routes.py), the remote engine a method (engine/remote.py).

    POST /api/{service}/{operation}
      multipart/form-data: `args` (JSON of the plain arguments) + one file part per `bytes` argument
      200: the result as JSON, or the bytes themselves for operations that return a file (204: None)
"""

from __future__ import annotations

import dataclasses
import inspect
import types
import typing
from dataclasses import dataclass
from functools import cache
from typing import Any, Union

from pydantic import BaseModel, ConfigDict, TypeAdapter, create_model

from . import api

BYTES_JSON = ConfigDict(ser_json_bytes="base64", val_json_bytes="base64")


def _is_bytes(hint) -> bool:
    """`bytes` or `bytes | None`."""
    if hint is bytes:
        return True
    if typing.get_origin(hint) in (Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return args == [bytes]
    return False


def _adapter(hint) -> TypeAdapter:
    own_config = isinstance(hint, type) and (issubclass(hint, BaseModel) or dataclasses.is_dataclass(hint))
    return TypeAdapter(hint) if own_config else TypeAdapter(hint, config=BYTES_JSON)


@dataclass(frozen=True)
class Operation:
    service: str
    name: str
    doc: str
    signature: inspect.Signature
    files: tuple[str, ...]  # the bytes arguments: sent as file parts
    required_files: tuple[str, ...]  # those without a default
    args: type[BaseModel]  # the other arguments, validated as one JSON object
    returns_bytes: bool
    result: TypeAdapter
    one_of: tuple[str, ...] = ()  # arguments of which a call gives at least one (api.operation's `one_of`)
    needs: tuple[str, dict[str, tuple[str, ...]]] | None = None  # api.operation's `needs`
    queues: bool = False  # the call queues a job (returns its JobInfo)

    @property
    def path(self) -> str:
        return f"/api/{self.service}/{self.name}"

    def bind(self, *args: Any, **kwargs: Any) -> tuple[dict[str, Any], dict[str, bytes]]:
        """A call's arguments as (plain, files), defaults filled in."""
        bound = self.signature.bind(None, *args, **kwargs)
        bound.apply_defaults()
        values = dict(bound.arguments)
        values.pop("self")
        files = {k: values.pop(k) for k in self.files if values.get(k) is not None}
        for k in self.files:
            values.pop(k, None)
        return values, files


def _operation(service: str, name: str, fn) -> Operation:
    hints = typing.get_type_hints(fn, globalns=vars(api), include_extras=True)
    signature = inspect.signature(fn)
    params = [p for p in signature.parameters.values() if p.name != "self"]
    files = tuple(p.name for p in params if _is_bytes(hints[p.name]))
    required = tuple(p.name for p in params if p.name in files and p.default is inspect.Parameter.empty)
    fields = {
        p.name: (hints[p.name], ... if p.default is inspect.Parameter.empty else p.default)
        for p in params
        if p.name not in files
    }
    title = "".join(part.title() for part in (service, *name.split("_")))
    args = create_model(f"{title}Args", __config__=ConfigDict(extra="forbid", **BYTES_JSON), **fields)
    returns = hints.get("return", Any)
    return Operation(
        service, name, inspect.getdoc(fn) or "", signature, files, required, args, _is_bytes(returns),
        _adapter(returns), getattr(fn, "__engine_one_of__", ()), getattr(fn, "__engine_needs__", None),
        returns is api.JobInfo and service != "jobs",  # the jobs service follows jobs, it queues none
    )  # fmt: skip


@cache
def operations() -> dict[str, dict[str, Operation]]:
    """service → operation name → its description."""
    return {
        service: {name: _operation(service, name, fn) for name, fn in api.operations(cls).items()}
        for service, cls in api.SERVICES.items()
    }
