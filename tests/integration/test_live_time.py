"""Time in the live flow: windows expire with no new input, per partition, on time."""

from __future__ import annotations

import pytest

from tests.integration.live import (SHORT_WINDOW_SEGMENTS, Espresso, S, Tail, now_ms, produce, producer,
                                    write_segments)
from state.timeutil import format_ms, parse_ts
from tests.servers import free_port

pytestmark = pytest.mark.integration


def _topics(kafka_topic_factory, parts: int) -> tuple[str, str, str]:
    return (kafka_topic_factory(parts, prefix="events"), kafka_topic_factory(parts, prefix="changes"),
            kafka_topic_factory(1, prefix="dlq"))


def _open(cid: str, ts: int, n: int = 0) -> dict:
    return {"event_id": f"{cid}-open-{n}", "contact_id": cid, "type": "email_open", "ts": ts}


def test_idle_input_still_produces_time_driven_exits(kafka_bootstrap, kafka_topic_factory, tmp_path):
    """With no input after an open, the exit at open + 3 s is emitted by itself, about
    allowed lateness (1 s) after that instant, and the enter as soon as the open is read."""
    topics = _topics(kafka_topic_factory, 2)
    seg = write_segments(tmp_path, SHORT_WINDOW_SEGMENTS)
    with Espresso(tmp_path, kafka_bootstrap, topics, "--segments", str(seg), "--allowed-lateness", "1s",
                  metrics_port=free_port()) as flow:
        tail = Tail(kafka_bootstrap, topics[1])
        flow.wait_ready()
        p = producer(kafka_bootstrap)  # connected before the clock starts
        produce(kafka_bootstrap, topics[0], [{"event_id": "w", "contact_id": "warm-up", "type": "heartbeat",
                                              "ts": now_ms()}], p=p)
        p.flush(10)
        t = now_ms()
        produce(kafka_bootstrap, topics[0], [_open("c1", t)], p=p)
        p.flush(10)
        enter = tail.wait_for(lambda r: r["direction"] == "enter", 10)
        assert enter is not None, flow.tail()
        exit_ = tail.wait_for(lambda r: r["direction"] == "exit", 10)
        assert exit_ is not None, flow.tail()
        tail.close()
        assert flow.proc.poll() is None, flow.tail()

    assert enter[1]["at"] == format_ms(t)
    assert enter[1]["expires_at"] == format_ms(t + 3 * S)
    assert exit_[1]["at"] == format_ms(t + 3 * S) and exit_[1]["cause"] == {"kind": "time"}
    processed = parse_ts(exit_[1]["processed_at"])
    # Not before the window closes plus the lateness allowance, and not much later.
    assert t + 3 * S + 1 * S <= processed <= t + 3 * S + 1 * S + 1500, (processed - t)
    assert parse_ts(enter[1]["processed_at"]) - t < 1000


def test_a_lagging_partition_does_not_expire_its_contacts_early(kafka_bootstrap, kafka_topic_factory, tmp_path):
    """Partition 1 races 1 h ahead in event time while partition 0 trickles in: partition 0's
    contact is judged by partition 0's own event time, so its order inside the window (not
    a time-driven exit) is what makes it leave, exactly as in event-time order."""
    topics = _topics(kafka_topic_factory, 2)
    seg = write_segments(tmp_path, SHORT_WINDOW_SEGMENTS)
    T = 1_790_000_000_000  # event time far from the wall clock
    produce(kafka_bootstrap, topics[0], [_open("ahead", T)], partition=1)
    produce(kafka_bootstrap, topics[0], [{"event_id": f"x{i}", "contact_id": "ahead", "type": "heartbeat",
                                          "ts": T + i * 60_000} for i in range(1, 61)], partition=1)
    with Espresso(tmp_path, kafka_bootstrap, topics, "--segments", str(seg), "--allowed-lateness", "1s") as flow:
        tail = Tail(kafka_bootstrap, topics[1])
        p = producer(kafka_bootstrap)
        produce(kafka_bootstrap, topics[0], [_open("slow", T)], partition=0, p=p)
        # Partition 0's event time advances 100 ms per 300 ms of wall time (lagging behind),
        # then the order comes at T + 2.5 s, inside the 3 s window.
        for i in range(1, 25):
            tail.poll(0.3)
            produce(kafka_bootstrap, topics[0], [{"event_id": f"s{i}", "contact_id": "other", "type": "heartbeat",
                                                  "ts": T + i * 100}], partition=0, p=p)
            p.flush(5)
        produce(kafka_bootstrap, topics[0], [{"event_id": "order", "contact_id": "slow", "type": "order_placed",
                                              "ts": T + 2500, "properties": {"order_id": "o1", "value": 1.0,
                                                                             "currency": "EUR", "items": []}}],
                partition=0, p=p)
        p.flush(5)
        assert tail.wait_for(lambda r: r["contact_id"] == "slow" and r["direction"] == "exit", 10), flow.tail()
        tail.poll(1.0)
        tail.close()

    slow = [(r["direction"], r["at"], r["cause"].get("type")) for _, r in tail.records if r["contact_id"] == "slow"]
    assert slow == [("enter", format_ms(T), "email_open"), ("exit", format_ms(T + 2500), "order_placed")]
    ahead = [(r["direction"], r["at"], r["cause"]["kind"]) for _, r in tail.records if r["contact_id"] == "ahead"]
    assert ahead == [("enter", format_ms(T), "event"), ("exit", format_ms(T + 3000), "time")]
