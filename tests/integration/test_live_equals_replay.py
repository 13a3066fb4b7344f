"""Differential tests: `espresso run` on the real test broker writes the changes `espresso replay`
writes for the same events (SPEC "Live = replay"), on adversarial streams (tests/integration/
adversarial.py): same-millisecond groups split by small poll batches, exact 72 h window edges,
consent flips inside one millisecond, redeliveries, invalid lines, events stamped 20 years ahead;
at 10,000 contacts; through SIGKILLs and restarts; and with the built-in campaigns and their
sequences (tests/integration/test_live_campaigns.py has them through SIGKILLs too).

Live and replay are compared twice: as sets of (contact_id, segment_id, direction, at), and
record by record by change_id after deduplication (`by_id`: a repeated id must carry the
identical record).
"""

from __future__ import annotations

import random
import time

import orjson
import pytest
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st

from tests.integration.adversarial import (CAMPAIGN_T0, D, T0, Case, adversarial_cases, adversarial_stream,
                                           future_events, invalid_lines, last_ts, without_future)
from tests.integration.live import (Espresso, SteadyProducer, builtin_campaigns_allowing_stale, by_id,
                                    campaign_outputs, compare_campaigns, produce, read_all, replay_outputs,
                                    run_to_end, sequence_coverage, tick)

pytestmark = pytest.mark.integration


# -- helpers ---------------------------------------------------------------------------------
def _topics(factory, parts: int) -> tuple[str, str, str]:
    return factory(parts, prefix="events"), factory(parts, prefix="changes"), factory(1, prefix="dlq")


def _ticks(bootstrap: str, topic: str, parts: int, ts: int) -> list[dict]:
    """One event of a type no segment uses per partition at `ts`: every partition's time passes
    every window of the stream, so the live output is complete once they are read."""
    ticks = [tick(p, ts) for p in range(parts)]
    for p, t in enumerate(ticks):
        produce(bootstrap, topic, [t], partition=p)
    return ticks


def _tuples(records) -> set[tuple]:
    return {(r["contact_id"], r["segment_id"], r["direction"], r["at"]) for r in records}


def _compare(name: str, got: list[dict], want: list[dict], want_name: str = "replay") -> list[str]:
    """Problems (empty: equal) between two change streams, with the first differing tuples."""
    problems = []
    g, w = _tuples(got), _tuples(want)
    if g != w:
        problems.append(f"{name} vs {want_name}: (contact, segment, direction, at) differ: "
                        f"{len(g - w)} only in {name}, e.g. {sorted(g - w, key=lambda t: (t[0], t[3]))[:6]}; "
                        f"{len(w - g)} only in {want_name}, e.g. {sorted(w - g, key=lambda t: (t[0], t[3]))[:6]}")
    gi, wi = by_id(got), by_id(want)
    if gi != wi:
        extra = sorted((gi[k] for k in gi.keys() - wi.keys()), key=lambda r: (r["contact_id"], r["at"]))
        missing = sorted((wi[k] for k in wi.keys() - gi.keys()), key=lambda r: (r["contact_id"], r["at"]))
        changed = sorted(k for k in gi.keys() & wi.keys() if gi[k] != wi[k])
        problems.append(f"{name} vs {want_name} by change_id: {len(extra)} extra, e.g. {extra[:3]}; "
                        f"{len(missing)} missing, e.g. {missing[:3]}; {len(changed)} with other fields, "
                        f"e.g. {[(gi[k], wi[k]) for k in changed[:2]]}")
    return problems


def _live_records(bootstrap: str, topic: str) -> list[dict]:
    return [orjson.loads(m.value()) for m in read_all(bootstrap, topic)]


# -- a. Hypothesis: adversarial streams, small batches, 1..4 partitions -----------------------
@settings(max_examples=5, deadline=None, derandomize=True, database=None, report_multiple_bugs=False,
          phases=[Phase.explicit, Phase.generate],  # no shrinking: each example is a live run
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.data_too_large])
@example(case=Case(seed=7, contacts=6, events=60, future=2), batch=1, parts=3)
@example(case=Case(seed=9, contacts=12, events=100, future=0), batch=2, parts=1)
@given(case=adversarial_cases(max_contacts=12), batch=st.integers(1, 50),
       parts=st.integers(1, 4))
def test_adversarial_stream_live_equals_replay(kafka_bootstrap, kafka_topic_factory, tmp_path, case, batch, parts):
    """Whatever the batch boundaries (down to one message per poll) and partitions: the same changes
    as replay; invalid and future-stamped lines are the same dead letters, and the future-stamped
    ones change nothing."""
    stream = case.stream
    topics = _topics(kafka_topic_factory, parts)
    produce(kafka_bootstrap, topics[0], stream)
    end = last_ts(stream) + 10 * D
    ticks = _ticks(kafka_bootstrap, topics[0], parts, end)
    run_to_end(tmp_path, kafka_bootstrap, topics, "--batch-size", str(batch), "--shards-per-partition", "3")

    live = _live_records(kafka_bootstrap, topics[1])
    dlq = read_all(kafka_bootstrap, topics[2])
    # Until the ticks' instant (not `last + 5 d`): a tick further ahead than --until would itself
    # be a `future_ts` dead letter of replay. Every window has closed 72 h + 1 ms after the last event.
    want = replay_outputs(tmp_path, stream + ticks, until_ms=end)
    problems = _compare("live", live, want["changes"])
    future = future_events(stream)
    if future:
        base = replay_outputs(tmp_path, without_future(stream) + ticks, until_ms=end)["changes"]
        problems += _compare("live", live, base, "replay without the future-stamped events")
        problems += _compare("replay", want["changes"], base, "replay without the future-stamped events")

    # Dead letters: the invalid lines and the future-stamped events, nothing else, on both sides.
    future_values = sorted(orjson.dumps(e) for e in future)
    live_future = sorted(m.value() for m in dlq if dict(m.headers() or []).get("espresso-reason") == b"future_ts")
    if live_future != future_values:
        problems.append(f"live DLQ future_ts: {live_future[:3]} != {future_values[:3]} "
                        f"(reasons on the DLQ: {sorted({dict(m.headers() or []).get('espresso-reason') for m in dlq})})")
    replay_future = sorted(d["raw"].encode() for d in want["dead"] if d["reason"] == "future_ts")
    if replay_future != future_values:
        problems.append(f"replay dead letters future_ts: {replay_future[:3]} != {future_values[:3]} "
                        f"(reasons: {sorted({d['reason'] for d in want['dead']})})")
    live_dead = sorted((m.value().decode("utf-8", "replace"), dict(m.headers() or []).get("espresso-reason", b"")
                        .decode()) for m in dlq)
    replay_dead = sorted((d["raw"], d["reason"]) for d in want["dead"])
    if live_dead != replay_dead:
        problems.append(f"dead letters differ: live only {sorted(set(live_dead) - set(replay_dead))[:3]}, "
                        f"replay only {sorted(set(replay_dead) - set(live_dead))[:3]}")
    if sorted(v for v, _ in live_dead) != sorted(
            [x.decode("utf-8", "replace") for x in invalid_lines(stream)] + [v.decode() for v in future_values]):
        problems.append(f"live DLQ holds {len(live_dead)} lines, expected the {len(invalid_lines(stream))} invalid "
                        f"and {len(future)} future-stamped ones")
    assert not problems, f"{case} batch={batch} parts={parts}:\n" + "\n".join(problems)


# -- b. 10,000 contacts ------------------------------------------------------------------------
@pytest.mark.slow
def test_ten_thousand_contacts_live_equals_replay(kafka_bootstrap, kafka_topic_factory, tmp_path):
    """10,000 contacts, 40,000 adversarial lines, 4 partitions, default batch size."""
    parts = 4
    stream = adversarial_stream(2026, contacts=10_000, events=40_000, t0=T0, span_ms=9 * D)
    topics = _topics(kafka_topic_factory, parts)
    produce(kafka_bootstrap, topics[0], stream)
    end = last_ts(stream) + 10 * D
    ticks = _ticks(kafka_bootstrap, topics[0], parts, end)
    run_to_end(tmp_path, kafka_bootstrap, topics)

    live = _live_records(kafka_bootstrap, topics[1])
    want = replay_outputs(tmp_path, stream + ticks, until_ms=end)
    assert len({r["contact_id"] for r in stream if isinstance(r, dict)}) == 10_000
    assert len({r["contact_id"] for r in want["changes"]}) > 3000
    problems = _compare("live", live, want["changes"])
    if len(live) != len(want["changes"]):
        problems.append(f"a clean run writes each change once: {len(live)} live records, "
                        f"{len(want['changes'])} in replay")
    assert not problems, "\n".join(problems)


# -- c. SIGKILL and restart while events stream in ------------------------------------------
def test_sigkill_restarts_while_streaming_live_equals_replay(kafka_bootstrap, kafka_topic_factory, tmp_path):
    """`espresso run --recovery-dir` SIGKILLed 4 times at random-ish moments while ~2,500 events/s
    arrive, restarted each time, then drained with --stop-at-end: deduplicated by change_id, the
    changes are exactly replay's (repeats carry identical records)."""
    parts = 4
    stream = adversarial_stream(31, contacts=2000, events=28_000, t0=T0, span_ms=8 * D)
    topics = _topics(kafka_topic_factory, parts)
    recovery = tmp_path / "recovery"
    # Small polls too: a restart re-reads a backlog, whose batches split milliseconds anywhere.
    args = ("--recovery-dir", str(recovery), "--epoch-interval", "1s", "--batch-size", "300")
    rnd = random.Random(4)
    traffic = SteadyProducer(kafka_bootstrap, topics[0], stream, rate=2500)
    runs = [Espresso(tmp_path, kafka_bootstrap, topics, *args, name="k0")]
    traffic.start()
    killed_at = []
    try:
        for k in range(4):
            time.sleep(rnd.uniform(2.0, 3.5) if k else rnd.uniform(2.5, 3.5))
            assert runs[-1].proc.poll() is None, f"espresso run exited before its SIGKILL:\n{runs[-1].tail()}"
            runs[-1].kill()
            killed_at.append(traffic.sent)
            if k < 3:
                time.sleep(rnd.uniform(0.0, 0.8))  # events keep arriving while the flow is down
                runs.append(Espresso(tmp_path, kafka_bootstrap, topics, *args, name=f"k{k + 1}"))
        assert any(recovery.glob("part-*.sqlite3")), "no recovery partitions were created"
        traffic.join(60)
        assert not traffic.is_alive() and traffic.error is None, traffic.error
        assert 0 < killed_at[0] < len(stream), f"the first SIGKILL came after all events were produced: {killed_at}"
        end = last_ts(stream) + 10 * D
        ticks = _ticks(kafka_bootstrap, topics[0], parts, end)
        runs.append(Espresso(tmp_path, kafka_bootstrap, topics, *args, "--stop-at-end", name="drain"))
        rc = runs[-1].wait(90)
        assert rc == 0, f"the draining run exited with {rc}:\n{runs[-1].tail()}"
    finally:
        for r in runs:
            r.__exit__(None, None, None)

    live = _live_records(kafka_bootstrap, topics[1])
    want = replay_outputs(tmp_path, stream + ticks, until_ms=end)["changes"]
    assert len(want) > 2000
    problems = _compare("live (killed at lines " + ", ".join(map(str, killed_at)) + ")", live, want)
    assert not problems, "\n".join(problems)


# -- d. campaigns ----------------------------------------------------------------------------
@pytest.mark.parametrize(("parts", "batch"), [(2, 7), (3, 1)])
def test_campaigns_live_equals_replay(kafka_bootstrap, kafka_topic_factory, tmp_path, parts, batch):
    """With the built-in campaigns (`builtin`: the espresso campaigns and the shop automations)
    on adversarial streams with sequences (checkouts paid at their steps' instants, birthdays
    and zone changes, unsubscribes between steps): the same changes, the same messages
    (message_id -> whole record but for processing-time fields) and the same decisions as
    replay, polls of 7 or 1 events. Steps of every kind happen on both sides: sequence steps,
    exits (some at a step's instant), birthdays, win-backs 90 days after an order."""
    stream = adversarial_stream(5 + parts, contacts=120, events=2400, t0=CAMPAIGN_T0, span_ms=8 * D, profiles=True,
                                checkouts=True, sequences=True)
    events_t, changes_t, dlq_t = _topics(kafka_topic_factory, parts)
    msg_t, dec_t = kafka_topic_factory(parts, prefix="messages"), kafka_topic_factory(parts, prefix="decisions")
    conv_t = kafka_topic_factory(parts, prefix="conversions")
    # The built-in shop file has catalog triggers: the flow reads an (empty) catalogue topic, so
    # every contact event goes through the event-time alignment with it (state/align.py).
    cat_t = kafka_topic_factory(1, prefix="catalog")
    produce(kafka_bootstrap, events_t, stream)
    # Post-purchase lasts 21 d, win-back starts 90 d after an order and lasts 14 d; deferrals
    # wait up to 3 d. The ticks stay behind the wall clock (CAMPAIGN_T0 is in March 2026).
    end = last_ts(stream) + 110 * D
    ticks = _ticks(kafka_bootstrap, events_t, parts, end)
    camps = builtin_campaigns_allowing_stale(tmp_path)
    run_to_end(tmp_path, kafka_bootstrap, (events_t, changes_t, dlq_t), "--campaigns", str(camps),
               "--messages-topic", msg_t, "--decisions-topic", dec_t, "--conversions-topic", conv_t,
               "--catalog-topic", cat_t, "--batch-size", str(batch))

    want = replay_outputs(tmp_path, stream + ticks, until_ms=end, campaigns=camps)
    problems = _compare("live", _live_records(kafka_bootstrap, changes_t), want["changes"])
    live_msgs, live_decs = campaign_outputs(kafka_bootstrap, msg_t, dec_t)
    problems += compare_campaigns(live_msgs, live_decs, want["messages"], want["decisions"], clean=True)
    if not all(m.get("stale") for m in live_msgs):
        problems.append("live messages of changes weeks old are not all marked stale")
    for side, (msgs, decs) in {"live": (live_msgs, live_decs), "replay": (want["messages"], want["decisions"])}.items():
        seen = sequence_coverage(msgs, decs, stream)
        if not all(seen.values()):
            problems.append(f"{side} does not exercise the sequences: {seen}")
    assert not problems, f"parts={parts} batch={batch}:\n" + "\n".join(problems)
