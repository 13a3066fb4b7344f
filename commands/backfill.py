"""`espresso backfill`: on a stopped deployment, build from history the facts new definitions need."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, model_validator

from flows.run import DEFAULT_TOPICS
from state.errors import ConfigError

from .settings import Count, Directory, Duration, Opt, OutputFile, TextFile, _campaigns, _input_file, add_arguments, load

__all__ = ["BackfillSettings", "add_backfill_args", "cmd_backfill"]

log = logging.getLogger("espresso.backfill")


def _history(value: str) -> str:
    """FILE[,FILE...] or a directory (its *.jsonl files, by name): every one must be readable."""
    for path in history_files(value):
        try:
            _input_file(path)
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from None
    return value


def history_files(value: str) -> list[Path]:
    out: list[Path] = []
    for item in (v.strip() for v in value.split(",")):
        if not item:
            continue
        p = Path(item)
        if p.is_dir():
            found = sorted(p.glob("*.jsonl"))
            if not found:
                raise ValueError(f"directory {p} holds no *.jsonl file")
            out.extend(found)
        else:
            out.append(p)
    if not out:
        raise ValueError("no file given")
    return out


class BackfillSettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    recovery_dir: Annotated[Directory, Opt(
        "--recovery-dir", "ESPRESSO_RECOVERY_DIR", metavar="DIR",
        help="the recovery directory of the stopped `espresso run` (its part-*.sqlite3 files)",
        fix="give the directory `espresso run --recovery-dir` writes to")]
    segments: Annotated[TextFile | None, Opt("--segments", "ESPRESSO_SEGMENTS", metavar="FILE",
                                              help="the NEW segment definitions (default: built-in)",
                                              fix="give the path of a readable segments YAML")] = None
    campaigns: Annotated[str | None, AfterValidator(lambda v: v if v is None else _campaigns(v)), Opt(
        "--campaigns", "ESPRESSO_CAMPAIGNS", metavar="FILE|builtin[:NAME]",
        help="the NEW campaign definitions, if any (their consent channels and profile fields are built too)",
        fix="give a campaigns YAML, 'builtin', 'builtin:espresso' or 'builtin:shop'")] = None
    history: Annotated[str | None, AfterValidator(lambda v: v if v is None else _history(v)), Opt(
        "--history", "ESPRESSO_HISTORY", metavar="FILE[,FILE...]|DIR",
        help="JSONL archives of contact events (the input topic's format), oldest first; a directory: its "
             "*.jsonl files by name", fix="give readable JSONL files, comma-separated, or a directory of them")] = None
    from_topic: Annotated[bool, Opt(
        "--from-topic", switch=True,
        help="read the history from the input topic instead, up to the offsets the snapshots stored (needs "
             "--bootstrap-servers; refused when retention deleted history a segment needs)")] = False
    bootstrap_servers: Annotated[str | None, Opt("--bootstrap-servers", "KAFKA_BOOTSTRAP_SERVERS",
                                                 help="HOST:PORT of the brokers, with --from-topic")] = None
    input_topic: Annotated[str, Opt("--input-topic", "ESPRESSO_INPUT_TOPIC",
                                    help="topic of contact events, with --from-topic")] = DEFAULT_TOPICS["input"]
    input_partitions: Annotated[Count | None, Opt(
        "--input-partitions", metavar="N",
        help="partitions of the input topic, to place contacts only the archive knows (default: from the "
             "snapshots' shard keys)")] = None
    allowed_lateness: Annotated[Duration, Opt(
        "--allowed-lateness", "ESPRESSO_ALLOWED_LATENESS", help="as given to `espresso run`",
        fix="give a duration such as 60s")] = 60_000
    dead_letters: Annotated[OutputFile | None, Opt(
        "--dead-letters", metavar="FILE",
        help="JSONL file for invalid archive lines with reasons (default: backfill-dead-letters.jsonl in DIR)")] = None

    @model_validator(mode="after")
    def _one_history(self) -> "BackfillSettings":
        if (self.history is None) == (not self.from_topic):
            raise ValueError("give the history: --history FILE[,FILE...] (JSONL archives) or --from-topic "
                             "(the input topic, while its retention covers what the segments need), one of them")
        if self.from_topic and not self.bootstrap_servers:
            raise ValueError("--from-topic needs --bootstrap-servers HOST:PORT (or KAFKA_BOOTSTRAP_SERVERS)")
        return self


def add_backfill_args(p: argparse.ArgumentParser) -> None:
    add_arguments(p, BackfillSettings)


def cmd_backfill(args: argparse.Namespace) -> int:
    from flows.backfill import ArchiveHistory, TopicHistory, backfill, read_input_offsets
    from flows.config import load_program

    level = os.environ.get("ESPRESSO_LOG_LEVEL", "INFO").strip().upper() or "INFO"
    logging.basicConfig(level=getattr(logging, level, logging.INFO), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    s = load(BackfillSettings, args)
    program, _ = load_program(s.segments, s.campaigns)
    if s.from_topic:
        from connectors.kafka_config import KafkaConfig

        offsets = read_input_offsets(s.recovery_dir)
        if not offsets:
            raise ConfigError(f"--recovery-dir {s.recovery_dir}: no input offsets in these recovery partitions; with "
                              "several processes, gather every part-*.sqlite3 in one directory, or use --history")
        history: ArchiveHistory | TopicHistory = TopicHistory(
            KafkaConfig.from_env(s.bootstrap_servers, os.environ), s.input_topic, offsets)
    else:
        assert s.history is not None
        history = ArchiveHistory(history_files(s.history),
                                 s.dead_letters or s.recovery_dir / "backfill-dead-letters.jsonl")
    result = backfill(s.recovery_dir, program, history, input_partitions=s.input_partitions,
                      lateness_ms=s.allowed_lateness)
    print(f"espresso backfill: {result.summary()}", file=sys.stderr)
    if result.unplaced:
        print(f"espresso backfill: {result.unplaced} events of contacts the state does not hold were left out: their "
              "partition is unknown (the producers' partitioner is neither murmur2 nor crc32, or the topic's "
              "partition count changed); pass --input-partitions N if the snapshots miss partitions", file=sys.stderr)
    if result.facts:
        print("espresso backfill: now start `espresso run` with the new definitions on this recovery directory",
              file=sys.stderr)
    return 0
