"""The errors espresso raises on purpose, in one hierarchy the command line maps to exit codes.

- `ConfigError` (exit 2): something the user can fix (a flag, a variable, a file); the
  message names it, the value and the fix, in one line.
- `RuntimeFailure` (exit 1): something failed while running (a broker or Redis that does not
  answer, a record Kafka never acknowledged); one line, details in the log.

Bad input is data, never an error (see `events.Invalid`).
"""

from __future__ import annotations

__all__ = ["EspressoError", "ConfigError", "RuntimeFailure", "DefinitionError"]


class EspressoError(Exception):
    """Base class of every error espresso raises on purpose."""


class ConfigError(EspressoError):
    """A setting, file or definition the user must fix before espresso can run."""


class RuntimeFailure(EspressoError):
    """A failure while running, not a mistake of the user's: retry, or look at the named system."""


class DefinitionError(ConfigError):
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
