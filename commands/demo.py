"""`espresso demo`: watch segments change and retargeting messages go out live, with nothing to set up.

    embedded broker (tansu, in memory)  ◀── or KAFKA_BOOTSTRAP_SERVERS
        ▲ contact-events,           │ segment-changes, contact-events-dlq,
        │ catalog-events            │ retargeting-messages, retargeting-decisions, catalog-events
        │                           ▼
    synthetic shop traffic ──▶ `espresso run --campaigns` ──▶ printer and local "delivery"
                                   (subprocess)                 (this process)

The traffic is a small shop in real time (event time = now): people subscribe, open and
click emails and SMS, open pushes, view products and add some to the cart, start checkouts
and sometimes pay them (an order with the checkout's `checkout_id`). The segments are the
built-in espresso segments with a short window (`--window`, default 45s instead of 72h)
plus an abandoned-checkout segment, so time-driven exits happen while you watch: an open
ageing out makes a person leave email espresso with no new event. The built-in campaigns
(espresso and the shop automations: welcome, checkout and post-purchase series, browse
abandonment, ...) run on the same shortened clock (`demo_messages.py`), and so do the
follow-ups that race them (a payment before or after the first checkout reminder, a cart
before the browse reminder); each message is printed as it is read from the messages
topic, with the time since the event that triggered it (`--no-campaigns`: segments only).

The shop has a small catalogue (`PRODUCTS`: title, price, stock; a first update of each at
start on the catalogue topic), views and carts carry the current price, and every 20-40 s
(32-64 h x window/72h) the shop changes it: a price drop of 10-30 %, the end of a sale, a
product sold out and restocked at the next change, or one falling under 5. Each change is
a `catalog` line, and the built-in catalog campaigns (price-drop, back-in-stock, low-stock,
with their windows and re-entry on the demo's clock) write to who viewed or carted it; a
message's latency is from producing that update. The flow waits only 100 ms for product
updates (`--catalog-lateness`; the demo's shop stamps them as it sends them).

Stops on Ctrl-C or after `--duration` (default: until Ctrl-C on a terminal, 60 s
otherwise) and prints a summary.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections import Counter, deque
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, NamedTuple, TextIO

import orjson
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict

from connectors.embedded_broker import EmbeddedBroker, free_port
from connectors.kafka_config import KafkaConfig
from connectors.topics import create_topics
from state.timeutil import format_duration, format_ms, parse_ts

from .demo_messages import (PRODUCTION_WINDOW_MS, Trigger, catalog_triggers, clock, demo_campaigns_yaml,
                            describe_message, event_triggers, format_latency, message_latency, percentiles, run_id,
                            scaled_duration, sequence_steps)
from .settings import Count, Duration, Opt, Port, add_arguments, load

__all__ = ["DemoSettings", "add_demo_args", "cmd_demo", "demo_segments_yaml", "demo_campaigns_yaml", "Traffic",
           "describe_change", "describe_update", "ProductLine"]

ROOT = Path(__file__).resolve().parents[1]


# -- segments ------------------------------------------------------------------------
def demo_segments_yaml(window: str, abandoned_after: str, abandoned_expires: str) -> str:
    """The built-in espresso segments with `window` instead of 72h, plus abandoned checkout."""
    return f"""\
# espresso demo segments: the built-in ones with a {window} window (72h in production).
segments:
  - id: email-espresso
    name: Email espresso (demo window {window})
    when:
      all:
        - consent: {{channel: email}}
        - any:
            - event: {{type: email_open, at_least: 1, within: {window}}}
            - event: {{type: email_click, at_least: 1, within: {window}}}
        - event: {{type: order_placed, exactly: 0, within: {window}}}
  - id: sms-espresso
    name: SMS espresso (demo window {window})
    when:
      all:
        - consent: {{channel: sms}}
        - event: {{type: sms_click, at_least: 1, within: {window}}}
        - event: {{type: order_placed, exactly: 0, within: {window}}}
  - id: push-espresso
    name: Push espresso (demo window {window})
    when:
      all:
        - consent: {{channel: push}}
        - event: {{type: push_open, at_least: 1, within: {window}}}
        - event: {{type: order_placed, exactly: 0, within: {window}}}
  - id: abandoned-checkout
    name: Started a checkout, no order within {abandoned_after}
    when:
      all:
        - abandoned_checkout: {{after: {abandoned_after}, expires_after: {abandoned_expires}}}
        - consent: {{channel: email}}
"""


# -- synthetic traffic ------------------------------------------------------------------
FIRST_NAMES = ("Mia", "Noah", "Emma", "Liam", "Lea", "Lucas", "Chloe", "Hugo", "Sofia", "Mateo",
               "Alice", "Louis", "Jade", "Adam", "Ines", "Arthur", "Zoe", "Jules", "Nora", "Leo",
               "Lina", "Gabriel", "Rose", "Raphael", "Anna", "Tom", "Eva", "Nathan", "Julia", "Sacha")
#: The shop's catalogue: product id, title, collections, list price (a decimal string: the
#: messages show 19.20, not 19.2), stock at start.
PRODUCTS = (("sku-espresso-beans", "Espresso beans 1 kg", ["coffee"], "14.50", 40),
            ("sku-moka-pot", "Moka pot", ["gear"], "39.00", 25),
            ("sku-grinder", "Burr grinder", ["gear"], "89.00", 12),
            ("sku-decaf", "Decaf beans 500 g", ["coffee"], "12.00", 30),
            ("sku-cups", "Espresso cups (set of 2)", ["gear", "gifts"], "24.00", 20),
            ("sku-gift-card", "Gift card", ["gifts"], "50.00", 999))
#: How often each product is viewed, relative to the others (the shop has bestsellers).
_POPULARITY = (3, 3, 2, 1, 2, 1)
#: Products whose price and stock never change (a gift card has no stock and no sale).
_STEADY = frozenset({"sku-gift-card"})
#: How often the shop changes its catalogue, in production time (x window/72h: every 20-40 s at 45 s).
_CATALOG_EVERY = (32 * 3_600_000, 64 * 3_600_000)
#: The built-in low-stock trigger's `below` (state/builtin/campaigns-shop.yaml).
LOW_STOCK_BELOW = 5
#: The catalogue's changes, in turn: every catalog trigger within five changes (2-3 minutes).
_CATALOG_PLAN = ("drop", "sell_out", "restock", "low", "sale_over")


_MIN, _HOUR = 60_000, 3_600_000


class Traffic:
    """A small shop's contact events in real time; deterministic for a seed and a clock."""

    def __init__(self, contacts: int = 300, seed: int | None = None, invalid_rate: float = 0.01,
                 window_ms: int = 45_000) -> None:
        self.rng = random.Random(seed)
        self.max_contacts = contacts
        self.contacts: list[dict] = []
        self.invalid_rate = invalid_rate
        self.pending: list[tuple[float, dict]] = []  # (due epoch ms, event) follow-ups
        # Follow-ups that race the campaigns (an order after a checkout, a cart after a view)
        # come on the demo's clock, like the campaigns' steps: production time x window/72h.
        self.scale = window_ms / PRODUCTION_WINDOW_MS
        # The catalogue: product id -> title, collections, list price, current price, stock;
        # its updates come from `catalog_start` and `catalog_tick` (the catalogue topic).
        self.catalog: dict[str, dict] = {
            pid: {"title": title, "collections": cols, "list_price": Decimal(price), "price": Decimal(price),
                  "inventory": stock, "changed_ms": 0}
            for pid, title, cols, price, stock in PRODUCTS}
        self.next_catalog_ms: int | None = None
        self.catalog_seq = 0
        self.catalog_step = 0  # in _CATALOG_PLAN
        self.views: Counter = Counter()  # product id -> views since its last change

    def _later(self, now_ms: int, lo_ms: int, hi_ms: int) -> int:
        """An instant between `lo_ms` and `hi_ms` of production time from now, on the demo's clock."""
        return now_ms + max(1, round(self.rng.uniform(lo_ms, hi_ms) * self.scale))

    def _event(self, c: dict, etype: str, now_ms: int, props: dict | None = None) -> dict:
        ev = {"event_id": uuid.UUID(int=self.rng.getrandbits(128)).hex, "contact_id": c["id"], "type": etype,
              "ts": format_ms(now_ms)}
        if props:
            ev["properties"] = props
        return ev

    def _new_contact(self, now_ms: int) -> list[dict]:
        """Consent events, then a profile with the first name and an address per consented
        channel (what a campaign needs to send: docs/campaigns.md, "Policies")."""
        rng = self.rng
        i = len(self.contacts)
        c = {"id": f"c-{i:04d}", "name": rng.choice(FIRST_NAMES), "email": rng.random() < 0.9,
             "sms": rng.random() < 0.35, "push": rng.random() < 0.3, "checkout": None}
        self.contacts.append(c)
        out = []
        for ch in ("email", "sms", "push"):
            if c[ch]:
                out.append(self._event(c, "consent_changed", now_ms,
                                       {"channel": ch, "status": "subscribed", "reason": "signup_form"}))
        if not out:  # everyone here agreed to something
            c["email"] = True
            out.append(self._event(c, "consent_changed", now_ms, {"channel": "email", "status": "subscribed"}))
        profile = {"first_name": c["name"], "country": rng.choice(["FR", "DE", "ES", "IT", "BE", "NL"]),
                   "email": f"{c['name'].lower()}.{i:04d}@example.com"}
        if c["sms"]:
            profile["phone"] = f"+336{10_000_000 + i:08d}"
        if c["push"]:
            profile["push_token"] = f"demo-push-token-{i:04d}"
        out.append(self._event(c, "profile_updated", now_ms, profile))
        return out

    def _items(self) -> tuple[list[dict], float]:
        rng = self.rng
        items, value = [], 0.0
        for pid in rng.sample(sorted(self.catalog), rng.randint(1, 3)):
            p = self.catalog[pid]
            q, price = rng.randint(1, 2), float(p["price"])
            items.append({"product_id": pid, "collection_ids": p["collections"], "quantity": q, "price": price})
            value += q * price
        return items, round(value, 2)

    def tick(self, now_ms: int) -> list[dict]:
        """One event (sometimes a few) happening now, plus follow-ups that are due."""
        rng = self.rng
        out = [ev for due, ev in self.pending if due <= now_ms]
        self.pending = [(due, ev) for due, ev in self.pending if due > now_ms]
        for ev in out:
            ev["ts"] = format_ms(now_ms)
            if ev["type"] == "added_to_cart":  # the price when it goes in the cart
                ev["properties"]["price"] = _money(self.catalog[ev["properties"]["product_id"]]["price"])
        if len(self.contacts) < 8 or (len(self.contacts) < self.max_contacts and rng.random() < 0.12):
            return out + self._new_contact(now_ms)
        c = rng.choice(self.contacts)
        r = rng.random()
        if r < 0.34 and c["email"]:
            out.append(self._event(c, "email_open", now_ms, {"campaign_id": "weekly-brew"}))
            if rng.random() < 0.3:  # a click a few seconds after the open
                self.pending.append((now_ms + rng.randint(2000, 8000),
                                     self._event(c, "email_click", now_ms, {"url": "/coffee"})))
        elif r < 0.46 and c["sms"]:
            out.append(self._event(c, "sms_click", now_ms, {"campaign_id": "flash-sale"}))
        elif r < 0.56 and c["push"]:
            out.append(self._event(c, "push_open", now_ms))
            out.append(self._event(c, "app_open", now_ms + 1, {"platform": rng.choice(["ios", "android"])}))
        elif r < 0.70:
            items, value = self._items()
            checkout = uuid.UUID(int=rng.getrandbits(128)).hex[:12]
            out.append(self._event(c, "checkout_started", now_ms,
                                   {"checkout_id": checkout, "value": value, "currency": "EUR", "items": items}))
            paid = rng.random()
            if paid < 0.45:  # paid (the same checkout_id ends its checkout series), else abandoned:
                # 2/3 within 2 h, before the first reminder (3 h); the rest after it, before the second (24 h)
                due = (self._later(now_ms, 2 * _MIN, 2 * _HOUR) if paid < 0.3
                       else self._later(now_ms, 4 * _HOUR, 20 * _HOUR))
                self.pending.append((due, self._event(c, "order_placed", now_ms, {
                    "order_id": "o-" + checkout, "checkout_id": checkout, "value": value, "currency": "EUR",
                    "items": items})))
        elif r < 0.74:
            items, value = self._items()
            out.append(self._event(c, "order_placed", now_ms, {
                "order_id": "o-" + uuid.UUID(int=rng.getrandbits(128)).hex[:12], "value": value,
                "currency": "EUR", "items": items}))
        elif r < 0.76 and c["email"]:
            c["email"] = False
            out.append(self._event(c, "consent_changed", now_ms,
                                   {"channel": "email", "status": "unsubscribed", "reason": "user_request"}))
        else:
            pid = rng.choices(PRODUCTS, _POPULARITY)[0][0]
            p = self.catalog[pid]
            price = _money(p["price"])  # the price the person sees: what a price drop is measured from
            self.views[pid] += 1
            out.append(self._event(c, "product_viewed", now_ms,
                                   {"product_id": pid, "collection_ids": p["collections"], "price": price}))
            if p["inventory"] > 0 and rng.random() < 0.25:
                # added to the cart 5 s to 30 min later: no browse-abandonment email
                self.pending.append((self._later(now_ms, 5000, 30 * _MIN), self._event(
                    c, "added_to_cart", now_ms, {"product_id": pid, "price": price, "quantity": 1})))
        return out

    def invalid(self, now_ms: int) -> bytes | None:
        """Now and then a broken record, to show the dead-letter topic at work."""
        if self.rng.random() >= self.invalid_rate or not self.contacts:
            return None
        c = self.rng.choice(self.contacts)
        return self.rng.choice([
            b'{"event_id": "x", "contact_id": "' + c["id"].encode() + b'", "type": "email_open", "ts": "yesterday"}',
            b"<html>502 Bad Gateway</html>",
            orjson.dumps({"event_id": "y", "contact_id": c["id"], "type": "consent_changed", "ts": now_ms,
                          "properties": {"channel": "fax", "status": "subscribed"}}),
        ])

    # -- the catalogue --
    def _update(self, pid: str, now_ms: int) -> dict:
        """A product update as the shop sends it (docs/campaigns.md, "Catalog triggers")."""
        p = self.catalog[pid]
        p["changed_ms"] = now_ms
        self.catalog_seq += 1
        return {"event_id": f"u-{self.catalog_seq}-{uuid.UUID(int=self.rng.getrandbits(128)).hex[:12]}",
                "product_id": pid, "type": "product_updated", "ts": format_ms(now_ms),
                "properties": {"price": _money(p["price"]), "inventory": p["inventory"], "title": p["title"],
                               "url": f"https://shop.example/p/{pid}"}}

    def catalog_start(self, now_ms: int) -> list[dict]:
        """The first update of every product (sets its price and stock; fires nothing)."""
        return [self._update(pid, now_ms) for pid in self.catalog]

    def catalog_tick(self, now_ms: int) -> list[dict]:
        """Now and then (every 32-64 h of production time: 20-40 s at a 45 s window) one change of
        the catalogue, in turn: a price drop of 10-30 %, a product sold out, restocked at the next
        change, another running low (under 5), the end of the sale; then again."""
        rng = self.rng
        if self.next_catalog_ms is None:  # the first change once people have looked around
            self.next_catalog_ms = self._later(now_ms, *_CATALOG_EVERY)
            return []
        if now_ms < self.next_catalog_ms:
            return []
        self.next_catalog_ms = self._later(now_ms, *_CATALOG_EVERY)
        items = [(pid, p) for pid, p in self.catalog.items() if pid not in _STEADY]
        choices = {"drop": [pid for pid, p in items if p["price"] == p["list_price"]],
                   "sell_out": [pid for pid, p in items if p["inventory"] > 0],
                   "restock": [pid for pid, p in items if p["inventory"] == 0],
                   "low": [pid for pid, p in items if p["inventory"] >= LOW_STOCK_BELOW],
                   "sale_over": [pid for pid, p in items if p["price"] < p["list_price"]]}
        for _ in _CATALOG_PLAN:  # the next step of the plan that has a product to change
            action = _CATALOG_PLAN[self.catalog_step % len(_CATALOG_PLAN)]
            self.catalog_step += 1
            pool = choices[action]
            if pool:
                break
        else:
            return []
        # the most viewed since its last change (the most people to tell; not the one just changed)
        pid = max(pool, key=lambda q: self.views[q])
        self.views[pid] = 0
        p = self.catalog[pid]
        if action == "drop":
            pct = rng.choice((10, 15, 20, 25, 30))
            p["price"] = (p["list_price"] * (100 - pct) / 100).quantize(Decimal("0.01"))
        elif action == "sale_over":
            p["price"] = p["list_price"]
        elif action == "sell_out":
            p["inventory"] = 0
        elif action == "low":
            p["inventory"] = rng.randint(2, 4)
        else:
            p["inventory"] = rng.randint(15, 40)
        return [self._update(pid, now_ms)]

    def name_of(self, contact_id: str) -> str:
        try:
            return self.contacts[int(contact_id.split("-")[1])]["name"]
        except (IndexError, ValueError):
            return "?"


# -- describing changes -------------------------------------------------------------------
_EVENT_WHY = {
    "email_open": "opened an email", "email_click": "clicked an email", "sms_click": "clicked an SMS",
    "push_open": "opened a push", "order_placed": "placed an order", "checkout_started": "started a checkout",
    "profile_updated": "updated their profile",
}


def describe_change(rec: dict, window: str, abandoned_after: str, abandoned_expires: str,
                    lapsed_after: str = "90d") -> str:
    """Why a change happened, in words ("opened an email", "open aged out (window 45s)");
    `lapsed_after` is the win-back segment's 90 days on the demo's clock."""
    cause, seg, enter = rec.get("cause") or {}, rec.get("segment_id", ""), rec.get("direction") == "enter"
    if cause.get("kind") == "event":
        etype = cause.get("type") or ""
        if etype == "consent_changed":
            return "subscribed" if enter else "unsubscribed"
        if etype == "checkout_started" and not enter:
            return "started a new checkout"
        return _EVENT_WHY.get(etype, etype.replace("_", " "))
    if seg == "abandoned-checkout":
        return (f"checkout not completed within {abandoned_after}" if enter
                else f"reminder period over ({abandoned_expires})")
    if seg == "lapsed-customer" and enter:  # the win-back segment of the built-in shop campaigns
        return f"no order for {lapsed_after} (90d in production)"
    if enter:
        return f"their order aged out (window {window}), recent interest still inside"
    what = {"email-espresso": "email open/click", "sms-espresso": "SMS click", "push-espresso": "push open"}
    return f"{what.get(seg, 'activity')} aged out (window {window})"


def _money(d: Decimal) -> str:
    return f"{d:.2f}"


class ProductLine(NamedTuple):
    """What the printer knows of a product, from the updates it read."""

    title: str
    price: str | None
    inventory: int | None


#: What a product update may fire (the `catalog:` kinds of campaign triggers).
CATALOG_KINDS = ("price_drop", "back_in_stock", "low_stock")


def describe_update(old: ProductLine | None, new: ProductLine) -> tuple[str, str, str]:
    """(what changed, PRICE or STOCK, the change in words) of a product update: what changed is
    a catalog trigger's kind (`CATALOG_KINDS`: price_drop "Moka pot 39.00 -> 31.20 (-20 %)",
    back_in_stock "Moka pot back in stock (25)", low_stock "Moka pot: only 3 left") or a change
    that fires nothing (first, sale_over, sold_out, stock, unchanged)."""
    if old is None:
        return "first", "NEW  ", f"{new.title} {new.price}, {new.inventory} in stock"
    if new.price is not None and old.price is not None and new.price != old.price:
        was, now = Decimal(old.price), Decimal(new.price)
        if now < was:
            pct = ((was - now) * 100 / was).quantize(Decimal("1"))
            return "price_drop", "PRICE", f"{new.title} {old.price} -> {new.price} (-{pct} %)"
        return "sale_over", "PRICE", f"{new.title} {old.price} -> {new.price} (sale over)"
    a, b = old.inventory, new.inventory
    if a is not None and b is not None and a != b:
        if a == 0:
            return "back_in_stock", "STOCK", f"{new.title} back in stock ({b})"
        if b == 0:
            return "sold_out", "STOCK", f"{new.title} sold out"
        if a >= LOW_STOCK_BELOW > b:
            return "low_stock", "STOCK", f"{new.title}: only {b} left"
        return "stock", "STOCK", f"{new.title} stock {a} -> {b}"
    return "unchanged", "     ", f"{new.title} unchanged"


# -- settings ------------------------------------------------------------------------------
def _seconds(value: Any) -> Any:
    """`--duration 90` has always meant seconds; a duration such as 90s or 2m works too."""
    if isinstance(value, str):
        try:
            secs = float(value)
        except ValueError:
            return value  # a duration such as 90s: `Duration` parses it
        if secs != secs or secs in (float("inf"), float("-inf")):
            raise ValueError("not a number of seconds")
        return int(secs * 1000)
    return value


def _positive(value: Any) -> Any:
    if value <= 0:
        raise ValueError("must be more than 0")
    return value


#: Seconds (a bare number) or a duration, in milliseconds.
Seconds = Annotated[Duration, BeforeValidator(_seconds)]


class DemoSettings(BaseModel):
    """The flags of `espresso demo` (no environment twins, except KAFKA_BOOTSTRAP_SERVERS for
    the broker); checked before anything starts."""

    model_config = ConfigDict(frozen=True, extra="forbid", validate_default=True)

    duration: Annotated[Seconds | None, AfterValidator(lambda v: v if v is None else _positive(v)), Opt(
        "--duration", metavar="SECONDS", help="how long to run, in seconds or as a duration such as 2m; "
        "none: until Ctrl-C on a terminal, 60 s otherwise",
        fix="give seconds or a duration such as 90s or 2m")] = None
    rate: Annotated[float, AfterValidator(_positive), Opt(
        "--rate", help="events per second", fix="give a number of events per second such as 8")] = 8.0
    contacts: Annotated[Count, Opt("--contacts", help="people in the shop")] = 300
    window: Annotated[Duration, AfterValidator(_positive), Opt(
        "--window", help="window of the demo espresso segments, 72h in production; campaign delays, sequence "
        "steps, caps and re-entry periods shrink in proportion", fix="give a duration such as 45s or 2m")] = "45s"
    abandoned_after: Annotated[Duration, AfterValidator(_positive), Opt(
        "--abandoned-after", help="a checkout with no order this long is abandoned",
        fix="give a duration such as 15s or 1m")] = "15s"
    seed: Annotated[int | None, Opt("--seed", help="random seed of the traffic; none: a random one")] = None
    metrics_port: Annotated[Port, Opt(
        "--metrics-port", help="port of the flow's /metrics /livez /readyz; a free one if taken or 0, -1 for none",
        fix="give a port 0-65535, or -1 for none")] = 9464
    workers: Annotated[Count, Opt("--workers", help="Bytewax workers of the flow")] = 1
    no_campaigns: Annotated[bool, Opt(
        "--no-campaigns", switch=True,
        help="segments only: run no retargeting campaigns and print no messages")] = False
    verbose: Annotated[bool, Opt("--verbose", switch=True,
                                 help="show the flow's log instead of keeping it in a file")] = False


def add_demo_args(p: argparse.ArgumentParser) -> None:
    add_arguments(p, DemoSettings)


def cmd_demo(args: argparse.Namespace) -> int:
    s = load(DemoSettings, args)
    duration = s.duration / 1000 if s.duration is not None else (None if sys.stdout.isatty() else 60.0)
    return Demo(s, duration).run()


# -- the demo -------------------------------------------------------------------------------
class _Style:
    def __init__(self, tty: bool) -> None:
        self.tty = tty

    def __call__(self, text: str, code: str) -> str:
        return f"\033[{code}m{text}\033[0m" if self.tty else text


class Topics(NamedTuple):
    events: str
    changes: str
    dlq: str
    messages: str | None = None  # None: no campaigns
    decisions: str | None = None
    conversions: str | None = None
    catalog: str | None = None  # product updates (catalog triggers); None: no campaigns

    def partitions(self) -> dict[str, int]:
        counts = {self.events: 4, self.changes: 4, self.dlq: 1}
        if self.messages and self.decisions and self.conversions:
            counts.update({self.messages: 1, self.decisions: 1, self.conversions: 1})
        if self.catalog:
            counts[self.catalog] = 1
        return counts


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("0.0.0.0", port))
            return True
        except (OSError, OverflowError):
            return False


#: Ids remembered to join a message to its change and a change to its event (pruned by age).
_REMEMBER = 100_000
#: A message whose change has not been read yet waits this long for it, then is shown anyway.
_JOIN_WAIT_S = 0.5
#: Product updates remembered to find the one behind a catalog message (by its run id).
_CATALOG_REMEMBER = 200
#: How long the flow's contact events wait for product updates stamped before them (`run
#: --catalog-lateness`, 2 s by default): the demo's shop stamps its updates as it sends them.
#: An idle catalogue partition tells the shards its time this often too (`run --idle-emit`,
#: 1 s by default), so a contact event waits 100-200 ms, not up to 3 s.
_CATALOG_LATENESS = "100ms"


class Demo:
    def __init__(self, settings: DemoSettings, duration: float | None, out: TextIO = sys.stdout) -> None:
        self.s, self.duration, self.out = settings, duration, out
        self.style = _Style(out.isatty())
        self.stop = threading.Event()
        self.window = format_duration(settings.window)
        self.after = format_duration(settings.abandoned_after)
        self.expires = format_duration(max(settings.window, 4 * settings.abandoned_after))
        self.lapsed = scaled_duration("90d", settings.window)
        self.traffic = Traffic(settings.contacts, settings.seed, window_ms=settings.window)
        self.stats: Counter = Counter()
        self.latencies: list[float] = []
        self.produced = 0
        self.dead: Counter = Counter()
        # messages: event id -> wall ms it was produced; change id -> its trigger; read, not yet shown
        self.produced_at: dict[str, int] = {}
        self.triggers: dict[str, Trigger] = {}
        # event-triggered campaigns: event type -> campaign ids; run id -> the event that started it
        self.event_campaigns: dict[str, tuple[str, ...]] = {}
        self.run_triggers: dict[str, Trigger] = {}
        self.sequences: dict[str, tuple[str, ...]] = {}  # campaign id -> its step ids (sequences only)
        self.steps: Counter = Counter()  # (campaign id, step id) -> messages sent
        self.exited: Counter = Counter()  # campaign id -> runs ended by an exit_when event
        self.waiting: list[tuple[dict, int, float]] = []
        self.sent: Counter = Counter()
        self.msg_latency: dict[str, list[int]] = {}  # channel -> ms from trigger event to message read
        self.due_latency: list[int] = []  # ms from due_at to message read (timed messages)
        self.decisions: Counter = Counter()
        # catalog triggers: campaign id -> trigger kind; the products as read; the latest updates
        # that may trigger (event id, trigger); updates read per kind; messages per campaign
        self.catalog_campaigns: dict[str, str] = {}
        self.products: dict[str, ProductLine] = {}
        self.catalog_updates: deque[tuple[str, Trigger]] = deque(maxlen=_CATALOG_REMEMBER)
        self.catalog_kinds: Counter = Counter()
        self.catalog_sent: Counter = Counter()
        self.catalog_decisions: Counter = Counter()  # (campaign id, outcome) -> decisions other than sent

    def say(self, text: str = "") -> None:
        print(text, file=self.out, flush=True)

    def run(self) -> int:
        workdir = Path(tempfile.mkdtemp(prefix="espresso-demo-"))
        broker, flow, kafka, created = None, None, None, False
        external = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "").strip()
        campaigns = not self.s.no_campaigns
        try:
            if external:
                bootstrap = external
                tag = uuid.uuid4().hex[:6]
                topics = Topics(f"demo-{tag}-contact-events", f"demo-{tag}-segment-changes", f"demo-{tag}-dlq",
                                *((f"demo-{tag}-messages", f"demo-{tag}-decisions", f"demo-{tag}-conversions",
                                   f"demo-{tag}-catalog-events") if campaigns else ()))
                self.say(f"espresso demo: using Kafka at {bootstrap} (KAFKA_BOOTSTRAP_SERVERS), topics "
                         f"{', '.join(t for t in topics if t)}")
            else:
                broker = EmbeddedBroker(workdir).start()
                bootstrap = broker.bootstrap
                topics = Topics("contact-events", "segment-changes", "contact-events-dlq",
                                *(("retargeting-messages", "retargeting-decisions", "conversions", "catalog-events")
                                  if campaigns else ()))
                self.say(f"espresso demo: embedded broker (tansu, in memory) at {bootstrap}")
            # Every client of the demo from the one factory: a secured cluster works as for `run`.
            kafka = KafkaConfig.from_env(bootstrap, os.environ, client_id="espresso-demo")
            create_topics(kafka, topics.partitions())
            created = True
            segments = workdir / "demo-segments.yaml"
            segments.write_text(demo_segments_yaml(self.window, self.after, self.expires))
            camps = None
            if campaigns:
                camps = workdir / "demo-campaigns.yaml"
                text = demo_campaigns_yaml(self.s.window)
                camps.write_text(text)
                self.event_campaigns = event_triggers(text)
                self.sequences = sequence_steps(text)
                self.catalog_campaigns = catalog_triggers(text)
            port = self._metrics_port()
            flow = self._start_flow(bootstrap, topics, segments, camps, port, workdir)
            where = (f"metrics at http://127.0.0.1:{port}/metrics, health /livez /readyz; " if port >= 0 else "")
            self.say(f"espresso demo: flow running ({self.s.workers} worker(s)); {where}segments: {segments}")
            self.say(f"espresso demo: segments email/sms/push-espresso with a {self.window} window, "
                     f"abandoned-checkout after {self.after}; "
                     + (f"running {self.duration:g}s" if self.duration else "Ctrl-C to stop"))
            if camps is not None:
                self.say(f"espresso demo: built-in campaigns (espresso and shop automations) with every duration "
                         f"x {self.window}/72h, each message printed as it is read from {topics.messages}; "
                         f"campaigns: {camps}")
                shop = ", ".join(f"{p['title']} {_money(p['price'])}" for pid, p in self.traffic.catalog.items()
                                 if pid not in _STEADY)
                every = "-".join(format_duration(round(ms * self.traffic.scale / 1000) * 1000)
                                 for ms in _CATALOG_EVERY)
                self.say(f"espresso demo: catalogue on {topics.catalog}: {shop}; every {every} a price drop "
                         "(10-30 %), sell-out, restock or low stock, for the price-drop, back-in-stock and low-stock "
                         "campaigns")
            self.say()
            self._loop(kafka, topics, flow, port)
        except KeyboardInterrupt:
            pass
        finally:
            self.stop.set()
            code = self._stop_flow(flow)
            if broker is not None:
                broker.stop()
            elif created:
                self._delete_topics(kafka, topics)
            self._summary(code, topics if flow is not None else None)
            shutil.rmtree(workdir, ignore_errors=True)
        return 0

    # -- pieces --
    def _metrics_port(self) -> int:
        port = self.s.metrics_port
        if port < 0:
            return -1
        return port if port > 0 and _port_free(port) else free_port()

    def _delete_topics(self, kafka: KafkaConfig, topics: Topics) -> None:
        from confluent_kafka.admin import AdminClient

        try:
            admin = AdminClient(kafka.admin())
            for f in admin.delete_topics([t for t in topics if t]).values():
                f.result(10)
        except Exception:  # noqa: BLE001
            pass

    def _start_flow(self, bootstrap: str, topics: Topics, segments: Path, campaigns: Path | None, port: int,
                    workdir: Path) -> subprocess.Popen:
        argv = [sys.executable, "-m", "commands.cli", "run", "--bootstrap-servers", bootstrap,
                "--input-topic", topics.events, "--output-topic", topics.changes, "--dlq-topic", topics.dlq,
                "--segments", str(segments), "--allowed-lateness", "2s", "--shards-per-partition", "4",
                "--metrics-port", str(port), "--workers", str(self.s.workers), "--epoch-interval", "2s"]
        if campaigns is not None and topics.messages and topics.decisions and topics.conversions:
            argv += ["--campaigns", str(campaigns), "--messages-topic", topics.messages,
                     "--decisions-topic", topics.decisions, "--conversions-topic", topics.conversions]
            if topics.catalog:
                argv += ["--catalog-topic", topics.catalog, "--catalog-lateness", _CATALOG_LATENESS,
                         "--idle-emit", _CATALOG_LATENESS]
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
        for var in ("ESPRESSO_CAMPAIGNS", "ESPRESSO_MESSAGES_TOPIC", "ESPRESSO_DECISIONS_TOPIC",
                    "ESPRESSO_CONVERSIONS_TOPIC", "ESPRESSO_CATALOG_TOPIC", "ESPRESSO_CATALOG_LATENESS"):
            env.pop(var, None)  # --no-campaigns means none, whatever the shell exports
        self.flow_log = workdir / "flow.log"
        log = None if self.s.verbose else open(self.flow_log, "wb")
        proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                start_new_session=True)
        if log is not None:
            log.close()
        return proc

    def _stop_flow(self, flow: subprocess.Popen | None) -> int | None:
        if flow is None:
            return None
        if flow.poll() is None:
            flow.send_signal(signal.SIGTERM)
            try:
                flow.wait(15)
            except subprocess.TimeoutExpired:
                flow.kill()
                flow.wait()
        return flow.returncode

    def _produce_updates(self, p: Any, topic: str | None, updates: list[dict]) -> None:
        if topic is None:
            return
        for u in updates:
            p.produce(topic, orjson.dumps(u), u["product_id"].encode())
            self.produced_at[u["event_id"]] = time.time_ns() // 1_000_000

    def _producer_thread(self, kafka: KafkaConfig, topic: str, catalog: str | None = None) -> None:
        from confluent_kafka import Producer

        p = Producer(kafka.producer())
        interval = 1.0 / self.s.rate
        nxt = time.monotonic()
        self._produce_updates(p, catalog, self.traffic.catalog_start(time.time_ns() // 1_000_000))
        while not self.stop.is_set():
            now_ms = time.time_ns() // 1_000_000
            self._produce_updates(p, catalog, self.traffic.catalog_tick(now_ms))
            for ev in self.traffic.tick(now_ms):
                p.produce(topic, orjson.dumps(ev), ev["contact_id"].encode())
                produced_ms = time.time_ns() // 1_000_000
                self.produced_at[ev["event_id"]] = produced_ms
                self.produced += 1
                for campaign_id in self.event_campaigns.get(ev["type"], ()):  # the runs it may start
                    self.run_triggers[run_id(ev["contact_id"], campaign_id, ev["event_id"])] = Trigger(
                        parse_ts(ev["ts"]), ev["type"], produced_ms)
            bad = self.traffic.invalid(now_ms)
            if bad is not None:
                p.produce(topic, bad)
                self.produced += 1
            p.poll(0)
            if len(self.produced_at) > _REMEMBER:  # keep the newest half (dicts keep insertion order)
                self.produced_at = dict(list(self.produced_at.items())[_REMEMBER // 2:])
            if len(self.run_triggers) > _REMEMBER:
                self.run_triggers = dict(list(self.run_triggers.items())[_REMEMBER // 2:])
            nxt += self.rng_interval(interval)
            delay = nxt - time.monotonic()
            if delay > 0:
                self.stop.wait(delay)
            else:
                nxt = time.monotonic()
        p.flush(5)

    def rng_interval(self, mean: float) -> float:
        return self.traffic.rng.expovariate(1.0 / mean)

    def _wait_ready(self, port: int, flow: subprocess.Popen, timeout_s: float = 60.0) -> None:
        """Until the flow's /readyz answers 200 (it reads every partition), so the first events'
        latencies are the flow's, not its start-up; without a metrics port, not at all."""
        if port < 0:
            return
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: never a proxy
        end = time.monotonic() + timeout_s
        while time.monotonic() < end and flow.poll() is None and not self.stop.is_set():
            try:
                with opener.open(f"http://127.0.0.1:{port}/readyz", timeout=1) as res:
                    if res.status == 200:
                        return
            except OSError:  # not listening yet, or 503 while starting
                pass
            self.stop.wait(0.1)

    def _loop(self, kafka: KafkaConfig, topics: Topics, flow: subprocess.Popen, port: int = -1) -> None:
        from confluent_kafka import Consumer, TopicPartition

        from connectors.consume import next_batch

        consumer = Consumer(kafka.consumer("espresso-demo-printer"))
        md = consumer.list_topics(timeout=10)  # leaders known before assign: no 500 ms first-fetch delay
        read = [t for t in (topics.catalog, topics.changes, topics.dlq, topics.messages, topics.decisions) if t]
        consumer.assign([TopicPartition(t, p, 0) for t in read for p in md.topics[t].partitions])
        self._wait_ready(port, flow)
        producer = threading.Thread(target=self._producer_thread, args=(kafka, topics.events, topics.catalog),
                                    name="demo-traffic", daemon=True)
        producer.start()
        self.t0 = time.monotonic()
        try:
            while not self.stop.is_set():
                if self.duration is not None and time.monotonic() - self.t0 >= self.duration:
                    break
                if flow.poll() is not None:
                    self.say(self.style(f"espresso demo: the flow exited with code {flow.returncode}; "
                                        f"its log: {getattr(self, 'flow_log', '(console)')}", "31"))
                    break
                self._handle(next_batch(consumer, 200, 0.2), topics)
        finally:
            self.stop.set()
            producer.join(10)
            # let the last changes and messages through before stopping the flow
            end = time.monotonic() + 1.0
            while time.monotonic() < end:
                self._handle(consumer.consume(200, 0.2), topics)
            self._release(final=True)
            consumer.close()

    def _handle(self, batch: list, topics: Topics) -> None:
        """Product updates and changes first, so a message read in the same batch as its trigger follows it."""
        batch = [m for m in batch if not m.error()]
        for msg in batch:
            if msg.topic() == topics.catalog:
                self._show_update(msg)
        for msg in batch:
            if msg.topic() == topics.changes:
                self._show_change(msg)
            elif msg.topic() == topics.dlq:
                self._show_dead(msg)
        read_ms = time.time_ns() // 1_000_000
        for msg in batch:
            if msg.topic() == topics.messages:
                self.waiting.append((orjson.loads(msg.value()), read_ms, time.monotonic()))
            elif msg.topic() == topics.decisions:
                rec = orjson.loads(msg.value())
                self.decisions[rec.get("outcome", "?")] += 1
                if rec.get("campaign_id") in self.catalog_campaigns:
                    self.catalog_decisions[(rec["campaign_id"], rec.get("outcome", "?"))] += 1
                if rec.get("outcome") == "exited":
                    self.exited[rec.get("campaign_id")] += 1
        self._release()

    def _show_change(self, msg: Any) -> None:
        rec = orjson.loads(msg.value())
        now_ms = time.time_ns() // 1_000_000
        enter = rec["direction"] == "enter"
        seg = rec["segment_id"]
        self.stats[(seg, rec["direction"])] += 1
        at_ms = int(datetime.fromisoformat(rec["at"]).timestamp() * 1000)
        cause = rec.get("cause") or {}
        caused_by_event = cause.get("kind") == "event"
        if caused_by_event:
            self.latencies.append(now_ms - at_ms)
        self._remember(rec["change_id"], Trigger(at_ms, cause.get("type") if caused_by_event else None,
                                                 self.produced_at.get(cause.get("event_id") or "")))
        s = self.style
        when = datetime.fromtimestamp(at_ms / 1000, tz=timezone.utc).astimezone().strftime("%H:%M:%S.%f")[:-3]
        who = f"{rec['contact_id']} ({self.traffic.name_of(rec['contact_id'])})"
        arrow = s("ENTER", "1;32") if enter else s("EXIT ", "1;31")
        why = describe_change(rec, self.window, self.after, self.expires, self.lapsed)
        tail = "" if caused_by_event else s("  [time]", "2")
        self.say(f"{when}  {who:<16} {arrow}  {seg:<19} {why}{tail}")

    def _show_update(self, msg: Any) -> None:
        """A product update: one line (not the first of each product, listed at start); the
        update a catalog campaign's messages will name."""
        rec = orjson.loads(msg.value())
        props, pid = rec.get("properties") or {}, rec.get("product_id", "?")
        old = self.products.get(pid)
        new = ProductLine(props.get("title") or (old.title if old else pid),
                          props["price"] if "price" in props else (old.price if old else None),
                          props["inventory"] if "inventory" in props else (old.inventory if old else None))
        self.products[pid] = new
        if old is None:
            return
        what, label, text = describe_update(old, new)
        at_ms = parse_ts(rec["ts"])
        self.catalog_kinds[what] += 1
        if what in CATALOG_KINDS:
            self.catalog_updates.append((rec["event_id"], Trigger(at_ms, what, self.produced_at.get(rec["event_id"]))))
        s = self.style
        self.say(f"{clock(at_ms)}  {'catalog':<16} {s(label, '1;35')}  {text}")

    def _catalog_trigger(self, rec: dict) -> Trigger | None:
        """The update behind a catalog message: its run is (contact, campaign, update id)."""
        cid, camp, rid = rec.get("contact_id", ""), rec.get("campaign_id", ""), rec.get("run_id")
        for event_id, trigger in reversed(self.catalog_updates):
            if run_id(cid, camp, event_id) == rid:
                return trigger
        return None

    def _remember(self, change_id: str, trigger: Trigger) -> None:
        self.triggers[change_id] = trigger
        if len(self.triggers) > _REMEMBER:
            self.triggers = dict(list(self.triggers.items())[_REMEMBER // 2:])

    def _release(self, final: bool = False) -> None:
        """Show the messages read whose change is known (or that waited long enough for it)."""
        if not self.waiting:
            return
        now = time.monotonic()
        keep = []
        for rec, read_ms, read_at in self.waiting:
            if rec.get("campaign_id") in self.catalog_campaigns:  # started by a product update, once it is read
                by_event, trigger = False, self._catalog_trigger(rec)
            else:
                by_event = rec.get("change_id") is None  # a run started by an event: known since it was produced
                trigger = (self.run_triggers.get(rec.get("run_id") or "") if by_event
                           else self.triggers.get(rec["change_id"]))
            if trigger is not None or by_event or final or now - read_at >= _JOIN_WAIT_S:
                self._show_message(rec, trigger, read_ms)
            else:
                keep.append((rec, read_ms, read_at))
        self.waiting = keep

    def _show_message(self, rec: dict, trigger: Trigger | None, read_ms: int) -> None:
        channel = rec.get("channel", "?")
        self.sent[channel] += 1
        if rec.get("step_id"):
            self.steps[(rec.get("campaign_id"), rec["step_id"])] += 1
        if rec.get("campaign_id") in self.catalog_campaigns:
            self.catalog_sent[rec["campaign_id"]] += 1
        kind, ms = message_latency(rec, trigger, read_ms)
        if kind == "event":
            self.msg_latency.setdefault(channel, []).append(ms)
        else:
            self.due_latency.append(ms)
        who = f"{rec.get('contact_id', '?')} ({self.traffic.name_of(rec.get('contact_id', ''))})"
        self.say(describe_message(rec, who, trigger, read_ms, self.style))

    def _show_dead(self, msg: Any) -> None:
        headers = dict(msg.headers() or [])
        reason = headers.get("espresso-reason", b"?").decode()
        self.dead[reason] += 1
        detail = headers.get("espresso-detail", b"").decode("utf-8", "replace")
        self.say(self.style(f"{datetime.now().strftime('%H:%M:%S.%f')[:-3]}  dead letter       "
                            f"{reason}: {detail[:70]}", "2;33"))

    def _summary(self, code: int | None, topics: Topics | None = None) -> None:
        secs = time.monotonic() - getattr(self, "t0", time.monotonic())
        campaigns = topics is not None and topics.messages is not None
        self.say()
        self.say(f"espresso demo: {self.produced} events in {secs:.0f}s; "
                 f"{sum(self.stats.values())} segment changes; "
                 + (f"{sum(self.sent.values())} messages; " if campaigns else "")
                 + f"{sum(self.dead.values())} dead letters"
                 + (f" ({', '.join(f'{k} {v}' for k, v in sorted(self.dead.items()))})" if self.dead else ""))
        for seg in sorted({s for s, _ in self.stats}):
            self.say(f"  {seg:<20} {self.stats[(seg, 'enter')]:>4} enter  {self.stats[(seg, 'exit')]:>4} exit")
        if self.latencies:
            p50, p99 = percentiles(self.latencies)
            self.say(f"  event -> change readable on the topic: p50 {p50} ms, p99 {p99} ms "
                     f"({len(self.latencies)} event-caused changes)")
        if campaigns:
            for channel in ("email", "sms", "push"):
                lat = self.msg_latency.get(channel, [])
                parts = []
                if lat:
                    p50, p99 = percentiles(lat)
                    parts.append(f"{len(lat)} at their trigger event (p50 {p50} ms, p99 {p99} ms)")
                if self.sent[channel] > len(lat):
                    parts.append(f"{self.sent[channel] - len(lat)} timed")
                line = f"  {channel + ' messages':<20} {self.sent[channel]:>4} sent"
                self.say(line + (f"   {', '.join(parts)}" if parts else ""))
            every = [ms for lat in self.msg_latency.values() for ms in lat]
            if every:
                p50, p99 = percentiles(every)
                self.say(f"  event -> message readable on the topic: p50 {p50} ms, p99 {p99} ms "
                         f"({len(every)} messages sent at their trigger event)")
            if self.due_latency:
                p50, p99 = percentiles(self.due_latency)
                self.say(f"  timed messages (after a delay or deferral, or a time-driven change): read p50 "
                         f"{format_latency(p50)}, p99 {format_latency(p99)} after due ({len(self.due_latency)}; timers "
                         "wait for the 2s allowed lateness)")
            for campaign_id, step_ids in self.sequences.items():  # per sequence: messages per step, exits
                counts = [(self.steps[(campaign_id, st)], st) for st in step_ids]
                total, exited = sum(n for n, _ in counts), self.exited[campaign_id]
                if total or exited:
                    steps = ", ".join(f"{n} {st}" for n, st in counts if n)
                    self.say(f"  {campaign_id:<20} {total:>4} sent" + (f"   {steps}" if steps else "")
                             + (f"; {exited} run{'s' if exited != 1 else ''} exited" if exited else ""))
            if self.catalog_campaigns:  # the catalogue's changes, and what the catalog campaigns sent
                changes = ", ".join(f"{k.replace('_', ' ')} {n}" for k, n in self.catalog_kinds.most_common())
                self.say(f"  {'catalog':<20} {sum(self.catalog_kinds.values()):>4} updates"
                         + (f"   {changes}" if changes else ""))
                for campaign_id in self.catalog_campaigns:  # sent, and why the others did not go out
                    other = ", ".join(f"{o} {n}" for (c, o), n in self.catalog_decisions.most_common() if c == campaign_id)
                    self.say(f"  {campaign_id:<20} {self.catalog_sent[campaign_id]:>4} sent"
                             + (f"   {other}" if other else ""))
            if self.decisions:
                self.say("  other decisions: " + ", ".join(f"{k} {v}" for k, v in self.decisions.most_common()))
        if code not in (None, 0):
            self.say(f"  the flow exited with code {code}")
