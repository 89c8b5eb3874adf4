"""Where the denoising runs: in this process (one render at a time on its GPU), or on Ray workers (one render per
GPU of a cluster). Either way the same `Generator.run` gets the same `Params`, so the pixels are the same; the plan,
the retrieval and the record stay with the caller.

    executor.run(params, model, on_progress, cancel) -> Output     # waits its turn in FIFO order, reports it
"""

from __future__ import annotations

import io
import os
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

from PIL import Image

from ..errors import Cancelled, ModelUnavailable, error_class
from ..schema import Progress
from .call import Output, Params

REPO = Path(__file__).resolve().parent.parent.parent
ProgressFn = Callable[[Progress], None]


class SlotQueue:
    """`capacity` slots (GPUs) served in arrival order: `with queue.slot(on_wait, cancel) as i:` runs when every
    earlier caller has a slot and one is free; `on_wait(position)` hears the place in the line while it waits."""

    def __init__(self, capacity: int = 1) -> None:
        self._cond = threading.Condition()
        self._free = list(range(capacity))
        self._waiting: deque[object] = deque()
        self.capacity = capacity

    def __len__(self) -> int:
        """Renders holding or waiting for a slot."""
        with self._cond:
            return self.capacity - len(self._free) + len(self._waiting)

    @contextmanager
    def slot(
        self, on_wait: Callable[[int], None] | None = None, cancel: threading.Event | None = None
    ) -> Iterator[int]:
        ticket = object()
        with self._cond:
            self._waiting.append(ticket)
            last = -1
            while not (self._waiting[0] is ticket and self._free):
                position = self._waiting.index(ticket) + 1
                if on_wait and position != last:
                    on_wait(position)
                    last = position
                if cancel is not None and cancel.is_set():
                    self._waiting.remove(ticket)
                    self._cond.notify_all()
                    raise Cancelled("cancelled while waiting for the GPU")
                self._cond.wait(timeout=0.2)
            self._waiting.popleft()
            index = self._free.pop(0)
            self._cond.notify_all()
        try:
            yield index
        finally:
            with self._cond:
                self._free.append(index)
                self._free.sort()
                self._cond.notify_all()


def _waiting(on_progress: ProgressFn | None) -> Callable[[int], None] | None:
    if on_progress is None:
        return None
    t0 = time.perf_counter()
    return lambda n: on_progress(Progress("queued", n, 0, time.perf_counter() - t0))


class LocalExecutor:
    """Renders in this process, one at a time (the GPU queue), with the models of `models` (a ModelStore)."""

    name = "local"

    def __init__(self, models):
        self.models = models
        self.queue = SlotQueue(1)
        self.workers = 1
        self._generators: dict[str, Any] = {}
        self._lock = threading.Lock()

    def generator(self, model: str):
        """The loaded pipeline of a model (loaded on first use)."""
        with self._lock:
            if model not in self._generators:
                self._generators[model] = make_generator(self.models, model)
            return self._generators[model]

    def run(
        self, params: Params, model: str, on_progress: ProgressFn | None = None, cancel: threading.Event | None = None
    ) -> Output:
        generator = self.generator(model)
        t0 = time.perf_counter()
        with self.queue.slot(_waiting(on_progress), cancel):
            queued = time.perf_counter() - t0
            out = generator.run(params, on_progress, cancel)
        out.timings["queued"] = queued
        return out

    def close(self) -> None:
        pass


def make_generator(models, model: str):
    if model == "flux":
        from .flux import FluxGenerator

        return FluxGenerator(models.flux)
    from .sd15 import Generator

    return Generator(models.pipeline, models)


# ---- Ray --------------------------------------------------------------------------------------------------------


def _png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def _image(data: bytes) -> Image.Image:
    return Image.open(io.BytesIO(data)).convert("RGB")


def params_payload(p: Params) -> dict[str, Any]:
    """`Params` as plain data (images as PNG bytes, masks as lists) for the trip to a worker."""
    out = asdict(p)
    out["control"] = _png(p.control) if p.control is not None else None
    out["references"] = [(_png(img), weight) for img, weight in p.references]
    out["regions"] = [(mask, _png(ref)) for mask, ref in p.regions]  # Ray pickles numpy arrays as they are
    out["init"] = _png(p.init) if p.init is not None else None
    out["controls"] = [(name, _png(made), *rest) for name, made, *rest in p.controls]
    return out


def params_from_payload(payload: dict[str, Any]) -> Params:
    values = dict(payload)
    values["control"] = _image(payload["control"]) if payload["control"] is not None else None
    values["references"] = [(_image(data), weight) for data, weight in payload["references"]]
    values["regions"] = [(mask, _image(ref)) for mask, ref in payload.get("regions", [])]
    values["init"] = _image(payload["init"]) if payload.get("init") is not None else None
    values["controls"] = [(name, _image(made), *rest) for name, made, *rest in payload.get("controls", [])]
    return Params(**values)


class RenderWorker:
    """Runs on a Ray worker: the models of `settings`, loaded once, rendering `Params` payloads one at a time.
    Threaded (two calls at once), so `cancel` and `progress` are answered while a render runs."""

    def __init__(self, settings: dict[str, Any]):
        from ..models import ModelStore
        from ..settings import Settings

        self.models = ModelStore(Settings(**settings))
        self._generators: dict[str, Any] = {}
        self._cancel: dict[str, threading.Event] = {}
        self._progress: dict[str, tuple] = {}

    def render(self, payload: dict[str, Any], model: str, key: str) -> dict[str, Any]:
        cancel = self._cancel.setdefault(key, threading.Event())

        def report(p: Progress) -> None:
            self._progress[key] = (p.stage, p.step, p.total, p.elapsed, p.seconds_per_step)

        try:
            if model not in self._generators:
                self._generators[model] = make_generator(self.models, model)
            out = self._generators[model].run(params_from_payload(payload), report, cancel)
        except Exception as exc:  # crosses the process boundary as data: kind and line
            return {"error": type(exc).__name__, "message": str(exc)}
        finally:
            self._cancel.pop(key, None)
            self._progress.pop(key, None)
        return {"images": [_png(im) for im in out.images], "timings": out.timings, "device": self.models.device}

    def cancel(self, key: str) -> None:
        self._cancel.setdefault(key, threading.Event()).set()

    def progress(self, key: str) -> tuple | None:
        return self._progress.get(key)

    def device(self) -> str:
        return self.models.device


class RayExecutor:
    """Spreads renders over Ray workers: one per GPU when the cluster has GPUs, else `workers` CPU workers, each
    rendering one job at a time, taken in arrival order. `address` joins a running cluster (`ray start --head` on
    the GPU machines); none starts a local one. Progress and cancel reach the worker."""

    name = "ray"

    def __init__(self, settings, address: str | None = None, workers: int | None = None):
        try:
            import ray
        except ImportError:
            raise ModelUnavailable(
                "the Ray executor needs the ray package", fix="pip install ray==2.60.0, or use --executor local"
            ) from None
        self.ray = ray
        if not ray.is_initialized():
            path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
            env = {"PYTHONPATH": path, "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "0")}
            ray.init(address=address, include_dashboard=False, log_to_driver=False, runtime_env={"env_vars": env})
        gpus = int(ray.cluster_resources().get("GPU", 0))
        count = workers or max(gpus, 1)
        options = {"num_gpus": 1, "num_cpus": 1} if gpus else {"num_cpus": 1}
        actor = ray.remote(RenderWorker).options(max_concurrency=2, **options)
        payload = settings.model_dump(mode="json")
        self.actors = [actor.remote(payload) for _ in range(count)]
        self.workers = count
        self.gpus = gpus
        self.queue = SlotQueue(count)

    def run(
        self, params: Params, model: str, on_progress: ProgressFn | None = None, cancel: threading.Event | None = None
    ) -> Output:
        ray = self.ray
        t0 = time.perf_counter()
        with self.queue.slot(_waiting(on_progress), cancel) as index:
            queued = time.perf_counter() - t0
            actor, key = self.actors[index], uuid.uuid4().hex
            ref = actor.render.remote(params_payload(params), model, key)
            asked_to_stop, last = False, None
            while not ray.wait([ref], timeout=0.25)[0]:
                if cancel is not None and cancel.is_set() and not asked_to_stop:
                    actor.cancel.remote(key)
                    asked_to_stop = True
                if on_progress is not None:
                    seen = ray.get(actor.progress.remote(key))
                    if seen is not None and seen != last:
                        on_progress(Progress(*seen))
                        last = seen
            out = ray.get(ref)
        if "error" in out:
            raise error_class(out["error"])(out["message"])
        timings = {**out["timings"], "queued": queued}
        return Output(images=[_image(b) for b in out["images"]], timings=timings, worker=index)

    def close(self) -> None:
        for a in self.actors:
            self.ray.kill(a)
