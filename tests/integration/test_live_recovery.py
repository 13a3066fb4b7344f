"""Crashes and restarts: with a recovery directory nothing is lost and nothing invented."""

from __future__ import annotations

import random
import threading
import time

import orjson
import pytest

from tests.integration.live import (SHORT_WINDOW_SEGMENTS, Espresso, by_id, now_ms, produce, producer, read_all,
                                    replay_changes, tick,
                                    write_segments)

pytestmark = pytest.mark.integration

PARTS = 4


class RealTimeTraffic(threading.Thread):
    """Events at `rate`/s with event time = now (unique milliseconds), for `seconds`."""

    def __init__(self, bootstrap: str, topic: str, seconds: float, rate: float = 150, contacts: int = 300) -> None:
        super().__init__(daemon=True)
        self.bootstrap, self.topic, self.seconds, self.rate, self.contacts = bootstrap, topic, seconds, rate, contacts
        self.events: list[dict] = []
        self.rnd = random.Random(3)

    def run(self) -> None:
        p = producer(self.bootstrap)
        end, last = time.monotonic() + self.seconds, 0
        i = 0
        while time.monotonic() < end:
            ts = max(now_ms(), last + 1)
            last = ts
            cid = f"c{self.rnd.randrange(self.contacts):04d}"
            typ = self.rnd.choices(["email_open", "order_placed", "heartbeat"], [70, 10, 20])[0]
            ev = {"event_id": f"e{i}", "contact_id": cid, "type": typ, "ts": ts}
            if typ == "order_placed":
                ev["properties"] = {"order_id": f"o{i}", "value": 1.0, "currency": "EUR", "items": []}
            produce(self.bootstrap, self.topic, [ev], p=p)
            self.events.append(ev)
            i += 1
            time.sleep(1 / self.rate)
        assert p.flush(30) == 0


@pytest.mark.parametrize("bases", [(), ("--compact-share", "0.05", "--compact-min-rows", "2")],
                         ids=["default", "a new base every few epochs"])
def test_sigkill_and_restart_lose_no_change_and_invent_none(kafka_bootstrap, kafka_topic_factory, tmp_path, bases):
    """SIGKILL mid-stream, restart on the same recovery directory while events keep coming,
    then a graceful stop and a third start: the changes on the topic, deduplicated by
    change_id, are exactly replay's; a repeated change_id always carries the same change.
    Shard snapshots carry what changed since a base; the second run writes new bases often."""
    topics = (kafka_topic_factory(PARTS, prefix="events"), kafka_topic_factory(PARTS, prefix="changes"),
              kafka_topic_factory(1, prefix="dlq"))
    seg = write_segments(tmp_path, SHORT_WINDOW_SEGMENTS)
    recovery = tmp_path / "recovery"  # empty: `espresso run` creates the partitions
    args = ("--segments", str(seg), "--allowed-lateness", "1s", "--recovery-dir", str(recovery),
            "--epoch-interval", "500ms", "--shards-per-partition", "3", *bases)
    traffic = RealTimeTraffic(kafka_bootstrap, topics[0], seconds=12)
    first = Espresso(tmp_path, kafka_bootstrap, topics, *args, name="first")
    traffic.start()
    try:
        time.sleep(6)
        assert first.proc.poll() is None, first.tail()
        first.kill()  # SIGKILL: no flush, no snapshot
        assert any(recovery.glob("part-*.sqlite3"))
        time.sleep(2)  # events keep arriving while the flow is down
        second = Espresso(tmp_path, kafka_bootstrap, topics, *args, name="second")
        traffic.join(30)
        time.sleep(2)
        assert second.proc.poll() is None, second.tail()
        assert second.stop() == 0, second.tail()  # graceful: sources end, sinks flush
    finally:
        first.__exit__(None, None, None)
    events = list(traffic.events)
    last = events[-1]["ts"]
    ticks = [tick(p, last + 60_000) for p in range(PARTS)]
    for p, t in enumerate(ticks):
        produce(kafka_bootstrap, topics[0], [t], partition=p)
    with Espresso(tmp_path, kafka_bootstrap, topics, *args, "--stop-at-end", name="third") as third:
        assert third.wait(60) == 0, third.tail()

    live = [orjson.loads(m.value()) for m in read_all(kafka_bootstrap, topics[1])]
    expected = replay_changes(tmp_path, events + ticks, until_ms=last + 30_000, segments=seg)
    got, want = by_id(live), by_id(expected)
    missing = [want[k] for k in want.keys() - got.keys()]
    invented = [got[k] for k in got.keys() - want.keys()]
    assert not missing and not invented, (
        f"{len(missing)} missing, e.g. {sorted(missing, key=lambda r: r['at'])[:3]}; "
        f"{len(invented)} invented, e.g. {sorted(invented, key=lambda r: r['at'])[:3]}")
    assert len(want) > 200
