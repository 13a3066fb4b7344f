"""`espresso report`: read messages, decisions and conversions, from replay files or topics, and
aggregate them (state/report). Nothing of a record can stop it: bad records are counted."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

from state.errors import ConfigError
from state.report import KINDS, Aggregator, Report

__all__ = ["ReportInputs", "beside_replay", "report_from_files", "report_from_topics"]


def beside_replay(out: Path, kind: str) -> Path:
    """`OUT` (the `--out` of `espresso replay`) -> `OUT.<kind>.jsonl` as replay names it."""
    return out.with_name(f"{out.stem}.{kind}{out.suffix or '.jsonl'}")


@dataclass(frozen=True)
class ReportInputs:
    """Files by kind (`messages`, `decisions`, `conversions`) and how to name each in a message."""

    files: Mapping[str, Path]
    labels: Mapping[str, str]


def _lines(path: Path, label: str) -> Iterable[tuple[bytes, str]]:
    try:
        with path.open("rb") as f:
            for n, raw in enumerate(f, 1):
                raw = raw.rstrip(b"\r\n")
                if raw.strip():
                    yield raw, f"line {n}"
    except OSError as exc:
        raise ConfigError(f"{label}: cannot read {path}: {exc.strerror or exc}") from None


def report_from_files(inputs: ReportInputs, min_sends: int) -> Report:
    agg = Aggregator()
    for kind in KINDS:
        path = inputs.files[kind]
        agg.inputs[kind].source = str(path)
        for raw, origin in _lines(path, inputs.labels.get(kind, str(path))):
            agg.add(kind, raw, origin)
    return agg.finish(min_sends)


def report_from_topics(kafka: Any, topics: Mapping[str, tuple[str, str]], min_sends: int) -> Report:
    """`topics`: kind -> (topic, the flag and variable naming it); each is read from its
    beginning to the end it has when reading starts."""
    from connectors.topic_reader import check_topics, read_to_end

    check_topics(kafka, {topic: label for topic, label in topics.values()},
                 fix="name the topic espresso writes with the flag or variable, or run `espresso run --campaigns "
                     "... --create-topics` first")
    agg = Aggregator()
    for kind in KINDS:
        topic = topics[kind][0]
        agg.inputs[kind].source = f"topic {topic}"
        for value, origin in read_to_end(kafka, topic, group_id="espresso-report"):
            agg.add(kind, value, origin)
    return agg.finish(min_sends)
