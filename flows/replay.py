"""`espresso replay`: run the segment flow over a finite JSONL file, deterministically."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import orjson
from bytewax.testing import run_main

from connectors.files import JsonlEventSource, JsonlSink
from state.dedup import DEFAULT_HORIZON
from state.definitions import load_segments
from state.program import compile_program

from .config import REPLAY, FlowConfig
from .segments import build_flow

__all__ = ["ReplayResult", "replay", "default_dead_letter_path"]


@dataclass
class ReplayResult:
    changes: int
    dead_letters: int
    changes_path: Path
    dead_letters_path: Path


def default_dead_letter_path(out: Path) -> Path:
    """`changes.jsonl` -> `changes.dead-letters.jsonl`, beside the output."""
    return out.with_name(out.stem + ".dead-letters" + (out.suffix or ".jsonl"))


def replay(events: Path, until_ms: int | None, out: Path, segments: Path | None = None,
           dead_letters: Path | None = None, shards: int = 1, batch_lines: int = 2000,
           dedup_horizon: int = DEFAULT_HORIZON, progress: bool | None = None) -> ReplayResult:
    program = compile_program(load_segments(segments))
    cfg = FlowConfig(program, mode=REPLAY, until_ms=until_ms, shards_per_partition=shards,
                     dedup_horizon=dedup_horizon)
    dead_path = dead_letters or default_dead_letter_path(out)
    counts = {"changes": 0, "dead": 0}

    def enc_change(change) -> bytes:
        counts["changes"] += 1
        return orjson.dumps(change.record())

    def enc_dead(dead) -> bytes:
        counts["dead"] += 1
        return orjson.dumps(dead.record())

    bar = _progress_bar(events, progress)
    source = JsonlEventSource(events, batch_lines, progress=bar.update_to if bar else None)
    flow = build_flow(cfg, source, JsonlSink(out, enc_change), JsonlSink(dead_path, enc_dead), "espresso-replay")
    try:
        run_main(flow)
    finally:
        if bar:
            bar.close()
    return ReplayResult(counts["changes"], counts["dead"], out, dead_path)


def _progress_bar(events: Path, progress: bool | None):
    """A byte-based progress bar on a terminal only: logs and CI stay clean."""
    if progress is None:
        progress = sys.stderr.isatty()
    if not progress:
        return None
    from tqdm import tqdm

    bar = tqdm(total=events.stat().st_size, unit="B", unit_scale=True, desc="replay", file=sys.stderr)

    def update_to(pos: int) -> None:
        bar.update(pos - bar.n)

    bar.update_to = update_to  # type: ignore[attr-defined]
    return bar
