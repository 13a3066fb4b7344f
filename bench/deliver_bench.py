"""`espresso deliver` as a process: CPU per message, messages/s, and scale-out over a consumer group.

    python bench/deliver_bench.py                                   # 1 and 2 processes, this checkout
    python bench/deliver_bench.py --base /tmp/base15 --repeat 3     # the same, alternating with another checkout
    python bench/deliver_bench.py --processes 1 --rate 1000 --seconds 20
    python bench/deliver_bench.py --new-env ESPRESSO_WEBHOOK_BATCH=100   # settings of this checkout only

What runs, each in its own process, on loopback: tansu (`EmbeddedBroker`, memory), redis-server, the
minimal HTTP/1.1 webhook provider of bench/delivery_bench.py (it answers the batch option too), and
`--processes` `espresso deliver` processes in one consumer group on a messages topic of
`--partitions` partitions. `delivery_bench.py` measures the `Sender` inside the bench's own process;
this one measures the whole command: Kafka consume, JSON, Redis, HTTP, decision records, metrics.

Per case (checkout x number of processes), with fresh topics and group:
1. start the processes; wait until the group has split every partition between them and one
   marker message per partition reached the provider (connections open, scripts loaded);
2. burst: `--messages` message records produced as fast as possible; messages/s = messages /
   (first produce -> last POST received); CPU of every deliver process over the same span
   (psutil), as microseconds per message (all processes together) and % of one core each;
3. optionally `--rate` messages/s for `--seconds`: CPU % of one core, produce -> POST latency.
Every phase checks at the provider that each message arrived exactly once. With `--base`, cases
alternate base, this checkout, base, ... so both see the same machine; ratios are printed.
Writes bench/results/deliver-<UTC stamp>.json.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import orjson  # noqa: E402
import psutil  # noqa: E402
from confluent_kafka import Producer  # noqa: E402

from bench.broker_floor import produce, summary  # noqa: E402
from bench.common import Pace, machine_info  # noqa: E402
from bench.delivery_bench import _Http, _free_port, _message, _serve, _server_call, _start_redis, _wait_port  # noqa: E402
from bench.kafka_bench import create_topics  # noqa: E402

RESULTS = REPO / "bench" / "results"
GROUP_SETTINGS = "session.timeout.ms=6000,heartbeat.interval.ms=1000,fetch.wait.max.ms=20"


class _DeliverHttp(_Http):
    """The provider, also noting when the last message arrived."""

    def accepted(self, key: str, record: dict, now: int) -> None:
        super().accepted(key, record, now)
        self.stats.last_ns = now  # type: ignore[attr-defined]

    def handle(self, request_line: list[str], key: str, body: bytes) -> None:
        if request_line == ["GET", "/count"]:
            keys = self.stats.keys
            self.reply_json(orjson.dumps({"distinct": len(keys), "requests": sum(keys.values()),
                                          "last_ns": getattr(self.stats, "last_ns", 0)}))
            return
        super().handle(request_line, key, body)


def _env_pairs(items: list[str]) -> dict[str, str]:
    return dict(item.split("=", 1) for item in items)


class Case:
    """`n` deliver processes of checkout `repo` in one group on fresh topics."""

    def __init__(self, repo: Path, n: int, bootstrap: str, redis_url: str, webhook: str, partitions: int,
                 workdir: Path, env: dict[str, str], args: list[str]) -> None:
        stamp = uuid.uuid4().hex[:6]
        self.topic = f"dlv-{stamp}-messages"
        self.partitions = partitions
        create_topics(bootstrap, {self.topic: partitions, f"dlv-{stamp}-decisions": 1, f"dlv-{stamp}-dlq": 1})
        python = repo / ".venv" / "bin" / "python"
        cmd = [str(python if python.exists() else sys.executable), "-m", "commands.cli", "deliver",
               "--bootstrap-servers", bootstrap, "--redis-url", redis_url, "--messages-topic", self.topic,
               "--decisions-topic", f"dlv-{stamp}-decisions", "--dlq-topic", f"dlv-{stamp}-dlq",
               "--group", f"dlv-{stamp}", *args]
        base = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "ESPRESSO_", "REDIS_"))}
        self.env = {"ESPRESSO_WEBHOOK_URL": webhook, "KAFKA_CONSUMER_SETTINGS": GROUP_SETTINGS, **env}
        self.command = cmd
        self.logs = [workdir / f"deliver-{stamp}-{i}.log" for i in range(n)]
        self.procs = []
        for log in self.logs:
            with open(log, "wb") as f:
                self.procs.append(subprocess.Popen(cmd, cwd=repo, env={**base, "PYTHONPATH": str(repo), **self.env},
                                                   stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL))
        self.ps = [psutil.Process(p.pid) for p in self.procs]

    def check_alive(self) -> None:
        for proc, log in zip(self.procs, self.logs):
            if proc.poll() is not None:
                raise SystemExit(f"espresso deliver exited with {proc.returncode}:\n{log.read_text()[-3000:]}")

    def assignment(self) -> list[set[int]]:
        """Each process's partitions: its last `assigned [...]` line (assignments are eager)."""
        out = []
        for log in self.logs:
            found = re.findall(r"assigned \[([0-9, ]*)\]", log.read_text(errors="replace"))
            out.append({int(x) for x in found[-1].split(",") if x.strip()} if found else set())
        return out

    def wait_split(self, timeout: float = 90.0) -> None:
        deadline, stable_since = time.monotonic() + timeout, None
        while time.monotonic() < deadline:
            self.check_alive()
            a = self.assignment()
            ok = all(a) and set().union(*a) == set(range(self.partitions)) and sum(map(len, a)) == self.partitions
            stable_since = (stable_since or time.monotonic()) if ok else None
            if stable_since and time.monotonic() - stable_since > 2.0:
                return
            time.sleep(0.2)
        raise SystemExit(f"the group did not split {self.partitions} partitions over {len(self.procs)} "
                         f"processes within {timeout}s: {self.assignment()}")

    def cpu(self) -> list[float]:
        return [sum(p.cpu_times()[:2]) for p in self.ps]

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(60)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def _producer(bootstrap: str) -> Producer:
    return Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5,
                     "queue.buffering.max.messages": 1_000_000, "socket.nagle.disable": True})


def _wait_count(port: int, case: Case, n: int, idle_timeout: float = 60.0) -> dict:
    last, since = -1, time.monotonic()
    while True:
        case.check_alive()
        c = _server_call(port, "/count")
        if c["distinct"] != last:
            last, since = c["distinct"], time.monotonic()
        if c["distinct"] >= n or time.monotonic() - since > idle_timeout:
            return c
        time.sleep(0.02)


def run_case(label: str, case: Case, bootstrap: str, port: int, a: argparse.Namespace) -> dict:
    p = _producer(bootstrap)
    case.wait_split()
    _server_call(port, "/reset")
    for part in range(case.partitions):  # markers: every process has sent one
        produce(p, case.topic, orjson.dumps(_message(part, f"warm{uuid.uuid4().hex[:6]}")), b"m", partition=part)
    p.flush(30)
    _wait_count(port, case, case.partitions)
    time.sleep(0.5)
    out: dict = {"label": label, "processes": len(case.procs), "command": case.command[1:], "env": case.env,
                 "load_avg_at_start": os.getloadavg()}
    run = f"b{uuid.uuid4().hex[:6]}"
    values = [(orjson.dumps(_message(i, run)), f"c-{i}".encode()) for i in range(a.messages)]
    _server_call(port, "/reset")
    cpu0, t0 = case.cpu(), time.time_ns()
    for value, key in values:
        produce(p, case.topic, value, key)
        p.poll(0)
    p.flush(60)
    c = _wait_count(port, case, a.messages)
    cpu1 = case.cpu()
    span = (c["last_ns"] - t0) / 1e9
    used = [b - x for x, b in zip(cpu0, cpu1)]
    out["burst"] = {"messages": a.messages, "seconds": round(span, 3), "messages_per_s": round(c["distinct"] / span, 1),
                    "cpu_us_per_message": round(sum(used) / a.messages * 1e6, 1),
                    "cpu_percent_of_one_core_each": [round(100 * u / span, 1) for u in used],
                    "exactly_once": c["distinct"] == c["requests"] == a.messages}
    if a.rate:
        n = int(a.rate * a.seconds)
        run = f"r{uuid.uuid4().hex[:6]}"
        time.sleep(1.0)
        _server_call(port, "/reset")
        cpu0, w0 = case.cpu(), time.perf_counter()
        for i in Pace(n, a.rate):
            produce(p, case.topic, orjson.dumps(_message(i, run, time.time_ns())), f"c-{i}".encode())
            p.poll(0)
        p.flush(60)
        c = _wait_count(port, case, n)
        wall = time.perf_counter() - w0
        used = [b - x for x, b in zip(cpu0, case.cpu())]
        stats = _server_call(port, "/stats")
        out["rate"] = {"rate": a.rate, "seconds": a.seconds, "messages": n,
                       "cpu_percent_of_one_core_each": [round(100 * u / wall, 1) for u in used],
                       "cpu_us_per_message": round(sum(used) / n * 1e6, 1),
                       "produce_to_received_ms": summary([x / 1e6 for x in stats["latencies_ns"]]),
                       "exactly_once": c["distinct"] == c["requests"] == n}
    out["load_avg_at_end"] = os.getloadavg()
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--messages", type=int, default=30_000, help="messages of each burst (default 30000)")
    ap.add_argument("--processes", default="1,2", help="numbers of deliver processes, e.g. 1,2 (default)")
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--repeat", type=int, default=1, help="rounds over every case (default 1)")
    ap.add_argument("--rate", type=float, default=0.0, help="messages/s of an optional fixed-rate phase")
    ap.add_argument("--seconds", type=float, default=20.0, help="length of the fixed-rate phase")
    ap.add_argument("--base", default="", help="another checkout to run alternately (e.g. /tmp/base15)")
    ap.add_argument("--new-env", action="append", default=[], help="NAME=VALUE for this checkout's processes")
    ap.add_argument("--new-args", default="", help="extra arguments of this checkout's `espresso deliver`")
    a = ap.parse_args(argv)

    from connectors.embedded_broker import EmbeddedBroker

    workdir = Path(tempfile.mkdtemp(prefix="deliver-bench-"))
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    result: dict = {"benchmark": "deliver", "timestamp": stamp, "command_line": [sys.executable, *sys.argv],
                    "machine": machine_info(), "cases": []}
    port = _free_port()
    server = multiprocessing.get_context("spawn").Process(target=_serve, args=(port, _DeliverHttp), daemon=True)
    server.start()
    redis_proc, redis_url = _start_redis(str(workdir))
    broker = EmbeddedBroker(workdir).start()
    checkouts = ([("base", Path(a.base).resolve(), {}, [])] if a.base else []) + \
        [("new", REPO, _env_pairs(a.new_env), a.new_args.split())]
    try:
        _wait_port(port)
        for _round in range(a.repeat):
            for n in (int(x) for x in a.processes.split(",")):
                for label, repo, env, args in checkouts:
                    case = Case(repo, n, broker.bootstrap, redis_url, f"http://127.0.0.1:{port}/hook",
                                a.partitions, workdir, env, args)
                    try:
                        r = run_case(label, case, broker.bootstrap, port, a)
                    finally:
                        case.stop()
                    result["cases"].append(r)
                    b = r["burst"]
                    line = (f"{label:>4} x{n}: {b['messages_per_s']:>8.0f} msg/s  {b['cpu_us_per_message']:>6.1f} us "
                            f"CPU/msg  CPU % each {b['cpu_percent_of_one_core_each']}  exactly once "
                            f"{b['exactly_once']}  load {r['load_avg_at_start'][0]:.2f}")
                    if "rate" in r:
                        q = r["rate"]
                        line += (f" | at {q['rate']:.0f}/s: CPU % {q['cpu_percent_of_one_core_each']}, "
                                 f"{q['cpu_us_per_message']} us/msg, p50/p99 {q['produce_to_received_ms'].get('p50')}/"
                                 f"{q['produce_to_received_ms'].get('p99')} ms, exactly once {q['exactly_once']}")
                    print(line, flush=True)
    finally:
        server.terminate()
        redis_proc.terminate()
        redis_proc.wait(10)
        broker.stop()
    result["machine"]["loadavg_after"] = os.getloadavg()
    summary_rows = {}
    for r in result["cases"]:
        summary_rows.setdefault((r["label"], r["processes"]), []).append(r["burst"])
    result["medians"] = {f"{k[0]} x{k[1]}": {
        "messages_per_s": statistics.median(x["messages_per_s"] for x in v),
        "cpu_us_per_message": statistics.median(x["cpu_us_per_message"] for x in v)} for k, v in summary_rows.items()}
    for k, v in result["medians"].items():
        print(f"median {k}: {v['messages_per_s']:.0f} msg/s, {v['cpu_us_per_message']:.1f} us CPU/msg")
    if a.base:
        for n in (int(x) for x in a.processes.split(",")):
            old, new = result["medians"].get(f"base x{n}"), result["medians"].get(f"new x{n}")
            if old and new:
                print(f"x{n}: CPU per message base/new = {old['cpu_us_per_message'] / new['cpu_us_per_message']:.2f}, "
                      f"messages/s new/base = {new['messages_per_s'] / old['messages_per_s']:.2f}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"deliver-{stamp}.json"
    path.write_text(json.dumps(result, indent=1))
    print(f"results: {path}")
    ok = all(r["burst"]["exactly_once"] and r.get("rate", {}).get("exactly_once", True) for r in result["cases"])
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
