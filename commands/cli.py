"""The `espresso` command: `replay`, `run`, `backfill`, `deliver`, `members`, `report`, `demo`.

Each subcommand's flags and body live in its own module of this package; modules that
import Kafka or Redis clients are imported only when their subcommand runs. This file maps
errors to one line on stderr and an exit code, and never shows a traceback:

- 2: something the user can fix (`ConfigError`: a flag, a variable, a file, a definition);
- 1: a failure while running (`RuntimeFailure`, or anything unexpected: one line here, the
  traceback in the log at DEBUG level);
- 130: interrupted.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

from state.errors import ConfigError, EspressoError, RuntimeFailure

__all__ = ["main"]

log = logging.getLogger("espresso")

#: name -> (help, description); flags in `commands.NAME.add_NAME_args`, body in `cmd_NAME`.
SUBCOMMANDS = {
    "replay": ("process a finite JSONL file of events and write every segment change",
               "Process a finite JSONL file of contact events and write every segment change "
               "(docs/segments.md)."),
    "run": ("the live flow on Kafka: contact events in, segment changes out",
            "Run the segment flow on Kafka (flags and environment: docs/live.md)."),
    "demo": ("live demo on an embedded broker: synthetic shop traffic, changes and messages printed",
             "Start an embedded Kafka-compatible broker (unless KAFKA_BOOTSTRAP_SERVERS is set), stream "
             "synthetic contact events into it and print segment changes and retargeting messages live."),
    "backfill": ("build from history the facts new segment definitions need, in a stopped deployment's state",
                 "On a stopped `espresso run`'s recovery directory: build, from JSONL archives or the input topic, "
                 "the facts new segment definitions read and the state does not keep, so that `espresso run` "
                 "with those definitions switches them in (docs/operations.md, \"Changing definitions\")."),
    "deliver": ("send retargeting messages from Kafka, each exactly once (Redis idempotency)",
                "Consume retargeting-messages and send each through the channels configured in the "
                "environment (docs/delivery.md)."),
    "members": ("members of a segment from the Redis membership view",
                "List, count or test the members of a segment in the Redis membership view."),
    "report": ("did the retargeting work? conversion rates, lift over holdout, A/B winners",
               "Per campaign, variant and step: messages sent, conversions, rate, revenue, holdout and lift, "
               "and the A/B test across variants, from replay files or the topics (docs/campaigns.md)."),
}


def _module(name: str):
    return importlib.import_module(f"commands.{name}")


def parser(only: str | None = None) -> argparse.ArgumentParser:
    """Every subcommand's flags; reads no environment variable (settings are read by `load`).

    `only`: the subcommand about to run; the others get no flags, so their modules (and the
    Kafka, Redis and Bytewax code they import) are not imported just to parse a command line.
    """
    p = argparse.ArgumentParser(prog="espresso", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True, metavar="{" + ",".join(SUBCOMMANDS) + "}")
    for name, (short, description) in SUBCOMMANDS.items():
        sp = sub.add_parser(name, help=short, description=description)
        if only is None or name == only:
            getattr(_module(name), f"add_{name}_args")(sp)
    p.set_defaults(_subparsers=sub.choices)
    return p


def _parse(argv: list[str] | None) -> argparse.Namespace:
    """`parse_args`, except that an unknown flag is reported by its subcommand's parser
    (`espresso replay: error: unrecognized arguments: --x` and that subcommand's usage)."""
    words = sys.argv[1:] if argv is None else argv
    chosen = next((w for w in words if not w.startswith("-")), None)  # `espresso` has no flag with a value
    p = parser(chosen if chosen in SUBCOMMANDS else "")
    args, extra = p.parse_known_args(words)
    if extra:
        sub = getattr(args, "_subparsers", {}).get(getattr(args, "command", None))
        (sub or p).error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def _log_unexpected(name: str) -> None:
    """The traceback of an unexpected error, in the log at DEBUG level (ESPRESSO_LOG_LEVEL=DEBUG)."""
    if os.environ.get("ESPRESSO_LOG_LEVEL", "").strip().upper() == "DEBUG":
        logging.basicConfig(stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        log.setLevel(logging.DEBUG)
    log.debug("espresso %s failed", name, exc_info=True)


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    # A Python error inside a Bytewax step becomes a Rust panic: no backtrace, at least.
    os.environ.setdefault("RUST_BACKTRACE", "0")
    from connectors.runtime import tune_process

    tune_process()
    name = args.command
    try:
        return getattr(_module(name), f"cmd_{name}")(args)
    except ConfigError as exc:
        print(f"espresso {name}: {exc}", file=sys.stderr)
        return 2
    except (RuntimeFailure, EspressoError) as exc:
        print(f"espresso {name}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # noqa: BLE001 - a user sees one line, never a traceback
        _log_unexpected(name)
        print(f"espresso {name}: failed: {type(exc).__name__}: {exc} (run with ESPRESSO_LOG_LEVEL=DEBUG "
              "for details)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
