"""A broker that stops answering mid-stream does not stop `espresso run` and loses nothing."""

from __future__ import annotations

import os
import signal
import time

import pytest

from tests import servers
from tests.integration.live import (
    SHORT_WINDOW_SEGMENTS,
    D,
    Espresso,
    Tail,
    by_id,
    now_ms,
    produce,
    replay_changes,
    shop_events,
    tick,
    write_segments,
)

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(bool(os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "").strip()),
                                 reason="freezes a broker process of its own")]

T0 = 1_790_000_000_000
SPAN = 4 * D
PARTS = 2


@pytest.fixture
def own_broker(tmp_path):
    """A broker of this test alone (it gets frozen) and its events, changes and dlq topics."""
    (tmp_path / "kafka").mkdir()
    broker = servers.KafkaBroker(tmp_path / "kafka").start()
    try:
        b = broker.bootstrap
        yield broker, (servers.create_topic(b, partitions=PARTS, prefix="events"),
                       servers.create_topic(b, partitions=PARTS, prefix="changes"),
                       servers.create_topic(b, prefix="dlq"))
    finally:
        broker.stop()


def test_broker_stall_mid_stream_loses_no_change(own_broker, tmp_path):
    """The broker is frozen (SIGSTOP) for 6 s while the flow runs: the flow stays live, and
    once the broker answers again every change of the whole stream reaches segment-changes,
    exactly the changes `espresso replay` gives, none invented, none written twice."""
    broker, topics = own_broker
    bootstrap = broker.bootstrap
    events = shop_events(150, 1500, seed=23, t0=T0, span_ms=SPAN)
    first, second = events[:700], events[700:]
    port = servers.free_port()
    tail = Tail(bootstrap, topics[1])
    with Espresso(tmp_path, bootstrap, topics, metrics_port=port) as run:
        run.wait_ready()
        produce(bootstrap, topics[0], first)
        assert tail.wait_for(lambda r: True, 30) is not None, f"no change before the stall:\n{run.tail()}"

        pid = broker.process.pid
        os.kill(pid, signal.SIGSTOP)
        try:
            stall_end = time.monotonic() + 6
            while time.monotonic() < stall_end:
                assert run.proc.poll() is None, f"espresso run exited while the broker stalled:\n{run.tail()}"
                assert run.probe("/livez")[0] == 200, "the flow stopped being live while the broker stalled"
                time.sleep(0.5)
        finally:
            os.kill(pid, signal.SIGCONT)

        ticks = [tick(p, T0 + SPAN + 10 * D) for p in range(PARTS)]
        produce(bootstrap, topics[0], second)
        for p, t in enumerate(ticks):
            produce(bootstrap, topics[0], [t], partition=p)

        expected = by_id(replay_changes(tmp_path, events + ticks, until_ms=T0 + SPAN + 5 * D))
        assert len(expected) > 200
        deadline = time.monotonic() + 60
        while len(by_id(r for _, r in tail.records)) < len(expected) and time.monotonic() < deadline:
            tail.poll(0.5)
        tail.poll(1.0)  # anything extra would show now
        assert run.proc.poll() is None, run.tail()
    tail.close()
    assert by_id(r for _, r in tail.records) == expected
    assert len(tail.records) == len(expected), "retries after the stall wrote no change twice (idempotent producer)"


def test_changes_kafka_gave_up_on_stop_the_flow_and_a_restart_writes_them(own_broker, tmp_path):
    """The broker stalls longer than the producer's message.timeout.ms while time-driven exits
    are due: `espresso run` does not go on without them. It stops with exit code 1 and a
    one-line reason, and the restart (same recovery directory) writes them: the output is
    then exactly `espresso replay`'s changes (a repeated change carries the same change_id)."""
    broker, topics = own_broker
    bootstrap = broker.bootstrap
    segments = write_segments(tmp_path, SHORT_WINDOW_SEGMENTS)  # 3 s windows: exits come by themselves
    args = ["--segments", str(segments), "--allowed-lateness", "1s", "--recovery-dir", str(tmp_path / "rec"),
            "--epoch-interval", "1s"]
    env = {"KAFKA_PRODUCER_SETTINGS": "message.timeout.ms=1500"}
    t = now_ms()
    events = [{"event_id": f"o{i}", "contact_id": f"c{i:03d}", "type": "email_open", "ts": t + i}
              for i in range(60)]
    tail = Tail(bootstrap, topics[1])
    with Espresso(tmp_path, bootstrap, topics, *args, metrics_port=servers.free_port(), env=env,
                  name="first") as run:
        run.wait_ready()
        produce(bootstrap, topics[0], events)
        assert tail.wait_for(lambda r: r["direction"] == "enter", 30), run.tail()
        pid = broker.process.pid
        os.kill(pid, signal.SIGSTOP)  # the exits fall due ~4 s after the events, during the stall
        try:
            rc = run.wait(20)
        finally:
            os.kill(pid, signal.SIGCONT)
        assert rc == 1, run.tail()
        assert "not written to Kafka" in run.tail(5), run.tail()

    with Espresso(tmp_path, bootstrap, topics, *args, metrics_port=servers.free_port(), name="restart") as run:
        run.wait_ready()
        expected = by_id(replay_changes(tmp_path, events, until_ms=t + 60 * 1000, segments=segments))
        assert {r["direction"] for r in expected.values()} == {"enter", "exit"} and len(expected) == 120
        deadline = time.monotonic() + 30
        while len(by_id(r for _, r in tail.records)) < len(expected) and time.monotonic() < deadline:
            tail.poll(0.5)
        tail.poll(1.0)
    tail.close()
    assert by_id(r for _, r in tail.records) == expected
