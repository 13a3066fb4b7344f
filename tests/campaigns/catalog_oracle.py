"""A brute-force reference of catalog triggers, written without `state/catalog` or the engine.

For each catalogue update it scans every event before it: no product book, no watches, no
index. It reads the parsed campaign definitions (the trigger's kind, window, `min_drop`,
`below`: data only, no rule of `state/catalog` is called) and the events, and says which
runs start, then reuses the run and policy machinery of `sequence_oracle` (consent,
address, re-entry, `max_runs`, caps, steps) contact by contact, instant by instant.

The contract (SPEC "Catalog triggers", issue 14):

- Events are deduplicated by `event_id` (the first delivery counts); catalogue ids are
  another namespace than contact ids. The stream is in event-time order except for
  redeliveries: contact events before updates at the same millisecond.
- Updates are taken in (ts, arrival) order. A product's first update fires nothing. An
  update omitting `price` or `inventory` keeps the product's; one carrying any other field
  (title, url, ...) replaces the description, one carrying none keeps it (docs/campaigns.md).
- `price_drop`: the new price is below the previous price; `back_in_stock`: inventory
  previous == 0 and new > 0; `low_stock`: previous >= below and new in 1..below-1.
- Who: per contact, the latest (ts, then arrival) `product_viewed` or `added_to_cart`
  (`low_stock`: `added_to_cart` only) of the product at or before `t`, with
  `t - W < seen <= t`, and no `order_placed` with the product in `items` at `seen <= ts <= t`.
  `price_drop` also needs the seen price (the last `price` named by the looks of that
  millisecond, else the catalogue's price just before it) at least `min_drop` above the
  new one, in exact decimals.
- Each qualifying (contact, campaign, update) starts run `run_id(contact, campaign,
  update id)` at `t`, after the contact's own events at `t` and before its steps due at
  `t`, unless an open run of the campaign has the same product (nothing recorded). Re-entry
  counts sends of the same product only. The run's `products` is `[product]`: the
  catalogue's product after the update plus `previous_price` (the seen price).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from fractions import Fraction

from state.campaigns.model import Campaign, Campaigns
from state.events import Event

from .sequence_oracle import _Contact, run_hex, run_id

__all__ = ["CatalogOracle", "FIELDS", "Trigger", "exact", "render", "template"]

VIEW, CART, ORDER = "product_viewed", "added_to_cart", "order_placed"
_OWN = ("price", "inventory", "product_id")


def exact(v: object) -> Fraction | None:
    """A price as the decimal written: a JSON number's shortest repr, or a decimal string."""
    if isinstance(v, bool):
        return None
    if isinstance(v, int):
        text = str(v)
    elif isinstance(v, float):
        text = repr(v)
    elif isinstance(v, str):
        text = v.strip()
    else:
        return None
    try:
        f = Fraction(text)
    except (ValueError, ZeroDivisionError):
        return None
    return f if f >= 0 else None


#: What the test templates print of `products[0]`, `-` for a missing field.
FIELDS = ("product_id", "price", "previous_price", "inventory", "title", "url")


def template(fields: tuple[str, ...] = FIELDS) -> str:
    """A body printing `fields` of each product (Jinja prints `str()` of a value)."""
    return "{% for p in products %}" + "|".join(f"{{{{ p.{k} | default('-') }}}}" for k in fields) + "{% endfor %}"


def render(product: dict, fields: tuple[str, ...] = FIELDS) -> str:
    """What `template(fields)` prints for a one-product list."""
    return "|".join(str(product[k]) if k in product else "-" for k in fields)


@dataclass(frozen=True)
class Trigger:
    """A run the catalogue starts: contact, campaign, the update, its instant and the product."""

    contact_id: str
    campaign_id: str
    update_id: str
    product_id: str
    at: int
    product: dict = field(compare=False, hash=False)


# -- one contact --------------------------------------------------------------------------

@dataclass
class _Watcher(_Contact):
    pid_of: dict = field(default_factory=dict)  # run id -> product

    def refusal(self, c: Campaign, rid: int, t: int) -> str | None:
        """Re-entry of a catalog campaign counts the sends of the same product only."""
        if c.reentry == "every_time":
            return None
        pid = self.pid_of[rid]
        others = [s for s, _, k, r in self.sends if k == c.id and r != rid and self.pid_of.get(r) == pid]
        if c.reentry == "once":
            return "reentry:once" if others else None
        return "reentry:once_per" if any(s > t - c.reentry_ms for s in others) else None

    def catalog(self, c: Campaign, t: int, tr: Trigger) -> None:
        if any(r.camp.id == c.id and r.key == tr.product_id for r in self.runs):
            return  # the product's run is open: the update is part of it
        rid = run_id(self.cid, c.id, tr.update_id)
        self.pid_of[rid] = tr.product_id
        self.start(c, t, rid, tr.product, tr.product_id)

    def moment(self, t: int, evs: list[Event], triggers: list[Trigger]) -> None:
        """`sequence_oracle._Contact.instant` for a contact without event or date campaigns,
        the catalog runs of `t` starting between its events and its due steps."""
        self.apply_state(t, evs)
        for tr in triggers:
            self.catalog(self.camps.by_id[tr.campaign_id], t, tr)
        self.decide_due(t)


# -- the whole stream ---------------------------------------------------------------------

def _dedup(events: list[Event]) -> tuple[list[tuple[int, Event]], list[tuple[int, Event]]]:
    """(position, event) of the first delivery of each id: contact events, catalogue updates."""
    seen: set[tuple[bool, str]] = set()
    contacts, updates = [], []
    for i, e in enumerate(events):
        cat = e.contact_id == ""
        if (cat, e.event_id) in seen:
            continue
        seen.add((cat, e.event_id))
        (updates if cat else contacts).append((i, e))
    return contacts, updates


def _items(e: Event) -> list:
    items = e.properties.get("items")
    if not isinstance(items, list):
        return []
    return [x.get("product_id") for x in items if isinstance(x, dict)]


class CatalogOracle:
    """The runs and the messages and decisions the contract implies for `events` up to `until`."""

    def __init__(self, camps: Campaigns) -> None:
        for c in camps.campaigns:
            assert c.catalog is not None and c.sequence and c.quiet is None, f"{c.id}: outside the oracle's scope"
        self.camps = camps

    # which runs start
    def triggers(self, events: list[Event]) -> list[Trigger]:
        contacts, updates = _dedup(events)
        order = sorted(updates, key=lambda pe: (pe[1].ts, pe[0]))
        by_contact: dict[str, list[tuple[int, Event]]] = defaultdict(list)
        for pe in contacts:
            by_contact[pe[1].contact_id].append(pe)
        out: list[Trigger] = []
        for n, (_, u) in enumerate(order):
            pid, t = u.properties["product_id"], u.ts
            before = [e for _, e in order[:n] if e.properties["product_id"] == pid]
            if not before:
                continue  # the product's first update
            old_price = _last(before, "price")
            old_inv = _last(before, "inventory")
            new_price = u.properties["price"] if u.properties.get("price") is not None else old_price
            new_inv = u.properties["inventory"] if u.properties.get("inventory") is not None else old_inv
            product = {}
            for e in [*before, u]:  # the latest update describing the product replaces the description
                described = {k: v for k, v in e.properties.items() if k not in _OWN}
                if described:
                    product = described
            product["product_id"] = pid
            if new_price is not None:
                product["price"] = new_price
            if new_inv is not None:
                product["inventory"] = new_inv
            for c in self.camps.campaigns:
                trig = c.catalog
                if trig.kind == "price_drop":
                    fires = (old_price is not None and new_price is not None
                             and exact(new_price) < exact(old_price))
                elif trig.kind == "back_in_stock":
                    fires = old_inv == 0 and new_inv is not None and new_inv > 0
                else:
                    fires = old_inv is not None and old_inv >= trig.below and new_inv is not None \
                        and 1 <= new_inv <= trig.below - 1
                if not fires:
                    continue
                for cid in sorted(by_contact):
                    seen = self._seen(c, pid, t, by_contact[cid], order)
                    if seen is None:
                        continue
                    saw = seen
                    if trig.kind == "price_drop":
                        was, now = exact(saw), exact(new_price)
                        if was is None or now is None or not now < was:
                            continue
                        d = trig.drop
                        need = Fraction(str(d.value))
                        if d.percent and (was - now) / was < need / 100:
                            continue
                        if not d.percent and was - now < need:
                            continue
                    p = dict(product)
                    if trig.kind == "price_drop":
                        p["previous_price"] = saw
                    out.append(Trigger(cid, c.id, u.event_id, pid, t, p))
        return out

    def _seen(self, c: Campaign, pid: str, t: int, evs: list[tuple[int, Event]],
              order: list[tuple[int, Event]]) -> object | None:
        """The price the contact saw at its latest qualifying view or cart, or None when it does
        not qualify (a contact whose view had no price and no catalogue price: `""`)."""
        types = (CART,) if c.catalog.kind == "low_stock" else (VIEW, CART)
        looks = [(e.ts, i, e) for i, e in evs if e.type in types and e.ts <= t and e.properties.get("product_id") == pid]
        if not looks:
            return None
        seen_ts, _, look = max(looks, key=lambda x: (x[0], x[1]))
        if not t - c.catalog.within_ms < seen_ts <= t:
            return None
        if any(e.type == ORDER and seen_ts <= e.ts <= t and pid in _items(e) for _, e in evs):
            return None
        # of the looks of that millisecond (simultaneous), the last that names a price
        same = [e for ts, _, e in sorted(looks, key=lambda x: (x[0], x[1])) if ts == seen_ts]
        named = [e.properties["price"] for e in same
                 if e.properties.get("price") is not None and not isinstance(e.properties["price"], bool)]
        price = named[-1] if named else None
        if price is None:
            earlier = [e for _, e in order if e.properties["product_id"] == pid and e.ts < seen_ts]
            price = _last(earlier, "price")
        if price is None:
            return "" if c.catalog.kind != "price_drop" else None
        return price

    # what the runs do
    def run(self, events: list[Event], until: int) -> tuple[list, list, dict[str, Trigger]]:
        """(messages, decisions) as `sequence_oracle.Oracle.run`, and run id hex -> its trigger."""
        contacts, _ = _dedup(events)
        per: dict[str, list[Event]] = defaultdict(list)
        for _, e in contacts:
            per[e.contact_id].append(e)
        starts: dict[str, list[Trigger]] = defaultdict(list)
        bodies: dict[str, Trigger] = {}
        for tr in self.triggers(events):
            starts[tr.contact_id].append(tr)
            bodies[run_hex(run_id(tr.contact_id, tr.campaign_id, tr.update_id))] = tr
        messages: list = []
        decisions: list = []
        for cid in sorted(set(per) | set(starts)):
            w = self._contact(cid, per[cid], starts[cid], until)
            messages += w.messages
            decisions += w.decisions
        return messages, decisions, bodies

    def _contact(self, cid: str, evs: list[Event], starts: list[Trigger], until: int) -> _Watcher:
        by_ts: dict[int, list[Event]] = defaultdict(list)
        for e in evs:
            by_ts[e.ts].append(e)
        trig_ts: dict[int, list[Trigger]] = defaultdict(list)
        for tr in starts:
            trig_ts[tr.at].append(tr)
        instants = sorted(set(by_ts) | set(trig_ts))
        w = _Watcher(cid, self.camps)
        i, now = 0, None
        while True:
            cands = [r.due for r in w.runs]
            if i < len(instants):
                cands.append(instants[i])
            if not cands:
                break
            t = min(cands)
            if t > until:
                break
            assert now is None or t > now
            here: tuple[list, list] = ([], [])
            if i < len(instants) and instants[i] == t:
                here = (by_ts.get(t, []), trig_ts.get(t, []))
                i += 1
            w.moment(t, *here)
            now = t
        return w


def _last(updates: list[Event], key: str) -> object | None:
    """The latest value an update gave `key` (None: never given)."""
    v = None
    for e in updates:
        if e.properties.get(key) is not None:
            v = e.properties[key]
    return v
