"""`espresso run`: the segment flow live on Kafka.

    Kafka contact-events ──▶ KafkaEventSource ──▶ build_flow (intake, shards) ──┬─▶ segment-changes
      one source partition per Kafka partition,                                 └─▶ contact-events-dlq
      resumed at the offset of the last recovery snapshot

Scale-out is Bytewax's: `--workers` threads per process, `--process-id`/`--addresses` for
several processes (or the `BYTEWAX_*` variables a Kubernetes StatefulSet sets). Kafka
partitions and shards are spread over all workers. See docs/live.md.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path
from typing import Any

from metrics.health import HEALTH
from state.builtin_names import is_builtin_name
from state.dedup import DEFAULT_HORIZON
from state.errors import ConfigError
from state.timeutil import format_duration

from .config import COMPACT_MIN_ROWS, COMPACT_SHARE, DEFAULT_MAX_CLOCK_SKEW_MS, LIVE, FlowConfig, load_program

__all__ = ["RunConfig", "build_live_flow", "run", "DEFAULT_TOPICS"]

log = logging.getLogger("espresso.run")

DEFAULT_TOPICS = {"input": "contact-events", "output": "segment-changes", "dlq": "contact-events-dlq"}


@dataclass(frozen=True)
class RunConfig:
    """Everything `espresso run` needs (checked by commands/run.py before anything starts)."""

    kafka: Any  # connectors.kafka_config.KafkaConfig
    input_topic: str = DEFAULT_TOPICS["input"]
    output_topic: str = DEFAULT_TOPICS["output"]
    dlq_topic: str = DEFAULT_TOPICS["dlq"]
    segments: Path | None = None
    campaigns: str | None = None  # a file, "builtin", or None (no campaigns)
    messages_topic: str = "retargeting-messages"
    decisions_topic: str = "retargeting-decisions"
    conversions_topic: str = "conversions"
    catalog_topic: str = "catalog-events"
    catalog_lateness_ms: int = 1_000
    allowed_lateness_ms: int = 60_000
    max_clock_skew_ms: int = DEFAULT_MAX_CLOCK_SKEW_MS
    shards_per_partition: int = 8
    dedup_horizon: int = DEFAULT_HORIZON
    metrics_port: int | None = 9464
    bytewax_api: str | None = None  # URL of Bytewax's own /metrics to serve with ours
    recovery_dir: Path | None = None
    recovery_partitions: int = 1  # made on a first start of a single process
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
    compact_share: float = COMPACT_SHARE
    compact_min_rows: int = COMPACT_MIN_ROWS

    @property
    def single_process(self) -> bool:
        return self.process_id is None or not self.addresses or len(self.addresses) <= 1

    def flow_config(self) -> FlowConfig:
        program, campaigns = load_program(self.segments, self.campaigns)
        # The horizon is per input partition, split over its shards (each shard preallocates
        # tables for its share: 32 bytes per id).
        per_shard = max(1, -(-self.dedup_horizon // self.shards_per_partition))
        return FlowConfig(program, mode=LIVE, allowed_lateness_ms=self.allowed_lateness_ms,
                          max_clock_skew_ms=self.max_clock_skew_ms,
                          shards_per_partition=self.shards_per_partition, dedup_horizon=per_shard,
                          campaigns=campaigns, snapshots=self.recovery_dir is not None,
                          catalog_lateness_ms=self.catalog_lateness_ms, compact_share=self.compact_share,
                          compact_min_rows=self.compact_min_rows)


# -- running -----------------------------------------------------------------------
def reads_catalog(cfg: FlowConfig) -> bool:
    """The catalogue topic is read only when some campaign has a catalog trigger."""
    return cfg.campaigns is not None and any(c.catalog is not None for c in cfg.campaigns.campaigns)


def with_partitions(rc: RunConfig, cfg: FlowConfig, topics: dict[str, int]) -> FlowConfig:
    """The partitions a catalogue update is broadcast from and to (fixed for the life of the state)."""
    if not reads_catalog(cfg) or rc.catalog_topic not in topics:
        return cfg
    return replace(cfg, contact_parts=tuple(str(p) for p in range(topics[rc.input_topic])),
                   catalog_parts=tuple(str(p) for p in range(topics[rc.catalog_topic])))


def check_topics(rc: RunConfig, catalog: bool = False) -> dict[str, int]:
    """{topic: partitions} of every topic the flow uses. The catalogue topic is required when
    the user's campaigns have catalog triggers; for the built-in ones (which include price
    drops and back-in-stock) a missing topic turns those triggers off, with a warning."""
    from connectors.topics import TopicSpec, ensure_topics, list_topics

    specs = [TopicSpec(rc.input_topic, "--input-topic / ESPRESSO_INPUT_TOPIC"),
             TopicSpec(rc.output_topic, "--output-topic / ESPRESSO_OUTPUT_TOPIC"),
             TopicSpec(rc.dlq_topic, "--dlq-topic / ESPRESSO_DLQ_TOPIC")]
    if rc.campaigns:
        specs += [TopicSpec(rc.messages_topic, "--messages-topic / ESPRESSO_MESSAGES_TOPIC"),
                  TopicSpec(rc.decisions_topic, "--decisions-topic / ESPRESSO_DECISIONS_TOPIC"),
                  TopicSpec(rc.conversions_topic, "--conversions-topic / ESPRESSO_CONVERSIONS_TOPIC")]
    if catalog and rc.campaigns is not None and is_builtin_name(rc.campaigns) and not rc.create_topics \
            and rc.catalog_topic not in list_topics(rc.kafka):
        log.warning("catalog triggers of %s are off: topic %r (--catalog-topic / ESPRESSO_CATALOG_TOPIC) does not "
                    "exist on %s; create it to notify price drops, restocks and low stock", rc.campaigns,
                    rc.catalog_topic, rc.kafka.bootstrap_servers)
        catalog = False
    if catalog:
        specs.append(TopicSpec(rc.catalog_topic, "--catalog-topic / ESPRESSO_CATALOG_TOPIC"))
    return ensure_topics(rc.kafka, specs, rc.create_topics, rc.partitions)


def build_live_flow(rc: RunConfig, cfg: FlowConfig | None = None, metrics: Any = None):
    """The live dataflow; its source, sinks and shards all record on `metrics` (an
    `EspressoMetrics`, the process's own by default)."""
    from connectors.kafka_sink import KafkaChangeSink, KafkaDeadLetterSink, KafkaRecordSink
    from connectors.kafka_source import KafkaEventSource
    from metrics.registry import get_metrics

    from .segments import build_flow

    m = metrics or get_metrics()
    cfg = replace(cfg or rc.flow_config(), metrics=m)
    source = KafkaEventSource(rc.kafka, rc.input_topic, group_id=rc.group_id, batch_size=rc.batch_size,
                              stop_at_end=rc.stop_at_end, idle_emit_s=rc.idle_emit_ms / 1000, metrics=m)
    durable = rc.recovery_dir is not None  # flush at each epoch only when epochs are committed
    extra = {}
    if cfg.campaigns is not None:
        extra = {"messages": KafkaRecordSink(rc.kafka, rc.messages_topic, flush_on_snapshot=durable, metrics=m),
                 "decisions": KafkaRecordSink(rc.kafka, rc.decisions_topic, flush_on_snapshot=durable, metrics=m),
                 "conversions": KafkaRecordSink(rc.kafka, rc.conversions_topic, flush_on_snapshot=durable,
                                                metrics=m)}
    catalog = None
    if cfg.catalog_parts:
        catalog = KafkaEventSource(rc.kafka, rc.catalog_topic, group_id=rc.group_id, batch_size=rc.batch_size,
                                   stop_at_end=rc.stop_at_end, idle_emit_s=rc.idle_emit_ms / 1000, metrics=m)
    return build_flow(cfg, source, KafkaChangeSink(rc.kafka, rc.output_topic, flush_on_snapshot=durable, metrics=m),
                      KafkaDeadLetterSink(rc.kafka, rc.dlq_topic, flush_on_snapshot=durable, metrics=m), "espresso",
                      catalog=catalog, **extra)


def prepare_recovery(rc: RunConfig) -> Any:
    """The RecoveryConfig, creating the partitions on a first start of a single process."""
    if rc.recovery_dir is None:
        return None
    from bytewax.recovery import RecoveryConfig, init_db_dir

    d = rc.recovery_dir
    if d.exists() and not d.is_dir():
        raise ConfigError(f"--recovery-dir (ESPRESSO_RECOVERY_DIR): {d} is not a directory")
    has_parts = d.is_dir() and any(d.glob("part-*.sqlite3"))
    if not has_parts and rc.single_process:
        n = rc.recovery_partitions
        d.mkdir(parents=True, exist_ok=True)
        init_db_dir(d, n)
        log.info("created %d recovery partitions in %s (first start)", n, d)
    elif not has_parts:
        if not d.is_dir():
            raise ConfigError(
                f"--recovery-dir {d} does not exist; in a multi-process cluster create the recovery partitions "
                f"once with `python -m bytewax.recovery DIR N` (N >= number of processes) and give each "
                "process its share of the part-*.sqlite3 files (docs/operations.md)")
        # A process may hold none of the partitions: Bytewax checks the cluster has them all.
        log.warning("%s holds no recovery partitions; the other processes must hold them all", d)
    return RecoveryConfig(d)


#: Beside the recovery partitions: the definitions their snapshots were made with.
DEFINITIONS_FILE = "espresso-definitions.pickle"


def check_definitions(rc: RunConfig, cfg: FlowConfig) -> None:
    """Before the flow starts: may its definitions take over the recovery directory's state?

    Unchanged, new and edited segments whose facts the state keeps are fine (the shards
    switch when they resume, state/migrate.py); a segment that needs history the state does
    not hold stops the start here, in one line, instead of inside the dataflow.
    """
    import pickle

    from state.migrate import plan_change

    if rc.recovery_dir is None or not rc.recovery_dir.is_dir():
        return
    path = rc.recovery_dir / DEFINITIONS_FILE
    program = cfg.program
    where = (f"--segments {rc.segments}" if rc.segments else "the built-in segments") + (
        f" and --campaigns {rc.campaigns}" if rc.campaigns else "")
    if path.exists():
        try:
            fingerprint, segments, facts, reasons = pickle.loads(path.read_bytes())
        except Exception as exc:  # noqa: BLE001 - a damaged file is the user's to remove
            raise ConfigError(f"--recovery-dir {rc.recovery_dir}: cannot read {DEFINITIONS_FILE} ({exc}); "
                              "remove that file if the snapshots were made with the current definitions") from None
        if fingerprint != program.fingerprint:
            plan = plan_change(list(segments), facts, reasons, program)
            if plan.refused:
                raise ConfigError(f"{where}: the state in --recovery-dir {rc.recovery_dir} cannot take these "
                                  f"definitions: {plan.refusal()}")
            log.info("segment definitions changed since the last start: %d unchanged (state kept), rebuilt at the "
                     "switch: %s, dropped: %s%s", len(plan.kept), ", ".join(plan.rebuilt) or "none",
                     ", ".join(plan.dropped) or "none",
                     f"; kept from now on only: {', '.join(plan.started)}" if plan.started else "")
    record_definitions(rc.recovery_dir, program.fingerprint, program.segments, program.facts, program.reasons)


def record_definitions(recovery_dir: Path, fingerprint: str, segments: Any, facts: dict, reasons: dict) -> None:
    """Write the definitions record (`DEFINITIONS_FILE`) at once: a crash leaves the old one."""
    import pickle

    path = recovery_dir / DEFINITIONS_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(pickle.dumps((fingerprint, tuple(segments), facts, dict(reasons))))
    tmp.replace(path)


def run(rc: RunConfig) -> int:
    """Check topics, start the health server, run the dataflow until stopped."""
    from bytewax.run import cli_main

    cfg = rc.flow_config()  # definition errors before touching Kafka
    topics = check_topics(rc, reads_catalog(cfg))
    cfg = with_partitions(rc, cfg, topics)
    recovery = prepare_recovery(rc)
    check_definitions(rc, cfg)
    if rc.metrics_port is not None:
        from metrics.server import serve

        try:
            serve(rc.metrics_port, ready=HEALTH.ready, live=HEALTH.live, bytewax_api=rc.bytewax_api)
        except OSError as exc:
            raise ConfigError(
                f"--metrics-port {rc.metrics_port} (ESPRESSO_METRICS_PORT): cannot listen: {exc.strerror}; "
                "pick another port or -1 to disable") from None
    flow = build_live_flow(rc, cfg)
    log.info("espresso run: %s[%d partitions]%s -> %s, dead letters -> %s; %s; allowed lateness %s; max clock skew %s; "
             "%d shards/partition; %d worker(s)%s; recovery %s",
             rc.input_topic, topics[rc.input_topic],
             f" + {rc.catalog_topic}[{len(cfg.catalog_parts)} partitions]" if cfg.catalog_parts else "",
             rc.output_topic, rc.dlq_topic, rc.kafka,
             format_duration(rc.allowed_lateness_ms), format_duration(rc.max_clock_skew_ms),
             rc.shards_per_partition, rc.workers,
             "" if rc.single_process else f", process {rc.process_id} of {len(rc.addresses or [])}",
             rc.recovery_dir or "off")
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
        HEALTH.stop()
    if producer.failed:
        log.error("espresso run: %d record(s) not written to Kafka (last: %s); run it again",
                  producer.failed, producer.last_failure)
        return 1
    log.info("espresso run: stopped")
    return 0
