"""`espresso replay`: run the segment flow over a finite JSONL file, deterministically."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import orjson
from bytewax.testing import run_main

from connectors.files import JsonlEventSource, JsonlSink
from connectors.parse_ahead import default_parse_ahead
from state.dedup import DEFAULT_HORIZON
from state.errors import ConfigError, RuntimeFailure

from .config import DEFAULT_MAX_CLOCK_SKEW_MS, REPLAY, FlowConfig, load_program
from .segments import build_flow

__all__ = ["ReplayResult", "replay", "beside", "default_dead_letter_path", "load_program"]


@dataclass
class ReplayResult:
    changes: int
    dead_letters: int
    changes_path: Path
    dead_letters_path: Path
    messages: int = 0
    decisions: int = 0
    conversions: int = 0


def beside(out: Path, kind: str) -> Path:
    """`changes.jsonl` -> `changes.<kind>.jsonl`, beside the output."""
    return out.with_name(f"{out.stem}.{kind}{out.suffix or '.jsonl'}")


def default_dead_letter_path(out: Path) -> Path:
    """`changes.jsonl` -> `changes.dead-letters.jsonl`, beside the output."""
    return beside(out, "dead-letters")


def replay(events: Path, until_ms: int | None, out: Path, segments: Path | None = None,
           dead_letters: Path | None = None, shards: int = 1, batch_lines: int = 2000,
           dedup_horizon: int = DEFAULT_HORIZON, progress: bool | None = None,
           campaigns: str | Path | None = None, parse_ahead: bool | None = None,
           max_clock_skew_ms: int = DEFAULT_MAX_CLOCK_SKEW_MS, catalog: Path | None = None) -> ReplayResult:
    """With `campaigns`, every send decision is reproduced into OUT.messages/.decisions.jsonl,
    and every attributed order into OUT.conversions.jsonl. With `catalog` (a JSONL file of
    product updates), the updates meet the contact events in event time (catalog triggers).

    `parse_ahead` (default: when a second core is available) parses in a helper process.
    """
    program, camps = load_program(segments, campaigns)
    if catalog is not None and camps is None:
        raise ConfigError(f"--catalog {catalog}: product updates only matter to campaigns; "
                          "give --campaigns with catalog triggers, or leave --catalog out")
    cfg = FlowConfig(program, mode=REPLAY, until_ms=until_ms, shards_per_partition=shards,
                     dedup_horizon=dedup_horizon, campaigns=camps, snapshots=False,
                     max_clock_skew_ms=max_clock_skew_ms, catalog_parts=("0",) if catalog is not None else ())
    dead_path = dead_letters or default_dead_letter_path(out)
    counts = {"changes": 0, "dead": 0, "messages": 0, "decisions": 0, "conversions": 0}

    def counting(kind: str):
        def encode(item) -> bytes:
            counts[kind] += 1
            return orjson.dumps(item.record(), option=orjson.OPT_APPEND_NEWLINE)
        return encode

    enc_change, enc_dead = counting("changes"), counting("dead")
    extra = {}
    if camps is not None:
        extra = {"messages": JsonlSink(beside(out, "messages"), counting("messages")),
                 "decisions": JsonlSink(beside(out, "decisions"), counting("decisions")),
                 "conversions": JsonlSink(beside(out, "conversions"), counting("conversions"))}

    sinks = [JsonlSink(out, enc_change), JsonlSink(dead_path, enc_dead), *extra.values()]
    for sink in sinks:  # a file that cannot be opened is the user's to fix, before any work
        _can_write(sink.path)
    bar = _progress_bar(events, progress)
    if parse_ahead is None:
        parse_ahead = default_parse_ahead()
    source = JsonlEventSource(events, batch_lines, progress=bar.update_to if bar else None,
                              parse_ahead=cfg.new_intake() if parse_ahead else None)
    catalog_source = None if catalog is None else JsonlEventSource(catalog, batch_lines)
    flow = build_flow(cfg, source, sinks[0], sinks[1], "espresso-replay", catalog=catalog_source, **extra)
    try:
        run_main(flow)
    finally:
        if bar:
            bar.close()
    # The connectors keep I/O errors instead of raising them into Bytewax (a Rust panic).
    if source.error:
        raise RuntimeFailure(f"reading {events}: {source.error}; the output is incomplete")
    if catalog_source is not None and catalog_source.error:
        raise RuntimeFailure(f"reading {catalog}: {catalog_source.error}; the output is incomplete")
    for sink in sinks:
        if sink.error:
            raise RuntimeFailure(f"writing {sink.path}: {sink.error}; the output is incomplete")
    return ReplayResult(counts["changes"], counts["dead"], out, dead_path, counts["messages"], counts["decisions"],
                        counts["conversions"])


def _can_write(path: Path) -> None:
    try:
        with open(path, "ab"):
            pass
    except OSError as exc:
        raise ConfigError(f"cannot write {path}: {exc.strerror or exc}") from None


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
