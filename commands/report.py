"""`espresso report`: did the retargeting work? Conversion rates, lift over holdout, A/B winners.

    espresso report --from-replay out/changes.jsonl                 # replay's OUT.*.jsonl files
    espresso report --messages M.jsonl --decisions D.jsonl --conversions C.jsonl --format json
    espresso report --bootstrap-servers kafka:9092 --html report.html   # the topics, start to end

Figures and methods: docs/campaigns.md, "Results: espresso report".
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict

from state.errors import ConfigError, RuntimeFailure

from .settings import Count, InputFile, Opt, OutputFile, add_arguments, load

__all__ = ["ReportSettings", "add_report_args", "cmd_report"]

_FILES = "input files (one source: files or topics)"
_TOPICS = "input topics (with --bootstrap-servers or KAFKA_BOOTSTRAP_SERVERS, when no file is given)"
_OUT = "output"


def _file_opt(kind: str) -> Opt:
    return Opt(f"--{kind}", metavar="FILE", group=_FILES,
               help=f"{kind[:-1]} records, JSONL (replay's OUT.{kind}.jsonl); wins over the one of --from-replay",
               fix=f"give the OUT.{kind}.jsonl an `espresso replay --campaigns ...` run wrote")


def _format(value: str) -> str:
    if value not in ("table", "json"):
        raise ValueError("not a format")
    return value


class ReportSettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    from_replay: Annotated[Path | None, Opt(
        "--from-replay", metavar="OUT", group=_FILES,
        help="the --out of an `espresso replay --campaigns ...` run: reads OUT.messages.jsonl, "
             "OUT.decisions.jsonl and OUT.conversions.jsonl beside it")] = None
    messages: Annotated[InputFile | None, _file_opt("messages")] = None
    decisions: Annotated[InputFile | None, _file_opt("decisions")] = None
    conversions: Annotated[InputFile | None, _file_opt("conversions")] = None
    bootstrap_servers: Annotated[str | None, Opt(
        "--bootstrap-servers", "KAFKA_BOOTSTRAP_SERVERS", group=_TOPICS,
        help="read the three topics from their beginning to their current end; security from "
             "KAFKA_SECURITY_PROTOCOL, KAFKA_SASL_* and KAFKA_SSL_CA_LOCATION")] = None
    messages_topic: Annotated[str, Opt("--messages-topic", "ESPRESSO_MESSAGES_TOPIC", group=_TOPICS,
                                       help="topic of released messages")] = "retargeting-messages"
    decisions_topic: Annotated[str, Opt("--decisions-topic", "ESPRESSO_DECISIONS_TOPIC", group=_TOPICS,
                                        help="topic of decisions (held_out ones make the holdout)")
                               ] = "retargeting-decisions"
    conversions_topic: Annotated[str, Opt("--conversions-topic", "ESPRESSO_CONVERSIONS_TOPIC", group=_TOPICS,
                                          help="topic of conversions")] = "conversions"
    format: Annotated[str, AfterValidator(_format), Opt(
        "--format", metavar="{table,json}", group=_OUT,
        help="table: aligned text for a terminal; json: every figure, stable keys",
        fix="give table or json")] = "table"
    html: Annotated[OutputFile | None, Opt(
        "--html", metavar="FILE", group=_OUT,
        help="also write a self-contained HTML page with the figures as charts (nothing loaded from the "
             "network)", fix="give a file in an existing, writable directory")] = None
    min_sends: Annotated[Count, Opt(
        "--min-sends", metavar="N", group=_OUT,
        help="an A/B winner is named only when every variant has at least N sends",
        fix="give a whole number, 1 or more")] = 100


def add_report_args(p: argparse.ArgumentParser) -> None:
    add_arguments(p, ReportSettings)


_KINDS = ("messages", "decisions", "conversions")


def _replay_file(out: Path, kind: str) -> Path:
    from flows.report import beside_replay

    path = beside_replay(out.expanduser(), kind)
    fix = (f"give the --out of an `espresso replay --campaigns ...` run (it writes {path.name}), or name the "
           f"file with --{kind} FILE")
    if not path.exists():
        raise ConfigError(f"--from-replay {out}: {path} does not exist; {fix}")
    if not path.is_file():
        raise ConfigError(f"--from-replay {out}: {path} is not a file; {fix}")
    if not os.access(path, os.R_OK):
        raise ConfigError(f"--from-replay {out}: {path} is not readable (permissions)")
    return path


def _report(s: ReportSettings, args: argparse.Namespace):
    from flows.report import ReportInputs, report_from_files, report_from_topics

    given = {k: getattr(s, k) for k in _KINDS}
    if s.from_replay is not None or any(given.values()):
        if getattr(args, "bootstrap_servers", None):
            raise ConfigError("--bootstrap-servers and input files given: choose one source (drop "
                              "--bootstrap-servers to read the files, or the file flags to read the topics)")
        files, labels = {}, {}
        for kind in _KINDS:
            if given[kind] is not None:
                files[kind], labels[kind] = given[kind], f"--{kind}"
            elif s.from_replay is not None:
                files[kind], labels[kind] = _replay_file(s.from_replay, kind), f"--from-replay {s.from_replay}"
            else:
                raise ConfigError(f"no {kind} input: pass --{kind} FILE, or --from-replay OUT for the three files "
                                  "of an `espresso replay --campaigns ...` run")
        return report_from_files(ReportInputs(files, labels), s.min_sends)
    if not s.bootstrap_servers:
        raise ConfigError("no input: pass --from-replay OUT (the --out of `espresso replay --campaigns ...`), "
                          "--messages/--decisions/--conversions FILE, or --bootstrap-servers HOST:PORT (or set "
                          "KAFKA_BOOTSTRAP_SERVERS) to read the topics")
    from confluent_kafka import KafkaException

    from connectors.kafka_config import KafkaConfig

    kafka = KafkaConfig.from_env(s.bootstrap_servers, os.environ, client_id="espresso-report")
    topics = {"messages": (s.messages_topic, "--messages-topic / ESPRESSO_MESSAGES_TOPIC"),
              "decisions": (s.decisions_topic, "--decisions-topic / ESPRESSO_DECISIONS_TOPIC"),
              "conversions": (s.conversions_topic, "--conversions-topic / ESPRESSO_CONVERSIONS_TOPIC")}
    try:
        return report_from_topics(kafka, topics, s.min_sends)
    except KafkaException as exc:
        err = exc.args[0] if exc.args else exc
        raise RuntimeFailure(f"Kafka at {kafka.bootstrap_servers}: {getattr(err, 'str', lambda: err)()}; check "
                             "--bootstrap-servers / KAFKA_BOOTSTRAP_SERVERS and the KAFKA_SECURITY_* settings") from exc


def _write_html(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise ConfigError(f"--html {path}: cannot write it: {exc.strerror or exc}") from None


def cmd_report(args: argparse.Namespace) -> int:
    from state.report import skipped_lines, table, to_html, to_json

    s = load(ReportSettings, args)
    report = _report(s, args)
    for line in skipped_lines(report):
        print(f"espresso report: {line}", file=sys.stderr)
    if s.html is not None:
        _write_html(s.html, to_html(report))
        print(f"espresso report: wrote {s.html}", file=sys.stderr)
    out = to_json(report).decode() if s.format == "json" else table(report)
    try:
        sys.stdout.write(out)
        sys.stdout.flush()
    except BrokenPipeError:  # `espresso report | head`: the reader had enough
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0
