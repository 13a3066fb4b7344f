"""JSONL files as a source of contact events and a sink of records (replay, tests)."""

from __future__ import annotations

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
from .parse_ahead import ParseAhead

__all__ = ["JsonlEventSource", "JsonlSink"]


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
        self._f = path.open("rb")
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


class JsonlEventSource(FixedPartitionedSource):
    """One file, one partition `0`, read in batches of lines; resumes at a line number.

    With `parse_ahead` (a fresh `Intake` with the flow's settings), a helper process reads
    and parses the file ahead of the worker.
    """

    def __init__(self, path: str | os.PathLike, batch_lines: int = 2000,
                 progress: Callable[[int], None] | None = None,
                 parse_ahead: Intake | None = None) -> None:
        self.path = Path(path)
        self.batch_lines = batch_lines
        self.progress = progress
        self.parse_ahead = parse_ahead

    def list_parts(self) -> list[str]:
        return ["0"]

    def build_part(self, step_id: str, for_part: str, resume_state: int | None) -> StatefulSourcePartition:
        if self.parse_ahead is not None:
            return _ParsedFilePartition(self.path, self.batch_lines, resume_state or 0, self.progress,
                                        self.parse_ahead)
        return _FilePartition(self.path, self.batch_lines, resume_state or 0, self.progress)


class _SinkPartition(StatelessSinkPartition):
    def __init__(self, path: Path, encode: Callable[[Any], bytes]) -> None:
        self._f = path.open("wb")
        self._encode = encode

    def write_batch(self, items: list) -> None:
        # One write per item into the file's buffer: a batch can be every change due at
        # the end of a replay, too many to join into one bytes object first.
        write, encode = self._f.write, self._encode
        for x in items:
            write(encode(x))

    def close(self) -> None:
        self._f.close()


def _json_line(item: Any) -> bytes:
    return orjson.dumps(item, option=orjson.OPT_APPEND_NEWLINE)


class JsonlSink(DynamicSink):
    """Writes one JSON line per item; for single-worker runs (replay).

    `encode` returns the whole line, newline included (orjson's OPT_APPEND_NEWLINE).
    """

    def __init__(self, path: str | os.PathLike, encode: Callable[[Any], bytes] = _json_line) -> None:
        self.path = Path(path)
        self.encode = encode

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _SinkPartition:
        if worker_count != 1:
            raise ValueError(f"{step_id}: a JSONL file sink needs exactly one worker, got {worker_count}")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        return _SinkPartition(self.path, self.encode)
