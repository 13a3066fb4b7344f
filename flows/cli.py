"""The `espresso` command: `replay`, `run`, `demo` and friends.

Each subcommand lives in its own module; this file only parses arguments, turns
configuration errors into one clear line on stderr and an exit code.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

from state.dedup import DEFAULT_HORIZON
from state.errors import EspressoError
from state.timeutil import parse_duration, parse_ts

from .runtime import tune_process

__all__ = ["main"]


def _instant(text: str) -> int:
    ms = parse_ts(text)
    if ms is None:
        raise argparse.ArgumentTypeError(f"not an ISO-8601 instant with offset or Z: {text!r}")
    return ms


def _skew(text: str) -> int:
    ms = parse_duration(text)
    if ms is None:
        raise argparse.ArgumentTypeError(f"not a duration such as 5m, 30s, 1h: {text!r}")
    return ms


def _replay_args(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("replay", help="process a finite JSONL file of events and write every segment change")
    p.add_argument("events", type=Path, help="JSONL file of contact events")
    p.add_argument("--until", type=_instant, required=True,
                   help="ISO-8601 instant time runs to after the last event (inclusive)")
    p.add_argument("--out", type=Path, required=True, help="JSONL file of segment changes to write")
    p.add_argument("--segments", type=Path, help="segment definitions YAML (default: built-in espresso segments)")
    p.add_argument("--dead-letters", type=Path,
                   help="JSONL file for invalid lines with reasons (default: OUT.dead-letters.jsonl)")
    p.add_argument("--max-clock-skew", type=_skew, default="5m",
                   help="an event stamped further ahead of --until than this goes to the dead letters as "
                        "future_ts (default %(default)s)")
    p.add_argument("--shards", type=int, default=1, help="shards (default 1; output order is only stable with 1)")
    p.add_argument("--dedup-horizon", type=int, default=DEFAULT_HORIZON,
                   help=f"event ids remembered to drop redeliveries (default {DEFAULT_HORIZON})")
    p.add_argument("--campaigns", help="campaign definitions YAML, or 'builtin': also write every send "
                   "decision to OUT.messages.jsonl and OUT.decisions.jsonl")
    p.add_argument("--no-progress", action="store_true", help="no progress bar even on a terminal")
    p.add_argument("--parse-ahead", action=argparse.BooleanOptionalAction, default=None,
                   help="read and parse the file in a helper process, on a second core "
                   "(default: on when the process may use two or more cores)")


def _cmd_replay(args: argparse.Namespace) -> int:
    from .replay import replay

    if not args.events.is_file():
        print(f"espresso replay: {args.events}: no such file", file=sys.stderr)
        return 2
    res = replay(args.events, args.until, args.out, args.segments, args.dead_letters, args.shards,
                 dedup_horizon=args.dedup_horizon, progress=False if args.no_progress else None,
                 campaigns=args.campaigns, parse_ahead=args.parse_ahead,
                 max_clock_skew_ms=args.max_clock_skew)
    print(f"espresso replay: {res.changes} changes -> {res.changes_path}; "
          f"{res.dead_letters} invalid lines -> {res.dead_letters_path}", file=sys.stderr)
    if args.campaigns:
        print(f"espresso replay: {res.messages} messages, {res.decisions} other decisions "
              "(beside the output)", file=sys.stderr)
    return 0


class _Lazy:
    """A subcommand whose flags and body live in its own module `flows/NAME.py`
    (`add_NAME_args`, `cmd_NAME`); those modules import Kafka and Redis clients only inside
    their functions."""

    def __init__(self, name: str, help: str, description: str) -> None:  # noqa: A002 - argparse's word
        self.name, self.help, self.description = name, help, description

    def _module(self):
        return importlib.import_module(f"flows.{self.name}")

    def add(self, sub: argparse._SubParsersAction) -> None:
        p = sub.add_parser(self.name, help=self.help, description=self.description)
        getattr(self._module(), f"add_{self.name}_args")(p)

    def run(self, args: argparse.Namespace) -> int:
        return getattr(self._module(), f"cmd_{self.name}")(args)


_LAZY = [
    _Lazy("run", "the live flow on Kafka: contact events in, segment changes out",
          "Run the segment flow on Kafka (flags and environment: docs/live.md)."),
    _Lazy("demo", "live demo on an embedded broker: synthetic shop traffic, changes printed as they happen",
          "Start an embedded Kafka-compatible broker (unless KAFKA_BOOTSTRAP_SERVERS is set), "
          "stream synthetic contact events into it and print segment changes live."),
    _Lazy("deliver", "send retargeting messages from Kafka, each exactly once (Redis idempotency)",
          "Consume retargeting-messages and send each through the channels configured "
          "in the environment (docs/delivery.md)."),
    _Lazy("members", "members of a segment from the Redis membership view",
          "List, count or test the members of a segment in the Redis membership view."),
]
COMMANDS = {"replay": (_replay_args, _cmd_replay), **{c.name: (c.add, c.run) for c in _LAZY}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="espresso", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for add, _ in COMMANDS.values():
        add(sub)
    args = parser.parse_args(argv)
    tune_process()
    try:
        return COMMANDS[args.command][1](args)
    except EspressoError as exc:
        print(f"espresso {args.command}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
