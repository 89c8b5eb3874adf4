"""The engine's jobs on the page: a progress line and Cancel for each job a page shows, kept current while it runs.

An open page must cost nothing while nothing runs, and a render started from the page must be as fast as one from the
CLI. So there is no timer: `job_panel` draws a job's progress line and Cancel where the page wants them, and
`follow_jobs` (called by app.py once the page has drawn) keeps that line current while the job runs, by updating it
in place, one small message when its text changes, never a rerun. It waits on the engine's `jobs.wait` (in this
process a wake-up the moment the job ends; remote, a short HTTP wait) and reads `st.session_state` between waits,
where Streamlit stops a running script when the user clicks or types, so Cancel and every other widget stay live.
When the job ends the page reruns once to show its result. When nothing runs, `follow_jobs` returns at once.

The session keeps only job ids; the jobs themselves live in the engine (local or remote), one vocabulary for all.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import streamlit as st

from engine.api import Engine, JobInfo
from engine.errors import EngineError
from engine.schema import Progress

PANELS = "_job_panels"  # the panels the page run drew, for follow_jobs
FOLLOW_EVERY = 0.25  # seconds between looks at the session (how soon a click is answered)
# Every redraw costs the browser tens of milliseconds of CPU, taken from the render on a small machine: twice a
# second is enough for a person. (The bar's CSS animation is off too: it cost as much again.)
REDRAW_EVERY = 0.5
STILL_PROGRESS_CSS = (
    "<style>[data-testid='stProgress'] * {transition: none !important; animation: none !important}</style>"
)


def timing(p: Progress) -> str:
    """' · 12s · about 30s left': the time so far, and what is left once it can be told."""
    eta = f" · about {p.eta:.0f}s left" if p.eta is not None else ""
    return f" · {p.elapsed:.0f}s{eta}"


@dataclass
class _Panel:
    engine: Engine
    key: str
    slot: Any  # the st.empty() the progress line lives in
    describe: Callable[[Progress | None], str]
    on_done: Callable[[JobInfo], None] | None
    error_key: str | None
    job: JobInfo
    shown: tuple | None = None
    drawn_at: float = field(default_factory=time.monotonic)
    preview_slot: Any = None  # the st.empty() the step preview lives in (renders)
    preview_shown: int = 0
    caption: bool = False  # the line as a caption, no bar (a short job beside something else, e.g. measuring)


def start(key: str, job: JobInfo) -> None:
    """Show `job` under `key` (its panel appears where the page calls `job_panel(key, …)`)."""
    st.session_state[key] = job.id


def _line(job: JobInfo, describe: Callable[[Progress | None], str]) -> tuple[float, str]:
    p = job.progress
    if p is not None and p.stage != "queued":
        p = replace(p, elapsed=float(int(p.elapsed)))  # whole seconds: the line changes at most once a second
    value = min(p.step / p.total, 1.0) if p is not None and p.total and p.stage != "queued" else 0.0
    text = describe(p)
    return value, ("Cancelling… " + text if job.state == "running" and _cancelling(job) else text)


def _draw(panel: _Panel, line: tuple[float, str]) -> None:
    if panel.caption:
        panel.slot.caption(line[1])
    else:
        panel.slot.progress(*line)


def _cancelling(job: JobInfo) -> bool:
    return job.id in st.session_state.get("_cancelled_jobs", ())


def _end(panel: _Panel, job: JobInfo) -> None:
    """A job has ended: its error to the page's error field, `on_done`, and a rerun to show what it left."""
    state = st.session_state
    state.pop(panel.key, None)
    if job.state in ("failed", "cancelled") and panel.error_key:
        state[panel.error_key] = job.error or f"the job {job.state}"
    if panel.on_done:
        panel.on_done(job)
    st.rerun()


def cancel(engine: Engine, key: str) -> None:
    """Cancel's callback: the engine stops the job between two steps."""
    job_id = st.session_state.get(key)
    if job_id:
        st.session_state.setdefault("_cancelled_jobs", set()).add(job_id)
        with contextlib.suppress(EngineError):  # it has ended meanwhile: the next look shows how
            engine.jobs.cancel(job_id)


def job_panel(
    engine: Engine,
    key: str,
    describe: Callable[[Progress | None], str],
    on_done: Callable[[JobInfo], None] | None = None,
    error_key: str | None = None,
    preview: bool = False,
    cancel_button: bool = True,
    caption: bool = False,
) -> None:
    """The job in `st.session_state[key]`, if any: a progress line with `describe(progress)` and Cancel, here (and,
    with `preview`, the render forming: its newest step preview; with `caption`, the line is a caption, no bar). When
    it ends (done, failed or cancelled) its error goes to `error_key`, `on_done(job)` runs and the page redraws.
    Without a job it draws nothing and costs nothing."""
    state = st.session_state
    job_id = state.get(key)
    if job_id is None:
        return
    try:
        job = engine.jobs.get(job_id)
    except EngineError as exc:  # gone with an engine that was restarted elsewhere, or another engine chosen
        state.pop(key, None)
        if error_key:
            state[error_key] = str(exc)
        return
    panel = _Panel(engine, key, None, describe, on_done, error_key, job, caption=caption)
    if job.done:  # it ended while the page was elsewhere
        _end(panel, job)
    panel.slot = st.empty()
    panel.shown = _line(job, describe)
    _draw(panel, panel.shown)
    if preview:
        panel.preview_slot = st.empty()
        _draw_preview(panel)
    if cancel_button:
        st.button("Cancel", on_click=cancel, args=(engine, key), disabled=_cancelling(job), key=f"{key}_cancel")
    state.setdefault(PANELS, []).append(panel)


def _draw_preview(panel: _Panel) -> None:
    job = panel.job
    if job.preview and job.preview_step != panel.preview_shown:
        panel.preview_slot.image(job.preview, caption=f"forming · step {job.preview_step}/{job.total}", width=256)
        panel.preview_shown = job.preview_step


def begin_run() -> None:
    """Before the page draws (app.py): forget the panels of an earlier run; progress bars without animation."""
    st.session_state[PANELS] = []
    st.html(STILL_PROGRESS_CSS)


def follow_jobs(every: float = FOLLOW_EVERY) -> None:
    """After the page has drawn (app.py): while a job shown on it runs, keep its line current; when it ends, rerun.

    Each pass reads the session state, where Streamlit stops this script if the user has clicked or typed meanwhile,
    so the page answers within about `every` seconds. The line is sent only when its text changes (a step, a second),
    and nothing else is touched: no image, no widget value decoded, no engine call but the job's own state."""
    state = st.session_state
    while True:
        panels = [p for p in state.get(PANELS, []) if state.get(p.key) == p.job.id]  # a yield point
        if not panels:
            return
        first = panels[0]
        try:
            began = time.monotonic()
            first.job = first.engine.jobs.wait(first.job.id, timeout=every)
            if not first.job.done and (left := every - (time.monotonic() - began)) > 0:
                time.sleep(left)  # the wait returns at each step; a fast render is still looked at ≤ 1/every Hz
            for panel in panels[1:]:
                panel.job = panel.engine.jobs.get(panel.job.id)
        except EngineError:
            time.sleep(every)  # the engine did not answer this time: look again
            continue
        for panel in panels:
            if panel.job.done:
                _end(panel, panel.job)
            if time.monotonic() - panel.drawn_at >= REDRAW_EVERY:
                line = _line(panel.job, panel.describe)
                if line != panel.shown:
                    _draw(panel, line)
                    panel.shown, panel.drawn_at = line, time.monotonic()
                if panel.preview_slot is not None and panel.job.preview_step != panel.preview_shown:
                    _draw_preview(panel)
                    panel.drawn_at = time.monotonic()
