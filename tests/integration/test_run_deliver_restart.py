"""The whole retargeting path under crashes: events -> `espresso run --campaigns` -> Kafka ->
`espresso deliver` -> a webhook provider, with SIGKILL and restart of each process mid-stream.
Every message a replay of the same events releases reaches the provider exactly once."""

from __future__ import annotations

import random
import threading
import time
from pathlib import Path

import orjson
import pytest
import redis

from tests.connectors.http_server import OK, Reply, WebhookServer
from tests.integration.live import (SHORT_WINDOW_SEGMENTS, Deliver, Espresso, Tail, now_ms, produce, producer,
                                    read_all, tick, wait_until)

pytestmark = pytest.mark.integration

PARTS = 2

#: A 3-second window, so contacts leave and come back (also by time: an order ageing out
#: while an open is still inside) while the test runs; one email per entry, no caps.
CAMPAIGNS = SHORT_WINDOW_SEGMENTS + """
caps: {email: null, sms: null, push: null, all: null}
campaigns:
  - id: opened-recently-email
    trigger: {segment: opened-recently, on: enter}
    channel: email
    reentry: every_time
    fallbacks: {first_name: there}
    template:
      subject: "{{ contact.first_name }}, still there?"
      body: "Hi {{ contact.first_name }}, here is what you opened."
"""

#: The provider holds a request this long (then answers 503) while `espresso deliver` is killed.
HOLD = Reply(status=503, delay_s=60)


class Traffic(threading.Thread):
    """Shop events with event time = now (one millisecond per event at most) until `finish()`
    was called `tail_s` seconds ago (or `max_s` passed). A contact's first events are its
    email consent (subscribed for most) and its profile (an address for most); then opens,
    orders and events no segment uses.

    No consent or profile changes later: a time-driven entry is decided in the live flow when
    the watermark passes it, i.e. up to the allowed lateness after a later event of the contact
    may have been applied, and live decisions read the latest consent (docs/campaigns.md,
    "Exactness in event time"), where a replay reads the consent at the entry's instant. An
    unsubscribe within a second after such an entry would make the two differ, by design."""

    def __init__(self, bootstrap: str, topic: str, rate: float = 100, contacts: int = 120, seed: int = 11,
                 max_s: float = 90) -> None:
        super().__init__(daemon=True)
        self.bootstrap, self.topic, self.rate, self.contacts, self.max_s = bootstrap, topic, rate, contacts, max_s
        self.rnd = random.Random(seed)
        self.events: list[dict] = []
        self._end: float | None = None
        self._lock = threading.Lock()

    def finish(self, tail_s: float) -> None:
        with self._lock:
            self._end = time.monotonic() + tail_s

    def _due(self) -> bool:
        with self._lock:
            return self._end is not None and time.monotonic() >= self._end

    def run(self) -> None:
        p = producer(self.bootstrap)
        rnd, seen, last, i = self.rnd, set(), 0, 0
        start = time.monotonic()
        while not self._due() and time.monotonic() - start < self.max_s:
            cid = f"c{rnd.randrange(self.contacts):04d}"
            if cid not in seen:
                seen.add(cid)
                batch = [("consent_changed", {"channel": "email",
                                              "status": "subscribed" if rnd.random() < 0.9 else "unsubscribed"}),
                         ("profile_updated", {"first_name": cid.upper()} if rnd.random() < 0.15
                          else {"first_name": cid.upper(), "email": f"{cid}@example.com"})]
            else:
                typ = rnd.choices(["email_open", "order_placed", "heartbeat"], [60, 12, 28])[0]
                props: dict = {}
                if typ == "order_placed":
                    props = {"order_id": f"o{i}", "value": 10.0, "currency": "EUR", "items": []}
                batch = [(typ, props)]
            for typ, props in batch:
                ts = max(now_ms(), last + 1)
                last = ts
                ev = {"event_id": f"e{i}", "contact_id": cid, "type": typ, "ts": ts, "properties": props}
                produce(self.bootstrap, self.topic, [ev], p=p)
                self.events.append(ev)
                i += 1
            time.sleep(1 / self.rate)
        assert p.flush(30) == 0


def age_claims(client: redis.Redis, by_ms: int) -> int:
    """Move the claim time of every `sending` idempotency key `by_ms` into the past, as if that
    long had passed (docs/delivery.md: `sending|<owner>.<token>|<claimed at, ms>`); returns how many."""
    n = 0
    for key in client.scan_iter(match="espresso:msg:*", count=1000):
        value = client.get(key)
        if value is not None and value.startswith(b"sending|"):
            head, _, ms = value.rpartition(b"|")
            client.set(key, head + b"|" + str(int(ms) - by_ms).encode(), keepttl=True)
            n += 1
    return n


def unmarked(client: redis.Redis, ids) -> list[str]:
    """Ids whose idempotency key is not `sent|...` yet."""
    ids = list(ids)
    values = client.mget([f"espresso:msg:{i}" for i in ids]) if ids else []
    return [i for i, v in zip(ids, values) if v is None or not v.startswith(b"sent|")]


def explain_missing(missing: set[str], events: list[dict], tmp: Path, bootstrap: str, topics: dict) -> str:
    """For a failure: what replay and the live flow did about the contacts of missing messages."""
    def jsonl(name: str) -> list[dict]:
        return [orjson.loads(x) for x in (tmp / name).read_bytes().splitlines()]

    def topic(name: str) -> list[dict]:
        return [orjson.loads(m.value()) for m in read_all(bootstrap, topics[name])]

    want = [m for m in jsonl("replay.changes.messages.jsonl") if m["message_id"] in missing]
    contacts = {m["contact_id"] for m in want}
    mine = lambda records: [r for r in records if r.get("contact_id") in contacts]  # noqa: E731
    on_topic = {m["message_id"] for m in topic("messages")}
    return (f"{len(missing)} messages missing at the provider, {len(missing & on_topic)} of them on the topic\n"
            f"replay's messages: {want[:3]}\nlive changes: {mine(topic('changes'))}\n"
            f"replay changes: {mine(jsonl('replay.changes.jsonl'))}\nlive decisions: {mine(topic('decisions'))}\n"
            f"replay decisions: {mine(jsonl('replay.changes.decisions.jsonl'))}\nevents: {mine(events)}")


@pytest.fixture(scope="module")
def provider():
    server = WebhookServer().start()
    yield server
    server.stop()


def test_sigkill_run_and_deliver_each_message_reaches_the_provider_once(kafka_bootstrap, kafka_topic_factory,
                                                                        redis_url, provider, tmp_path):
    """Real-time traffic. `espresso run` (recovery on) is SIGKILLed once messages flow and
    restarted at once on the same recovery directory. Then the provider makes one batch of
    `espresso deliver` wait (messages pile up behind it), releases it, and holds every other
    request of the next, big, batch while accepting the rest at once; when every accepted
    message is marked sent in Redis and only held requests are in flight, deliver is SIGKILLed
    and restarted: it reads the uncommitted batch again, skips the messages already sent and
    sends the held ones, whose claims the dead sender left are aged past the lease (what a
    restart otherwise waits 5 minutes for). After the stream, the provider has accepted every
    message `espresso replay --campaigns` of the same events releases, each exactly once (by
    Idempotency-Key = message_id), and nothing else; the messages topic holds the same ids;
    nothing was dead-lettered, and no message has two `sent` decisions."""
    topics = {"events": kafka_topic_factory(PARTS, prefix="events"),
              "changes": kafka_topic_factory(PARTS, prefix="changes"), "dlq": kafka_topic_factory(1, prefix="dlq"),
              "messages": kafka_topic_factory(PARTS, prefix="messages"),
              "decisions": kafka_topic_factory(1, prefix="decisions"),
              "conversions": kafka_topic_factory(1, prefix="conversions"),
              "delivered": kafka_topic_factory(1, prefix="delivered"),
              "delivery_dlq": kafka_topic_factory(1, prefix="delivery-dlq")}
    camps = tmp_path / "campaigns.yaml"
    camps.write_text(CAMPAIGNS)
    # The provider's answers: "ok" 200 at once; "gate": 200 once `gate` is set (the sender's
    # batch waits meanwhile, so messages pile up behind it); "mix": every other request is held
    # (503 after 60 s, longer than the test waits) and the others get 200 at once.
    state = {"mode": "ok", "held": 0}
    mixed_ok: set[str] = set()  # accepted in "mix" mode: messages of the batch deliver is killed in
    gate = threading.Event()

    def behaviour(n: int, message: dict) -> Reply:
        if state["mode"] == "gate":
            return Reply(gate=gate)
        if state["mode"] == "mix":
            if n % 2 == 0:
                state["held"] += 1
                return HOLD
            mixed_ok.add(message["message_id"])
        return OK

    provider.reset(behaviour)
    store = redis.Redis.from_url(redis_url)
    run_args = ("--campaigns", str(camps), "--messages-topic", topics["messages"], "--decisions-topic",
                topics["decisions"], "--conversions-topic", topics["conversions"], "--allowed-lateness", "1s",
                "--recovery-dir", str(tmp_path / "recovery"),
                "--epoch-interval", "500ms", "--shards-per-partition", "3")
    run_topics = (topics["events"], topics["changes"], topics["dlq"])
    group = f"deliver-restart-{now_ms()}"

    def accepted() -> int:
        return len(provider.delivered())

    traffic = Traffic(kafka_bootstrap, topics["events"])
    run1 = Espresso(tmp_path, kafka_bootstrap, run_topics, *run_args, name="run1")
    deliver1 = Deliver(tmp_path, kafka_bootstrap, redis_url, provider.url, topics, group, "deliver-1",
                       webhook_timeout="30")
    run2 = deliver2 = None
    try:
        traffic.start()
        # 1. SIGKILL `espresso run` once messages reach the provider; restart it at once.
        wait_until(lambda: accepted() >= 20, 60, "the first 20 messages at the provider", run1, deliver1)
        run1.kill()
        at_restart = accepted()
        run2 = Espresso(tmp_path, kafka_bootstrap, run_topics, *run_args, name="run2")
        # 2. Once the restarted run's messages arrive: hold one batch of deliver at the gate
        #    until messages pile up behind it, release it, then SIGKILL deliver in the next
        #    batch, half of it accepted (and marked sent), half held.
        wait_until(lambda: accepted() >= at_restart + 20, 60, "20 messages after the restart of run", run2,
                   deliver1)
        tail = Tail(kafka_bootstrap, topics["messages"])
        try:
            state["mode"] = "gate"
            wait_until(lambda: provider.active > 0, 30, "a request waiting at the gate", run2, deliver1)
            tail.poll(0.5)
            piled = len(tail.records)

            def piled_up() -> bool:
                tail.poll(0.1)
                return len(tail.records) >= piled + 10

            wait_until(piled_up, 30, "10 more messages on the topic behind the waiting batch", run2, deliver1)
        finally:
            tail.close()
        state["mode"] = "mix"
        gate.set()  # the waiting batch completes; the next one (the messages piled up) is mixed

        def mixed_and_settled() -> bool:
            """Some requests held, none other in flight, some accepted since the switch, and every
            accepted message marked sent in Redis: a crash now must neither lose nor repeat one."""
            accepted_now = set(provider.delivered())
            return (state["held"] > 0 and provider.active == state["held"] and mixed_ok <= accepted_now
                    and mixed_ok != set() and not unmarked(store, accepted_now)
                    and set(provider.delivered()) == accepted_now)

        wait_until(mixed_and_settled, 30, "held and accepted requests of one batch, the accepted marked sent",
                   run2, deliver1)
        held = state["held"]
        deliver1.kill()
        state["mode"] = "ok"
        aged = age_claims(store, by_ms=3_600_000)
        assert aged >= 1, "no claim was in flight when deliver was killed"
        deliver2 = Deliver(tmp_path, kafka_bootstrap, redis_url, provider.url, topics, group, "deliver-2",
                           webhook_timeout="30")
        traffic.finish(tail_s=3)
        traffic.join(60)
        assert not traffic.is_alive()

        # 3. Time passes every window: a tick per partition, a minute after the last event.
        events = list(traffic.events)
        last = events[-1]["ts"]
        ticks = [tick(p, last + 60_000) for p in range(PARTS)]
        for p, t in enumerate(ticks):
            produce(kafka_bootstrap, topics["events"], [t], partition=p)

        from flows.replay import replay

        src = tmp_path / "replay.jsonl"
        src.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in events + ticks))
        res = replay(src, last + 30_000, tmp_path / "replay.changes.jsonl", progress=False, campaigns=camps)
        expected = {orjson.loads(x)["message_id"]
                    for x in (tmp_path / "replay.changes.messages.jsonl").read_bytes().splitlines()}
        assert res.messages == len(expected) > at_restart + 40

        try:
            wait_until(lambda: set(provider.delivered()) >= expected, 90,
                       f"all {len(expected)} expected messages at the provider", run2, deliver2)
        except AssertionError as exc:
            missing = expected - set(provider.delivered())
            raise AssertionError(f"{explain_missing(missing, events, tmp_path, kafka_bootstrap, topics)}\n{exc}") \
                from None
        # Everything espresso run wrote is on the topic once it stopped; deliver then drains it.
        assert run2.stop(30) == 0, run2.tail()
        records = [orjson.loads(m.value())["message_id"] for m in read_all(kafka_bootstrap, topics["messages"])]
        on_topic = set(records)
        assert on_topic == expected, (f"{len(on_topic - expected)} messages not in the replay, "
                                      f"{len(expected - on_topic)} missing from the topic")
        wait_until(lambda: set(provider.delivered()) >= on_topic, 30, "every message on the topic delivered",
                   deliver2)
        assert deliver2.stop() == 0, deliver2.tail()
    finally:
        traffic.finish(tail_s=0)
        for p in (run1, run2):
            if p is not None:
                p.__exit__(None, None, None)
        for d in (deliver1, deliver2):
            if d is not None:
                d.close()
        store.close()

    got = provider.delivered()
    repeated = {k: n for k, n in got.items() if n > 1}
    unexpected = set(got) - expected
    assert not repeated and not unexpected and set(got) == expected, (
        f"{len(repeated)} messages accepted more than once (e.g. {list(repeated.items())[:3]}), "
        f"{len(unexpected)} unexpected, {len(expected - set(got))} missing")
    decisions = [orjson.loads(m.value()) for m in read_all(kafka_bootstrap, topics["delivered"])]
    sent: dict[str, int] = {}
    for d in decisions:
        if d["outcome"] == "sent":
            sent[d["message_id"]] = sent.get(d["message_id"], 0) + 1
    assert all(n == 1 for n in sent.values()), [k for k, n in sent.items() if n > 1][:5]
    assert {d["outcome"] for d in decisions} <= {"sent", "skipped_duplicate"}
    assert read_all(kafka_bootstrap, topics["delivery_dlq"]) == []
    assert held >= 1
    # The killed batch was read again: messages it had sent (written once by espresso run) were skipped.
    once = {i for i in on_topic if records.count(i) == 1}
    reread = {d["message_id"] for d in decisions if d["outcome"] == "skipped_duplicate"} & mixed_ok & once
    assert reread, "no message of the killed batch was skipped on re-reading it"
    print(f"\n{len(expected)} messages; {len(records) - len(on_topic)} written twice by espresso run; "
          f"{held} requests held, {len(mixed_ok)} accepted and {aged} claims aged in the batch deliver was "
          f"killed in; {len(reread)} of those skipped when read again; "
          f"{sum(d['outcome'] == 'skipped_duplicate' for d in decisions)} skipped_duplicate decisions")
