"""The live canvas's rules, apart from the page so they can be tested as they are: when to render.

- One render in flight at a time; inputs that arrive meanwhile wait in one slot, the newest replacing the older (a
  superseded input is never rendered).
- Nothing renders mid-stroke: the canvas reports a stroke when it ends, and an input is rendered only once it has
  been still for `quiet` seconds (a burst of edits renders once, after its last edit).
- An input already on screen (or in flight) is not rendered again: the seed is fixed, so the picture changes only
  when the input does.
"""

from __future__ import annotations

from dataclasses import dataclass

QUIET = 0.25  # seconds an input must stay unchanged before it is rendered (Krita's live mode waits as long)


@dataclass
class LiveScheduler:
    """The state of one live canvas: what is shown, what is rendering, what waits. Kept in the session."""

    quiet: float = QUIET
    shown: str | None = None  # the input whose frame is on screen
    running: str | None = None  # the input being rendered
    wanted: str | None = None  # the newest input
    failed: str | None = None  # an input whose render failed: not tried again until the input changes
    changed_at: float = 0.0  # when `wanted` last changed
    rendered: int = 0  # renders started
    superseded: int = 0  # inputs replaced before they were rendered

    def see(self, signature: str, now: float) -> None:
        """The page's inputs as they are now (their signature); a new one restarts the quiet period."""
        if signature != self.wanted:
            if self.wanted is not None and self.wanted not in (self.shown, self.running):
                self.superseded += 1
            self.wanted, self.changed_at = signature, now

    def wait(self, now: float) -> float | None:
        """Seconds until the newest input may start rendering (0: now); None when there is nothing to render or a
        render is in flight (its end comes first)."""
        if self.running is not None or self.wanted in (None, self.shown, self.failed):
            return None
        return max(0.0, self.quiet - (now - self.changed_at))

    def start(self) -> str:
        """The newest input starts rendering."""
        assert self.running is None and self.wanted is not None, "one live render at a time"
        self.running = self.wanted
        self.rendered += 1
        return self.running

    def finish(self, ok: bool) -> None:
        """The render in flight ended; its frame is shown when it succeeded."""
        if ok:
            self.shown = self.running
        else:
            self.failed = self.running
        self.running = None

    def drop(self) -> None:
        """The render in flight was withdrawn (cancelled while waiting): its input counts as not rendered."""
        self.running = None
