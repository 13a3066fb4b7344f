"""A shop's contact events and catalogue updates for catalog-trigger tests (live and replay).

Views and carts of a small catalogue, with the price each person saw; orders of some of
those products; updates that walk prices up and down (drops of exactly 10 % among them),
sell products out and restock them, and fall under the low-stock line; some updates share
their millisecond with a view or an order of the same product.
"""

from __future__ import annotations

import random

from state.timeutil import format_ms

H, M = 3_600_000, 60_000

CATALOG_CAMPAIGNS = """
caps: {email: null, sms: null, push: null, all: null}
campaigns:
  - id: price-drop
    trigger: {catalog: price_drop, min_drop: 10%, viewed_within: 1d}
    channel: email
    reentry: {once_per: 6h}
    allow_stale: true
    quiet_hours: null
    template:
      subject: "{{ products[0].title }} is now {{ products[0].price }}"
      body: "you saw it at {{ products[0].previous_price }}"
  - id: back-in-stock
    trigger: {catalog: back_in_stock, viewed_within: 12h}
    channel: email
    reentry: every_time
    allow_stale: true
    quiet_hours: null
    exit_when:
      - {event: order_placed, match: {items.product_id: product_id}}
    steps:
      - {id: now, after: 0s, template: {subject: "{{ products[0].title }} is back", body: b}}
      - {id: reminder, after: 2h, template: {subject: "still there", body: b}}
  - id: low-stock
    trigger: {catalog: low_stock, below: 5, carted_within: 1d}
    channel: email
    reentry: every_time
    allow_stale: true
    quiet_hours: null
    template: {subject: "only {{ products[0].inventory }} left", body: b}
"""


def catalog_stream(seed: int, contacts: int, products: int, t0: int, span_ms: int,
                   events: int) -> tuple[list[dict], list[dict]]:
    """(contact events in time order, catalogue updates in time order)."""
    rnd = random.Random(seed)
    cids = [f"c{i:04d}" for i in range(contacts)]
    pids = [f"p{i:03d}" for i in range(products)]
    price = {p: rnd.choice([10, 20, 30, 50, 99.9]) for p in pids}
    stock = {p: rnd.choice([0, 3, 8, 20]) for p in pids}
    out: list[dict] = []
    for cid in cids:
        out.append({"event_id": f"{cid}-p", "contact_id": cid, "type": "profile_updated", "ts": format_ms(t0),
                    "properties": {"email": f"{cid}@example.com", "first_name": cid}})
        status = "unsubscribed" if rnd.random() < 0.1 else "subscribed"
        out.append({"event_id": f"{cid}-c", "contact_id": cid, "type": "consent_changed", "ts": format_ms(t0),
                    "properties": {"channel": "email", "status": status}})
    updates = [{"event_id": f"u-{p}-0", "product_id": p, "type": "product_updated", "ts": format_ms(t0 - H),
                "properties": {"price": price[p], "inventory": stock[p], "title": f"Product {p}",
                               "url": f"https://shop.example/{p}"}} for p in pids]
    n_up = max(1, events // 8)
    times = sorted(t0 + rnd.randrange(1, span_ms) for _ in range(n_up))
    for k, ts in enumerate(times):
        p = rnd.choice(pids)
        props: dict = {}
        r = rnd.random()
        if r < 0.5:
            old = price[p]
            new = round(old * 0.9, 2) if rnd.random() < 0.3 else round(old * rnd.uniform(0.75, 1.2), 2)
            price[p] = props["price"] = new
        elif r < 0.75:
            stock[p] = props["inventory"] = 0 if stock[p] else rnd.choice([2, 6, 15])
        else:
            stock[p] = props["inventory"] = rnd.choice([1, 2, 4, 5, 7])
        updates.append({"event_id": f"u-{p}-{k + 1}", "product_id": p, "type": "product_updated",
                        "ts": format_ms(ts), "properties": props})
    same_ms = [u for u in updates[products:] if rnd.random() < 0.3]
    for k in range(events):
        cid = rnd.choice(cids)
        if same_ms and rnd.random() < 0.1:
            u = rnd.choice(same_ms)
            ts, p = int(_ms(u["ts"])), u["product_id"]
        else:
            ts, p = t0 + rnd.randrange(1, span_ms), rnd.choice(pids)
        r = rnd.random()
        if r < 0.6:
            etype, props = "product_viewed", {"product_id": p, "price": _price_near(rnd, price[p])}
        elif r < 0.8:
            etype, props = "added_to_cart", {"product_id": p, "price": _price_near(rnd, price[p])}
        elif r < 0.9:
            etype, props = "order_placed", {"order_id": f"o{k}", "value": 10, "currency": "EUR",
                                            "items": [{"product_id": p, "quantity": 1, "price": price[p]}]}
        else:
            etype, props = "email_open", {}
        out.append({"event_id": f"e{k}", "contact_id": cid, "type": etype, "ts": format_ms(ts), "properties": props})
    out.sort(key=lambda e: _ms(e["ts"]))
    updates.sort(key=lambda u: _ms(u["ts"]))
    return out, updates


def _price_near(rnd: random.Random, p: float) -> float:
    return p if rnd.random() < 0.7 else round(p * rnd.uniform(0.9, 1.1), 2)


def _ms(ts: str) -> int:
    from state.timeutil import parse_ts

    v = parse_ts(ts)
    assert v is not None
    return v
