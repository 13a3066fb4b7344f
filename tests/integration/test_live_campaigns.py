"""Campaigns in the live flow: the messages and decisions on Kafka are those a replay reproduces,
in a clean run and through SIGKILLs and restarts with runs of steps open across them.

The streams (`shop_events(..., sequences=True)`) hold what the built-in shop automations react
to (tests/integration/adversarial.py `Sequences`); `--until` is 110 days after the last event,
so that every step comes due: post-purchase (+ 21 d), welcome (+ 5 d), win-back (90 d without
an order, then + 14 d), birthdays at 09:00 local.
"""

from __future__ import annotations

import random
import time

import orjson
import pytest

from state.timeutil import parse_ts
from tests.integration.adversarial import CAMPAIGN_T0
from tests.integration.live import (D, Espresso, SteadyProducer, Tail, builtin_campaigns_allowing_stale, by_id,
                                    campaign_outputs, compare_campaigns, produce, read_all, replay_outputs,
                                    run_to_end, sequence_coverage, shop_events, tick)

pytestmark = pytest.mark.integration

T0 = CAMPAIGN_T0  # March 2026: T0 + 110 days and more is still behind the wall clock
SPAN = 6 * D
PARTS = 2
UNTIL = 110 * D  # after the last event: every run has ended


def _topics(factory) -> dict[str, str]:
    return {"events": factory(PARTS, prefix="events"), "changes": factory(PARTS, prefix="changes"),
            "dlq": factory(1, prefix="dlq"), "messages": factory(PARTS, prefix="messages"),
            "decisions": factory(1, prefix="decisions"), "conversions": factory(1, prefix="conversions"),
            # the built-in shop file has catalog triggers: an (empty) catalogue topic, so contact
            # events go through the event-time alignment with it (state/align.py)
            "catalog": factory(1, prefix="catalog")}


def _ticks(bootstrap: str, topic: str, ts: int) -> list[dict]:
    ticks = [tick(p, ts) for p in range(PARTS)]
    for p, t in enumerate(ticks):
        produce(bootstrap, topic, [t], partition=p)
    return ticks


def _check(live: tuple[list[dict], list[dict]], want: dict, events: list, clean: bool) -> list[str]:
    problems = compare_campaigns(*live, want["messages"], want["decisions"], clean=clean)
    # `stale` is processing time: live knows these changes are weeks old, replay does not judge.
    if not all(m.get("stale") for m in live[0]):
        problems.append("live messages of changes weeks old are not all marked stale")
    for side, (msgs, decs) in {"live": live, "replay": (want["messages"], want["decisions"])}.items():
        seen = sequence_coverage(msgs, decs, events)
        if not all(seen.values()):
            problems.append(f"{side} does not exercise the sequences: {seen}")
    return problems


def test_live_messages_and_decisions_equal_replay(kafka_bootstrap, kafka_topic_factory, tmp_path):
    """With `builtin` campaigns, every message and decision replay reproduces is on its topic,
    keyed by contact, record for record, each once; nothing else is; the same segment changes."""
    topics = _topics(kafka_topic_factory)
    events = shop_events(200, 3000, seed=5, t0=T0, span_ms=SPAN, sequences=True)
    produce(kafka_bootstrap, topics["events"], events)
    end = max(parse_ts(e["ts"]) for e in events) + UNTIL
    ticks = _ticks(kafka_bootstrap, topics["events"], end)
    camps = builtin_campaigns_allowing_stale(tmp_path)
    run_to_end(tmp_path, kafka_bootstrap, (topics["events"], topics["changes"], topics["dlq"]), "--campaigns",
               str(camps), "--messages-topic", topics["messages"], "--decisions-topic", topics["decisions"],
               "--conversions-topic", topics["conversions"], "--catalog-topic", topics["catalog"],
               "--allowed-lateness", "0s")

    want = replay_outputs(tmp_path, events + ticks, until_ms=end, campaigns=camps)
    live = campaign_outputs(kafka_bootstrap, topics["messages"], topics["decisions"])
    assert len(want["messages"]) > 200 and len(want["decisions"]) > 200
    problems = _check(live, want, events, clean=True)
    live_changes = [orjson.loads(m.value()) for m in read_all(kafka_bootstrap, topics["changes"])]
    if by_id(live_changes) != by_id(want["changes"]):
        problems.append(f"segment changes differ: {len(by_id(live_changes))} live, {len(by_id(want['changes']))} replay")
    assert not problems, "\n".join(problems)


def _cuts(events: list[dict], *shares: float) -> list[int]:
    """Indices near `shares` of `events` where a part may start: every earlier event is earlier
    in time (a part never splits a millisecond)."""
    out = []
    for share in shares:
        i = int(len(events) * share)
        while parse_ts(events[i]["ts"]) <= parse_ts(events[i - 1]["ts"]):
            i += 1
        out.append(i)
    return out


def test_campaign_runs_across_sigkill_restarts_equal_replay(kafka_bootstrap, kafka_topic_factory, tmp_path):
    """`espresso run --campaigns --recovery-dir` SIGKILLed twice while events stream in and once
    while the final tick makes months of steps due, each time soon after it wrote new
    messages, restarted each time, then drained with --stop-at-end: deduplicated, the
    messages and decisions are exactly replay's (a repeat carries the identical record), and
    runs whose first steps went out before a SIGKILL send their later steps after it."""
    topics = _topics(kafka_topic_factory)
    run_topics = (topics["events"], topics["changes"], topics["dlq"])
    events = shop_events(200, 3000, seed=13, t0=T0, span_ms=SPAN, sequences=True)
    cut1, cut2 = _cuts(events, 0.35, 0.7)
    camps = builtin_campaigns_allowing_stale(tmp_path)
    recovery = tmp_path / "recovery"
    args = ("--campaigns", str(camps), "--messages-topic", topics["messages"], "--decisions-topic",
            topics["decisions"], "--conversions-topic", topics["conversions"], "--recovery-dir", str(recovery),
            "--catalog-topic", topics["catalog"],
            "--epoch-interval", "500ms",
            "--allowed-lateness", "1s", "--batch-size", "50", "--shards-per-partition", "3")
    rnd = random.Random(8)
    tail = Tail(kafka_bootstrap, topics["messages"])
    runs: list[Espresso] = []
    out_before: list[list[dict]] = []  # the messages out before each SIGKILL

    def kill_after_new_messages(traffic: SteadyProducer | None = None) -> None:
        """Once the running flow wrote 5 messages not out before (and `traffic` started), SIGKILL it."""
        known = {m["message_id"] for m in out_before[-1]} if out_before else set()
        fresh: set[str] = set()

        def five_new(rec: dict) -> bool:
            if rec["message_id"] not in known:
                fresh.add(rec["message_id"])
            return len(fresh) >= 5

        got = tail.wait_for(five_new, 60)
        assert got is not None, f"no new message from {runs[-1].log_path.name}:\n{runs[-1].tail()}"
        if traffic is not None:
            traffic.start()
        time.sleep(rnd.uniform(0.1, 0.8))
        assert runs[-1].proc.poll() is None, f"espresso run exited before its SIGKILL:\n{runs[-1].tail()}"
        runs[-1].kill()
        out_before.append(campaign_outputs(kafka_bootstrap, topics["messages"], topics["decisions"])[0])

    try:
        produce(kafka_bootstrap, topics["events"], events[:cut1])
        for k, part in enumerate((events[cut1:cut2], events[cut2:])):
            runs.append(Espresso(tmp_path, kafka_bootstrap, run_topics, *args, name=f"k{k}"))
            traffic = SteadyProducer(kafka_bootstrap, topics["events"], part, rate=1000, chunk=100)
            kill_after_new_messages(traffic)  # while the next part streams in
            traffic.join(60)
            assert not traffic.is_alive() and traffic.error is None, traffic.error
        runs.append(Espresso(tmp_path, kafka_bootstrap, run_topics, *args, name="k2"))
        end = max(parse_ts(e["ts"]) for e in events) + UNTIL
        ticks = _ticks(kafka_bootstrap, topics["events"], end)
        kill_after_new_messages()  # in the middle of the steps the tick makes due, if not after
        assert any(recovery.glob("part-*.sqlite3")), "no recovery partitions were created"
        runs.append(Espresso(tmp_path, kafka_bootstrap, run_topics, *args, "--stop-at-end", name="drain"))
        rc = runs[-1].wait(90)
        assert rc == 0, f"the draining run exited with {rc}:\n{runs[-1].tail()}"
    finally:
        tail.close()
        for r in runs:
            r.__exit__(None, None, None)

    want = replay_outputs(tmp_path, events + ticks, until_ms=end, campaigns=camps)
    live = campaign_outputs(kafka_bootstrap, topics["messages"], topics["decisions"])
    problems = _check(live, want, events, clean=False)
    live_changes = [orjson.loads(m.value()) for m in read_all(kafka_bootstrap, topics["changes"])]
    if by_id(live_changes) != by_id(want["changes"]):
        problems.append(f"segment changes differ: {len(by_id(live_changes))} live, {len(by_id(want['changes']))} replay")
    # Runs open across the SIGKILLs while events stream in: a step out before, another only after.
    for k, before in enumerate(out_before[:2]):
        sent = {(m["run_id"], m["step_id"]) for m in before}
        runs_before = {rid for rid, step in sent if step is not None}
        across = {m["run_id"] for m in live[0] if m["run_id"] in runs_before and (m["run_id"], m["step_id"]) not in sent}
        if not across:
            problems.append(f"SIGKILL {k}: no run with a step sent before it and one after it "
                            f"({len(runs_before)} runs had steps out before it)")
    assert not problems, "\n".join(problems)


CONVERSION_CAMPAIGNS = """
caps: {email: null, sms: null, push: null, all: null}
campaigns:
  - id: browse
    trigger: {event: product_viewed}
    run_key: product_id
    reentry: every_time
    channel: email
    holdout: 20%
    allow_stale: true
    variants: [{name: A, weight: 1}, {name: B, weight: 1}]
    template: {subject: "for {{ contact.id }}", body: b}
  - id: thanks
    trigger: {event: order_placed}
    reentry: every_time
    channel: email
    allow_stale: true
    template: {subject: thanks, body: b}
"""


def test_live_conversions_equal_replay(kafka_bootstrap, kafka_topic_factory, tmp_path):
    """Clicks of released messages and orders fed back: the conversions on the topic (last touch,
    intent to treat and holdout) are those replay writes, record for record, each once."""
    topics = _topics(kafka_topic_factory)
    camps = tmp_path / "conversion-campaigns.yaml"
    camps.write_text(CONVERSION_CAMPAIGNS)
    events = shop_events(150, 2000, seed=11, t0=T0, span_ms=SPAN, sequences=True)
    last = max(parse_ts(e["ts"]) for e in events)
    first = replay_outputs(tmp_path, events, until_ms=last + 10 * D, campaigns=camps)
    rnd = random.Random(3)
    iso = lambda ms: time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms // 1000)) + f".{ms % 1000:03d}Z"  # noqa: E731
    extra: list[dict] = []
    for m in first["messages"]:
        if m["campaign_id"] != "browse" or rnd.random() < 0.4:
            continue
        click = parse_ts(m["due_at"]) + rnd.randint(60_000, 2 * D)
        extra.append({"event_id": f"click-{m['message_id']}", "contact_id": m["contact_id"], "type": "email_click",
                      "ts": iso(click), "properties": {"message_id": m["message_id"]}})
        if rnd.random() < 0.6:
            extra.append({"event_id": f"order-{m['message_id']}", "contact_id": m["contact_id"], "type": "order_placed",
                          "ts": iso(click + rnd.randint(0, 3 * D)),
                          "properties": {"order_id": f"o-{m['message_id'][:8]}", "value": 20, "currency": "EUR"}})
    for d in first["decisions"]:
        if d["outcome"] == "held_out" and rnd.random() < 0.7:
            extra.append({"event_id": f"order-{d['message_id']}", "contact_id": d["contact_id"], "type": "order_placed",
                          "ts": iso(parse_ts(d["at"]) + rnd.randint(60_000, 4 * D)),
                          "properties": {"order_id": f"h-{d['message_id'][:8]}", "value": 20, "currency": "EUR"}})
    stream = sorted(events + extra, key=lambda e: parse_ts(e["ts"]))  # stable: each contact's order kept
    produce(kafka_bootstrap, topics["events"], stream)
    end = max(parse_ts(e["ts"]) for e in stream) + 10 * D
    ticks = _ticks(kafka_bootstrap, topics["events"], end)
    run_to_end(tmp_path, kafka_bootstrap, (topics["events"], topics["changes"], topics["dlq"]), "--campaigns",
               str(camps), "--messages-topic", topics["messages"], "--decisions-topic", topics["decisions"],
               "--conversions-topic", topics["conversions"], "--allowed-lateness", "0s", "--batch-size", "37")
    want = replay_outputs(tmp_path, stream + ticks, until_ms=end, campaigns=camps)["conversions"]
    live = [orjson.loads(m.value()) for m in read_all(kafka_bootstrap, topics["conversions"])]
    groups = {g: sum(1 for c in want if c["group"] == g) for g in ("message", "sent", "holdout")}
    assert all(n > 10 for n in groups.values()), groups
    assert len(live) == len({c["conversion_id"] for c in live}), "a conversion written twice"
    assert {c["conversion_id"]: c for c in live} == {c["conversion_id"]: c for c in want}
