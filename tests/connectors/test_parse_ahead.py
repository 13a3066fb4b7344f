"""The parse-ahead helper process: batches, resume position, and failures that reach the worker."""

from __future__ import annotations

import time

import orjson
import pytest

from connectors.parse_ahead import ParseAhead
from state.intake import Intake


def _drain(ahead: ParseAhead) -> list:
    batches, deadline = [], time.monotonic() + 30
    while not ahead.done:
        assert time.monotonic() < deadline, "parse-ahead never finished"
        parsed = ahead.next()
        if parsed is not None:
            batches.append((parsed, ahead.line))
    return batches


def test_batches_cover_the_file_and_resume_at_a_line(tmp_path):
    path = tmp_path / "events.jsonl"
    lines = [orjson.dumps({"event_id": f"e{i}", "contact_id": f"c{i % 3}", "type": "email_open", "ts": 1000 + i})
             for i in range(10)]
    path.write_bytes(b"\n".join(lines[:5]) + b"\n\n" + b"\n".join(lines[5:]) + b"\nnot json\n")
    ahead = ParseAhead(path, 0, 4, Intake(1))
    try:
        batches = _drain(ahead)
    finally:
        ahead.close()
    ids = [e[0] for parsed, _ in batches for e in parsed.routes[0]]
    assert ids == [f"e{i}" for i in range(10)]
    assert [line for _, line in batches] == [4, 9, 12]  # blank lines count, as line numbers do
    assert [(d.reason, d.source["line"]) for p, _ in batches for d in p.dead] == [("not_json", 12)]

    resumed = ParseAhead(path, 9, 4, Intake(1))  # a snapshot taken after the second batch
    try:
        ids = [e[0] for parsed, _ in _drain(resumed) for e in parsed.routes[0]]
    finally:
        resumed.close()
    assert ids == ["e8", "e9"]


def test_a_failing_helper_is_an_error_in_the_worker_not_a_hang(tmp_path):
    ahead = ParseAhead(tmp_path / "missing.jsonl", 0, 10, Intake(1))
    try:
        with pytest.raises(RuntimeError, match="parse-ahead process failed: FileNotFoundError"):
            _drain(ahead)
    finally:
        ahead.close()


def test_a_killed_helper_is_an_error_in_the_worker_not_a_hang(tmp_path):
    path = tmp_path / "events.jsonl"
    line = orjson.dumps({"event_id": "e", "contact_id": "c", "type": "email_open", "ts": 1000})
    path.write_bytes((line + b"\n") * 50_000)
    ahead = ParseAhead(path, 0, 100, Intake(1))
    try:
        assert ahead.next(timeout=10) is not None  # running, and blocked on the full pipe soon
        ahead._proc.kill()
        with pytest.raises(RuntimeError, match="parse-ahead process died"):
            _drain(ahead)
    finally:
        ahead.close()
