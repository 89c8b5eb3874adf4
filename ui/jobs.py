"""Background jobs of a session (a render, a sweep, a catalog run…) and their progress on the page.

An open page must cost nothing while nothing runs, and a render started from the page must be as fast as one from the
CLI. So there is no timer: `job_panel` draws a job's progress line and Cancel where the page wants them, and
`follow_jobs` (called by app.py once the page has drawn) keeps that line current while the job runs, by updating it
in place, one small message when its text changes, never a rerun. Each pass reads `st.session_state`, where
Streamlit stops a running script when the user clicks or types, so Cancel and every other widget stay live. When the
job ends the page reruns once to show its result. When nothing runs, `follow_jobs` returns at once.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import streamlit as st

from engine.errors import EngineError
from engine.schema import Progress

PANELS = "_job_panels"  # the panels the page run drew, for follow_jobs
FOLLOW_EVERY = 0.25  # seconds between looks at a running job
# Every redraw costs the browser tens of milliseconds of CPU, taken from the render on a small machine: twice a
# second is enough for a person. (app.py also turns off the bar's CSS animation, which cost as much again.)
REDRAW_EVERY = 0.5
# The bar's width animation repaints for every update; without it a redraw costs the browser half as much.
STILL_PROGRESS_CSS = (
    "<style>[data-testid='stProgress'] * {transition: none !important; animation: none !important}</style>"
)


def _draw(slot, line: tuple[float, str]) -> None:
    slot.progress(*line)


@dataclass
class Job:
    """Long work (a generation, a sweep) running in a worker thread; the page follows it."""

    request: Any = None
    cancel: threading.Event = field(default_factory=threading.Event)
    finished: threading.Event = field(default_factory=threading.Event)
    progress: Progress | None = None
    result: Any = None
    error: str | None = None
    started: float = field(default_factory=time.perf_counter)
    thread: threading.Thread | None = None

    @property
    def done(self) -> bool:
        return self.finished.is_set()


def start_task(work: Callable[[Callable[[Progress], None], threading.Event], Any], request: Any = None) -> Job:
    """Run `work(on_progress, cancel)` in a thread; its return value lands in `job.result`, an engine error (or any
    other) in `job.error` as one line, so the page stays usable."""
    job = Job(request)

    def run() -> None:
        try:
            job.result = work(lambda p: setattr(job, "progress", p), job.cancel)
        except EngineError as exc:
            job.error = str(exc)
        except Exception as exc:
            job.error = f"unexpected error: {type(exc).__name__}: {exc}"
        finally:
            job.finished.set()

    job.thread = threading.Thread(target=run, name="task", daemon=True)
    job.thread.start()
    return job


@dataclass
class _Panel:
    key: str
    slot: Any  # the st.empty() the progress line lives in
    describe: Callable[[Progress | None], str]
    on_done: Callable[[Job], None] | None
    error_key: str | None
    shown: tuple | None = None
    drawn_at: float = 0.0


def timing(p: Progress) -> str:
    """' · 12s · about 30s left': the time waited so far, and what is left once it can be told."""
    eta = f" · about {p.eta:.0f}s left" if p.eta is not None else ""
    return f" · {p.elapsed:.0f}s{eta}"


def _line(job: Job, describe: Callable[[Progress | None], str]) -> tuple[float, str]:
    """The bar's value and text; the elapsed time is the job's own (what the designer has waited), in whole
    seconds, so the line changes at most once a second between steps."""
    p = job.progress
    value = min(p.step / p.total, 1.0) if p is not None and p.total and p.stage != "queued" else 0.0
    if p is not None:
        p = replace(p, elapsed=float(int(time.perf_counter() - job.started)))
    text = describe(p)
    return value, ("Cancelling… " + text if job.cancel.is_set() else text)


def _end(panel: _Panel, job: Job) -> None:
    """A job has ended: its error to the page's error field, `on_done`, and a rerun to show what it left."""
    state = st.session_state
    state.pop(panel.key, None)
    if job.error and panel.error_key:
        state[panel.error_key] = job.error
    if panel.on_done:
        panel.on_done(job)
    st.rerun()


def job_panel(
    key: str,
    describe: Callable[[Progress | None], str],
    on_done: Callable[[Job], None] | None = None,
    error_key: str | None = None,
) -> None:
    """The job in `st.session_state[key]`, if any: a progress line with `describe(progress)` and Cancel, here. When
    it ends (done, failed or cancelled) its error goes to `error_key`, `on_done(job)` runs (its `result` is None
    unless it succeeded) and the page redraws. Without a job it draws nothing and costs nothing."""
    state = st.session_state
    job: Job | None = state.get(key)
    if job is None:
        return
    panel = _Panel(key, None, describe, on_done, error_key)
    if job.done:  # it ended while the page was elsewhere
        _end(panel, job)
    panel.slot = st.empty()
    panel.shown = _line(job, describe)
    _draw(panel.slot, panel.shown)
    st.button("Cancel", on_click=job.cancel.set, disabled=job.cancel.is_set(), key=f"{key}_cancel")
    state.setdefault(PANELS, []).append(panel)


def begin_run() -> None:
    """Before the page draws (app.py): forget the panels of an earlier run; progress bars without animation."""
    st.session_state[PANELS] = []
    st.html(STILL_PROGRESS_CSS)


def follow_jobs(every: float = FOLLOW_EVERY) -> None:
    """After the page has drawn (app.py): while a job shown on it runs, keep its line current; when it ends, rerun.

    Each pass reads the session state, where Streamlit stops this script if the user has clicked or typed meanwhile,
    so the page answers within `every` seconds. The line is sent only when its text changes (a step, a second), and
    nothing else is touched: no engine call, no image, no widget value decoded."""
    state = st.session_state
    while True:
        running = []
        for panel in state.get(PANELS, []):
            job: Job | None = state.get(panel.key)  # a yield point: a click meanwhile stops this run here
            if job is None:
                continue
            if job.done:
                _end(panel, job)
            now = time.perf_counter()
            if now - panel.drawn_at >= REDRAW_EVERY:
                line = _line(job, panel.describe)
                if line != panel.shown:
                    _draw(panel.slot, line)
                    panel.shown, panel.drawn_at = line, now
            running.append(job)
        if not running:
            return
        running[0].finished.wait(every)  # wakes at once when it ends
