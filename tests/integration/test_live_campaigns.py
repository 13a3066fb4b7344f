"""Campaigns in the live flow: the messages and decisions on Kafka are those a replay reproduces."""

from __future__ import annotations


import orjson
import pytest

from tests.integration.live import D, builtin_campaigns_allowing_stale, produce, read_all, run_to_end, shop_events, tick

pytestmark = pytest.mark.integration

T0 = 1_790_000_000_000
SPAN = 6 * D
PARTS = 2


def test_live_messages_and_decisions_equal_replay(kafka_bootstrap, kafka_topic_factory, tmp_path):
    """With --campaigns, every message and decision replay reproduces is on its topic, keyed by contact."""
    events_t, changes_t = kafka_topic_factory(PARTS, prefix="events"), kafka_topic_factory(PARTS, prefix="changes")
    dlq_t, msg_t, dec_t = (kafka_topic_factory(1, prefix=p) for p in ("dlq", "messages", "decisions"))
    events = shop_events(200, 3000, seed=5, t0=T0, span_ms=SPAN)
    contacts = sorted({e["contact_id"] for e in events})
    events = [{"event_id": f"p-{c}", "contact_id": c, "type": "profile_updated", "ts": T0 - 1000,
               "properties": {"first_name": c.title(), "email": f"{c}@example.com", "phone": "+33600000000",
                              "timezone": "Europe/Paris"}} for c in contacts] + events
    produce(kafka_bootstrap, events_t, events)
    ticks = [tick(p, T0 + SPAN + 20 * D) for p in range(PARTS)]
    for p, t in enumerate(ticks):
        produce(kafka_bootstrap, events_t, [t], partition=p)
    camps = builtin_campaigns_allowing_stale(tmp_path)
    run_to_end(tmp_path, kafka_bootstrap, (events_t, changes_t, dlq_t), "--campaigns", str(camps),
               "--messages-topic", msg_t, "--decisions-topic", dec_t, "--allowed-lateness", "0s")

    from flows.replay import replay

    src = tmp_path / "replay.jsonl"
    src.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in events + ticks))
    out = tmp_path / "replay.changes.jsonl"
    res = replay(src, T0 + SPAN + 19 * D, out, progress=False, campaigns=camps)
    read = lambda p: [orjson.loads(x) for x in p.read_bytes().splitlines()]  # noqa: E731
    want_msgs = read(tmp_path / "replay.changes.messages.jsonl")
    want_decs = read(tmp_path / "replay.changes.decisions.jsonl")
    assert res.messages > 20 and res.decisions > 20

    msgs = read_all(kafka_bootstrap, msg_t)
    decs = read_all(kafka_bootstrap, dec_t)
    live_msgs = [orjson.loads(m.value()) for m in msgs]
    assert all(m.key().decode() == orjson.loads(m.value())["contact_id"] for m in msgs)
    assert sorted(m["message_id"] for m in live_msgs) == sorted(m["message_id"] for m in want_msgs)
    # `stale` is processing time: live knows these changes are weeks old, replay does not judge.
    assert all(m.get("stale") for m in live_msgs)
    drop = lambda m: {k: v for k, v in m.items() if k != "stale"}  # noqa: E731
    assert {m["message_id"]: drop(m) for m in live_msgs} == {m["message_id"]: drop(m) for m in want_msgs}
    key = lambda d: (d["message_id"], d["outcome"], d["reason"], d["at"])  # noqa: E731
    assert sorted(key(orjson.loads(d.value())) for d in decs) == sorted(key(d) for d in want_decs)
