"""JSONL files as a source of contact events and a sink of records (replay, tests)."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Callable

import orjson
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from bytewax.outputs import DynamicSink, StatelessSinkPartition

from state.timeutil import wall_ms

from state.intake import Intake

from .batch import RawBatch
from .lines import line_batches
from .parse_ahead import ParseAhead, ParseAheadError

__all__ = ["JsonlEventSource", "JsonlSink"]

log = logging.getLogger(__name__)


def _describe(exc: BaseException) -> str:
    """One line for an error kept instead of raised (the traceback goes to the DEBUG log)."""
    log.debug("kept %s", type(exc).__name__, exc_info=exc)
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    if isinstance(exc, ParseAheadError) and exc.reason:
        return exc.reason
    return f"{type(exc).__name__}: {exc}"


#: Empty batches after the last line that walk event time to `--until` (see IntakeLogic).
END_TICKS = 64


class _EndTicks:
    """After the input, END_TICKS tick batches; then the end of the stream."""

    def __init__(self, origin: dict) -> None:
        self._origin, self._k = origin, 0

    def next_batch(self) -> list:
        if self._k >= END_TICKS:
            raise StopIteration()
        self._k += 1
        return [("0", RawBatch("0", [], self._origin, "line", wall_ms(), None, (self._k, END_TICKS)))]


class _FilePartition(StatefulSourcePartition):
    def __init__(self, path: Path, batch_lines: int, resume_line: int, progress: Callable[[int], None] | None):
        self._f = path.open("rb")  # JsonlEventSource.build_part keeps the error
        self._origin = {"file": path.name}
        self._line = resume_line
        self._batches = line_batches(self._f, resume_line, batch_lines)
        self._progress = progress
        self._end = _EndTicks(self._origin)

    def next_batch(self) -> list:
        batch = next(self._batches, None)
        if batch is None:
            return self._end.next_batch()
        records, self._line = batch
        if self._progress is not None:
            self._progress(self._f.tell())
        return [("0", RawBatch("0", records, self._origin, "line", wall_ms()))]

    def snapshot(self) -> int:
        return self._line

    def close(self) -> None:
        self._f.close()


class _ParsedFilePartition(StatefulSourcePartition):
    """Batches parsed by a helper process (connectors/parse_ahead.py)."""

    def __init__(self, path: Path, batch_lines: int, resume_line: int, progress: Callable[[int], None] | None,
                 intake: Intake) -> None:
        self._ahead = ParseAhead(path, resume_line, batch_lines, intake, progress)
        self._origin = {"file": path.name}
        self._end = _EndTicks(self._origin)

    def next_batch(self) -> list:
        parsed = self._ahead.next()
        if parsed is None:
            return self._end.next_batch() if self._ahead.done else []
        return [("0", RawBatch("0", [], self._origin, "line", wall_ms(), parsed))]

    def snapshot(self) -> int:
        return self._ahead.line

    def close(self) -> None:
        self._ahead.close()


class _Failed(StatefulSourcePartition):
    """Ends the stream at once: its source could not be read (the error is on the source)."""

    def __init__(self, resume_line: int) -> None:
        self._line = resume_line

    def next_batch(self) -> list:
        raise StopIteration()

    def snapshot(self) -> int:
        return self._line


class _Guarded(StatefulSourcePartition):
    """A partition whose errors end the stream and stay on the source, `error`.

    An exception raised into Bytewax becomes a Rust panic with a backtrace on stderr; the
    caller (flows/replay.py) reports the kept error in one line after the run instead.
    """

    def __init__(self, source: "JsonlEventSource", inner: StatefulSourcePartition) -> None:
        self._source, self._inner = source, inner

    def next_batch(self) -> list:
        try:
            return self._inner.next_batch()
        except StopIteration:
            raise
        except Exception as exc:  # noqa: BLE001 - kept, reported by the caller
            self._source.error = self._source.error or _describe(exc)
            raise StopIteration() from None

    def snapshot(self) -> int:
        return self._inner.snapshot()

    def close(self) -> None:
        try:
            self._inner.close()
        except Exception as exc:  # noqa: BLE001
            self._source.error = self._source.error or _describe(exc)


class JsonlEventSource(FixedPartitionedSource):
    """One file, one partition `0`, read in batches of lines; resumes at a line number.

    With `parse_ahead` (a fresh `Intake` with the flow's settings), a helper process reads
    and parses the file ahead of the worker. A read error ends the stream and is kept in
    `error` (one line) for the caller to report: it never reaches Bytewax.
    """

    def __init__(self, path: str | os.PathLike, batch_lines: int = 2000,
                 progress: Callable[[int], None] | None = None,
                 parse_ahead: Intake | None = None) -> None:
        self.path = Path(path)
        self.batch_lines = batch_lines
        self.progress = progress
        self.parse_ahead = parse_ahead
        self.error: str | None = None

    def list_parts(self) -> list[str]:
        return ["0"]

    def build_part(self, step_id: str, for_part: str, resume_state: int | None) -> StatefulSourcePartition:
        try:
            if self.parse_ahead is not None:
                part: StatefulSourcePartition = _ParsedFilePartition(
                    self.path, self.batch_lines, resume_state or 0, self.progress, self.parse_ahead)
            else:
                part = _FilePartition(self.path, self.batch_lines, resume_state or 0, self.progress)
        except Exception as exc:  # noqa: BLE001 - kept, reported by the caller
            self.error = self.error or _describe(exc)
            return _Failed(resume_state or 0)
        return _Guarded(self, part)


class _SinkPartition(StatelessSinkPartition):
    """Errors are kept on the sink (`JsonlSink.error`), never raised into Bytewax; after the
    first one, items are dropped (the caller reports the output as incomplete)."""

    def __init__(self, sink: "JsonlSink") -> None:
        self._sink = sink
        self._encode = sink.encode
        self._f: Any = None
        try:
            self._f = sink.path.open("wb")
        except OSError as exc:
            sink.error = sink.error or _describe(exc)

    def write_batch(self, items: list) -> None:
        if self._f is None:
            return
        # One write per item into the file's buffer: a batch can be every change due at
        # the end of a replay, too many to join into one bytes object first.
        write, encode = self._f.write, self._encode
        try:
            for x in items:
                write(encode(x))
        except Exception as exc:  # noqa: BLE001 - kept, reported by the caller
            self._fail(exc)

    def _fail(self, exc: BaseException) -> None:
        self._sink.error = self._sink.error or _describe(exc)
        f, self._f = self._f, None
        try:
            f.close()
        except OSError:
            pass

    def close(self) -> None:
        if self._f is None:
            return
        try:
            self._f.close()  # flushes: a full disk shows here
        except Exception as exc:  # noqa: BLE001
            self._sink.error = self._sink.error or _describe(exc)
        self._f = None


def _json_line(item: Any) -> bytes:
    return orjson.dumps(item, option=orjson.OPT_APPEND_NEWLINE)


class JsonlSink(DynamicSink):
    """Writes one JSON line per item; for single-worker runs (replay).

    `encode` returns the whole line, newline included (orjson's OPT_APPEND_NEWLINE). A
    write error is kept in `error` (one line) for the caller to report, not raised.
    """

    def __init__(self, path: str | os.PathLike, encode: Callable[[Any], bytes] = _json_line) -> None:
        self.path = Path(path)
        self.encode = encode
        self.error: str | None = None

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _SinkPartition:
        if worker_count != 1:
            raise ValueError(f"{step_id}: a JSONL file sink needs exactly one worker, got {worker_count}")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            self.error = self.error or _describe(exc)
        return _SinkPartition(self)
