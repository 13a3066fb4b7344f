"""The real thing for the Prometheus test: `espresso run` with campaigns and `espresso deliver`
on the test broker, fed live shop traffic (event time = now), sending to a local webhook; the
contacts open and click the messages released to them and order, so conversions (and holdout
conversions) come out."""

from __future__ import annotations

import itertools
import os
import random
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable

import orjson
import yaml
from confluent_kafka import Consumer, Producer, TopicPartition

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
            if n % 40 == 0:  # a touch naming a message espresso never sent: ignored (unknown)
                self.send(cid, "email_click", {"message_id": f"{rnd.getrandbits(128):032x}"})
            self.producer.poll(0)
        self.producer.flush(10)


#: The touch a contact makes on a released message of each channel (an email is also opened
#: by a privacy proxy first: a machine open, ignored).
TOUCHES = {"email": ["email_open", "email_click"], "sms": ["sms_click"], "push": ["push_open"]}


class Engagement(threading.Thread):
    """Reads the released messages and has their contacts touch them (`TOUCHES`, with the
    message's id) and, for every other message, order: attributed conversions."""

    def __init__(self, bootstrap: str, messages_topic: str, traffic: Traffic) -> None:
        super().__init__(daemon=True)
        self.bootstrap, self.topic, self.traffic = bootstrap, messages_topic, traffic
        self.stop = threading.Event()

    def run(self) -> None:
        from confluent_kafka.admin import AdminClient

        parts = AdminClient({"bootstrap.servers": self.bootstrap}).list_topics(timeout=10).topics[self.topic].partitions
        c = Consumer({"bootstrap.servers": self.bootstrap, "group.id": f"engagement-{self.topic}",
                      "enable.auto.commit": False, "fetch.wait.max.ms": 50})
        c.assign([TopicPartition(self.topic, p, 0) for p in parts])
        n = 0
        try:
            while not self.stop.is_set():
                for m in c.consume(100, 0.2):
                    if m.error():
                        continue
                    msg = orjson.loads(m.value())
                    cid, mid = msg["contact_id"], msg["message_id"]
                    if msg["channel"] == "email":
                        self.traffic.send(cid, "email_open", {"message_id": mid, "machine_open": True})
                    for etype in TOUCHES.get(msg["channel"], ()):
                        self.traffic.send(cid, etype, {"message_id": mid})
                    n += 1
                    if n % 2:
                        self.traffic.send(cid, "order_placed", {"order_id": f"eo{n}", "value": 42.5,
                                                                "currency": "EUR"})
                    self.traffic.producer.poll(0)
        finally:
            c.close()


def campaigns_with_holdout(tmp: Path) -> Path:
    """The built-in campaigns (`--campaigns builtin`: every built-in file) in one file, with a
    20 % holdout on `email-espresso-resend` (the A/B test) and `push-espresso-urgent`, and no
    email cap: holdout conversions come out."""
    from importlib import resources

    from state.builtin_names import BUILTIN_CAMPAIGN_FILES

    merged: dict = {"campaigns": [], "segments": []}
    for file in BUILTIN_CAMPAIGN_FILES.values():
        doc = yaml.safe_load(resources.files("state").joinpath(file).read_text())
        for key in ("caps", "default_timezone"):
            if key in doc:
                merged.setdefault(key, doc[key])
        merged["segments"] += doc.get("segments", [])
        merged["campaigns"] += doc["campaigns"]
    merged["caps"]["email"] = None  # the welcome series would leave the A/B test nothing but `capped`
    for c in merged["campaigns"]:
        if c["id"] in ("email-espresso-resend", "push-espresso-urgent"):
            c["holdout"] = "20%"
    path = tmp / "campaigns.yaml"
    path.write_text(yaml.safe_dump(merged, sort_keys=False))
    return path


class RealFlow:
    """Starts traffic, `espresso run` with the built-in campaigns (one with a holdout),
    `espresso deliver` and the contacts' engagement with the messages; `.targets`."""

    def __init__(self, tmp: Path, bootstrap: str, redis_url: str, webhook_url: str) -> None:
        self.tmp, self.bootstrap, self.redis_url, self.webhook_url = tmp, bootstrap, redis_url, webhook_url
        #: Set it to a test of a Prometheus scraping `targets`: true once a scrape has seen the
        #: run's campaign series (at zero). Traffic waits for it, so that the holdouts, decided
        #: in the first seconds only, show as an increase.
        self.scraped: Callable[[], bool] | None = None
        tag = f"{os.getpid()}-{int(time.time())}"
        self.topics = {k: f"prom-{k}-{tag}" for k in ("events", "changes", "dlq", "messages", "decisions",
                                                            "conversions")}
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
        try:
            return self._start()
        except BaseException:
            self.__exit__(None, None, None)
            raise

    def _start(self) -> "RealFlow":
        t = self.topics
        self._spawn("run", ["run", "--bootstrap-servers", self.bootstrap, "--create-topics", "--partitions", "2",
                            "--input-topic", t["events"], "--output-topic", t["changes"], "--dlq-topic", t["dlq"],
                            "--messages-topic", t["messages"], "--decisions-topic", t["decisions"],
                            "--conversions-topic", t["conversions"],
                            "--campaigns", str(campaigns_with_holdout(self.tmp)), "--allowed-lateness", "1s",
                            "--metrics-port", str(self.run_port)],
                    {"BYTEWAX_DATAFLOW_API_ENABLED": "true", "BYTEWAX_DATAFLOW_API_PORT": str(free_port()),
                     "BYTEWAX_DATAFLOW_API_CACHE_PATH": str(self.tmp)})
        deadline = time.monotonic() + 30
        while not self._topic_exists(t["messages"]) or "espresso_campaign_held_out_total{" not in self._scrape():
            if time.monotonic() > deadline or self.procs[0].poll() is not None:
                raise RuntimeError(f"espresso run did not create its topics and campaign series:\n{self.log('run')}")
            time.sleep(0.2)
        while self.scraped is not None and not self.scraped():
            if time.monotonic() > deadline + 30 or self.procs[0].poll() is not None:
                raise RuntimeError(f"no scrape saw the campaign series of espresso run:\n{self.log('run')}")
            time.sleep(0.2)
        self.traffic = Traffic(self.bootstrap, t["events"])
        self.traffic.start()
        self._spawn("deliver", ["deliver", "--bootstrap-servers", self.bootstrap, "--messages-topic", t["messages"],
                                "--decisions-topic", t["decisions"], "--dlq-topic", t["dlq"],
                                "--metrics-port", str(self.deliver_port)],
                    {"REDIS_URL": self.redis_url, "ESPRESSO_WEBHOOK_URL": self.webhook_url,
                     "KAFKA_CONSUMER_SETTINGS": "session.timeout.ms=6000,heartbeat.interval.ms=1000"})
        self.engagement = Engagement(self.bootstrap, t["messages"], self.traffic)
        self.engagement.start()
        return self

    def _scrape(self) -> str:
        import urllib.request

        try:
            with urllib.request.urlopen(f"http://{self.targets[0]}/metrics", timeout=2) as r:
                return r.read().decode()
        except OSError:
            return ""

    def _topic_exists(self, topic: str) -> bool:
        from confluent_kafka.admin import AdminClient

        return topic in AdminClient({"bootstrap.servers": self.bootstrap}).list_topics(timeout=5).topics

    def __exit__(self, *exc) -> None:
        if hasattr(self, "engagement"):
            self.engagement.stop.set()
            self.engagement.join(15)
        if hasattr(self, "traffic"):
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
