"""Errors a user can cause or fix: each carries one line and, where there is one, the fix."""

from __future__ import annotations


class EngineError(Exception):
    """Base of every error the UI, CLI and server show as one line (never a traceback)."""

    def __init__(self, message: str, fix: str | None = None, fixes: dict[str, str] | None = None):
        super().__init__(message)
        self.message = message
        self.fix = fix
        # The fix in the words of one entry point where they differ ("app": started with `make run`, "cli": flags)
        self.fixes = dict(fixes or {})

    def fix_for(self, entry: str) -> str | None:
        """The fix as `entry` ("app", "cli") says it: its own words where the error has them, else the general one."""
        return self.fixes.get(entry, self.fix)

    def line(self, entry: str | None = None) -> str:
        """The one line to show: the message and, in brackets, the fix for `entry`."""
        fix = self.fix_for(entry) if entry else self.fix
        return f"{self.message} ({fix})" if fix else self.message

    def __str__(self) -> str:
        return self.line()


class BadInput(EngineError):
    """The request itself is wrong: a file, a prompt, a parameter."""


class NotFound(BadInput):
    """A run, style, job, sweep or catalog run that does not exist (any more)."""


class Conflict(BadInput):
    """What the engine holds does not allow it: the name is taken (a style, a checkpoint or a LoRA of that name is
    already there, and is another one), the library holds too few styles to tune on."""


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


# The one table between errors and HTTP statuses: the server answers with these, the remote engine raises them back.
STATUS: dict[type[EngineError], int] = {
    NotFound: 404,
    TooLarge: 413,
    UnsupportedImage: 415,
    BadInput: 422,
    QueueFull: 429,
    Cancelled: 409,
    Conflict: 409,  # after Cancelled: a 409 that names no error is the older meaning
    Busy: 503,
    ModelUnavailable: 503,
    EngineError: 500,
}


def status_for(exc: EngineError) -> int:
    """The HTTP status of an error: its own class's, or its nearest parent's."""
    for cls in type(exc).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return 500


def error_class(name: str | None, status: int | None = None) -> type[EngineError]:
    """The error class a server named (or, failing that, the one its status stands for)."""
    for cls in STATUS:
        if cls.__name__ == name:
            return cls
    if status is not None:
        for cls, code in STATUS.items():
            if code == status:
                return cls
    return EngineError
