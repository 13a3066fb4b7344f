"""Batches of non-blank lines of a JSONL file, numbered, for the file source and its helper."""

from __future__ import annotations

from typing import BinaryIO, Iterator

__all__ = ["line_batches"]


def line_batches(f: BinaryIO, start_line: int, batch_lines: int) -> Iterator[tuple[list[tuple[bytes, int]], int]]:
    """After skipping `start_line` lines: (records, lines read so far) per batch of up to
    `batch_lines` non-blank lines; a record is (line without its end, 1-based line number).
    Blank lines count in the numbering (dead letters name lines as an editor does)."""
    line = 0
    while line < start_line and f.readline():
        line += 1
    while True:
        records = []
        for raw in f:
            line += 1
            raw = raw.rstrip(b"\r\n")
            if raw.strip():
                records.append((raw, line))
                if len(records) >= batch_lines:
                    break
        if not records:
            return
        yield records, line
