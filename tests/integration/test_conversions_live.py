"""Conversions end to end on the test broker: `espresso run --campaigns` decides an A/B email
campaign with a holdout, `espresso deliver` posts its messages to a webhook provider, the
contacts click what the provider received and order; the `conversions` topic names the right
message and variant (holdout conversions for the held-out contacts), and the Prometheus
counters of both processes (released, held out, delivered, clicked, converted, revenue,
ignored touches) agree with the records."""

from __future__ import annotations

import time
import urllib.request
from collections import Counter

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.connectors.http_server import WebhookServer
from tests.integration.live import Deliver, Espresso, now_ms, produce, producer, read_all, wait_until
from tests.servers import free_port

pytestmark = pytest.mark.integration

CAMPAIGN = "cart-nudge"
CAMPAIGNS = f"""
caps: {{email: null, sms: null, push: null, all: null}}
campaigns:
  - id: {CAMPAIGN}
    trigger: {{event: added_to_cart}}
    channel: email
    holdout: 20%
    fallbacks: {{first_name: there}}
    template:
      subject: "{{{{ contact.first_name }}}}, still thinking about it?"
      body: "Your cart is waiting."
    variants:
      - {{name: A, weight: 50}}
      - {{name: B, weight: 50, template: {{subject: "Free shipping on your cart"}}}}
"""
CONTACTS = [f"c{i:02d}" for i in range(40)]
VALUE = 25.5


def scrape(port: int) -> dict[tuple, float]:
    """The samples of espresso's campaign result families on 127.0.0.1:`port`/metrics, by
    (sample name, sorted labels)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    out = {}
    for fam in text_string_to_metric_families(text):
        if fam.name.startswith(("espresso_campaign_", "espresso_conversion", "espresso_touches_ignored",
                                "espresso_messages")):
            for s in fam.samples:
                if s.name.endswith("_total"):
                    out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def sample(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_clicks_and_orders_fed_back_become_conversions_and_counters(kafka_bootstrap, kafka_topic_factory, redis_url,
                                                                   tmp_path):
    """40 contacts put something in their cart: 20 % are held out (decision `held_out`), the
    others get variant A or B, delivered to the webhook provider. Every contact who received a
    message clicks it (plus a privacy proxy's open), most then order; two order without a
    click, one clicks another contact's message; every held-out contact orders. Then: one
    conversion per clicked-then-ordered contact naming its message, variant and the click;
    one holdout conversion per held-out contact; none for the others. The run's /metrics
    count released and clicked per variant, held_out, conversions and revenue per variant
    and group, ignored touches by reason; deliver's /metrics the deliveries per variant."""
    topics = {"events": kafka_topic_factory(2, prefix="conv-events"),
              "changes": kafka_topic_factory(1, prefix="conv-changes"),
              "dlq": kafka_topic_factory(1, prefix="conv-dlq"),
              "messages": kafka_topic_factory(2, prefix="conv-messages"),
              "decisions": kafka_topic_factory(1, prefix="conv-decisions"),
              "conversions": kafka_topic_factory(2, prefix="conv-conversions"),
              "delivered": kafka_topic_factory(1, prefix="conv-delivered"),
              "delivery_dlq": kafka_topic_factory(1, prefix="conv-delivery-dlq")}
    camps = tmp_path / "campaigns.yaml"
    camps.write_text(CAMPAIGNS)
    provider = WebhookServer().start()
    run_port, deliver_port = free_port(), free_port()
    run = Espresso(tmp_path, kafka_bootstrap, (topics["events"], topics["changes"], topics["dlq"]),
                   "--campaigns", str(camps), "--messages-topic", topics["messages"], "--decisions-topic",
                   topics["decisions"], "--conversions-topic", topics["conversions"], "--allowed-lateness", "1s",
                   metrics_port=run_port)
    deliver = Deliver(tmp_path, kafka_bootstrap, redis_url, provider.url, topics, f"conversions-{now_ms()}",
                      metrics_port=deliver_port)
    p = producer(kafka_bootstrap)
    n = 0

    def send(cid: str, etype: str, ts: int, **props) -> None:
        nonlocal n
        n += 1
        produce(kafka_bootstrap, topics["events"], [{"event_id": f"e{n}", "contact_id": cid, "type": etype,
                                                    "ts": ts, "properties": props}], p=p)

    try:
        run.wait_ready(30)
        # 1. Each contact subscribes, then carts: the campaign's trigger.
        t = now_ms()
        for cid in CONTACTS:
            send(cid, "profile_updated", t, first_name=cid.upper(), email=f"{cid}@example.com")
            send(cid, "consent_changed", t, channel="email", status="subscribed")
            send(cid, "added_to_cart", t + 10, product_id="p1", price=25.5)
        assert p.flush(30) == 0

        def held_out() -> dict[str, dict]:
            return {d["contact_id"]: d for d in (orjson.loads(m.value()) for m in read_all(kafka_bootstrap,
                                                                                          topics["decisions"]))
                    if d["outcome"] == "held_out"}

        def received() -> dict[str, dict]:
            return {b["contact_id"]: b for b in list(provider.bodies)}

        wait_until(lambda: len(received()) + len(held_out()) >= len(CONTACTS), 40,
                   "a message or a holdout decision for every contact", run, deliver)
        messages, held = received(), held_out()
        assert set(messages) | set(held) == set(CONTACTS) and not set(messages) & set(held)
        assert all(d["campaign_id"] == CAMPAIGN and d["reason"] == "holdout" and d["variant"] is None
                   for d in held.values())
        variants = Counter(m["variant"] for m in messages.values())
        assert set(variants) == {"A", "B"} and 0 < len(held) < len(CONTACTS) // 2, (variants, len(held))

        # 2. Engagement fed back as events: a proxy's open and a click of the message the provider
        #    received, then (most) an order; two order without a click, one clicks another's
        #    message; every held-out contact orders.
        treated = sorted(messages)
        no_click, stranger = set(treated[:2]), treated[2]
        clicked = [c for c in treated if c not in no_click]
        converting = set(clicked[1:])  # the first clicker does not order
        t = now_ms()
        for cid in treated:
            mid = messages[cid]["message_id"]
            if cid in no_click:
                send(cid, "order_placed", t + 20, order_id=f"o-{cid}", value=VALUE, currency="EUR")
                continue
            send(cid, "email_open", t, message_id=mid, machine_open=True)
            send(cid, "email_click", t + 10, message_id=mid)
            if cid in converting:
                send(cid, "order_placed", t + 20, order_id=f"o-{cid}", value=VALUE, currency="EUR")
        send(stranger, "email_click", t + 30, message_id=messages[treated[3]]["message_id"])
        for cid in held:
            send(cid, "order_placed", t + 20, order_id=f"o-{cid}", value=VALUE, currency="EUR")
        assert p.flush(30) == 0

        ordered = converting | no_click  # treated contacts with an order after their message
        want = len(converting) + len(ordered) + len(held)

        def conversions() -> list[dict]:
            return [orjson.loads(m.value()) for m in read_all(kafka_bootstrap, topics["conversions"])]

        wait_until(lambda: len(conversions()) >= want, 30, f"{want} conversions", run, deliver)
        time.sleep(1.5)  # nothing more should come
        convs = conversions()
        by_group = {g: {c["contact_id"]: c for c in convs if c["group"] == g} for g in ("message", "sent", "holdout")}
        assert len(convs) == want == len({c["conversion_id"] for c in convs}), convs
        assert set(by_group["message"]) == converting and set(by_group["holdout"]) == set(held)
        # intent to treat: every order after a send counts, touched or not
        assert set(by_group["sent"]) == ordered
        assert all(c["message_id"] == messages[cid]["message_id"] and c["touch"] is None
                   for cid, c in by_group["sent"].items())
        for cid, c in by_group["message"].items():
            m = messages[cid]
            assert (c["campaign_id"], c["message_id"], c["variant"], c["step_id"], c["touch"], c["order_id"],
                    c["value"], c["currency"]) == (CAMPAIGN, m["message_id"], m["variant"], None, "click",
                                                   f"o-{cid}", VALUE, "EUR")
            assert c["touch_at"] < c["at"]
        for cid, c in by_group["holdout"].items():
            assert (c["campaign_id"], c["message_id"], c["variant"], c["touch"], c["order_id"]) == (
                CAMPAIGN, None, None, None, f"o-{cid}")

        # 3. The counters of both processes agree with the records.
        total = "espresso_campaign_{}_total".format
        arm = {"campaign": CAMPAIGN, "step": ""}
        clicks = Counter(messages[c]["variant"] for c in clicked)
        converted = Counter(messages[c]["variant"] for c in converting)

        def deliver_counts() -> bool:
            got = scrape(deliver_port)
            return all(sample(got, total("delivered"), variant=v, **arm) == variants[v] for v in variants)

        wait_until(deliver_counts, 15, "deliveries per variant on deliver's /metrics", deliver)
        got = scrape(run_port)
        for v in ("A", "B"):
            assert sample(got, total("released"), variant=v, **arm) == variants[v], v
            assert sample(got, total("clicked"), variant=v, **arm) == clicks[v], v
            assert sample(got, total("opened"), variant=v, **arm) == 0, v  # proxies' opens only
            assert sample(got, "espresso_conversions_total", variant=v, group="message", **arm) == converted[v], v
            assert sample(got, "espresso_conversion_revenue_total", variant=v, group="message", **arm) == \
                pytest.approx(VALUE * converted[v]), v
        assert sample(got, total("held_out"), campaign=CAMPAIGN, step="") == len(held)
        assert sample(got, "espresso_messages_total", campaign=CAMPAIGN, channel="email", outcome="held_out") == \
            len(held)
        assert sample(got, "espresso_conversions_total", variant="", group="holdout", **arm) == len(held)
        assert sum(sample(got, "espresso_conversions_total", variant=v, group="sent", **arm) for v in ("A", "B")) == \
            len(ordered)
        assert sample(got, "espresso_conversion_revenue_total", variant="", group="holdout", **arm) == \
            pytest.approx(VALUE * len(held))
        assert sample(got, "espresso_touches_ignored_total", reason="machine") == len(clicked)
        assert sample(got, "espresso_touches_ignored_total", reason="unknown") == 1
        labels = {v for (_, ls) in got for _, v in ls}
        assert not labels & set(CONTACTS)  # no contact id in any label

        assert run.stop(30) == 0, run.tail()
        assert deliver.stop(30) == 0, deliver.tail()
        assert read_all(kafka_bootstrap, topics["delivery_dlq"]) == []
    finally:
        run.__exit__(None, None, None)
        deliver.close()
        provider.stop()
