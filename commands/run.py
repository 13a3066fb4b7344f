"""`espresso run`: the settings of the live flow, then `flows.run.run`."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from typing import Annotated, Any, Mapping

from pydantic import AfterValidator, BaseModel, ConfigDict, model_validator

from flows.config import COMPACT_MIN_ROWS, COMPACT_SHARE, DEFAULT_MAX_CLOCK_SKEW_MS
from flows.run import DEFAULT_TOPICS, RunConfig
from metrics.health import HEALTH
from state.dedup import DEFAULT_HORIZON
from state.errors import ConfigError

from .settings import Count, Directory, Duration, Opt, Port, TextFile, _campaigns, add_arguments, load

__all__ = ["RunSettings", "add_run_args", "config_from_args", "cmd_run"]

log = logging.getLogger("espresso.run")

K, T, O, W = "Kafka", "Segments and time", "Operation", "Scale-out (as `python -m bytewax.run`)"
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def _shards(value: int) -> int:
    if not 1 <= value <= 4096:
        raise ValueError("must be within 1..4096")
    return value


def _share(value: float) -> float:
    if not 0 < value <= 1:
        raise ValueError("must be within (0, 1]")
    return value


def _epoch(value: int) -> int:
    if value < 100:
        raise ValueError("must be at least 100ms")
    return value


def _log_level(value: str) -> str:
    if value.upper() not in LOG_LEVELS:
        raise ValueError(f"not one of {', '.join(LOG_LEVELS)}")
    return value.upper()


class RunSettings(BaseModel):
    """Every flag of `espresso run` with its variable; checked before anything starts."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    bootstrap_servers: Annotated[str | None, Opt(
        "--bootstrap-servers", "KAFKA_BOOTSTRAP_SERVERS", group=K,
        help="HOST:PORT[,HOST:PORT] of the brokers; security from KAFKA_SECURITY_PROTOCOL, "
             "KAFKA_SASL_MECHANISM, KAFKA_SASL_USERNAME, KAFKA_SASL_PASSWORD, KAFKA_SSL_CA_LOCATION")] = None
    input_topic: Annotated[str, Opt("--input-topic", "ESPRESSO_INPUT_TOPIC", group=K,
                                    help="topic of contact events, key contact_id")] = DEFAULT_TOPICS["input"]
    output_topic: Annotated[str, Opt("--output-topic", "ESPRESSO_OUTPUT_TOPIC", group=K,
                                     help="topic of segment changes")] = DEFAULT_TOPICS["output"]
    dlq_topic: Annotated[str, Opt("--dlq-topic", "ESPRESSO_DLQ_TOPIC", group=K,
                                  help="topic of invalid input records")] = DEFAULT_TOPICS["dlq"]
    create_topics: Annotated[bool, Opt("--create-topics", "ESPRESSO_CREATE_TOPICS", switch=True, group=K,
                                       help="create the topics if missing")] = False
    partitions: Annotated[Count, Opt("--partitions", "ESPRESSO_PARTITIONS", group=K,
                                     help="partitions of topics made by --create-topics")] = 8
    batch_size: Annotated[Count, Opt("--batch-size", "ESPRESSO_BATCH_SIZE", group=K,
                                     help="most messages read from a partition per poll")] = 5000
    stop_at_end: Annotated[bool, Opt("--stop-at-end", switch=True, hidden=True)] = False
    idle_emit: Annotated[Duration, Opt("--idle-emit", "ESPRESSO_IDLE_EMIT", hidden=True)] = 1000
    # Tuning of snapshots (docs/architecture.md, "Snapshots that cost what changed"); tests force many bases.
    compact_share: Annotated[float, AfterValidator(_share), Opt("--compact-share", "ESPRESSO_COMPACT_SHARE",
                                                                hidden=True)] = COMPACT_SHARE
    compact_min_rows: Annotated[Count, Opt("--compact-min-rows", "ESPRESSO_COMPACT_MIN_ROWS",
                                           hidden=True)] = COMPACT_MIN_ROWS

    segments: Annotated[TextFile | None, Opt("--segments", "ESPRESSO_SEGMENTS", group=T, metavar="FILE",
                                              help="segment definitions YAML (default: built-in espresso segments)",
                                              fix="give the path of a readable segments YAML")] = None
    campaigns: Annotated[str | None, AfterValidator(lambda v: v if v is None else _campaigns(v)), Opt(
        "--campaigns", "ESPRESSO_CAMPAIGNS", group=T, metavar="FILE|builtin[:NAME]",
        help="campaign definitions YAML, or 'builtin'; messages go to --messages-topic, decisions to "
             "--decisions-topic, attributed orders to --conversions-topic",
        fix="give a campaigns YAML, 'builtin', 'builtin:espresso' or 'builtin:shop'")] = None
    messages_topic: Annotated[str, Opt("--messages-topic", "ESPRESSO_MESSAGES_TOPIC", group=T,
                                       help="topic of released messages")] = "retargeting-messages"
    decisions_topic: Annotated[str, Opt("--decisions-topic", "ESPRESSO_DECISIONS_TOPIC", group=T,
                                        help="topic of decisions")] = "retargeting-decisions"
    conversions_topic: Annotated[str, Opt("--conversions-topic", "ESPRESSO_CONVERSIONS_TOPIC", group=T,
                                          help="topic of orders attributed to messages (and holdout "
                                               "conversions)")] = "conversions"
    catalog_topic: Annotated[str, Opt("--catalog-topic", "ESPRESSO_CATALOG_TOPIC", group=T,
                                      help="topic of product updates, read when campaigns have catalog triggers "
                                           "(price drop, back in stock, low stock)")] = "catalog-events"
    catalog_lateness: Annotated[Duration, Opt(
        "--catalog-lateness", "ESPRESSO_CATALOG_LATENESS", group=T,
        help="with catalog triggers: how long contact events wait for product updates stamped before them "
             "once the catalogue topic is caught up (a later update is decided late)",
        fix="give a duration such as 1s, 500ms, 10s")] = 1_000
    allowed_lateness: Annotated[Duration, Opt(
        "--allowed-lateness", "ESPRESSO_ALLOWED_LATENESS", group=T,
        help="how late an event may arrive and still count before time-driven changes it would prevent "
             "are emitted", fix="give a duration such as 60s, 500ms, 2m, 1h30m")] = 60_000
    max_clock_skew: Annotated[Duration, Opt(
        "--max-clock-skew", "ESPRESSO_MAX_CLOCK_SKEW", group=T,
        help="an event stamped further ahead of the wall clock than this goes to the dead letters as "
             "future_ts and moves no time", fix="give a duration such as 5m, 30s, 1h")] = DEFAULT_MAX_CLOCK_SKEW_MS
    shards_per_partition: Annotated[int, AfterValidator(_shards), Opt(
        "--shards-per-partition", "ESPRESSO_SHARDS_PER_PARTITION", group=T,
        help="state shards per input partition: the unit of parallelism after intake")] = 8
    dedup_horizon: Annotated[Count, Opt(
        "--dedup-horizon", "ESPRESSO_DEDUP_HORIZON", group=T,
        help="event ids remembered per input partition to drop redelivered events")] = DEFAULT_HORIZON

    metrics_port: Annotated[Port, Opt("--metrics-port", "ESPRESSO_METRICS_PORT", group=O,
                                      help="port of /metrics, /livez, /readyz; -1 to disable",
                                      fix="give a port 0-65535, or -1 for none")] = 9464
    recovery_dir: Annotated[Directory | None, Opt(
        "--recovery-dir", "ESPRESSO_RECOVERY_DIR", group=O, metavar="DIR",
        help="Bytewax recovery directory: state and offsets survive restarts (default: none, the flow "
             "starts from the beginning of the input topic)", fix="give a directory")] = None
    recovery_partitions: Annotated[Count | None, Opt(
        "--recovery-partitions", "ESPRESSO_RECOVERY_PARTITIONS", group=O,
        help="recovery partitions created on a first start of a single process (default: the workers)")] = None
    epoch_interval: Annotated[Duration, AfterValidator(_epoch), Opt(
        "--epoch-interval", "ESPRESSO_EPOCH_INTERVAL", group=O,
        help="snapshot interval: at most this much input is read again after a crash",
        fix="give a duration such as 5s or 500ms")] = 5000
    log_level: Annotated[str, AfterValidator(_log_level), Opt(
        "--log-level", "ESPRESSO_LOG_LEVEL", group=O, help="DEBUG, INFO, WARNING or ERROR")] = "INFO"

    workers: Annotated[Count, Opt("--workers", "BYTEWAX_WORKERS_PER_PROCESS", short="-w", group=W,
                                  help="worker threads in this process")] = 1
    process_id: Annotated[int | None, Opt(
        "--process-id", "BYTEWAX_PROCESS_ID", short="-i", group=W,
        help="index of this process in --addresses (or derived from BYTEWAX_POD_NAME and "
             "BYTEWAX_STATEFULSET_NAME)")] = None
    addresses: Annotated[str | None, Opt(
        "--addresses", "BYTEWAX_ADDRESSES", short="-a", group=W,
        help="'host:port;host:port' of every process (or one per line in the file BYTEWAX_HOSTFILE_PATH)")] = None

    @model_validator(mode="after")
    def _topics_differ(self) -> "RunSettings":
        if len({self.input_topic, self.output_topic, self.dlq_topic}) != 3:
            raise ValueError(
                "--input-topic, --output-topic and --dlq-topic must be three different topics: "
                f"{self.input_topic!r}, {self.output_topic!r}, {self.dlq_topic!r}")
        return self


def add_run_args(p: argparse.ArgumentParser) -> None:
    add_arguments(p, RunSettings)


def _scale(s: RunSettings, environ: Mapping[str, str]) -> tuple[int | None, list[str] | None]:
    """Process id and addresses the way `python -m bytewax.run` finds them (helm chart variables)."""
    pid = s.process_id
    if pid is None and environ.get("BYTEWAX_POD_NAME") and environ.get("BYTEWAX_STATEFULSET_NAME"):
        suffix = environ["BYTEWAX_POD_NAME"].replace(environ["BYTEWAX_STATEFULSET_NAME"] + "-", "")
        try:
            pid = int(suffix)
        except ValueError:
            raise ConfigError(
                f"cannot derive the process id from BYTEWAX_POD_NAME={environ['BYTEWAX_POD_NAME']!r} and "
                f"BYTEWAX_STATEFULSET_NAME={environ['BYTEWAX_STATEFULSET_NAME']!r}; pass --process-id") from None
    addresses = s.addresses
    if pid is not None and not addresses and environ.get("BYTEWAX_HOSTFILE_PATH"):
        try:
            with open(environ["BYTEWAX_HOSTFILE_PATH"]) as f:
                addresses = ";".join(a.strip() for a in f if a.strip())
        except OSError as exc:
            raise ConfigError(f"BYTEWAX_HOSTFILE_PATH: cannot read {exc.filename}: {exc.strerror}") from None
    parts = [a for a in addresses.split(";") if a] if addresses else None
    if pid is not None:
        if not parts:
            raise ConfigError(
                "--process-id (BYTEWAX_PROCESS_ID) needs --addresses (BYTEWAX_ADDRESSES, "
                "'host:port;host:port', or BYTEWAX_HOSTFILE_PATH) listing every process")
        if not 0 <= pid < len(parts):
            raise ConfigError(f"--process-id {pid} is not an index into --addresses ({len(parts)} processes)")
    return pid, parts


def config_from_args(args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> RunConfig:
    from connectors.kafka_config import KafkaConfig
    from metrics.bytewax import api_url_from_env

    env = os.environ if environ is None else environ
    s = load(RunSettings, args, env)
    if not s.bootstrap_servers:
        raise ConfigError(
            "no Kafka brokers: pass --bootstrap-servers HOST:PORT or set KAFKA_BOOTSTRAP_SERVERS "
            "(to try espresso without Kafka, run `espresso demo`)")
    pid, addresses = _scale(s, env)
    return RunConfig(
        kafka=KafkaConfig.from_env(s.bootstrap_servers, env), input_topic=s.input_topic,
        output_topic=s.output_topic, dlq_topic=s.dlq_topic, segments=s.segments, campaigns=s.campaigns,
        messages_topic=s.messages_topic, decisions_topic=s.decisions_topic, conversions_topic=s.conversions_topic,
        catalog_topic=s.catalog_topic, catalog_lateness_ms=s.catalog_lateness,
        allowed_lateness_ms=s.allowed_lateness, max_clock_skew_ms=s.max_clock_skew,
        shards_per_partition=s.shards_per_partition, dedup_horizon=s.dedup_horizon,
        metrics_port=None if s.metrics_port < 0 else s.metrics_port, bytewax_api=api_url_from_env(env),
        recovery_dir=s.recovery_dir,
        recovery_partitions=s.recovery_partitions or s.workers, create_topics=s.create_topics,
        partitions=s.partitions, workers=s.workers, process_id=pid, addresses=addresses,
        epoch_interval_ms=s.epoch_interval, batch_size=s.batch_size, stop_at_end=s.stop_at_end,
        idle_emit_ms=s.idle_emit, compact_share=s.compact_share, compact_min_rows=s.compact_min_rows)


def _on_stop_signal(signum: int, frame: Any) -> None:
    """First SIGTERM/SIGINT: stop gracefully (sources end, sinks flush); second: abort."""
    if HEALTH.stopping:
        raise KeyboardInterrupt()
    log.info("espresso run: %s received, stopping (again to abort)", signal.Signals(signum).name)
    HEALTH.request_stop()


def cmd_run(args: argparse.Namespace) -> int:
    from flows.run import run

    level = load(RunSettings, args).log_level
    logging.basicConfig(level=getattr(logging, level), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    rc = config_from_args(args)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _on_stop_signal)
        signal.signal(signal.SIGINT, _on_stop_signal)
    # An abort makes Bytewax's Rust side panic; its backtrace tells an operator nothing.
    os.environ["RUST_BACKTRACE"] = "0"
    try:
        return run(rc)
    except KeyboardInterrupt:
        log.info("espresso run: stopped")
        return 0
