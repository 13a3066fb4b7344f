"""Delivery benchmark: Sender -> webhook channel -> a local HTTP server, Redis idempotency on.

    python bench/delivery_bench.py [--messages 50000] [--rate 1000] [--seconds 20] [--repeat 3]

Phases:
1. throughput: `--messages` records submitted as fast as `submit` accepts them (back-pressure
   included); messages/s = messages / (first submit -> flush done). Repeated `--repeat` times.
2. latency at a fixed rate: `--rate` messages/s for `--seconds`; each record carries its
   submit time (`data.t_ns`, wall clock) and the server notes when the POST arrived:
   p50/p90/p99/max of submit -> received-by-server.

The server is a minimal HTTP/1.1 keep-alive server (asyncio protocol) in its own process, so
it costs the sender's process nothing; redis-server is started on a free port unless
`--redis-url` is given. Every phase checks at the server that each message arrived exactly
once. Results are printed and written to bench/results/delivery-<UTC timestamp>.json with the
machine's description. Targets of the issue: >= 5000 messages/s per worker, p99 <= 100 ms
at 1000 messages/s.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import Pace
from connectors.idempotency import IdempotencyConfig, RedisIdempotency
from connectors.sender import Sender, SenderConfig
from connectors.webhook import WebhookChannel, WebhookConfig

TARGET_RATE = 5000.0
TARGET_P99_MS = 100.0


# ---- the provider: minimal HTTP/1.1 server in its own process ---------------------------

class _Stats:
    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.keys: dict[str, int] = {}
        self.latencies_ns: list[int] = []


class _Http(asyncio.Protocol):
    RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"

    def __init__(self, stats: _Stats) -> None:
        self.stats = stats
        self.buf = b""

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while True:
            head_end = self.buf.find(b"\r\n\r\n")
            if head_end < 0:
                return
            head = self.buf[:head_end].decode("latin-1")
            length, key = 0, ""
            for line in head.split("\r\n")[1:]:
                name, _, value = line.partition(":")
                name = name.strip().lower()
                if name == "content-length":
                    length = int(value)
                elif name == "idempotency-key":
                    key = value.strip()
            end = head_end + 4 + length
            if len(self.buf) < end:
                return
            body, self.buf = self.buf[head_end + 4:end], self.buf[end:]
            self.handle(head.split(" ", 2)[:2], key, body)

    def handle(self, request_line: list[str], key: str, body: bytes) -> None:
        method, path = request_line
        if method == "POST":
            now = time.time_ns()
            if body.startswith(b'{"messages"'):  # the webhook's batch option: one result per message
                records = orjson.loads(body)["messages"]
                for record in records:
                    self.accepted(record["message_id"], record, now)
                self.reply_json(orjson.dumps({"results": [{"message_id": r["message_id"], "status": 200}
                                                          for r in records]}))
                return
            self.accepted(key, orjson.loads(body), now)
            self.transport.write(self.RESPONSE)
            return
        if path == "/reset":
            self.stats.reset()
            payload = b"{}"
        else:
            keys = self.stats.keys
            payload = orjson.dumps({"requests": sum(keys.values()), "distinct": len(keys),
                                    "duplicates": sum(n - 1 for n in keys.values() if n > 1),
                                    "latencies_ns": self.stats.latencies_ns})
        self.reply_json(payload)

    def accepted(self, key: str, record: dict, now: int) -> None:
        """One message arrived (alone or in a batch): count its key, note its latency."""
        self.stats.keys[key] = self.stats.keys.get(key, 0) + 1
        t_ns = record.get("data", {}).get("t_ns")
        if t_ns:
            self.stats.latencies_ns.append(now - t_ns)

    def reply_json(self, payload: bytes) -> None:
        self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                             % (len(payload), payload))


def _serve(port: int, protocol: type = _Http) -> None:
    """The provider on `port` until killed; `protocol` (an `_Http`) handles the requests."""
    async def main() -> None:
        stats = _Stats()
        loop = asyncio.get_running_loop()
        server = await loop.create_server(lambda: protocol(stats), "127.0.0.1", port, backlog=1024)
        async with server:
            await server.serve_forever()
    asyncio.run(main())


def _server_call(port: int, path: str) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=30) as resp:
        return orjson.loads(resp.read())


# ---- helpers -----------------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_port(port: int, seconds: float = 20.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listening on 127.0.0.1:{port}")


def _start_redis(workdir: str) -> tuple[subprocess.Popen, str]:
    exe = shutil.which("redis-server")
    if exe is None:
        raise SystemExit("redis-server not found: apt-get install redis-server, or pass --redis-url")
    port = _free_port()
    proc = subprocess.Popen([exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                             "--dir", workdir], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _wait_port(port)
    return proc, f"redis://127.0.0.1:{port}/0"


def _machine() -> dict:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = {}
    for pkg in ("aiohttp", "redis", "orjson"):
        try:
            from importlib.metadata import version
            versions[pkg] = version(pkg)
        except Exception:  # noqa: BLE001 - not installed
            versions[pkg] = None
    redis_version = ""
    if shutil.which("redis-server"):
        redis_version = subprocess.run(["redis-server", "--version"], capture_output=True, text=True,
                                       check=False).stdout.strip()
    return {"platform": platform.platform(), "python": sys.version.split()[0], "cpu_model": model,
            "cpu_count": os.cpu_count(), "load_avg": os.getloadavg(), "packages": versions,
            "redis_server": redis_version}


def _message(n: int, run: str, t_ns: int = 0) -> dict:
    return {"schema": 1, "message_id": f"{run}{n:024x}", "campaign_id": "push-espresso-bench", "channel": "push",
            "contact_id": f"c-{n}", "variant": "A", "segment_id": "push-espresso", "change_id": f"{n:032x}",
            "due_at": "2026-11-20T09:15:00.123Z", "to": {"push_token": f"tok-{n}"},
            "subject": "Still thinking about it?", "body": "Your cart is waiting.", "data": {"t_ns": t_ns}}


def _pct(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    i = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[i]


def _sender(url: str, redis_url: str, max_in_flight: int, max_queued: int) -> Sender:
    store = RedisIdempotency(IdempotencyConfig(redis_url, key_prefix=f"bench:{time.time_ns()}:"))
    channel = WebhookChannel(WebhookConfig(url=url, timeout_s=10.0, max_connections=max_in_flight))
    return Sender(SenderConfig(max_in_flight=max_in_flight, max_queued=max_queued), store, {"push": channel})


# ---- phases ------------------------------------------------------------------------------

def throughput(sender: Sender, port: int, n: int, run: str) -> dict:
    _server_call(port, "/reset")
    messages = [_message(i, run) for i in range(n)]
    cpu0, t0 = time.process_time(), time.perf_counter()
    for m in messages:
        sender.submit(m)
    if not sender.flush(300):
        raise RuntimeError("throughput phase did not drain in 300 s")
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    server = _server_call(port, "/stats")
    return {"messages": n, "seconds": round(wall, 3), "messages_per_s": round(n / wall, 1),
            "sender_cpu_s": round(cpu, 3), "cpu_us_per_message": round(cpu / n * 1e6, 1),
            "server_requests": server["requests"], "server_distinct": server["distinct"],
            "duplicates": server["duplicates"], "exactly_once": server["distinct"] == n == server["requests"]}


def fixed_rate(sender: Sender, port: int, rate: float, seconds: float, run: str) -> dict:
    _server_call(port, "/reset")
    n = int(rate * seconds)
    t0 = time.perf_counter()
    pace = Pace(n, rate)
    for i in pace:
        sender.submit(_message(i, run, time.time_ns()))
    submit_s = time.perf_counter() - t0
    sender.flush(300)
    server = _server_call(port, "/stats")
    lat = sorted(x / 1e6 for x in server["latencies_ns"])
    return {"rate": rate, "seconds": seconds, "messages": n, "achieved_rate": round(n / submit_s, 1),
            "submits_behind_schedule_10ms": pace.late,
            "p50_ms": round(_pct(lat, 0.50), 2), "p90_ms": round(_pct(lat, 0.90), 2),
            "p99_ms": round(_pct(lat, 0.99), 2), "max_ms": round(lat[-1], 2) if lat else None,
            "mean_ms": round(statistics.fmean(lat), 2) if lat else None,
            "server_requests": server["requests"], "duplicates": server["duplicates"],
            "exactly_once": server["distinct"] == n == server["requests"]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--messages", type=int, default=50_000)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--rate", type=float, default=1000.0)
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--max-in-flight", type=int, default=64)
    p.add_argument("--max-queued", type=int, default=2048)
    p.add_argument("--redis-url", default=None)
    p.add_argument("--out", default=str(ROOT / "bench" / "results"))
    args = p.parse_args(argv)

    ctx = multiprocessing.get_context("spawn")
    port = _free_port()
    server = ctx.Process(target=_serve, args=(port,), daemon=True)
    server.start()
    workdir = tempfile.mkdtemp(prefix="espresso-bench-")
    redis_proc = None
    redis_url = args.redis_url
    if redis_url is None:
        redis_proc, redis_url = _start_redis(workdir)
    machine_before = _machine()
    try:
        _wait_port(port)
        url = f"http://127.0.0.1:{port}/hook"
        with _sender(url, redis_url, args.max_in_flight, args.max_queued) as sender:
            throughput(sender, port, min(5000, args.messages), "w")  # warm-up: connections, scripts
            runs = [throughput(sender, port, args.messages, f"t{r}") for r in range(args.repeat)]
            for r in runs:
                print(f"throughput: {r['messages_per_s']:>9.1f} msg/s  ({r['cpu_us_per_message']} us CPU/msg, "
                      f"exactly once: {r['exactly_once']})")
            latency = fixed_rate(sender, port, args.rate, args.seconds, "l")
            print(f"at {args.rate:.0f}/s: p50 {latency['p50_ms']} ms  p90 {latency['p90_ms']} ms  "
                  f"p99 {latency['p99_ms']} ms  max {latency['max_ms']} ms  (exactly once: {latency['exactly_once']})")
    finally:
        server.terminate()
        if redis_proc is not None:
            redis_proc.terminate()
            redis_proc.wait(10)
        shutil.rmtree(workdir, ignore_errors=True)

    rates = sorted(r["messages_per_s"] for r in runs)
    best, median = rates[-1], statistics.median(rates)
    result = {
        "bench": "delivery", "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "config": {"max_in_flight": args.max_in_flight, "max_queued": args.max_queued, "channel": "webhook",
                   "idempotency": "redis", "server": "minimal HTTP/1.1 keep-alive, separate process"},
        "machine": machine_before | {"load_avg_after": os.getloadavg()},
        "throughput_runs": runs, "throughput_best": best, "throughput_median": median,
        "latency": latency,
        "targets": {"messages_per_s": TARGET_RATE, "p99_ms_at_1k": TARGET_P99_MS,
                    "throughput_met": median >= TARGET_RATE, "latency_met": latency["p99_ms"] <= TARGET_P99_MS},
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"delivery-{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}.json"
    path.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
    print(f"median {median:.0f} msg/s (target {TARGET_RATE:.0f}), p99 {latency['p99_ms']} ms at "
          f"{args.rate:.0f}/s (target {TARGET_P99_MS:.0f}); written {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
