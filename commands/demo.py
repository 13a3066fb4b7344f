"""`espresso demo`: watch segments change live, with nothing to set up.

    embedded broker (tansu, in memory)  ◀── or KAFKA_BOOTSTRAP_SERVERS
        ▲ contact-events            │ segment-changes, contact-events-dlq
        │                           ▼
    synthetic shop traffic ──▶ `espresso run` (subprocess) ──▶ printer (this process)

The traffic is a small shop in real time (event time = now): people subscribe, open and
click emails and SMS, open pushes, start checkouts and sometimes order. The segments are
the built-in espresso segments with a short window (`--window`, default 45s instead of
72h) plus an abandoned-checkout segment, so time-driven exits happen while you watch:
an open ageing out makes a person leave email espresso with no new event.

Stops on Ctrl-C or after `--duration` (default: until Ctrl-C on a terminal, 60 s
otherwise) and prints a summary.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TextIO

import orjson

from connectors.embedded_broker import EmbeddedBroker, free_port
from state.errors import ConfigError
from state.timeutil import format_duration, format_ms, parse_duration

__all__ = ["add_demo_args", "cmd_demo", "demo_segments_yaml", "Traffic", "describe_change"]

ROOT = Path(__file__).resolve().parents[1]


class DemoError(ConfigError):
    """The demo cannot start; the message says what to install or set."""


# -- segments ------------------------------------------------------------------------
def demo_segments_yaml(window: str, abandoned_after: str, abandoned_expires: str) -> str:
    """The built-in espresso segments with `window` instead of 72h, plus abandoned checkout."""
    return f"""\
# espresso demo segments: the built-in ones with a {window} window (72h in production).
segments:
  - id: email-espresso
    name: Email espresso (demo window {window})
    when:
      all:
        - consent: {{channel: email}}
        - any:
            - event: {{type: email_open, at_least: 1, within: {window}}}
            - event: {{type: email_click, at_least: 1, within: {window}}}
        - event: {{type: order_placed, exactly: 0, within: {window}}}
  - id: sms-espresso
    name: SMS espresso (demo window {window})
    when:
      all:
        - consent: {{channel: sms}}
        - event: {{type: sms_click, at_least: 1, within: {window}}}
        - event: {{type: order_placed, exactly: 0, within: {window}}}
  - id: push-espresso
    name: Push espresso (demo window {window})
    when:
      all:
        - consent: {{channel: push}}
        - event: {{type: push_open, at_least: 1, within: {window}}}
        - event: {{type: order_placed, exactly: 0, within: {window}}}
  - id: abandoned-checkout
    name: Started a checkout, no order within {abandoned_after}
    when:
      all:
        - abandoned_checkout: {{after: {abandoned_after}, expires_after: {abandoned_expires}}}
        - consent: {{channel: email}}
"""


# -- synthetic traffic ------------------------------------------------------------------
FIRST_NAMES = ("Mia", "Noah", "Emma", "Liam", "Lea", "Lucas", "Chloe", "Hugo", "Sofia", "Mateo",
               "Alice", "Louis", "Jade", "Adam", "Ines", "Arthur", "Zoe", "Jules", "Nora", "Leo",
               "Lina", "Gabriel", "Rose", "Raphael", "Anna", "Tom", "Eva", "Nathan", "Julia", "Sacha")
PRODUCTS = (("sku-espresso-beans", ["coffee"], 14.5), ("sku-moka-pot", ["gear"], 39.0),
            ("sku-grinder", ["gear"], 89.0), ("sku-decaf", ["coffee"], 12.0),
            ("sku-cups", ["gear", "gifts"], 22.0), ("sku-gift-card", ["gifts"], 50.0))


class Traffic:
    """A small shop's contact events in real time; deterministic for a seed and a clock."""

    def __init__(self, contacts: int = 300, seed: int | None = None, invalid_rate: float = 0.01) -> None:
        self.rng = random.Random(seed)
        self.max_contacts = contacts
        self.contacts: list[dict] = []
        self.invalid_rate = invalid_rate
        self.pending: list[tuple[float, dict]] = []  # (due monotonic-free epoch s, event) follow-ups

    def _event(self, c: dict, etype: str, now_ms: int, props: dict | None = None) -> dict:
        ev = {"event_id": uuid.UUID(int=self.rng.getrandbits(128)).hex, "contact_id": c["id"], "type": etype,
              "ts": format_ms(now_ms)}
        if props:
            ev["properties"] = props
        return ev

    def _new_contact(self, now_ms: int) -> list[dict]:
        rng = self.rng
        i = len(self.contacts)
        c = {"id": f"c-{i:04d}", "name": rng.choice(FIRST_NAMES), "email": rng.random() < 0.9,
             "sms": rng.random() < 0.35, "push": rng.random() < 0.3, "checkout": None}
        self.contacts.append(c)
        out = []
        for ch in ("email", "sms", "push"):
            if c[ch]:
                out.append(self._event(c, "consent_changed", now_ms,
                                       {"channel": ch, "status": "subscribed", "reason": "signup_form"}))
        if not out:  # everyone here agreed to something
            c["email"] = True
            out.append(self._event(c, "consent_changed", now_ms, {"channel": "email", "status": "subscribed"}))
        out.append(self._event(c, "profile_updated", now_ms, {"first_name": c["name"], "country": rng.choice(
            ["FR", "DE", "ES", "IT", "BE", "NL"])}))
        return out

    def _items(self) -> tuple[list[dict], float]:
        rng = self.rng
        items, value = [], 0.0
        for pid, cols, price in rng.sample(PRODUCTS, rng.randint(1, 3)):
            q = rng.randint(1, 2)
            items.append({"product_id": pid, "collection_ids": cols, "quantity": q, "price": price})
            value += q * price
        return items, round(value, 2)

    def tick(self, now_ms: int) -> list[dict]:
        """One event (sometimes a few) happening now, plus follow-ups that are due."""
        rng = self.rng
        out = [ev for due, ev in self.pending if due <= now_ms]
        self.pending = [(due, ev) for due, ev in self.pending if due > now_ms]
        for ev in out:
            ev["ts"] = format_ms(now_ms)
        if len(self.contacts) < 8 or (len(self.contacts) < self.max_contacts and rng.random() < 0.12):
            return out + self._new_contact(now_ms)
        c = rng.choice(self.contacts)
        r = rng.random()
        if r < 0.34 and c["email"]:
            out.append(self._event(c, "email_open", now_ms, {"campaign_id": "weekly-brew"}))
            if rng.random() < 0.3:  # a click a few seconds after the open
                self.pending.append((now_ms + rng.randint(2000, 8000),
                                     self._event(c, "email_click", now_ms, {"url": "/coffee"})))
        elif r < 0.46 and c["sms"]:
            out.append(self._event(c, "sms_click", now_ms, {"campaign_id": "flash-sale"}))
        elif r < 0.56 and c["push"]:
            out.append(self._event(c, "push_open", now_ms))
            out.append(self._event(c, "app_open", now_ms + 1, {"platform": rng.choice(["ios", "android"])}))
        elif r < 0.70:
            items, value = self._items()
            checkout = uuid.UUID(int=rng.getrandbits(128)).hex[:12]
            out.append(self._event(c, "checkout_started", now_ms,
                                   {"checkout_id": checkout, "value": value, "items": items}))
            if rng.random() < 0.45:  # completed 3-25 s later, else abandoned
                self.pending.append((now_ms + rng.randint(3000, 25000), self._event(c, "order_placed", now_ms, {
                    "order_id": "o-" + checkout, "value": value, "currency": "EUR", "items": items})))
        elif r < 0.74:
            items, value = self._items()
            out.append(self._event(c, "order_placed", now_ms, {
                "order_id": "o-" + uuid.UUID(int=rng.getrandbits(128)).hex[:12], "value": value,
                "currency": "EUR", "items": items}))
        elif r < 0.76 and c["email"]:
            c["email"] = False
            out.append(self._event(c, "consent_changed", now_ms,
                                   {"channel": "email", "status": "unsubscribed", "reason": "user_request"}))
        else:
            out.append(self._event(c, "product_viewed", now_ms, {"product_id": rng.choice(PRODUCTS)[0]}))
        return out

    def invalid(self, now_ms: int) -> bytes | None:
        """Now and then a broken record, to show the dead-letter topic at work."""
        if self.rng.random() >= self.invalid_rate or not self.contacts:
            return None
        c = self.rng.choice(self.contacts)
        return self.rng.choice([
            b'{"event_id": "x", "contact_id": "' + c["id"].encode() + b'", "type": "email_open", "ts": "yesterday"}',
            b"<html>502 Bad Gateway</html>",
            orjson.dumps({"event_id": "y", "contact_id": c["id"], "type": "consent_changed", "ts": now_ms,
                          "properties": {"channel": "fax", "status": "subscribed"}}),
        ])

    def name_of(self, contact_id: str) -> str:
        try:
            return self.contacts[int(contact_id.split("-")[1])]["name"]
        except (IndexError, ValueError):
            return "?"


# -- describing changes -------------------------------------------------------------------
_EVENT_WHY = {
    "email_open": "opened an email", "email_click": "clicked an email", "sms_click": "clicked an SMS",
    "push_open": "opened a push", "order_placed": "placed an order", "checkout_started": "started a checkout",
    "profile_updated": "updated their profile",
}


def describe_change(rec: dict, window: str, abandoned_after: str, abandoned_expires: str) -> str:
    """Why a change happened, in words ("opened an email", "open aged out (window 45s)")."""
    cause, seg, enter = rec.get("cause") or {}, rec.get("segment_id", ""), rec.get("direction") == "enter"
    if cause.get("kind") == "event":
        etype = cause.get("type") or ""
        if etype == "consent_changed":
            return "subscribed" if enter else "unsubscribed"
        if etype == "checkout_started" and not enter:
            return "started a new checkout"
        return _EVENT_WHY.get(etype, etype.replace("_", " "))
    if seg == "abandoned-checkout":
        return (f"checkout not completed within {abandoned_after}" if enter
                else f"reminder period over ({abandoned_expires})")
    if enter:
        return f"their order aged out (window {window}), recent interest still inside"
    what = {"email-espresso": "email open/click", "sms-espresso": "SMS click", "push-espresso": "push open"}
    return f"{what.get(seg, 'activity')} aged out (window {window})"


# -- the demo -------------------------------------------------------------------------------
class _Style:
    def __init__(self, tty: bool) -> None:
        self.tty = tty

    def __call__(self, text: str, code: str) -> str:
        return f"\033[{code}m{text}\033[0m" if self.tty else text


def add_demo_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--duration", type=float, default=None,
                   help="seconds to run (default: until Ctrl-C on a terminal, 60 otherwise)")
    p.add_argument("--rate", type=float, default=8.0, help="events per second (default %(default)s)")
    p.add_argument("--contacts", type=int, default=300, help="people in the shop (default %(default)s)")
    p.add_argument("--window", default="45s",
                   help="window of the demo espresso segments, 72h in production (default %(default)s)")
    p.add_argument("--abandoned-after", default="15s",
                   help="a checkout with no order this long is abandoned (default %(default)s)")
    p.add_argument("--seed", type=int, default=None, help="random seed of the traffic (default: random)")
    p.add_argument("--metrics-port", type=int, default=9464,
                   help="port of /metrics /livez /readyz; a free one if taken (default %(default)s)")
    p.add_argument("--workers", type=int, default=1, help="Bytewax workers of the flow (default %(default)s)")
    p.add_argument("--verbose", action="store_true", help="show the flow's log instead of keeping it in a file")


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("0.0.0.0", port))
            return True
        except OSError:
            return False


def cmd_demo(args: argparse.Namespace) -> int:
    for flag, value in (("--window", args.window), ("--abandoned-after", args.abandoned_after)):
        if parse_duration(value) is None:
            raise DemoError(f"{flag}: not a duration such as 45s or 2m: {value!r}")
    if args.rate <= 0:
        raise DemoError(f"--rate must be > 0: {args.rate}")
    duration = args.duration if args.duration is not None else (None if sys.stdout.isatty() else 60.0)
    return Demo(args, duration).run()


class Demo:
    def __init__(self, args: argparse.Namespace, duration: float | None, out: TextIO = sys.stdout) -> None:
        self.args, self.duration, self.out = args, duration, out
        self.style = _Style(out.isatty())
        self.stop = threading.Event()
        self.window = format_duration(parse_duration(args.window))
        self.after = format_duration(parse_duration(args.abandoned_after))
        self.expires = format_duration(max(parse_duration(args.window), 4 * parse_duration(args.abandoned_after)))
        self.traffic = Traffic(args.contacts, args.seed)
        self.stats: Counter = Counter()
        self.latencies: list[float] = []
        self.produced = 0
        self.dead = Counter()

    def say(self, text: str = "") -> None:
        print(text, file=self.out, flush=True)

    def run(self) -> int:
        workdir = Path(tempfile.mkdtemp(prefix="espresso-demo-"))
        broker, flow = None, None
        external = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "").strip()
        try:
            if external:
                bootstrap = external
                tag = uuid.uuid4().hex[:6]
                topics = (f"demo-{tag}-contact-events", f"demo-{tag}-segment-changes", f"demo-{tag}-dlq")
                self.say(f"espresso demo: using Kafka at {bootstrap} (KAFKA_BOOTSTRAP_SERVERS), topics {', '.join(topics)}")
            else:
                broker = EmbeddedBroker(workdir).start()
                bootstrap = broker.bootstrap
                topics = ("contact-events", "segment-changes", "contact-events-dlq")
                self.say(f"espresso demo: embedded broker (tansu, in memory) at {bootstrap}")
            self._create_topics(bootstrap, topics)
            segments = workdir / "demo-segments.yaml"
            segments.write_text(demo_segments_yaml(self.window, self.after, self.expires))
            port = self.args.metrics_port if _port_free(self.args.metrics_port) else free_port()
            flow = self._start_flow(bootstrap, topics, segments, port, workdir)
            self.say(f"espresso demo: flow running ({self.args.workers} worker(s)); metrics at "
                     f"http://127.0.0.1:{port}/metrics, health /livez /readyz; segments: {segments}")
            self.say(f"espresso demo: segments email/sms/push-espresso with a {self.window} window, "
                     f"abandoned-checkout after {self.after}; "
                     + (f"running {self.duration:g}s" if self.duration else "Ctrl-C to stop"))
            self.say()
            self._loop(bootstrap, topics, flow)
        except KeyboardInterrupt:
            pass
        finally:
            self.stop.set()
            code = self._stop_flow(flow)
            if broker is not None:
                broker.stop()
            elif external:
                self._delete_topics(external, topics)
            self._summary(code)
            shutil.rmtree(workdir, ignore_errors=True)
        return 0

    # -- pieces --
    def _create_topics(self, bootstrap: str, topics: tuple[str, str, str]) -> None:
        from connectors.kafka_config import KafkaConfig
        from connectors.topics import create_topics

        create_topics(KafkaConfig.from_env(bootstrap, os.environ), {topics[0]: 4, topics[1]: 4, topics[2]: 1})

    def _delete_topics(self, bootstrap: str, topics: tuple[str, str, str]) -> None:
        from confluent_kafka.admin import AdminClient

        try:
            admin = AdminClient({"bootstrap.servers": bootstrap})
            for f in admin.delete_topics(list(topics)).values():
                f.result(10)
        except Exception:  # noqa: BLE001
            pass

    def _start_flow(self, bootstrap: str, topics: tuple[str, str, str], segments: Path, port: int,
                    workdir: Path) -> subprocess.Popen:
        argv = [sys.executable, "-m", "commands.cli", "run", "--bootstrap-servers", bootstrap,
                "--input-topic", topics[0], "--output-topic", topics[1], "--dlq-topic", topics[2],
                "--segments", str(segments), "--allowed-lateness", "2s", "--shards-per-partition", "4",
                "--metrics-port", str(port), "--workers", str(self.args.workers), "--epoch-interval", "2s"]
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
        self.flow_log = workdir / "flow.log"
        log = None if self.args.verbose else open(self.flow_log, "wb")
        proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                start_new_session=True)
        if log is not None:
            log.close()
        return proc

    def _stop_flow(self, flow: subprocess.Popen | None) -> int | None:
        if flow is None:
            return None
        if flow.poll() is None:
            flow.send_signal(signal.SIGTERM)
            try:
                flow.wait(15)
            except subprocess.TimeoutExpired:
                flow.kill()
                flow.wait()
        return flow.returncode

    def _producer_thread(self, bootstrap: str, topic: str) -> None:
        from confluent_kafka import Producer

        p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "enable.idempotence": True})
        interval = 1.0 / self.args.rate
        nxt = time.monotonic()
        while not self.stop.is_set():
            now_ms = time.time_ns() // 1_000_000
            for ev in self.traffic.tick(now_ms):
                p.produce(topic, orjson.dumps(ev), ev["contact_id"].encode())
                self.produced += 1
            bad = self.traffic.invalid(now_ms)
            if bad is not None:
                p.produce(topic, bad)
                self.produced += 1
            p.poll(0)
            nxt += self.rng_interval(interval)
            delay = nxt - time.monotonic()
            if delay > 0:
                self.stop.wait(delay)
            else:
                nxt = time.monotonic()
        p.flush(5)

    def rng_interval(self, mean: float) -> float:
        return self.traffic.rng.expovariate(1.0 / mean)

    def _loop(self, bootstrap: str, topics: tuple[str, str, str], flow: subprocess.Popen) -> None:
        from confluent_kafka import Consumer, TopicPartition
        from confluent_kafka.admin import AdminClient

        from connectors.consume import next_batch

        md = AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=10)
        consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "espresso-demo-printer",
                             "enable.auto.commit": False, "fetch.wait.max.ms": 20})
        consumer.list_topics(timeout=10)  # leaders known before assign: no 500 ms first-fetch delay
        consumer.assign([TopicPartition(topics[1], p, 0) for p in md.topics[topics[1]].partitions]
                        + [TopicPartition(topics[2], p, 0) for p in md.topics[topics[2]].partitions])
        producer = threading.Thread(target=self._producer_thread, args=(bootstrap, topics[0]),
                                    name="demo-traffic", daemon=True)
        producer.start()
        self.t0 = time.monotonic()
        try:
            while not self.stop.is_set():
                if self.duration is not None and time.monotonic() - self.t0 >= self.duration:
                    break
                if flow.poll() is not None:
                    self.say(self.style(f"espresso demo: the flow exited with code {flow.returncode}; "
                                        f"its log: {getattr(self, 'flow_log', '(console)')}", "31"))
                    break
                for msg in next_batch(consumer, 200, 0.2):
                    if msg.error():
                        continue
                    if msg.topic() == topics[1]:
                        self._show_change(msg)
                    else:
                        self._show_dead(msg)
        finally:
            self.stop.set()
            producer.join(10)
            # let the last changes through before stopping the flow
            end = time.monotonic() + 1.0
            while time.monotonic() < end:
                for msg in consumer.consume(200, 0.2):
                    if not msg.error() and msg.topic() == topics[1]:
                        self._show_change(msg)
            consumer.close()

    def _show_change(self, msg: Any) -> None:
        rec = orjson.loads(msg.value())
        now_ms = time.time_ns() // 1_000_000
        enter = rec["direction"] == "enter"
        seg = rec["segment_id"]
        self.stats[(seg, rec["direction"])] += 1
        at_ms = int(datetime.fromisoformat(rec["at"]).timestamp() * 1000)
        caused_by_event = (rec.get("cause") or {}).get("kind") == "event"
        if caused_by_event:
            self.latencies.append(now_ms - at_ms)
        s = self.style
        when = datetime.fromtimestamp(at_ms / 1000, tz=timezone.utc).astimezone().strftime("%H:%M:%S.%f")[:-3]
        who = f"{rec['contact_id']} ({self.traffic.name_of(rec['contact_id'])})"
        arrow = s("ENTER", "1;32") if enter else s("EXIT ", "1;31")
        why = describe_change(rec, self.window, self.after, self.expires)
        tail = "" if caused_by_event else s("  [time]", "2")
        self.say(f"{when}  {who:<16} {arrow}  {seg:<19} {why}{tail}")

    def _show_dead(self, msg: Any) -> None:
        headers = dict(msg.headers() or [])
        reason = headers.get("espresso-reason", b"?").decode()
        self.dead[reason] += 1
        detail = headers.get("espresso-detail", b"").decode("utf-8", "replace")
        self.say(self.style(f"{datetime.now().strftime('%H:%M:%S.%f')[:-3]}  dead letter       "
                            f"{reason}: {detail[:70]}", "2;33"))

    def _summary(self, code: int | None) -> None:
        secs = time.monotonic() - getattr(self, "t0", time.monotonic())
        self.say()
        self.say(f"espresso demo: {self.produced} events in {secs:.0f}s; "
                 f"{sum(self.stats.values())} segment changes; {sum(self.dead.values())} dead letters"
                 + (f" ({', '.join(f'{k} {v}' for k, v in sorted(self.dead.items()))})" if self.dead else ""))
        for seg in sorted({s for s, _ in self.stats}):
            self.say(f"  {seg:<20} {self.stats[(seg, 'enter')]:>4} enter  {self.stats[(seg, 'exit')]:>4} exit")
        if self.latencies:
            lat = sorted(self.latencies)
            p50, p99 = lat[len(lat) // 2], lat[min(len(lat) - 1, int(len(lat) * 0.99))]
            self.say(f"  event -> change readable on the topic: p50 {p50} ms, p99 {p99} ms "
                     f"({len(lat)} event-caused changes)")
        if code not in (None, 0):
            self.say(f"  the flow exited with code {code}")
