"""Where renders run: in this process, or on Ray workers (one per GPU of the cluster), through the same code.

A Ray worker holds the models and runs `Generator.run` on the `Params` the driver built with
`LocalEngine.prepare` / `params`; the driver measures and keeps the result with `LocalEngine.finish`, so the
history, the outputs folder and the metrics are exactly those of a local render.
"""

from __future__ import annotations

import io
import os
import threading
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

from PIL import Image

from .errors import Cancelled, ModelUnavailable
from .generator import Params
from .schema import GenerateRequest, GenerateResult

REPO = Path(__file__).resolve().parent.parent


def _png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def _image(data: bytes) -> Image.Image:
    return Image.open(io.BytesIO(data)).convert("RGB")


def params_payload(p: Params) -> dict[str, Any]:
    """`Params` as plain data (images as PNG bytes) for the trip to a worker."""
    out = asdict(p)
    out["control"] = _png(p.control) if p.control is not None else None
    out["references"] = [(_png(img), weight) for img, weight in p.references]
    return out


def params_from_payload(payload: dict[str, Any]) -> Params:
    values = dict(payload)
    values["control"] = _image(payload["control"]) if payload["control"] is not None else None
    values["references"] = [(_image(data), weight) for data, weight in payload["references"]]
    return Params(**values)


class RenderWorker:
    """Runs on a Ray worker: the models of `settings`, loaded once, rendering `Params` payloads."""

    def __init__(self, settings: dict[str, Any]):
        from .models import ModelStore
        from .settings import Settings

        self.models = ModelStore(Settings(**settings))
        self._generators: dict[str, Any] = {}

    def render(self, payload: dict[str, Any], model: str = "sd15") -> dict[str, Any]:
        if model not in self._generators:
            if model == "flux":
                from .flux import FluxGenerator

                self._generators[model] = FluxGenerator(self.models.flux)
            else:
                from .generator import Generator

                self._generators[model] = Generator(self.models.pipeline)
        out = self._generators[model].run(params_from_payload(payload))
        return {"images": [_png(im) for im in out.images], "timings": out.timings, "device": self.models.device}


class LocalExecutor:
    """Renders one request after another in this process."""

    name = "local"

    def __init__(self, engine):
        self.engine = engine

    def render(
        self, jobs: list[tuple[Any, GenerateRequest]], cancel: threading.Event | None = None
    ) -> Iterator[tuple[Any, GenerateResult]]:
        for key, request in jobs:
            if cancel is not None and cancel.is_set():
                raise Cancelled("cancelled")
            yield key, self.engine.generate(request, cancel=cancel)


class RayExecutor:
    """Spreads renders over Ray workers: one per GPU when the cluster has GPUs, else `workers` CPU workers.
    `address` joins a running cluster (`ray start --head` on the GPU machines); none starts a local one."""

    name = "ray"

    def __init__(self, engine, address: str | None = None, workers: int | None = None, in_flight: int = 2):
        try:
            import ray
        except ImportError:
            raise ModelUnavailable(
                "the Ray executor needs the ray package", fix="pip install ray==2.60.0, or use --executor local"
            ) from None
        self.ray = ray
        self.engine = engine
        if not ray.is_initialized():
            path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
            ray.init(
                address=address,
                include_dashboard=False,
                log_to_driver=False,
                runtime_env={"env_vars": {"PYTHONPATH": path, "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "0")}},
            )
        gpus = int(ray.cluster_resources().get("GPU", 0))
        count = workers or max(gpus, 1)
        options = {"num_gpus": 1, "num_cpus": 1} if gpus else {"num_cpus": 1}
        actor = ray.remote(RenderWorker)
        settings = engine.settings.model_dump(mode="json")
        self.workers = [actor.options(**options).remote(settings) for _ in range(count)]
        self.in_flight = in_flight
        self.gpus = gpus

    def render(
        self, jobs: list[tuple[Any, GenerateRequest]], cancel: threading.Event | None = None
    ) -> Iterator[tuple[Any, GenerateResult]]:
        """Results as they complete (not in submission order); at most `in_flight` jobs queue per worker."""
        from .chain import pick_styles

        ray, engine = self.ray, self.engine
        todo = list(jobs)
        running: dict[Any, tuple] = {}
        free = [w for w in self.workers for _ in range(self.in_flight)]
        try:
            while todo or running:
                if cancel is not None and cancel.is_set():
                    raise Cancelled("cancelled")
                while todo and free:
                    key, request = todo.pop(0)
                    if request.model == "flux":
                        request = request.model_copy(update={"use_style": False})
                    prepared = engine.prepare(request)
                    styles = pick_styles(engine.library, request)
                    params = engine.params(request, prepared, styles)
                    worker = free.pop(0)
                    ref = worker.render.remote(params_payload(params), request.model)
                    running[ref] = (key, request, prepared, styles, params, worker)
                done, _ = ray.wait(list(running), num_returns=1, timeout=0.5)
                for ref in done:
                    key, request, prepared, styles, params, worker = running.pop(ref)
                    free.append(worker)
                    out = ray.get(ref)
                    images = [_image(b) for b in out["images"]]
                    timings = out["timings"]
                    refs = [img for img, _ in params.references]
                    yield key, engine.finish(request, prepared, styles, images, timings, refs)
        finally:
            for ref in running:
                ray.cancel(ref, force=True)

    def close(self) -> None:
        for w in self.workers:
            self.ray.kill(w)
