"""Helpers of the live-flow integration tests: produce events, run `espresso run` as a
subprocess (as production does), read topics as a downstream service does, replay.

Consumers here use `assign()`: tansu takes seconds per consumer-group join.
"""

from __future__ import annotations

import dataclasses
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from importlib import resources
from pathlib import Path
from typing import Iterable, Sequence

import orjson
import yaml
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from state.timeutil import format_ms, parse_ts
from tests.integration.adversarial import Sequences, profile_props

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


def shop_events(contacts: int, events: int, seed: int, t0: int, span_ms: int, *,
                sequences: bool = False) -> list[dict]:
    """In event-time order, one millisecond per event at most (no two events of a contact
    share a millisecond, so batching cannot matter), over the built-in segments' types.

    `sequences`: also what the built-in shop automations react to (tests/integration/
    adversarial.py `Sequences`, about `events // 3` more events: checkouts and orders with
    items, product views and carts, email subscribes and unsubscribes, birthdays and zone
    changes, many at a step's instant of an earlier trigger), and first a `profile_updated`
    per contact 1 s before t0 (`profile_props`: addresses, time zone, some birthdays).
    Events of a contact still never share a millisecond (a scenario event that would is
    left out)."""
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
    if not sequences:
        return out
    rnd = random.Random(seed * 7919 + 1)
    cids = sorted(seen)
    taken = {(e["contact_id"], parse_ts(e["ts"])) for e in out}
    extra: list[tuple[int, str, str, dict]] = []

    def add(ts: int, cid: str, etype: str, props: dict) -> None:
        if (cid, ts) not in taken:
            taken.add((cid, ts))
            extra.append((ts, cid, etype, props))

    seqs = Sequences(rnd, add, t0, span_ms)
    while len(extra) < events // 3:
        seqs.scenario(rnd.choice(cids))
    for j, (ts, cid, etype, props) in enumerate(extra):
        out.append({"event_id": f"q{j}", "contact_id": cid, "type": etype, "ts": format_ms(ts) if j % 2 else ts,
                    "properties": props})
    out.sort(key=lambda e: parse_ts(e["ts"]))  # stable
    profiles = [{"event_id": f"p-{cid}", "contact_id": cid, "type": "profile_updated", "ts": t0 - S,
                 "properties": profile_props(rnd, cid, t0, span_ms)} for cid in cids]
    return profiles + out


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


def members_at(changes: list[dict], segment: str, until: int) -> set[str]:
    """Who is in `segment` at `until`, by the changes (in event time, then `seq`)."""
    state: dict[str, bool] = {}
    for c in sorted(changes, key=lambda c: (parse_ts(c["at"]), c["seq"])):
        if c["segment_id"] == segment and parse_ts(c["at"]) <= until:
            state[c["contact_id"]] = c["direction"] == "enter"
    return {cid for cid, inside in state.items() if inside}


def change_key(c: dict) -> tuple:
    """A change without what depends on earlier changes (`seq`, `change_id`)."""
    return c["contact_id"], c["segment_id"], c["direction"], c["at"]


def by_id(records: Iterable[dict]) -> dict[str, dict]:
    """change_id -> record; a repeated id must carry the identical record (deduplication)."""
    out: dict[str, dict] = {}
    for r in without_processing_time(records):
        prev = out.setdefault(r["change_id"], r)
        assert prev == r, f"two different changes share change_id {r['change_id']}: {prev} != {r}"
    return out


def builtin_campaigns_allowing_stale(tmp: Path) -> Path:
    """The built-in campaigns of `--campaigns builtin` (every file of BUILTIN_CAMPAIGN_FILES:
    the espresso campaigns and the shop automations, with the shop's `lapsed-customer`
    segment), in one file, each allowed to fire on old changes: test events are weeks behind
    the wall clock, and live would otherwise skip every message as stale (replay does not judge)."""
    from state.builtin_names import BUILTIN_CAMPAIGN_FILES
    from state.campaigns import load_campaigns

    merged: dict = {"campaigns": [], "segments": []}
    for file in BUILTIN_CAMPAIGN_FILES.values():
        doc = yaml.safe_load(resources.files("state").joinpath(file).read_text())
        assert set(doc) <= {"campaigns", "segments", "caps", "default_timezone"}, (file, sorted(doc))
        for key in ("caps", "default_timezone"):  # from the first file, as builtin_campaigns does
            if key in doc:
                merged.setdefault(key, doc[key])
        merged["segments"] += doc.get("segments", [])
        merged["campaigns"] += doc["campaigns"]
    if not merged["segments"]:
        del merged["segments"]
    for c in merged["campaigns"]:
        c["allow_stale"] = True
    path = tmp / f"campaigns-{time.monotonic_ns()}.yaml"
    path.write_text(yaml.safe_dump(merged, sort_keys=False))
    # The same campaigns as `builtin`, field for field but `allow_stale` (templates compiled
    # twice compare by identity: steps by id and instant).
    mine, builtin = load_campaigns(path), load_campaigns("builtin")
    assert [c.id for c in mine.campaigns] == [c.id for c in builtin.campaigns]
    for c, b in zip(mine.campaigns, builtin.campaigns):
        assert dataclasses.replace(c, allow_stale=False, steps=b.steps, variants=b.variants) == b, c.id
        assert [(s.id, s.after_ms) for s in c.steps] == [(s.id, s.after_ms) for s in b.steps], c.id
    assert (mine.segments, mine.caps, mine.default_timezone) == (builtin.segments, builtin.caps,
                                                                 builtin.default_timezone)
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
    as lists of records under "changes", "dead" and, with `campaigns`, "messages", "decisions" and
    "conversions"."""
    from flows.replay import replay

    src = tmp / f"replay-{time.monotonic_ns()}.jsonl"
    src.write_bytes(b"".join((e if isinstance(e, bytes) else orjson.dumps(e)) + b"\n" for e in events))
    out = src.with_suffix(".changes.jsonl")
    res = replay(src, until_ms, out, segments, progress=False, campaigns=campaigns, **kwargs)

    def read(path: Path) -> list[dict]:
        return [orjson.loads(x) for x in path.read_bytes().splitlines()] if path.exists() else []

    outputs = {"changes": read(res.changes_path), "dead": read(res.dead_letters_path)}
    if campaigns is not None:
        for kind in ("messages", "decisions", "conversions"):
            outputs[kind] = read(out.with_name(f"{out.stem}.{kind}{out.suffix}"))
    return outputs


# -- campaign outputs ------------------------------------------------------------------------
#: Processing-time fields: live knows when it decided (and that it is late), replay does not.
PROCESSING_TIME = ("processed_at", "decided_at", "stale")


def without_processing_fields(rec: dict) -> dict:
    return {k: v for k, v in rec.items() if k not in PROCESSING_TIME}


def _decision_key(d: dict) -> tuple:
    return d["message_id"], d["outcome"], d["reason"], d["at"], d["step_id"]


def compare_campaigns(live_msgs: list[dict], live_decs: list[dict], want_msgs: list[dict], want_decs: list[dict],
                      *, clean: bool) -> list[str]:
    """Problems (empty: equal) between live and replay campaign outputs.

    Messages by message_id, whole records (run_id, step_id, subject, body, ...) but for
    processing-time fields; a repeated message_id must carry the identical record.
    Decisions as whole records but for processing-time fields (hence by (message_id,
    outcome, reason, at, step_id) and the rest). `clean`: a run without restarts writes
    each record once; otherwise repeats (after a SIGKILL) are allowed but must be identical.
    """
    problems: list[str] = []

    def by_mid(recs: list[dict], name: str) -> dict[str, dict]:
        out: dict[str, dict] = {}
        for r in map(without_processing_fields, recs):
            prev = out.setdefault(r["message_id"], r)
            if prev != r:
                problems.append(f"{name}: two different messages share message_id {r['message_id']}: {prev} != {r}")
        return out

    lm, wm = by_mid(live_msgs, "live"), by_mid(want_msgs, "replay")
    if clean and len(live_msgs) != len(lm):
        problems.append(f"a clean run releases each message once: {len(live_msgs)} records, {len(lm)} ids")
    if lm.keys() != wm.keys():
        only_l, only_w = sorted(lm.keys() - wm.keys()), sorted(wm.keys() - lm.keys())
        problems.append(f"message ids: {len(only_l)} only live, e.g. {[lm[k] for k in only_l[:2]]}; "
                        f"{len(only_w)} only replay, e.g. {[wm[k] for k in only_w[:2]]}")
    differ = [(lm[k], wm[k]) for k in sorted(lm.keys() & wm.keys()) if lm[k] != wm[k]]
    if differ:
        problems.append(f"{len(differ)} messages differ (live, replay), e.g. {differ[:2]}")

    def records(recs: list[dict]) -> Counter:
        return Counter(orjson.dumps(without_processing_fields(r), option=orjson.OPT_SORT_KEYS) for r in recs)

    ld, wd = records(live_decs), records(want_decs)
    if not clean:
        ld = Counter(set(ld))
    if clean and any(n > 1 for n in wd.values()):
        problems.append("replay wrote a decision twice: "
                        f"{[orjson.loads(k) for k, n in wd.items() if n > 1][:2]}")
    if ld != wd:
        only_l = [orjson.loads(k) for k in sorted((ld - wd).elements())]
        only_w = [orjson.loads(k) for k in sorted((wd - ld).elements())]
        keys_l, keys_w = {_decision_key(d): d for d in only_l}, {_decision_key(d): d for d in only_w}
        other = [(keys_l[k], keys_w[k]) for k in sorted(keys_l.keys() & keys_w.keys())]
        problems.append(f"decisions: {len(only_l)} only live, e.g. "
                        f"{[d for d in only_l if _decision_key(d) not in keys_w][:3]}; {len(only_w)} only replay, "
                        f"e.g. {[d for d in only_w if _decision_key(d) not in keys_l][:3]}; {len(other)} with the "
                        f"same (message_id, outcome, reason, at, step_id) and other fields (live, replay), "
                        f"e.g. {other[:2]}")
    return problems


def sequence_coverage(messages: list[dict], decisions: list[dict], events: Iterable) -> dict[str, int]:
    """What of the campaign sequences the outputs exercise (a test asserts each is > 0, so a
    live == replay comparison cannot pass with nothing to compare)."""
    steps: dict[str, set] = {}
    for m in messages:
        if m.get("run_id") is not None:
            steps.setdefault(m["run_id"], set()).add(m.get("step_id"))
    instants = set()  # (contact, the instant of a step of a run an event started)
    for e in events:
        if isinstance(e, dict) and e.get("type") in ("checkout_started", "product_viewed"):
            ts = parse_ts(e.get("ts"))
            if ts is not None:
                offsets = (3 * H, 24 * H) if e["type"] == "checkout_started" else (H,)
                instants.update((e["contact_id"], ts + o) for o in offsets)
    exited = [d for d in decisions if d["outcome"] == "exited"]
    return {
        "sequence step messages": sum(m.get("step_id") is not None for m in messages),
        "runs with two or more steps sent": sum(len(s) > 1 for s in steps.values()),
        "exited decisions": len(exited),
        "exits at a step's instant": sum((d["contact_id"], parse_ts(d["at"])) in instants for d in exited),
        "birthday messages": sum(m["campaign_id"] == "birthday" for m in messages),
        "runs ended by an unsubscribe": sum(d["reason"] == "unsubscribed_while_pending" for d in decisions),
        "runs superseded by a newer one": sum(d["reason"] == "superseded" for d in decisions),
        "win-back messages": sum(m["campaign_id"] == "win-back" for m in messages),
        "espresso messages": sum(m.get("segment_id") in ("email-espresso", "push-espresso") for m in messages),
    }


def campaign_outputs(bootstrap: str, messages_topic: str, decisions_topic: str) -> tuple[list[dict], list[dict]]:
    """(messages, decisions) on their topics now; every record keyed by its contact_id."""
    out = []
    for topic in (messages_topic, decisions_topic):
        msgs = read_all(bootstrap, topic)
        recs = [orjson.loads(m.value()) for m in msgs]
        bad = [r for m, r in zip(msgs, recs) if m.key().decode() != r["contact_id"]]
        assert not bad, f"records of {topic} not keyed by their contact_id: {bad[:2]}"
        out.append(recs)
    return out[0], out[1]


# -- traffic ---------------------------------------------------------------------------------
class SteadyProducer(threading.Thread):
    """Produces `lines` at about `rate` lines/s in chunks; a chunk never ends inside one
    millisecond (a boundary only before an event later than every event before it), so no
    poll can see part of a contact's millisecond unless the flow splits it itself."""

    def __init__(self, bootstrap: str, topic: str, lines: list, rate: float, chunk: int = 200) -> None:
        super().__init__(daemon=True)
        self.bootstrap, self.topic, self.lines, self.rate, self.chunk = bootstrap, topic, lines, rate, chunk
        self.sent = 0
        self.error: BaseException | None = None
        latest, self.safe = None, []
        for rec in lines:  # safe[i]: a chunk may start at line i
            ts = parse_ts(rec["ts"]) if isinstance(rec, dict) else None
            self.safe.append(ts is not None and (latest is None or ts > latest))
            if ts is not None and (latest is None or ts > latest):
                latest = ts

    def run(self) -> None:
        try:
            # A long linger, then flush: each chunk leaves as one batch per partition.
            p = Producer({"bootstrap.servers": self.bootstrap, "enable.idempotence": True, "linger.ms": 50})
            start, i, n = time.monotonic(), 0, len(self.lines)
            while i < n:
                j = min(n, i + self.chunk)
                while j < n and not self.safe[j]:
                    j += 1
                produce(self.bootstrap, self.topic, self.lines[i:j], p=p)
                assert p.flush(30) == 0, "messages not delivered"
                i = self.sent = j
                time.sleep(max(0.0, start + i / self.rate - time.monotonic()))
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.error = exc


# -- espresso deliver --------------------------------------------------------------------------
class Deliver:
    """`espresso deliver` in a subprocess (webhook channel); its log goes to a file shown when
    something fails. `metrics_port` -1: no /metrics; `webhook_timeout`: ESPRESSO_WEBHOOK_TIMEOUT;
    `env`: more variables (e.g. ESPRESSO_WEBHOOK_BATCH)."""

    def __init__(self, tmp: Path, bootstrap: str, redis_url: str, webhook_url: str, topics: dict[str, str],
                 group: str, name: str = "deliver", metrics_port: int = -1, webhook_timeout: str | None = None,
                 env: dict[str, str] | None = None) -> None:
        from tests.servers import FAST_GROUP_CONFIG

        self.log_path = tmp / f"{name}.log"
        extra = env
        env = dict(os.environ, PYTHONPATH=str(ROOT), ESPRESSO_WEBHOOK_URL=webhook_url,
                   KAFKA_CONSUMER_SETTINGS=",".join(f"{k}={v}" for k, v in
                                                    {**FAST_GROUP_CONFIG, "fetch.wait.max.ms": 20}.items()))
        if webhook_timeout is not None:
            env["ESPRESSO_WEBHOOK_TIMEOUT"] = webhook_timeout
        env.update(extra or {})
        for var in ("KAFKA_BOOTSTRAP_SERVERS", "REDIS_URL", "ESPRESSO_SMTP_HOST", "KAFKA_PRODUCER_SETTINGS"):
            env.pop(var, None)
        argv = [sys.executable, "-m", "commands.cli", "deliver", "--bootstrap-servers", bootstrap, "--redis-url",
                redis_url, "--messages-topic", topics["messages"], "--decisions-topic", topics["delivered"],
                "--dlq-topic", topics["delivery_dlq"], "--group", group, "--metrics-port", str(metrics_port)]
        self.log = open(self.log_path, "wb")  # noqa: SIM115 - closed in close()
        self.proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=self.log,
                                     stderr=subprocess.STDOUT)

    def tail(self, lines: int = 40) -> str:
        self.log.flush()
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self, timeout: float = 60) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"espresso deliver did not stop within {timeout}s:\n{self.tail()}") from None

    def close(self) -> None:
        self.kill()
        self.log.close()


def wait_until(condition, timeout: float, what: str, *procs) -> None:  # type: ignore[no-untyped-def]
    """Poll `condition` every 50 ms; fail naming `what` (and the logs of `procs`) at the deadline
    or as soon as one of `procs` has exited."""
    deadline = time.monotonic() + timeout
    while not condition():
        for p in procs:
            assert p.proc.poll() is None, f"{what}: a process exited:\n{p.tail()}"
        assert time.monotonic() < deadline, f"timed out after {timeout}s waiting for {what}\n" + \
            "\n---\n".join(p.tail() for p in procs)
        time.sleep(0.05)
