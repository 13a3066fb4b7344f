"""Errors raised by the engine-independent core.

Only configuration and start-up problems raise; bad input is data (see `events.Invalid`).
"""

from __future__ import annotations

__all__ = ["EspressoError", "DefinitionError"]


class EspressoError(Exception):
    """Base class of every error espresso raises on purpose."""


class DefinitionError(EspressoError):
    """A segment or campaign definition file is wrong.

    The message names the file, the path inside it, the problem and the fix, so an
    operator can correct the file without reading code.
    """

    def __init__(self, file: str, path: str, problem: str, fix: str = "") -> None:
        self.file, self.path, self.problem, self.fix = file, path, problem, fix
        where = f"{file}: {path}" if path else file
        msg = f"{where}: {problem}"
        if fix:
            msg += f" (fix: {fix})"
        super().__init__(msg)
