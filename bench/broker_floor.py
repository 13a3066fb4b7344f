"""The broker alone, shaped like espresso's path: the floor under a latency figure.

    python bench/broker_floor.py --partitions 4 --rate 10000 --seconds 20 --hops 2
    KAFKA_BOOTSTRAP_SERVERS=host:9092 python bench/broker_floor.py ...

A producer (the event source's settings: acks=all, linger.ms=5) sends `rate` messages/s to a
topic of `partitions` partitions; with `hops` = 2 a relay, a do-nothing stream processor with
espresso's client settings (consumer: fetch.wait.max.ms=20, every partition assigned to one
consumer; producer: idempotent, acks=all, linger.ms=5), consumes it and produces to a second
such topic, forwarding one message in `forward_every` (espresso writes a change for only some
events; the bench passes the ratio it measured); a reader consumes the last topic. Latency:
produce -> readable at the reader, overall and as p99 per second of the run, because on the
embedded broker it grows with the stored log (see BENCHMARKS.md, "Why latency grows on the
embedded broker").
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import threading
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from confluent_kafka import Consumer, Producer, TopicPartition  # noqa: E402
from confluent_kafka.admin import AdminClient, NewTopic  # noqa: E402

from connectors.kafka_config import KafkaConfig  # noqa: E402

SOURCE_SETTINGS = {"linger.ms": "5"}


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    v = sorted(values)
    return v[min(len(v) - 1, max(0, round(q * (len(v) - 1))))]


def summary(values: list[float]) -> dict:
    if not values:
        return {"n": 0}
    return {"n": len(values), "p50": round(pct(values, 0.5), 1), "p90": round(pct(values, 0.9), 1),
            "p99": round(pct(values, 0.99), 1), "max": round(max(values), 1),
            "mean": round(statistics.fmean(values), 1)}


def p99_by_second(samples) -> dict[int, float]:
    """p99 per whole second of (seconds since the start, value) samples."""
    by: dict[int, list[float]] = {}
    for at, v in samples:
        by.setdefault(int(at), []).append(v)
    return {k: round(pct(v, 0.99), 1) for k, v in sorted(by.items())}


def produce(p: Producer, topic: str, value: bytes, key: bytes | None, **kw) -> None:
    """`p.produce`, serving delivery reports while the local queue is full."""
    while True:
        try:
            p.produce(topic, value, key, **kw)
            return
        except BufferError:
            p.poll(0.01)


def relay_probe(bootstrap: str, rate: float, seconds: float, hops: int = 2, partitions: int = 1,
                source_settings: dict | None = None, producer_settings: dict | None = None,
                consumer_settings: dict | None = None, forward_every: int = 1) -> dict:
    """Produce -> (relay ->) read latency of the broker alone; see the module docstring."""
    stamp = uuid.uuid4().hex[:6]
    topics = [f"floor-{stamp}-{i}" for i in range(hops)]
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for fut in admin.create_topics([NewTopic(t, partitions, 1) for t in topics]).values():
        fut.result(30)

    kafka = KafkaConfig(bootstrap, producer_settings=producer_settings or {},
                        consumer_settings=consumer_settings or {})  # espresso's own client factory

    def consumer(topic: str) -> Consumer:
        c = Consumer(kafka.consumer(f"floor-{topic}"))
        c.list_topics(timeout=10)  # leaders known before assign, else the first fetch waits 500 ms
        c.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
        return c

    stop = threading.Event()

    def relay(src: str, dst: str) -> None:
        c = consumer(src)
        p = Producer(kafka.producer())
        p.list_topics(timeout=10)  # connected now: its producer id comes on the next 500 ms tick
        while not stop.is_set():
            for m in c.consume(1000, 0.0) or ():
                if not m.error() and int(m.value().split(b"-", 1)[0]) % forward_every == 0:
                    produce(p, dst, m.value(), m.key())
            p.poll(0)
            time.sleep(0.001)
        p.flush(10)
        c.close()

    relays = [threading.Thread(target=relay, args=(topics[i], topics[i + 1]), daemon=True) for i in range(hops - 1)]
    for r in relays:
        r.start()
    last = consumer(topics[-1])
    time.sleep(1.0)  # the relay's idempotent producer has its producer id
    p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "queue.buffering.max.messages": 1_000_000,
                  "socket.nagle.disable": True, **(SOURCE_SETTINGS if source_settings is None else source_settings)})
    n = int(rate * seconds)
    expected = n if hops == 1 else len(range(0, n, forward_every))
    lat: list[tuple[float, float]] = []  # (seconds since start at send, ms)
    t0 = time.perf_counter()
    t0_ns = time.time_ns()
    i = 0
    deadline = time.monotonic() + seconds + 15
    while len(lat) < expected and time.monotonic() < deadline:
        due = min(n, int((time.perf_counter() - t0) * rate))
        while i < due:
            produce(p, topics[0], f"{i}-{time.time_ns()}".encode(), f"k{i}".encode())
            i += 1
        p.poll(0)
        for m in last.consume(1000, 0.001):
            if not m.error():
                sent = int(m.value().split(b"-", 1)[1])
                lat.append(((sent - t0_ns) / 1e9, (time.time_ns() - sent) / 1e6))
    p.flush(10)
    stop.set()
    for r in relays:
        r.join(10)
    last.close()
    return {"hops": hops, "rate": rate, "seconds": seconds, "partitions": partitions, "forward_every": forward_every,
            "messages": n, "expected": expected, "received": len(lat), **summary([ms for _, ms in lat]),
            "p99_by_second_ms": p99_by_second(lat)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rate", type=float, default=10_000)
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--hops", type=int, default=2, choices=(1, 2))
    ap.add_argument("--forward-every", type=int, default=1, help="the relay forwards one message in N")
    args = ap.parse_args(argv)
    from connectors.embedded_broker import EmbeddedBroker

    external = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "").strip()
    broker = None
    try:
        if external:
            bootstrap = external
        else:
            import tempfile

            broker = EmbeddedBroker(Path(tempfile.mkdtemp(prefix="broker-floor-"))).start()
            bootstrap = broker.bootstrap
        r = relay_probe(bootstrap, args.rate, args.seconds, args.hops, args.partitions,
                        forward_every=args.forward_every)
    finally:
        if broker is not None:
            broker.stop()
    print(json.dumps(r, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
