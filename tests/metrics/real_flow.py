"""The real thing for the Prometheus test: `espresso run` with campaigns and `espresso deliver`
on the test broker, fed live shop traffic (event time = now), sending to a local webhook."""

from __future__ import annotations

import itertools
import os
import random
import subprocess
import sys
import threading
import time
from pathlib import Path

import orjson
from confluent_kafka import Producer

from .prometheus import free_port

TYPES = ["email_open", "email_open", "email_click", "sms_click", "push_open", "order_placed", "checkout_started",
         "app_open"]


class Traffic(threading.Thread):
    """~40 events/s for 50 contacts, with invalid lines, redeliveries and late events."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        super().__init__(daemon=True)
        self.producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
        self.topic, self.stop = topic, threading.Event()
        self.ids = itertools.count()

    def send(self, cid: str, etype: str, props: dict, ts: int | None = None) -> bytes:
        ev = {"event_id": f"e{next(self.ids)}", "contact_id": cid, "type": etype,
              "ts": ts if ts is not None else time.time_ns() // 1_000_000, "properties": props}
        raw = orjson.dumps(ev)
        self.producer.produce(self.topic, raw, cid.encode())
        return raw

    def run(self) -> None:
        rnd = random.Random(3)
        contacts = [f"c{i}" for i in range(50)]
        for cid in contacts:
            for ch in ("email", "sms", "push"):
                self.send(cid, "consent_changed", {"channel": ch, "status": "subscribed"})
            self.send(cid, "profile_updated", {"first_name": cid.upper(), "email": f"{cid}@example.com",
                                               "phone": "+33600000000", "push_token": f"tok-{cid}",
                                               "timezone": "UTC"})
        n = 0
        while not self.stop.wait(0.025):
            n += 1
            cid = rnd.choice(contacts)
            raw = self.send(cid, rnd.choice(TYPES), {"value": 30, "items": [{"product_id": "p1"}]})
            if n % 20 == 0:
                self.producer.produce(self.topic, b"{not json", cid.encode())
            if n % 25 == 0:
                self.producer.produce(self.topic, raw, cid.encode())  # a redelivery
            if n % 30 == 0:
                self.send(cid, "email_click", {}, ts=time.time_ns() // 1_000_000 - 300_000)  # 5 min late
            self.producer.poll(0)
        self.producer.flush(10)


class RealFlow:
    """Starts traffic, `espresso run --campaigns builtin` and `espresso deliver`; `.targets`."""

    def __init__(self, tmp: Path, bootstrap: str, redis_url: str, webhook_url: str) -> None:
        self.tmp, self.bootstrap, self.redis_url, self.webhook_url = tmp, bootstrap, redis_url, webhook_url
        tag = f"{os.getpid()}-{int(time.time())}"
        self.topics = {k: f"prom-{k}-{tag}" for k in ("events", "changes", "dlq", "messages", "decisions")}
        self.procs: list[subprocess.Popen] = []
        self.run_port, self.deliver_port = free_port(), free_port()
        self.targets = [f"127.0.0.1:{self.run_port}", f"127.0.0.1:{self.deliver_port}"]

    def _spawn(self, name: str, args: list[str], env: dict) -> None:
        log = open(self.tmp / f"{name}.log", "wb")  # noqa: SIM115 - lives as long as the process
        root = Path(__file__).resolve().parents[2]
        self.procs.append(subprocess.Popen([sys.executable, "-m", "commands.cli", *args], cwd=root,
                                           env={**os.environ, "PYTHONPATH": str(root), **env},
                                           stdout=log, stderr=subprocess.STDOUT))

    def log(self, name: str) -> str:
        return (self.tmp / f"{name}.log").read_text(errors="replace")[-3000:]

    def __enter__(self) -> "RealFlow":
        t = self.topics
        self._spawn("run", ["run", "--bootstrap-servers", self.bootstrap, "--create-topics", "--partitions", "2",
                            "--input-topic", t["events"], "--output-topic", t["changes"], "--dlq-topic", t["dlq"],
                            "--messages-topic", t["messages"], "--decisions-topic", t["decisions"],
                            "--campaigns", "builtin", "--allowed-lateness", "1s",
                            "--metrics-port", str(self.run_port)],
                    {"BYTEWAX_DATAFLOW_API_ENABLED": "true", "BYTEWAX_DATAFLOW_API_PORT": str(free_port()),
                     "BYTEWAX_DATAFLOW_API_CACHE_PATH": str(self.tmp)})
        self.traffic = Traffic(self.bootstrap, t["events"])
        self.traffic.start()
        deadline = time.monotonic() + 30
        while not self._topic_exists(t["messages"]):
            if time.monotonic() > deadline or self.procs[0].poll() is not None:
                raise RuntimeError(f"espresso run did not create its topics:\n{self.log('run')}")
            time.sleep(0.2)
        self._spawn("deliver", ["deliver", "--bootstrap-servers", self.bootstrap, "--messages-topic", t["messages"],
                                "--decisions-topic", t["decisions"], "--dlq-topic", t["dlq"],
                                "--metrics-port", str(self.deliver_port)],
                    {"REDIS_URL": self.redis_url, "ESPRESSO_WEBHOOK_URL": self.webhook_url,
                     "KAFKA_CONSUMER_SETTINGS": "session.timeout.ms=6000,heartbeat.interval.ms=1000"})
        return self

    def _topic_exists(self, topic: str) -> bool:
        from confluent_kafka.admin import AdminClient

        return topic in AdminClient({"bootstrap.servers": self.bootstrap}).list_topics(timeout=5).topics

    def __exit__(self, *exc) -> None:
        self.traffic.stop.set()
        self.traffic.join(15)
        for p in self.procs:
            p.terminate()
        for p in self.procs:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
