"""`espresso run`: the segment flow live on Kafka.

    Kafka contact-events ──▶ KafkaEventSource ──▶ build_flow (intake, shards) ──┬─▶ segment-changes
      one source partition per Kafka partition,                                 └─▶ contact-events-dlq
      resumed at the offset of the last recovery snapshot

Scale-out is Bytewax's: `--workers` threads per process, `--process-id`/`--addresses` for
several processes (or the `BYTEWAX_*` variables a Kubernetes StatefulSet sets). Kafka
partitions and shards are spread over all workers. See docs/live.md.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Mapping

from state.dedup import DEFAULT_HORIZON
from state.errors import EspressoError
from state.timeutil import format_duration, parse_duration

from .config import DEFAULT_MAX_CLOCK_SKEW_MS, LIVE, FlowConfig
from . import health

__all__ = ["RunConfig", "RunConfigError", "add_run_args", "config_from_args", "build_live_flow", "run",
           "cmd_run", "DEFAULT_TOPICS"]

log = logging.getLogger("espresso.run")

DEFAULT_TOPICS = {"input": "contact-events", "output": "segment-changes", "dlq": "contact-events-dlq"}


class RunConfigError(EspressoError):
    """A setting of `espresso run` that cannot work; names the flag, the variable and the fix."""


@dataclass(frozen=True)
class RunConfig:
    """Everything `espresso run` needs, checked before anything starts."""

    kafka: Any  # connectors.kafka_config.KafkaConfig
    input_topic: str = DEFAULT_TOPICS["input"]
    output_topic: str = DEFAULT_TOPICS["output"]
    dlq_topic: str = DEFAULT_TOPICS["dlq"]
    segments: Path | None = None
    campaigns: str | None = None  # a file, "builtin", or None (no campaigns)
    messages_topic: str = "retargeting-messages"
    decisions_topic: str = "retargeting-decisions"
    allowed_lateness_ms: int = 60_000
    max_clock_skew_ms: int = DEFAULT_MAX_CLOCK_SKEW_MS
    shards_per_partition: int = 8
    dedup_horizon: int = DEFAULT_HORIZON
    metrics_port: int | None = 9464
    recovery_dir: Path | None = None
    create_topics: bool = False
    partitions: int = 8
    workers: int = 1
    process_id: int | None = None
    addresses: list[str] | None = None
    epoch_interval_ms: int = 5_000
    batch_size: int = 5000
    stop_at_end: bool = False
    idle_emit_ms: int = 1000
    group_id: str = "espresso"

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise RunConfigError(f"--workers (BYTEWAX_WORKERS_PER_PROCESS) must be >= 1: {self.workers}")
        if not 1 <= self.shards_per_partition <= 4096:
            raise RunConfigError(
                f"--shards-per-partition (ESPRESSO_SHARDS_PER_PARTITION) must be within 1..4096: "
                f"{self.shards_per_partition}")
        if self.partitions < 1:
            raise RunConfigError(f"--partitions (ESPRESSO_PARTITIONS) must be >= 1: {self.partitions}")
        if self.epoch_interval_ms < 100:
            raise RunConfigError(
                f"--epoch-interval (ESPRESSO_EPOCH_INTERVAL) must be >= 100ms: {self.epoch_interval_ms}ms")
        if self.batch_size < 1:
            raise RunConfigError(f"--batch-size must be >= 1: {self.batch_size}")
        if self.process_id is not None:
            if not self.addresses:
                raise RunConfigError(
                    "--process-id (BYTEWAX_PROCESS_ID) needs --addresses (BYTEWAX_ADDRESSES, "
                    "'host:port;host:port', or BYTEWAX_HOSTFILE_PATH) listing every process")
            if not 0 <= self.process_id < len(self.addresses):
                raise RunConfigError(
                    f"--process-id {self.process_id} is not an index into --addresses "
                    f"({len(self.addresses)} processes)")
        if self.metrics_port is not None and not 0 <= self.metrics_port <= 65535:
            raise RunConfigError(f"--metrics-port (ESPRESSO_METRICS_PORT) must be 0..65535: {self.metrics_port}")
        topics = {self.input_topic, self.output_topic, self.dlq_topic}
        if len(topics) != 3:
            raise RunConfigError(
                "--input-topic, --output-topic and --dlq-topic must be three different topics: "
                f"{self.input_topic!r}, {self.output_topic!r}, {self.dlq_topic!r}")

    @property
    def single_process(self) -> bool:
        return self.process_id is None or not self.addresses or len(self.addresses) <= 1

    def flow_config(self) -> FlowConfig:
        from .replay import load_program

        program, campaigns = load_program(self.segments, self.campaigns)
        # The horizon is per input partition, split over its shards (each shard preallocates
        # tables for its share: 32 bytes per id).
        per_shard = max(1, -(-self.dedup_horizon // self.shards_per_partition))
        return FlowConfig(program, mode=LIVE, allowed_lateness_ms=self.allowed_lateness_ms,
                          max_clock_skew_ms=self.max_clock_skew_ms,
                          shards_per_partition=self.shards_per_partition, dedup_horizon=per_shard,
                          campaigns=campaigns, snapshots=self.recovery_dir is not None)


# -- command line ------------------------------------------------------------------
def _env(name: str, default: Any = None) -> Any:
    value = os.environ.get(name)
    return default if value is None or value == "" else value


def _duration(flag: str, env: str):
    def parse(text: str) -> int:
        ms = parse_duration(text)
        if ms is None:
            raise argparse.ArgumentTypeError(
                f"{flag} ({env}): not a duration such as 60s, 500ms, 2m, 1h30m: {text!r}")
        return ms
    return parse


def _bool_env(name: str) -> bool:
    return str(_env(name, "")).lower() in ("1", "true", "yes", "on")


def add_run_args(p: argparse.ArgumentParser) -> None:
    """Flags of `espresso run`; every default comes from its environment variable."""
    k = p.add_argument_group("Kafka")
    k.add_argument("--bootstrap-servers", default=_env("KAFKA_BOOTSTRAP_SERVERS"),
                   help="HOST:PORT[,HOST:PORT] of the brokers [env KAFKA_BOOTSTRAP_SERVERS] (required); "
                        "security from KAFKA_SECURITY_PROTOCOL, KAFKA_SASL_MECHANISM, KAFKA_SASL_USERNAME, "
                        "KAFKA_SASL_PASSWORD, KAFKA_SSL_CA_LOCATION")
    k.add_argument("--input-topic", default=_env("ESPRESSO_INPUT_TOPIC", DEFAULT_TOPICS["input"]),
                   help="topic of contact events, key contact_id [env ESPRESSO_INPUT_TOPIC] (default %(default)s)")
    k.add_argument("--output-topic", default=_env("ESPRESSO_OUTPUT_TOPIC", DEFAULT_TOPICS["output"]),
                   help="topic of segment changes [env ESPRESSO_OUTPUT_TOPIC] (default %(default)s)")
    k.add_argument("--dlq-topic", default=_env("ESPRESSO_DLQ_TOPIC", DEFAULT_TOPICS["dlq"]),
                   help="topic of invalid input records [env ESPRESSO_DLQ_TOPIC] (default %(default)s)")
    k.add_argument("--create-topics", action="store_true", default=_bool_env("ESPRESSO_CREATE_TOPICS"),
                   help="create the three topics if missing [env ESPRESSO_CREATE_TOPICS=1]")
    k.add_argument("--partitions", type=int, default=int(_env("ESPRESSO_PARTITIONS", 8)),
                   help="partitions of topics made by --create-topics [env ESPRESSO_PARTITIONS] (default %(default)s)")
    k.add_argument("--batch-size", type=int, default=int(_env("ESPRESSO_BATCH_SIZE", 5000)),
                   help="most messages read from a partition per poll [env ESPRESSO_BATCH_SIZE] (default %(default)s)")
    k.add_argument("--stop-at-end", action="store_true", help=argparse.SUPPRESS)
    k.add_argument("--idle-emit", type=_duration("--idle-emit", "ESPRESSO_IDLE_EMIT"),
                   default=_env("ESPRESSO_IDLE_EMIT", "1s"), help=argparse.SUPPRESS)

    s = p.add_argument_group("Segments and time")
    s.add_argument("--segments", type=Path, default=_env("ESPRESSO_SEGMENTS"),
                   help="segment definitions YAML [env ESPRESSO_SEGMENTS] (default: built-in espresso segments)")
    s.add_argument("--campaigns", default=_env("ESPRESSO_CAMPAIGNS"),
                   help="campaign definitions YAML, or 'builtin' [env ESPRESSO_CAMPAIGNS] (default: no campaigns); "
                        "messages go to --messages-topic, decisions to --decisions-topic")
    s.add_argument("--messages-topic", default=_env("ESPRESSO_MESSAGES_TOPIC", "retargeting-messages"),
                   help="[env ESPRESSO_MESSAGES_TOPIC] (default %(default)s)")
    s.add_argument("--decisions-topic", default=_env("ESPRESSO_DECISIONS_TOPIC", "retargeting-decisions"),
                   help="[env ESPRESSO_DECISIONS_TOPIC] (default %(default)s)")
    s.add_argument("--allowed-lateness", type=_duration("--allowed-lateness", "ESPRESSO_ALLOWED_LATENESS"),
                   default=_env("ESPRESSO_ALLOWED_LATENESS", "60s"),
                   help="how late an event may arrive and still count before time-driven changes it would "
                        "prevent are emitted [env ESPRESSO_ALLOWED_LATENESS] (default %(default)s)")
    s.add_argument("--max-clock-skew", type=_duration("--max-clock-skew", "ESPRESSO_MAX_CLOCK_SKEW"),
                   default=_env("ESPRESSO_MAX_CLOCK_SKEW", "5m"),
                   help="an event stamped further ahead of the wall clock than this (a device with a wrong "
                        "clock) goes to the dead letters as future_ts and moves no time "
                        "[env ESPRESSO_MAX_CLOCK_SKEW] (default %(default)s)")
    s.add_argument("--shards-per-partition", type=int, default=int(_env("ESPRESSO_SHARDS_PER_PARTITION", 8)),
                   help="state shards per input partition: the unit of parallelism after intake "
                        "[env ESPRESSO_SHARDS_PER_PARTITION] (default %(default)s)")
    s.add_argument("--dedup-horizon", type=int, default=int(_env("ESPRESSO_DEDUP_HORIZON", DEFAULT_HORIZON)),
                   help="event ids remembered per input partition (split over its shards) to drop "
                        "redelivered events [env ESPRESSO_DEDUP_HORIZON] (default %(default)s)")

    o = p.add_argument_group("Operation")
    o.add_argument("--metrics-port", type=int, default=int(_env("ESPRESSO_METRICS_PORT", 9464)),
                   help="port of /metrics, /livez, /readyz; -1 to disable [env ESPRESSO_METRICS_PORT] "
                        "(default %(default)s)")
    o.add_argument("--recovery-dir", type=Path, default=_env("ESPRESSO_RECOVERY_DIR"),
                   help="Bytewax recovery directory: state and offsets survive restarts [env ESPRESSO_RECOVERY_DIR] "
                        "(default: none, the flow starts from the beginning of the input topic)")
    o.add_argument("--epoch-interval", type=_duration("--epoch-interval", "ESPRESSO_EPOCH_INTERVAL"),
                   default=_env("ESPRESSO_EPOCH_INTERVAL", "5s"),
                   help="snapshot interval: at most this much input is read again after a crash "
                        "[env ESPRESSO_EPOCH_INTERVAL] (default %(default)s)")
    o.add_argument("--log-level", default=_env("ESPRESSO_LOG_LEVEL", "INFO"),
                   help="DEBUG, INFO, WARNING, ERROR [env ESPRESSO_LOG_LEVEL] (default %(default)s)")

    w = p.add_argument_group("Scale-out (as `python -m bytewax.run`)")
    w.add_argument("-w", "--workers", type=int, default=int(_env("BYTEWAX_WORKERS_PER_PROCESS", 1)),
                   help="worker threads in this process [env BYTEWAX_WORKERS_PER_PROCESS] (default %(default)s)")
    w.add_argument("-i", "--process-id", type=int, default=_env("BYTEWAX_PROCESS_ID"),
                   help="index of this process in --addresses [env BYTEWAX_PROCESS_ID, or derived from "
                        "BYTEWAX_POD_NAME and BYTEWAX_STATEFULSET_NAME]")
    w.add_argument("-a", "--addresses", default=_env("BYTEWAX_ADDRESSES"),
                   help="'host:port;host:port' of every process [env BYTEWAX_ADDRESSES, or one per line in "
                        "the file BYTEWAX_HOSTFILE_PATH]")


def _scale_from_env(args: argparse.Namespace, environ: Mapping[str, str]) -> tuple[int | None, list[str] | None]:
    """Process id and addresses the way `python -m bytewax.run` finds them (helm chart variables)."""
    pid = None if args.process_id is None else int(args.process_id)
    if pid is None and environ.get("BYTEWAX_POD_NAME") and environ.get("BYTEWAX_STATEFULSET_NAME"):
        suffix = environ["BYTEWAX_POD_NAME"].replace(environ["BYTEWAX_STATEFULSET_NAME"] + "-", "")
        try:
            pid = int(suffix)
        except ValueError:
            raise RunConfigError(
                f"cannot derive the process id from BYTEWAX_POD_NAME={environ['BYTEWAX_POD_NAME']!r} and "
                f"BYTEWAX_STATEFULSET_NAME={environ['BYTEWAX_STATEFULSET_NAME']!r}; pass --process-id") from None
    addresses = args.addresses
    if pid is not None and not addresses and environ.get("BYTEWAX_HOSTFILE_PATH"):
        try:
            with open(environ["BYTEWAX_HOSTFILE_PATH"]) as f:
                addresses = ";".join(a.strip() for a in f if a.strip())
        except OSError as exc:
            raise RunConfigError(f"BYTEWAX_HOSTFILE_PATH: cannot read {exc.filename}: {exc.strerror}") from None
    return pid, ([a for a in addresses.split(";") if a] if addresses else None)


def config_from_args(args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> RunConfig:
    from connectors.kafka_config import KafkaConfig, KafkaConfigError

    env = os.environ if environ is None else environ
    if not args.bootstrap_servers:
        raise RunConfigError(
            "no Kafka brokers: pass --bootstrap-servers HOST:PORT or set KAFKA_BOOTSTRAP_SERVERS "
            "(to try espresso without Kafka, run `espresso demo`)")
    try:
        kafka = KafkaConfig.from_env(args.bootstrap_servers, env)
    except KafkaConfigError as exc:
        raise RunConfigError(str(exc)) from None
    lateness = args.allowed_lateness
    if isinstance(lateness, str):  # default from the environment, not parsed by argparse
        lateness = _duration("--allowed-lateness", "ESPRESSO_ALLOWED_LATENESS")(lateness)
    skew = args.max_clock_skew
    if isinstance(skew, str):
        skew = _duration("--max-clock-skew", "ESPRESSO_MAX_CLOCK_SKEW")(skew)
    epoch = args.epoch_interval
    if isinstance(epoch, str):
        epoch = _duration("--epoch-interval", "ESPRESSO_EPOCH_INTERVAL")(epoch)
    if args.segments is not None and not Path(args.segments).is_file():
        raise RunConfigError(f"--segments (ESPRESSO_SEGMENTS): {args.segments}: no such file")
    if args.campaigns not in (None, "", "builtin") and not Path(args.campaigns).is_file():
        raise RunConfigError(f"--campaigns (ESPRESSO_CAMPAIGNS): {args.campaigns}: no such file; "
                             "give a campaigns YAML or 'builtin'")
    pid, addresses = _scale_from_env(args, env)
    return RunConfig(
        kafka=kafka, input_topic=args.input_topic, output_topic=args.output_topic, dlq_topic=args.dlq_topic,
        segments=Path(args.segments) if args.segments else None, allowed_lateness_ms=lateness,
        max_clock_skew_ms=skew,
        campaigns=args.campaigns or None, messages_topic=args.messages_topic,
        decisions_topic=args.decisions_topic,
        shards_per_partition=args.shards_per_partition, dedup_horizon=args.dedup_horizon,
        metrics_port=None if args.metrics_port < 0 else args.metrics_port,
        recovery_dir=Path(args.recovery_dir) if args.recovery_dir else None,
        create_topics=args.create_topics, partitions=args.partitions, workers=args.workers,
        process_id=pid, addresses=addresses, epoch_interval_ms=epoch, batch_size=args.batch_size,
        stop_at_end=args.stop_at_end, idle_emit_ms=args.idle_emit)


# -- running -----------------------------------------------------------------------
def check_topics(rc: RunConfig) -> dict[str, int]:
    from connectors.topics import TopicSpec, ensure_topics

    specs = [TopicSpec(rc.input_topic, "--input-topic / ESPRESSO_INPUT_TOPIC"),
             TopicSpec(rc.output_topic, "--output-topic / ESPRESSO_OUTPUT_TOPIC"),
             TopicSpec(rc.dlq_topic, "--dlq-topic / ESPRESSO_DLQ_TOPIC")]
    if rc.campaigns:
        specs += [TopicSpec(rc.messages_topic, "--messages-topic / ESPRESSO_MESSAGES_TOPIC"),
                  TopicSpec(rc.decisions_topic, "--decisions-topic / ESPRESSO_DECISIONS_TOPIC")]
    return ensure_topics(rc.kafka, specs, rc.create_topics, rc.partitions)


def build_live_flow(rc: RunConfig, cfg: FlowConfig | None = None):
    from connectors.kafka_sink import KafkaChangeSink, KafkaDeadLetterSink, KafkaRecordSink
    from connectors.kafka_source import KafkaEventSource

    from .segments import build_flow

    cfg = cfg or rc.flow_config()
    source = KafkaEventSource(rc.kafka, rc.input_topic, group_id=rc.group_id, batch_size=rc.batch_size,
                              stop_at_end=rc.stop_at_end, idle_emit_s=rc.idle_emit_ms / 1000)
    durable = rc.recovery_dir is not None  # flush at each epoch only when epochs are committed
    extra = {}
    if cfg.campaigns is not None:
        extra = {"messages": KafkaRecordSink(rc.kafka, rc.messages_topic, flush_on_snapshot=durable),
                 "decisions": KafkaRecordSink(rc.kafka, rc.decisions_topic, flush_on_snapshot=durable)}
    return build_flow(cfg, source, KafkaChangeSink(rc.kafka, rc.output_topic, flush_on_snapshot=durable),
                      KafkaDeadLetterSink(rc.kafka, rc.dlq_topic, flush_on_snapshot=durable), "espresso", **extra)


def prepare_recovery(rc: RunConfig) -> Any:
    """The RecoveryConfig, creating the partitions on a first start of a single process."""
    if rc.recovery_dir is None:
        return None
    from bytewax.recovery import RecoveryConfig, init_db_dir

    d = rc.recovery_dir
    if d.exists() and not d.is_dir():
        raise RunConfigError(f"--recovery-dir (ESPRESSO_RECOVERY_DIR): {d} is not a directory")
    has_parts = d.is_dir() and any(d.glob("part-*.sqlite3"))
    if not has_parts and rc.single_process:
        n = int(os.environ.get("ESPRESSO_RECOVERY_PARTITIONS") or max(1, rc.workers))
        d.mkdir(parents=True, exist_ok=True)
        init_db_dir(d, n)
        log.info("created %d recovery partitions in %s (first start)", n, d)
    elif not has_parts:
        if not d.is_dir():
            raise RunConfigError(
                f"--recovery-dir {d} does not exist; in a multi-process cluster create the recovery partitions "
                f"once with `python -m bytewax.recovery DIR N` (N >= number of processes) and give each "
                "process its share of the part-*.sqlite3 files (docs/operations.md)")
        # A process may hold none of the partitions: Bytewax checks the cluster has them all.
        log.warning("%s holds no recovery partitions; the other processes must hold them all", d)
    return RecoveryConfig(d)


def _on_stop_signal(signum: int, frame: Any) -> None:
    """First SIGTERM/SIGINT: stop gracefully (sources end, sinks flush); second: abort."""
    if health.HEALTH.stopping:
        raise KeyboardInterrupt()
    log.info("espresso run: %s received, stopping (again to abort)", signal.Signals(signum).name)
    health.HEALTH.request_stop()


def run(rc: RunConfig) -> int:
    """Check topics, start the health server, run the dataflow until stopped."""
    from bytewax.run import cli_main

    cfg = rc.flow_config()  # definition errors before touching Kafka
    topics = check_topics(rc)
    recovery = prepare_recovery(rc)
    if rc.metrics_port is not None:
        try:
            health.serve(rc.metrics_port)
        except OSError as exc:
            raise RunConfigError(
                f"--metrics-port {rc.metrics_port} (ESPRESSO_METRICS_PORT): cannot listen: {exc.strerror}; "
                "pick another port or -1 to disable") from None
    flow = build_live_flow(rc, cfg)
    log.info("espresso run: %s[%d partitions] -> %s, dead letters -> %s; %s; allowed lateness %s; max clock skew %s; "
             "%d shards/partition; %d worker(s)%s; recovery %s",
             rc.input_topic, topics[rc.input_topic], rc.output_topic, rc.dlq_topic, rc.kafka,
             format_duration(rc.allowed_lateness_ms), format_duration(rc.max_clock_skew_ms),
             rc.shards_per_partition, rc.workers,
             "" if rc.single_process else f", process {rc.process_id} of {len(rc.addresses or [])}",
             rc.recovery_dir or "off")
    if threading_is_main():
        signal.signal(signal.SIGTERM, _on_stop_signal)
        signal.signal(signal.SIGINT, _on_stop_signal)
    # An abort makes Bytewax's Rust side panic; its backtrace tells an operator nothing.
    os.environ.setdefault("RUST_BACKTRACE", "0")
    if os.environ.get("RUST_BACKTRACE") == "1":
        os.environ["RUST_BACKTRACE"] = "0"
    kwargs: dict[str, Any] = dict(workers_per_process=rc.workers,
                                  epoch_interval=timedelta(milliseconds=rc.epoch_interval_ms),
                                  recovery_config=recovery)
    if not rc.single_process:
        kwargs.update(process_id=rc.process_id, addresses=rc.addresses)
    # Bytewax builds a sink partition at its first item; the process's shared producer is
    # made (and connected) now so that the first change does not wait for its producer id.
    from connectors.kafka_sink import SharedProducer

    producer = SharedProducer.get(rc.kafka)
    producer.connect()
    aborted = False
    try:
        cli_main(flow, **kwargs)
    except Exception as exc:  # noqa: BLE001
        if "signal received" in str(exc):  # aborted by a second signal
            aborted = True
            log.warning("espresso run: aborted; output since the last epoch may be written again on restart")
            return 130
        if producer.failed:  # a sink raised DeliveryFailed (Bytewax has logged its traceback)
            log.error("espresso run: stopped: %d record(s) not written to Kafka (last: %s); restart it: %s",
                      producer.failed, producer.last_failure,
                      "it resumes before them" if rc.recovery_dir else "it reads the input again")
            return 1
        raise
    finally:
        if not aborted:
            producer.release()  # the last user flushes
        health.HEALTH.stop()
    if producer.failed:
        log.error("espresso run: %d record(s) not written to Kafka (last: %s); run it again",
                  producer.failed, producer.last_failure)
        return 1
    log.info("espresso run: stopped")
    return 0


def threading_is_main() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def cmd_run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=getattr(logging, str(args.log_level).upper(), logging.INFO), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    rc = config_from_args(args)
    try:
        return run(rc)
    except KeyboardInterrupt:
        log.info("espresso run: stopped")
        return 0
