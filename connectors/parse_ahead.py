"""Read and parse a JSONL event file in a helper process, ahead of the dataflow.

Parsing and validating JSON is about a third of a replay's CPU time and needs no state but
the partition's intake settings, so a second core can do it while the worker applies
events: the worker only unpickles parsed batches (plain tuples), about 3x cheaper than
parsing. Output is identical either way; `espresso replay --parse-ahead/--no-parse-ahead`
chooses.

The helper is a plain subprocess writing length-prefixed pickles to a pipe: the pipe's
buffer is the only queue, so a helper that runs ahead blocks (bounded memory), and no
multiprocessing machinery (resource tracker, feeder threads) runs beside it.
"""

from __future__ import annotations

import os
import pickle
import select
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any, BinaryIO, Callable

from state.intake import Intake

from .lines import line_batches

__all__ = ["ParseAhead", "ParseAheadError", "default_parse_ahead"]

_HEADER = struct.Struct("<Q")
_ROOT = Path(__file__).resolve().parent.parent  # so the helper imports this same code


class ParseAheadError(RuntimeError):
    """The helper failed or died; `reason`: the read error alone (e.g. "Permission denied")."""

    def __init__(self, message: str, reason: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason


def default_parse_ahead() -> bool:
    """On only with a second core to run it: on one core it just adds pickling work."""
    return len(os.sched_getaffinity(0)) >= 2


def _send(out: BinaryIO, msg: Any) -> None:
    data = pickle.dumps(msg, protocol=pickle.HIGHEST_PROTOCOL)
    out.write(_HEADER.pack(len(data)))
    out.write(data)
    out.flush()


def _helper(args: dict, out: BinaryIO) -> None:
    """Sends ("batch", Parsed, next line, file offset)..., then ("end",) or ("error", text)."""
    try:
        intake: Intake = args["intake"]
        path, batch_lines = args["path"], args["batch_lines"]
        origin = {"file": Path(path).name}
        with open(path, "rb") as f:
            for records, line in line_batches(f, args["start_line"], batch_lines):
                _send(out, ("batch", intake.parse(records, origin, "line"), line, f.tell()))
        _send(out, ("end",))
    except BrokenPipeError:
        return  # the worker stopped reading: nothing left to tell it
    except BaseException as exc:  # the worker must hear why, not wait forever
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else None
        _send(out, ("error", f"{type(exc).__name__}: {exc}", reason))
    # Live as long as the worker's reading end, so the helper is a process of the replay
    # from start to end (for `ps`, and for benchmarks that measure the process tree).
    waiter = select.poll()
    waiter.register(out.fileno(), 0)  # POLLERR/POLLHUP: the reader has closed the pipe
    waiter.poll()


class ParseAhead:
    """Batches of one file, parsed by a helper process started at `start_line`."""

    def __init__(self, path: Path, start_line: int, batch_lines: int, intake: Intake,
                 progress: Callable[[int], None] | None = None) -> None:
        """`intake`: a fresh one with the partition's settings, to parse with in the helper."""
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(_ROOT), os.environ.get("PYTHONPATH")]))}
        self._proc = subprocess.Popen(
            [sys.executable, "-c", "from connectors.parse_ahead import main; main()"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, cwd=_ROOT,
            bufsize=0)  # unbuffered: `select` on the pipe must see every byte not yet read
        assert self._proc.stdin is not None and self._proc.stdout is not None
        # The helper runs in the project directory: a relative path would name another file.
        self._proc.stdin.write(pickle.dumps({"path": str(Path(path).absolute()), "start_line": start_line,
                                             "batch_lines": batch_lines, "intake": intake}))
        self._proc.stdin.close()
        self._out = self._proc.stdout
        self._progress = progress
        self.line = start_line
        self.done = False

    def _read(self, n: int) -> bytes:
        chunks, fd = [], self._out.fileno()
        while n:
            chunk = os.read(fd, min(n, 1 << 20))
            if not chunk:
                code = self._proc.wait(timeout=5)
                raise ParseAheadError(f"parse-ahead process died (exit code {code})")
            chunks.append(chunk)
            n -= len(chunk)
        return b"".join(chunks)

    def next(self, timeout: float = 0.1):
        """The next `Parsed` batch; None if not ready yet or at the end (then `done`)."""
        if self.done:
            return None
        if not select.select([self._out], [], [], timeout)[0]:
            return None
        (size,) = _HEADER.unpack(self._read(_HEADER.size))
        msg = pickle.loads(self._read(size))
        if msg[0] == "end":
            self.done = True
            return None
        if msg[0] == "error":
            raise ParseAheadError(f"parse-ahead process failed: {msg[1]}", msg[2])
        _, parsed, self.line, offset = msg
        if self._progress is not None:
            self._progress(offset)
        return parsed

    def close(self) -> None:
        if self._proc.poll() is None:
            self._proc.terminate()
        self._proc.wait(timeout=5)
        self._out.close()


def main() -> None:
    """The helper's entry point: its settings arrive pickled on stdin, batches leave on stdout."""
    from .runtime import tune_process

    tune_process()
    _helper(pickle.load(sys.stdin.buffer), sys.stdout.buffer)


if __name__ == "__main__":
    main()
