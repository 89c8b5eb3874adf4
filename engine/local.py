"""`LocalEngine`: the engine interface in this process, a thin facade over services built once."""

from __future__ import annotations

import gc
from pathlib import Path

from .api import Engine
from .history import History
from .hub import check_render_models, hub_online
from .jobs import JobRunner
from .models import ModelStore
from .render.executors import LocalExecutor
from .render.pipeline import RenderPipeline
from .render.preprocess import Preprocessors
from .render.record import Recorder
from .services import Core
from .services.about import AboutService
from .services.arena import ArenaService
from .services.catalog import CatalogService
from .services.history import HistoryService
from .services.renders import RendersService
from .services.retrieval import RetrievalState
from .services.styles import StylesService
from .services.sweeps import SweepsService
from .services.tuning import TuningService
from .settings import Settings


class LocalEngine(Engine):
    """Runs everything in this process; models load on first use and stay loaded.

    `executor="ray"` renders on Ray workers (one per GPU of the cluster at `ray_address`, or `workers` CPU workers
    of a local one); everything else stays here. `job_workers` jobs run at once (renders among them take turns on
    the GPU); `abandon_after` cancels jobs nobody asks about (the server's clients can vanish); `adopt_jobs` takes
    over, at start, the jobs of an engine on this data folder whose process died (the UI and the server do; a CLI
    command runs only its own). `max_per_client` bounds each client's share of the queue (the server names the
    client of each request; None: a quarter of `max_queued`, at least 4); `store_timeout` is how long a call waits
    for another process's lock on jobs.sqlite before the store counts as failing."""

    def __init__(
        self,
        settings: Settings | None = None,
        executor: str = "local",
        ray_address: str | None = None,
        workers: int | None = None,
        job_workers: int = 4,
        max_queued: int = 64,
        abandon_after: float | None = None,
        adopt_jobs: bool = True,
        max_per_client: int | None = None,
        store_timeout: float = 30.0,
    ):
        self.settings = settings or Settings()
        self.data_dir = Path(self.settings.data_dir).expanduser()
        self.models = ModelStore(self.settings)
        self.history_store = History(self.data_dir / "history.sqlite")
        self.retrieval = RetrievalState(self.settings, self.models, self.data_dir)
        dtype = str(self.models.dtype).removeprefix("torch.")
        maps = Preprocessors(self.models)  # control maps, a model's (depth) too, made here where the models are
        recorder = Recorder(
            self.data_dir, self.settings, self.history_store, self.retrieval, self.models.device, dtype, maps
        )
        if executor == "ray":
            from .render.executors import RayExecutor

            self.executor = RayExecutor(self.settings, address=ray_address, workers=workers)
        else:
            self.executor = LocalExecutor(self.models)
        self.pipeline = RenderPipeline(self.settings, self.retrieval, self.executor, recorder, maps)
        self._catalog_models = None
        self.jobs = JobRunner(
            self.data_dir / "jobs.sqlite",
            {},  # the services' handlers, once they exist
            workers=max(job_workers, self.executor.workers + 2),
            max_queued=max_queued,
            abandon_after=abandon_after,
            adopt=adopt_jobs,
            max_per_client=max_per_client,
            timeout=store_timeout,
        )
        self.core = Core(
            settings=self.settings,
            data_dir=self.data_dir,
            models=self.models,
            retrieval=self.retrieval,
            history=self.history_store,
            recorder=recorder,
            pipeline=self.pipeline,
            jobs=self.jobs,
            catalog_models=self.catalog_models,
        )
        self.renders = RendersService(self.core)
        self.styles = StylesService(self.core)
        self.history = HistoryService(self.core)
        self.sweeps = SweepsService(self.core)
        self.arena = ArenaService(self.core)
        self.catalog = CatalogService(self.core)
        self.tuning = TuningService(self.core)
        self.about = AboutService(self.core)
        for service in (self.renders, self.sweeps, self.arena, self.catalog, self.tuning, self.history):
            self.jobs.handlers.update(service.handlers())  # (before the workers start: `start()`)
        self.jobs.on_end.append(self.renders.ended)  # a job that ends in any state: what it held in memory goes

    def catalog_models(self):
        """The catalog's translator, attribute LLM and scorer, loaded on first use (sharing the retrieval CLIP)."""
        if self._catalog_models is None:
            from .catalog_models import CatalogModels

            if self.settings.profile != "tiny":
                hub_online()  # offline, its loads read the cache at once instead of retrying the hub

            clip = self.retrieval.library.embeddings if self.retrieval.loaded else None
            self._catalog_models = CatalogModels(self.settings, self.models.device, self.models.dtype, clip)
        return self._catalog_models

    def load(self, freeze: bool = False) -> None:
        """Load the models every render needs now (the UI and the server warm up with this). With `freeze`, the
        loaded objects leave the garbage collector's full passes: they live as long as the process. Offline, the
        models the cache lacks are named at once (engine/hub.py)."""
        check_render_models(self.settings)
        _ = self.retrieval.library
        if isinstance(self.executor, LocalExecutor):
            self.executor.generator("sd15")
        if freeze:
            gc.collect()
            gc.freeze()

    def start(self) -> None:
        self.jobs.start()

    def close(self) -> None:
        """The job workers stop (`start` starts them again) and the render workers close (a Ray executor's for good)."""
        self.jobs.stop()
        self.executor.close()
