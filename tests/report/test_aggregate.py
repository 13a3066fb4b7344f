"""The aggregation on generated campaigns with a known true effect, and on awkward input."""

from __future__ import annotations

from decimal import Decimal

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from state.report import Aggregator, build_report, table, to_html, to_json
from state.report.aggregate import Counts

from .gen import campaign, iso, T0


def test_variant_b_converting_twice_as_often_wins():
    for seed in range(20):  # 2,000 sends each at 5 % vs 10 %: the test's power is above 0.9999
        m, d, c = campaign(seed=seed, rates={"A": 0.05, "B": 0.10}, sends=2000)
        ab = build_report(m, d, c).campaigns[0].ab
        assert ab.winner == "B" and ab.p_value < 0.05, (seed, ab)
    m, d, c = campaign(seed=7, rates={"A": 0.05, "B": 0.10}, sends=2000, holdout=400, holdout_rate=0.05)
    report = build_report(m, d, c)
    (camp,) = report.campaigns
    assert camp.ab.winner == "B"
    rates = {v: r.rate.value for v, r in camp.variants}
    assert 0.03 < rates["A"] < 0.07 and 0.08 < rates["B"] < 0.12  # 4 standard errors
    assert camp.row.counts.sent == 4000 and camp.row.holdout.sent == 400
    # B's lift over the holdout (true +100 %) has an interval above zero
    lift_b = dict(camp.variants)["B"].lift
    assert lift_b.low > 0


def test_aa_split_names_no_winner_in_at_least_95_percent_of_200_seeds():
    winners = 0
    for seed in range(200):
        m, d, c = campaign(seed=seed, rates={"A": 0.05, "B": 0.05}, sends=2000)
        winners += build_report(m, d, c).campaigns[0].ab.winner is not None
    assert winners <= 10, f"{winners} of 200 A/A splits named a winner"


def test_min_sends_keeps_a_small_test_from_naming_a_winner():
    m, d, c = campaign(seed=3, rates={"A": 0.05, "B": 0.30}, sends=120)
    assert build_report(m, d, c, min_sends=100).campaigns[0].ab.winner == "B"
    camp = build_report(m, d, c, min_sends=200).campaigns[0]
    assert camp.ab.winner is None and "--min-sends 200" in camp.ab.reason


def test_counts_rates_and_holdout_are_exact():
    messages = [{"message_id": f"m{i}", "campaign_id": "k", "channel": "sms", "contact_id": f"c{i}",
                 "variant": None, "step_id": None, "due_at": iso(T0 + i)} for i in range(10)]
    decisions = [{"message_id": f"h{i}", "campaign_id": "k", "channel": "sms", "contact_id": f"h{i}",
                  "outcome": "held_out", "reason": "holdout", "at": iso(T0 + i), "variant": None, "step_id": None}
                 for i in range(4)]
    decisions.append({"message_id": "x", "campaign_id": "k", "channel": "sms", "contact_id": "c1",
                      "outcome": "capped", "reason": "cap:sms", "at": iso(T0)})
    conv = [{"conversion_id": "v1", "order_id": "o1", "contact_id": "c0", "at": iso(T0 + 10), "value": 0.1,
             "currency": "EUR", "message_id": "m0", "campaign_id": "k", "variant": None, "step_id": None,
             "touch": "click", "touch_at": iso(T0 + 5)},
            # a second order attributed to the same message: 1 converted send, 2 conversions
            {"conversion_id": "v2", "order_id": "o2", "contact_id": "c0", "at": iso(T0 + 20), "value": 0.2,
             "currency": "EUR", "message_id": "m0", "campaign_id": "k", "variant": None, "step_id": None,
             "touch": "click", "touch_at": iso(T0 + 5)},
            {"conversion_id": "v3", "order_id": "o3", "contact_id": "c1", "at": iso(T0 + 20), "value": 5,
             "currency": "USD", "message_id": "m1", "campaign_id": "k", "variant": None, "step_id": None,
             "touch": "open", "touch_at": iso(T0 + 5)},
            {"conversion_id": "v4", "order_id": "o4", "contact_id": "c2", "at": iso(T0 + 20), "value": None,
             "currency": None, "message_id": "m2", "campaign_id": "k", "variant": None, "step_id": None,
             "touch": "open", "touch_at": iso(T0 + 5)},
            {"conversion_id": "v5", "order_id": "o5", "contact_id": "h1", "at": iso(T0 + 30), "value": 7,
             "currency": "EUR", "message_id": None, "campaign_id": "k", "variant": None, "step_id": None,
             "touch": None, "touch_at": None, "group": "holdout"},
            # before the contact's held_out decision: not the holdout's doing
            {"conversion_id": "v6", "order_id": "o6", "contact_id": "h3", "at": iso(T0), "value": 7,
             "currency": "EUR", "message_id": None, "campaign_id": "k", "variant": None, "step_id": None,
             "touch": None, "touch_at": None, "group": "holdout"}]
    # the engine's intent-to-treat twins of the three ordered sends (lift compares these)
    conv += [{"conversion_id": f"s{i}", "order_id": f"o{i + 1}", "contact_id": f"c{i}", "at": iso(T0 + 20),
              "value": None, "currency": None, "message_id": f"m{i}", "campaign_id": "k", "variant": None,
              "step_id": None, "touch": None, "touch_at": None, "group": "sent"} for i in range(3)]
    report = build_report(messages, decisions, conv + conv[:2])  # two redelivered conversions
    (camp,) = report.campaigns
    row = camp.row
    assert camp.channel == "sms"
    assert (row.counts.sent, row.counts.converted, row.counts.conversions) == (10, 3, 4)
    assert row.counts.revenue == {"EUR": Decimal("0.3"), "USD": Decimal(5)}  # exact: 0.1 + 0.2
    assert (row.holdout.sent, row.holdout.converted, row.holdout.conversions) == (4, 1, 2)
    assert row.rate.value == 0.3 and row.holdout_rate.value == 0.25
    assert row.lift.value == 0.3 / 0.25 - 1
    assert report.inputs["conversions"].duplicates == 2
    assert report.inputs["decisions"].ignored == 1
    assert report.unmatched == {"message": 0, "holdout": 1}
    rec = report.record()["campaigns"][0]
    assert rec["revenue"] == {"EUR": 0.3, "USD": 5.0}
    assert camp.ab is None and rec["ab_test"] is None


def test_steps_are_sub_rows_in_run_order_with_their_own_holdout():
    m, d, c = campaign(seed=1, rates={None: 0.2}, sends=300, campaign_id="series", steps=("thanks", "arrived"),
                       holdout=50, holdout_rate=0.1)
    # feed them in reverse: the order of steps comes from the runs, not from the input
    report = build_report(m[::-1], d[::-1], c)
    (camp,) = report.campaigns
    assert [s.step_id for s in camp.steps] == ["thanks", "arrived"]
    for s in camp.steps:
        assert s.row.counts.sent == 300 and s.row.holdout.sent == 50
    assert camp.row.holdout.sent == 100
    assert sum(s.row.counts.converted for s in camp.steps) == camp.row.counts.converted
    text = table(report)
    assert "step thanks" in text and "step arrived" in text and "variant" not in text.split("\n\n")[1]


def test_malformed_records_are_counted_never_raised():
    agg = Aggregator()
    bad = [b"{oops", b"[1, 2]", b'"text"', b"\xff\xfe", b'{"message_id": 3, "campaign_id": "k"}',
           b'{"message_id": "m", "campaign_id": ""}', b'{"message_id": "m", "campaign_id": "k", "variant": 4}', b""]
    for n, raw in enumerate(bad, 1):
        agg.add("messages", raw, f"line {n}")
    agg.add("messages", b'{"message_id": "m", "campaign_id": "k", "due_at": "yesterday"}', "line 9")
    for raw in (b'{"outcome": "held_out", "message_id": "h", "campaign_id": "k", "contact_id": "c", "at": "x"}',
                b'{"outcome": 5}', b'{"no": "outcome"}'):
        agg.add("decisions", raw, "l")
    for raw in (b'{"conversion_id": "v", "campaign_id": "k", "contact_id": "c", "at": "2026-11-20T00:00:00Z", '
                b'"value": "12", "message_id": "m"}',
                b'{"conversion_id": "v", "campaign_id": "k", "contact_id": "c", "at": "2026-11-20T00:00:00Z", '
                b'"value": 12, "message_id": null}',
                b'{"conversion_id": "v", "campaign_id": "k", "contact_id": "c", "at": "2026-11-20T00:00:00Z", '
                b'"value": 12, "message_id": "m", "group": "other"}',
                b'{"conversion_id": "w", "campaign_id": "k", "contact_id": "c", "at": "2026-11-20T00:00:00Z", '
                b'"value": 12.5, "currency": "EUR", "message_id": "m"}'):
        agg.add("conversions", raw, "l")
    report = agg.finish()
    st = report.inputs["messages"]
    assert st.records == 9 and st.used == 1 and st.skipped_total == 8
    assert st.skipped["not JSON"] == [2, "line 1"]  # invalid UTF-8 is not JSON either
    assert st.skipped["not a JSON object"][0] == 2
    assert set(st.skipped) >= {"bad message_id", "bad campaign_id", "bad variant", "empty record"}
    assert report.inputs["decisions"].skipped == {"bad at": [1, "l"], "bad outcome": [1, "l"],
                                                  "missing outcome": [1, "l"]}
    assert set(report.inputs["conversions"].skipped) == {"bad value", "missing message_id", "bad group"}
    (camp,) = report.campaigns
    assert (camp.row.counts.sent, camp.row.counts.converted) == (1, 1)


def test_json_keys_are_stable():
    def keys(obj, path=""):
        if isinstance(obj, dict):
            out = set()
            for k, v in obj.items():
                if path.endswith("revenue") or path.endswith("skipped_by_reason"):
                    continue  # currencies and reasons are data
                out |= {f"{path}.{k}"} | keys(v, f"{path}.{k}")
            return out
        if isinstance(obj, list):
            return set().union(*(keys(x, path + "[]") for x in obj)) if obj else set()
        return set()

    full = build_report(*campaign(seed=1, rates={"A": 0.05, "B": 0.1}, sends=500, holdout=50, holdout_rate=0.05,
                                  steps=("s1",))).record()
    bare = build_report(*campaign(seed=1, rates={"A": 0.0, "B": 0.0}, sends=5, steps=("s1",))).record()
    assert keys(full) == keys(bare) or keys(bare) <= keys(full)
    camp_keys = {"campaign_id", "channel", "sent", "converted", "conversions", "ordered_after_send", "rate",
                 "revenue", "holdout", "lift", "variants", "steps", "ab_test"}
    assert set(full["campaigns"][0]) == camp_keys == set(bare["campaigns"][0])
    assert set(full["campaigns"][0]["steps"][0]) == set(bare["campaigns"][0]["steps"][0])
    assert bare["campaigns"][0]["lift"] is None and bare["campaigns"][0]["holdout"] is None


def test_outputs_render_an_empty_report():
    report = build_report()
    assert "no campaign" in table(report)
    assert b'"campaigns": []' in to_json(report)
    assert "No campaign in the input" in to_html(report)


def test_html_is_self_contained_and_escapes_names():
    m, d, c = campaign(seed=2, rates={"<b>A</b>": 0.05, "B": 0.1}, sends=300, campaign_id="x<script>",
                       holdout=30, holdout_rate=0.05)
    page = to_html(build_report(m, d, c))
    assert "<script" not in page and "&lt;script&gt;" in page and "&lt;b&gt;A&lt;/b&gt;" in page
    for needle in ("<link", "src=", "url(", "@import", "http://", "https://"):
        assert needle not in page.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert page.count("<svg") >= 2


def test_counts_add():
    a, b = Counts(1, 1, 2, {"EUR": Decimal("1.5")}), Counts(2, 0, 0, {"USD": Decimal(1)})
    a.add(b)
    assert (a.sent, a.converted, a.conversions, a.revenue) == (3, 1, 2, {"EUR": Decimal("1.5"), "USD": Decimal(1)})


_FIELDS = ("message_id", "campaign_id", "contact_id", "variant", "step_id", "run_id", "due_at", "at", "outcome",
           "conversion_id", "value", "currency", "group", "channel")
_values = st.one_of(st.none(), st.booleans(), st.integers(-2**63, 2**64 - 1), st.floats(allow_nan=False), st.text(max_size=5),
                    st.sampled_from(["held_out", "holdout", "message", "2026-11-20T00:00:00Z", "m1", "k"]),
                    st.lists(st.integers(0, 9), max_size=2), st.dictionaries(st.text(max_size=2), st.integers(0, 9), max_size=2))


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["messages", "decisions", "conversions"]),
                          st.dictionaries(st.sampled_from(_FIELDS), _values)), max_size=30))
def test_no_record_makes_it_raise(records):
    agg = Aggregator()
    for kind, rec in records:
        agg.add_record(kind, rec, "fuzz")
        agg.add(kind, orjson.dumps(rec), "fuzz")
    report = agg.finish(min_sends=1)
    table(report), to_json(report), to_html(report)
    for st_ in report.inputs.values():
        assert st_.records == st_.used + st_.ignored + st_.duplicates + st_.skipped_total
