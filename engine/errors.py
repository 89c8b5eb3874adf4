"""Errors a user can cause or fix: each carries one line and, where there is one, the fix."""

from __future__ import annotations


class EngineError(Exception):
    """Base of every error the UI, CLI and server show as one line (never a traceback)."""

    def __init__(self, message: str, fix: str | None = None):
        super().__init__(message)
        self.message = message
        self.fix = fix

    def __str__(self) -> str:
        return f"{self.message} ({self.fix})" if self.fix else self.message


class BadInput(EngineError):
    """The request itself is wrong: a file, a prompt, a parameter."""


class TooLarge(BadInput):
    """An upload over the size or pixel limit."""


class UnsupportedImage(BadInput):
    """Not an image we can read: not an image at all, truncated, or an unsupported format."""


class ModelUnavailable(EngineError):
    """Weights cannot be loaded (offline with nothing cached, wrong folder, unsafe format)."""


class Busy(EngineError):
    """The GPU is out of memory or otherwise cannot take the run now; the engine stays usable."""


class Cancelled(EngineError):
    """The caller cancelled the run between two steps."""


class QueueFull(Busy):
    """Too many jobs are waiting; try again later."""
