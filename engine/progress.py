"""The terminal progress bar every CLI command uses: step n/N, elapsed, ETA (and the loss while training), drawn
on stderr only when stderr is a terminal."""

from __future__ import annotations

import sys

from .schema import Progress


class ProgressBar:
    def __init__(self) -> None:
        self.enabled = sys.stderr.isatty()

    def __call__(self, p: Progress) -> None:
        if not self.enabled:
            return
        if p.stage == "queued":
            sys.stderr.write(f"\rwaiting for the GPU (position {p.step})          ")
        else:
            width = 30
            done = int(width * p.step / max(p.total, 1))
            eta = f"ETA {p.eta:4.1f}s" if p.eta is not None else ""
            what = "step" if p.stage == "denoise" else p.stage
            bar = f"[{'#' * done}{'.' * (width - done)}]"
            loss = getattr(p, "loss", None)
            tail = f" loss {loss:.4f}" if loss is not None and loss == loss else ""
            sys.stderr.write(f"\r{bar} {what} {p.step}/{p.total} {p.elapsed:5.1f}s {eta}{tail}  ")
        sys.stderr.flush()

    def close(self) -> None:
        if self.enabled:
            sys.stderr.write("\n")
