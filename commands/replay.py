"""`espresso replay`: a finite JSONL file through the segment flow, deterministically."""

from __future__ import annotations

import argparse
import stat
import sys
from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, model_validator

from flows.config import DEFAULT_MAX_CLOCK_SKEW_MS
from state.builtin_names import is_builtin_name
from state.dedup import DEFAULT_HORIZON

from .settings import (Count, Duration, InputFile, Instant, Opt, OutputFile, TextFile, _campaigns, _output_file,
                       add_arguments, load)

__all__ = ["ReplaySettings", "add_replay_args", "cmd_replay"]


class ReplaySettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    events: Annotated[InputFile, Opt(None, metavar="EVENTS.jsonl", help="JSONL file of contact events",
                                     fix="give the path of a readable JSONL file")]
    until: Annotated[Instant, Opt("--until", help="ISO-8601 instant time runs to after the last event (inclusive)",
                                  fix="give an instant such as 2026-11-30T00:00:00Z")]
    out: Annotated[OutputFile, Opt("--out", metavar="CHANGES.jsonl", help="JSONL file of segment changes to write",
                                   fix="give a file path in an existing, writable directory")]
    segments: Annotated[TextFile | None, Opt("--segments", metavar="FILE",
                                              help="segment definitions YAML (default: built-in espresso segments)",
                                              fix="give the path of a readable segments YAML")] = None
    dead_letters: Annotated[OutputFile | None, Opt("--dead-letters", metavar="FILE",
                                                   help="JSONL file for invalid lines with reasons "
                                                        "(default: OUT.dead-letters.jsonl)")] = None
    campaigns: Annotated[str | None, AfterValidator(lambda v: v if v is None else _campaigns(v)), Opt(
        "--campaigns", metavar="FILE|builtin[:NAME]", help="campaign definitions YAML, or 'builtin': also write every "
        "send decision to OUT.messages.jsonl and OUT.decisions.jsonl, attributed orders to OUT.conversions.jsonl",
        fix="give a campaigns YAML, 'builtin', 'builtin:espresso' or 'builtin:shop'")] = None
    catalog: Annotated[InputFile | None, Opt(
        "--catalog", metavar="CATALOG.jsonl", help="JSONL file of product updates for catalog triggers (price drop, "
        "back in stock, low stock), merged with the events in event time; needs --campaigns",
        fix="give the path of a readable JSONL file of product_updated records")] = None
    max_clock_skew: Annotated[Duration, Opt(
        "--max-clock-skew", help="an event stamped further ahead of --until than this goes to the dead letters "
        "as future_ts", fix="give a duration such as 5m, 30s, 1h")] = DEFAULT_MAX_CLOCK_SKEW_MS
    shards: Annotated[Count, Opt("--shards", help="shards (output order is only stable with 1)")] = 1
    dedup_horizon: Annotated[Count, Opt("--dedup-horizon",
                                        help="event ids remembered to drop redeliveries")] = DEFAULT_HORIZON
    no_progress: Annotated[bool, Opt("--no-progress", switch=True,
                                     help="no progress bar even on a terminal")] = False
    parse_ahead: Annotated[bool | None, Opt(
        "--parse-ahead", switch=True, help="read and parse the file in a helper process on a second core "
        "(default: on when the process may use two or more cores)")] = None

    def outputs(self) -> dict[str, Path]:
        """Every file the replay writes, by how the user named it."""
        from flows.replay import beside, default_dead_letter_path

        files = {"--out": self.out,
                 "--dead-letters" if self.dead_letters else "the dead letters beside --out":
                     self.dead_letters or default_dead_letter_path(self.out)}
        if self.campaigns:
            files["the messages beside --out"] = beside(self.out, "messages")
            files["the decisions beside --out"] = beside(self.out, "decisions")
        return files

    @model_validator(mode="after")
    def _paths_do_not_collide(self) -> "ReplaySettings":
        """No output overwrites an input or another output; files beside --out can be written."""
        if self.catalog is not None and self.campaigns is None:
            raise ValueError(f"--catalog {self.catalog}: product updates only matter to campaigns; give --campaigns "
                             "with catalog triggers (e.g. builtin:shop), or leave --catalog out")
        inputs = {"the events file": self.events, "--catalog": self.catalog, "--segments": self.segments,
                  "--campaigns": None if self.campaigns is None or is_builtin_name(self.campaigns) else Path(self.campaigns)}
        seen: dict[object, str] = {_real(p): name for name, p in inputs.items() if p is not None}
        for name, path in self.outputs().items():
            if name.startswith("the "):  # derived from --out: checked like --out, named by it
                try:
                    _output_file(path)
                except ValueError as exc:
                    raise ValueError(f"--out {self.out}: {name}, {path}, {exc}; give another --out"
                                     + (" or --dead-letters FILE" if "dead letters" in name else "")) from None
            real = _real(path)
            if real in seen and _regular_or_missing(path):
                what = "would overwrite " + seen[real] if seen[real] in inputs else "is also " + seen[real]
                raise ValueError(f"{name} ({path}) {what}; give a different file")
            seen[real] = name
        return self


def _real(path: Path) -> object:
    """The identity of a file: two names (links, `..`) of one file are one file."""
    try:
        st = path.stat()
        return (st.st_dev, st.st_ino)
    except OSError:
        return path.resolve()


def _regular_or_missing(path: Path) -> bool:
    """Two outputs may share a device such as /dev/null, never a file."""
    try:
        return stat.S_ISREG(path.stat().st_mode)
    except OSError:
        return True


def add_replay_args(p: argparse.ArgumentParser) -> None:
    add_arguments(p, ReplaySettings)
    p.add_argument("--no-parse-ahead", dest="parse_ahead", action="store_const", const=False,
                   help="parse in the worker (same output)")


def cmd_replay(args: argparse.Namespace) -> int:
    from flows.replay import replay

    s = load(ReplaySettings, args)
    res = replay(s.events, s.until, s.out, s.segments, s.dead_letters, s.shards, dedup_horizon=s.dedup_horizon,
                 progress=False if s.no_progress else None, campaigns=s.campaigns, parse_ahead=s.parse_ahead,
                 max_clock_skew_ms=s.max_clock_skew, catalog=s.catalog)
    print(f"espresso replay: {res.changes} changes -> {res.changes_path}; "
          f"{res.dead_letters} invalid lines -> {res.dead_letters_path}", file=sys.stderr)
    if s.campaigns:
        print(f"espresso replay: {res.messages} messages, {res.decisions} other decisions, "
              f"{res.conversions} conversions (beside the output)", file=sys.stderr)
    return 0
