"""Helpers of the live-flow integration tests: produce events, run `espresso run` as a
subprocess (as production does), read topics as a downstream service does, replay.

Consumers here use `assign()`: tansu takes seconds per consumer-group join.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from importlib import resources
from pathlib import Path
from typing import Iterable, Sequence

import orjson
import yaml
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from state.timeutil import format_ms

ROOT = Path(__file__).resolve().parents[2]
S, M, H, D = 1000, 60_000, 3_600_000, 86_400_000


# -- events ------------------------------------------------------------------------------
#: A 3-second espresso-like segment: time-driven exits happen while a test watches.
SHORT_WINDOW_SEGMENTS = """
segments:
  - id: opened-recently
    when:
      all:
        - event: {type: email_open, at_least: 1, within: 3s}
        - event: {type: order_placed, exactly: 0, within: 3s}
"""


def shop_events(contacts: int, events: int, seed: int, t0: int, span_ms: int) -> list[dict]:
    """In event-time order, one millisecond per event at most (no two events of a contact
    share a millisecond, so batching cannot matter), over the built-in segments' types."""
    rnd = random.Random(seed)
    times = sorted(rnd.sample(range(t0, t0 + span_ms), events))
    out: list[dict] = []
    seen: set[str] = set()
    for i, ts in enumerate(times):
        cid = f"c{rnd.randrange(contacts):05d}"
        if cid not in seen:
            seen.add(cid)
            out.append({"event_id": f"e{i}", "contact_id": cid, "type": "consent_changed", "ts": format_ms(ts),
                        "properties": {"channel": rnd.choice(["email", "email", "sms", "push"]),
                                       "status": "subscribed"}})
            continue
        typ = rnd.choices(["email_open", "email_click", "sms_click", "push_open", "order_placed",
                           "consent_changed", "product_viewed"], [30, 8, 12, 10, 8, 4, 10])[0]
        props: dict = {}
        if typ == "consent_changed":
            props = {"channel": rnd.choice(["email", "sms", "push"]),
                     "status": rnd.choice(["subscribed", "subscribed", "unsubscribed"])}
        elif typ == "order_placed":
            props = {"order_id": f"o{i}", "value": 20.0, "currency": "EUR", "items": []}
        out.append({"event_id": f"e{i}", "contact_id": cid, "type": typ,
                    "ts": format_ms(ts) if i % 3 else ts, "properties": props})
    return out


def tick(partition: int, ts: int) -> dict:
    """An event of a type no segment uses: moves its partition's event time to `ts`."""
    return {"event_id": f"tick-{partition}-{ts}", "contact_id": f"clock-{partition}", "type": "heartbeat",
            "ts": ts}


# -- Kafka -------------------------------------------------------------------------------
def producer(bootstrap: str) -> Producer:
    return Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "linger.ms": 5})


def produce(bootstrap: str, topic: str, records: Iterable[dict | bytes], partition: int | None = None,
            p: Producer | None = None) -> list[bytes]:
    """Produce JSON events (key contact_id) or raw bytes; returns the values in order."""
    own = p is None
    p = p or producer(bootstrap)
    values = []
    for rec in records:
        if isinstance(rec, (bytes, bytearray)):
            value, key = bytes(rec), None
        else:
            value, key = orjson.dumps(rec), str(rec.get("contact_id", "")).encode() or None
        kw = {} if partition is None else {"partition": partition}
        while True:
            try:
                p.produce(topic, value, key, **kw)
                break
            except BufferError:
                p.poll(0.05)
        p.poll(0)
        values.append(value)
    if own:
        assert p.flush(30) == 0, "messages not delivered"
    return values


def partitions(bootstrap: str, topic: str) -> list[int]:
    md = AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=10)
    return sorted(md.topics[topic].partitions)


def read_all(bootstrap: str, topic: str, timeout: float = 30.0) -> list:
    """Every message of `topic` now (to the end of each partition), as a downstream reader."""
    parts = partitions(bootstrap, topic)
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"downstream-{topic}", "enable.auto.commit": False,
                  "enable.partition.eof": True, "fetch.wait.max.ms": 50})
    c.assign([TopicPartition(topic, p, 0) for p in parts])
    done: set[int] = set()
    out = []
    deadline = time.monotonic() + timeout
    try:
        while len(done) < len(parts):
            assert time.monotonic() < deadline, f"could not read {topic} to its end within {timeout}s"
            for m in c.consume(1000, 0.5):
                if m.error():
                    done.add(m.partition())
                else:
                    out.append(m)
    finally:
        c.close()
    return out


class Tail:
    """A downstream consumer reading `topic` from the beginning as messages arrive."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"tail-{topic}",
                           "enable.auto.commit": False, "fetch.wait.max.ms": 20})
        self.c.assign([TopicPartition(topic, p, 0) for p in partitions(bootstrap, topic)])
        self.records: list[tuple[float, dict]] = []

    def poll(self, seconds: float) -> list[tuple[float, dict]]:
        new = []
        end = time.monotonic() + seconds
        while True:
            left = end - time.monotonic()
            if left <= 0:
                break
            for m in self.c.consume(500, min(left, 0.1)):
                if not m.error():
                    new.append((time.time(), orjson.loads(m.value())))
        self.records += new
        return new

    def wait_for(self, pred, timeout: float) -> tuple[float, dict] | None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            for rec in self.poll(0.1):
                if pred(rec[1]):
                    return rec
        return None

    def close(self) -> None:
        self.c.close()


# -- espresso ------------------------------------------------------------------------------
class Espresso:
    """`espresso run` in a subprocess; its log goes to a file shown when something fails."""

    def __init__(self, tmp: Path, bootstrap: str, topics: Sequence[str], *args: str, name: str = "run",
                 env: dict | None = None, metrics_port: int | None = None) -> None:
        self.log_path = tmp / f"espresso-{name}-{time.monotonic_ns()}.log"
        self.metrics_port = metrics_port
        argv = [sys.executable, "-m", "commands.cli", "run", "--bootstrap-servers", bootstrap,
                "--input-topic", topics[0], "--output-topic", topics[1], "--dlq-topic", topics[2],
                "--metrics-port", str(-1 if metrics_port is None else metrics_port), *args]
        full_env = dict(os.environ, PYTHONPATH=str(ROOT), **(env or {}))
        full_env.pop("KAFKA_BOOTSTRAP_SERVERS", None)
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(argv, cwd=ROOT, env=full_env, stdin=subprocess.DEVNULL, stdout=self.log,
                                     stderr=subprocess.STDOUT)

    def probe(self, path: str) -> tuple[int, str]:
        """(HTTP status, body) of /livez, /readyz or /metrics; (0, error) if not answering."""
        import urllib.error
        import urllib.request

        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}{path}", timeout=2) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()
        except OSError as exc:
            return 0, str(exc)

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Until /readyz answers 200 (needs `metrics_port`)."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            assert self.proc.poll() is None, f"espresso run exited:\n{self.tail()}"
            if self.probe("/readyz")[0] == 200:
                return
            time.sleep(0.1)
        raise AssertionError(f"espresso run not ready within {timeout}s: {self.probe('/readyz')}\n{self.tail()}")

    def wait(self, timeout: float = 60.0) -> int:
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"espresso run did not finish within {timeout}s:\n{self.tail()}") from None
        finally:
            self.log.flush()
        return rc

    def stop(self, timeout: float = 20.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.wait(timeout)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def tail(self, lines: int = 40) -> str:
        self.log.flush()
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def __enter__(self) -> "Espresso":
        return self

    def __exit__(self, *exc) -> None:
        self.kill()
        self.log.close()


def run_to_end(tmp: Path, bootstrap: str, topics: Sequence[str], *args: str, timeout: float = 90.0) -> None:
    """`espresso run --stop-at-end`: read the input topic to its end, then stop cleanly."""
    with Espresso(tmp, bootstrap, topics, "--stop-at-end", *args) as e:
        rc = e.wait(timeout)
        assert rc == 0, f"espresso run exited with {rc}:\n{e.tail()}"


def replay_changes(tmp: Path, events: list[dict | bytes], until_ms: int, segments: Path | None = None) -> list[dict]:
    """`espresso replay` of the same events (as one file, in the given order)."""
    from flows.replay import replay

    src = tmp / f"replay-{time.monotonic_ns()}.jsonl"
    src.write_bytes(b"".join((e if isinstance(e, bytes) else orjson.dumps(e)) + b"\n" for e in events))
    out = src.with_suffix(".changes.jsonl")
    replay(src, until_ms, out, segments, progress=False)
    return [orjson.loads(x) for x in out.read_bytes().splitlines()]


def without_processing_time(records: Iterable[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "processed_at"} for r in records]


def by_id(records: Iterable[dict]) -> dict[str, dict]:
    """change_id -> record; a repeated id must carry the identical record (deduplication)."""
    out: dict[str, dict] = {}
    for r in without_processing_time(records):
        prev = out.setdefault(r["change_id"], r)
        assert prev == r, f"two different changes share change_id {r['change_id']}: {prev} != {r}"
    return out


def builtin_campaigns_allowing_stale(tmp: Path) -> Path:
    """The built-in campaigns, allowed to fire on old changes: test events are weeks behind the
    wall clock, and live would otherwise skip every message as stale (replay does not judge)."""
    doc = yaml.safe_load(resources.files("state").joinpath("builtin/campaigns-espresso.yaml").read_text())
    for c in doc["campaigns"]:
        c["allow_stale"] = True
    path = tmp / f"campaigns-{time.monotonic_ns()}.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def write_segments(tmp: Path, text: str) -> Path:
    p = tmp / f"segments-{time.monotonic_ns()}.yaml"
    p.write_text(text)
    return p


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def replay_outputs(tmp: Path, events: list[dict | bytes], until_ms: int, segments: Path | None = None,
                   campaigns: str | Path | None = None, **kwargs) -> dict[str, list[dict]]:
    """`espresso replay` of `events` (one file, in the given order): every output it writes,
    as lists of records under "changes", "dead" and, with `campaigns`, "messages" and "decisions"."""
    from flows.replay import replay

    src = tmp / f"replay-{time.monotonic_ns()}.jsonl"
    src.write_bytes(b"".join((e if isinstance(e, bytes) else orjson.dumps(e)) + b"\n" for e in events))
    out = src.with_suffix(".changes.jsonl")
    res = replay(src, until_ms, out, segments, progress=False, campaigns=campaigns, **kwargs)

    def read(path: Path) -> list[dict]:
        return [orjson.loads(x) for x in path.read_bytes().splitlines()] if path.exists() else []

    outputs = {"changes": read(res.changes_path), "dead": read(res.dead_letters_path)}
    if campaigns is not None:
        for kind in ("messages", "decisions"):
            outputs[kind] = read(out.with_name(f"{out.stem}.{kind}{out.suffix}"))
    return outputs
