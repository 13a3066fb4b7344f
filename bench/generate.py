"""Deterministic generator of a realistic contact-event stream (JSONL, event-time order).

    python bench/generate.py --contacts 100000 --events 1500000 --days 21 --seed 42 \
        --start 2026-11-02T00:00:00Z --out bench/data/events.jsonl

What the stream looks like (same seed and parameters, same bytes):

* Contacts have a heavy-tailed activity weight (Pareto, alpha 1.5, capped at 300x the
  minimum): a few very active contacts, many light ones.
* Every contact's first event is a `consent_changed` (email for ~90% of contacts, sms ~30%,
  push ~25%; the primary channel at sign-up, others at sign-up or later), often with a
  `reason` (`double_opt_in`, `signup_form`, `checkout`, `keyword`, `app_prompt`). ~40% of
  contacts sign up in the first 12 h of the stream (existing audience), the rest over the
  period. Some later unsubscribe (email 5%, sms 8%, push 6%; reasons `user_request`,
  `bounce`, `spam_complaint`, `stop_keyword`), a few email unsubscribers re-subscribe.
* A `profile_updated` (first_name, email/phone, country, timezone and, for ~70% of
  contacts, `birthday`) follows sign-up by 0.2-3 s. A birthday is `"MM-DD"` (~60%) or
  `"YYYY-MM-DD"` (years 1950-2006), uniform over the calendar, valid dates only (so a few
  `02-29`: any year for `MM-DD`, leap years for full dates). ~20% of contacts update their
  profile later: `first_name` (~55%), `birthday` (~43%) or, for ~2% of those updates, a
  move to another `timezone` (with its `country` when that differs).
* Email campaigns (Tue/Thu 09:00 and Sat 10:00 UTC), sms campaigns (Mon 17:00, Fri 16:00
  UTC) and push campaigns (Mon/Wed/Fri/Sat/Sun 18:30 UTC) produce bursts of `email_open`,
  `sms_click`, `push_open` (most within minutes, a long tail over two days); ~80% of
  `email_click`s follow an open by seconds (4% in the same millisecond). Automated emails
  (welcome, cart reminder, ...) are opened at random times.
* `app_open` (30% of push opens have an `app_open` in the same millisecond),
  `product_viewed` (product_id, collection_ids, price; 60% seconds to minutes after an app
  open or a click), `added_to_cart` (product_id, price, quantity) of a viewed product 5 s to
  10 min after the view (25% of views have one), `checkout_started` with items (product_id,
  collection_ids such as `dogs`/`cats`, quantity, price; ~70% 30 s to 30 min after an
  `added_to_cart` of their first item), ~45% followed by an `order_placed` (same items,
  order_id, value, currency) 20 s to 45 min later, the rest abandoned. Prices are in the
  contact's currency (the same product has the same price in a contact's view, cart and
  checkout). ~0.4% of orders have an `email_open` of the same contact in the same
  millisecond (before or after it in the file). Of the shop events, the built-in espresso
  segments use only `order_placed`; the built-in shop automations also react to checkouts,
  views, carts, email subscriptions and birthdays.
* Random-time activity follows a daily rhythm (local hours of the country mix: quiet at
  night, peaks around noon and in the evening).
* `ts` is ISO-8601 UTC with milliseconds and `Z` for most events, integer epoch ms for
  ~50% of app/push/product-view/cart events (a mobile SDK) and ~3% of the others.
* Activity mix (share of the events after sign-up consents and profiles): email_open 36%,
  email_click 9%, sms_click 3.5%, push_open 5%, app_open ~9.6%, product_viewed 22%,
  added_to_cart 5.5%, checkout_started 6.5%, order_placed 2.9%.

Version 2 (GEN_VERSION; the bench caches streams by it) adds to version 1: `birthday` at
sign-up and the v2 birthday format (v1: ~8% of contacts, a later `YYYY-MM-DD` with days
1-28), `added_to_cart`, checkouts after carts, prices in the contact's currency (v1:
product views in EUR), timezone moves in ~2% of later profile updates (v1: 30% changed
country and timezone), and a new activity mix: the messaging shares are v1's, the shop
funnel is realistic (v1: product_viewed 12%, app_open 20%, checkout_started 10%,
order_placed 4.5%). The same parameters give a different stream than v1.

Noise (flag-controlled): ~0.1% exact duplicate lines (a redelivered line 1-20 lines after
the original, so slightly late) and ~0.05% invalid lines (not JSON, not an object,
missing field, mistyped field, bad ts, bad properties, bad consent); invalid lines never
share an event_id with a valid event. `--events` counts distinct valid events; the file
has those plus the noise lines.

`generate(...)` yields the JSONL lines (bytes, each ending in a newline); `events(...)`
yields the valid events as dicts without noise. Both take the same parameters as the CLI.
"""

from __future__ import annotations

import argparse
import bisect
import itertools
import math
import random
import sys
import time
from datetime import date, datetime, timedelta, timezone
from operator import itemgetter
from pathlib import Path
from typing import Iterator

import orjson

__all__ = ["generate", "events", "GEN_VERSION", "DEFAULTS", "parse_start", "write_stream"]

#: Bump when the output for given parameters changes (the harness caches by it).
GEN_VERSION = 2

DEFAULTS = {
    "contacts": 100_000,
    "events": 1_500_000,
    "days": 21.0,
    "seed": 42,
    "start": "2026-11-02T00:00:00Z",
    "dup_rate": 0.001,
    "invalid_rate": 0.0005,
}

SEC = 1000
MIN = 60 * SEC
HOUR = 60 * MIN
DAY = 24 * HOUR
WINDOW = 72 * HOUR

# Event kinds (index into TYPES).
CONSENT, PROFILE, OPEN, CLICK, SMS, PUSH, APP, VIEW, CHECKOUT, ORDER, CART = range(11)
TYPES = ("consent_changed", "profile_updated", "email_open", "email_click", "sms_click",
         "push_open", "app_open", "product_viewed", "checkout_started", "order_placed", "added_to_cart")
#: Probability that an event's ts is integer epoch ms instead of an ISO string.
INT_TS = (0.03, 0.03, 0.03, 0.03, 0.03, 0.5, 0.5, 0.5, 0.03, 0.03, 0.5)

# Share of activity events (everything but consent/profile) by kind; app_open takes the
# rounding remainder. The messaging kinds the built-in segments use have v1's shares; the
# shop funnel is views > carts (25% of views) > checkouts (~70% after a cart) > orders (45%).
MIX = {OPEN: 0.36, CLICK: 0.09, SMS: 0.035, PUSH: 0.05, APP: 0.096, VIEW: 0.22, CART: 0.055, CHECKOUT: 0.065,
       ORDER: 0.029}
#: Share of checkouts that follow an `added_to_cart` of their first item.
CHECKOUT_AFTER_CART = 0.7

# code, weight, timezone, UTC offset (h, winter), currency, phone prefix
COUNTRIES = (
    ("DE", 30, "Europe/Berlin", 1, "EUR", "+49"),
    ("US", 14, "America/New_York", -5, "USD", "+1"),
    ("US", 4, "America/Los_Angeles", -8, "USD", "+1"),
    ("GB", 12, "Europe/London", 0, "GBP", "+44"),
    ("FR", 10, "Europe/Paris", 1, "EUR", "+33"),
    ("NL", 6, "Europe/Amsterdam", 1, "EUR", "+31"),
    ("ES", 6, "Europe/Madrid", 1, "EUR", "+34"),
    ("IT", 5, "Europe/Rome", 1, "EUR", "+39"),
    ("AT", 4, "Europe/Vienna", 1, "EUR", "+43"),
    ("CH", 3, "Europe/Zurich", 1, "CHF", "+41"),
    ("SE", 3, "Europe/Stockholm", 1, "SEK", "+46"),
)
FX = {"EUR": 1.0, "USD": 1.08, "GBP": 0.86, "CHF": 0.95, "SEK": 11.4}
FIRST_NAMES = ("Anna", "Ben", "Clara", "David", "Emma", "Felix", "Greta", "Hugo", "Ida", "Jonas",
               "Klara", "Leon", "Mia", "Noah", "Olivia", "Paul", "Quinn", "Rosa", "Sam", "Tara",
               "Uwe", "Vera", "William", "Xenia", "Yusuf", "Zoe", "Lukas", "Sofia", "Elias", "Lea",
               "James", "Chloe", "Lucas", "Marie", "Matteo", "Giulia", "Hanna", "Oscar", "Ella", "Liam")
# Local-time activity by hour, 0..23.
LOCAL_RHYTHM = (0.15, 0.08, 0.05, 0.04, 0.04, 0.08, 0.25, 0.55, 0.8, 0.9, 0.95, 1.0,
                1.0, 0.95, 0.9, 0.9, 0.95, 1.0, 1.1, 1.2, 1.25, 1.1, 0.7, 0.35)
CAMPAIGN_SLUGS = ("new-arrivals", "dog-treats", "cat-toys", "winter-sale", "black-friday-teaser",
                  "black-friday", "cyber-monday", "bird-care", "aquarium-week", "loyalty-points",
                  "free-shipping", "puppy-starter", "kitten-starter", "advent-calendar", "gift-guide")
AUTO_FLOWS = ("flow-welcome", "flow-browse-abandonment", "flow-cart-reminder", "flow-winback",
              "flow-order-follow-up")

# Birthdays: "MM-DD" over a leap year's calendar (02-29 included) or a "YYYY-MM-DD" date.
_MONTH_DAYS = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)
BIRTHDAY_MD = tuple(f"{m + 1:02d}-{d + 1:02d}" for m in range(12) for d in range(_MONTH_DAYS[m]))
BIRTHDAY_FIRST, BIRTHDAY_LAST = date(1950, 1, 1).toordinal(), date(2006, 12, 31).toordinal()

_MASK48 = (1 << 48) - 1
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def parse_start(text: str) -> int:
    """ISO-8601 instant with offset or Z -> epoch ms."""
    dt = datetime.fromisoformat(text.replace("Z", "+00:00") if text.endswith("Z") else text)
    if dt.tzinfo is None:
        raise ValueError(f"start must have an offset or Z: {text!r}")
    return (dt - _EPOCH) // timedelta(milliseconds=1)


def _obf(i: int, salt: int) -> int:
    """Bijective scramble of a counter into 48 bits: unique, random-looking ids."""
    return ((i + salt) * 0x9E3779B97F4B & _MASK48) ^ 0x5DEECE66D


class _IsoFormatter:
    """epoch ms -> `YYYY-MM-DDTHH:MM:SS.mmmZ` from precomputed pieces (no datetime per event)."""

    def __init__(self) -> None:
        self._days: dict[int, str] = {}
        self._sod = [f"{s // 3600:02d}:{s // 60 % 60:02d}:{s % 60:02d}." for s in range(86400)]
        self._ms = [f"{m:03d}Z" for m in range(1000)]

    def __call__(self, ms: int) -> str:
        d, rem = divmod(ms, DAY)
        day = self._days.get(d)
        if day is None:
            day = (_EPOCH + timedelta(days=d)).strftime("%Y-%m-%dT")
            self._days[d] = day
        s, m = divmod(rem, SEC)
        return day + self._sod[s] + self._ms[m]


class _Prefix:
    """Contacts sorted by the time they became eligible; weighted pick among those eligible at t."""

    def __init__(self, pairs: list[tuple[int, int]], weight: list[float]) -> None:
        pairs.sort()
        self.times = [t for t, _ in pairs]
        self.idx = [c for _, c in pairs]
        self.cum = list(itertools.accumulate(weight[c] for c in self.idx))

    def mass(self, t: int) -> float:
        k = bisect.bisect_left(self.times, t)
        return self.cum[k - 1] if k else 0.0

    def pick(self, t: int, r: float) -> int:
        """A contact eligible strictly before `t` (weighted), or -1 if none."""
        k = bisect.bisect_left(self.times, t)
        if not k:
            return -1
        j = bisect.bisect_right(self.cum, r * self.cum[k - 1])
        return self.idx[j if j < k else k - 1]


def _catalog(rng: random.Random) -> list[tuple[str, list[str], float]]:
    animals = ("dogs", "cats", "birds", "fish", "small-pets")
    kinds = ("food", "treats", "toys", "accessories", "care")
    out = []
    for i in range(400):
        animal = animals[min(int(rng.random() ** 1.6 * 5), 4)]  # dogs and cats dominate
        kind = kinds[rng.randrange(5)]
        cols = [animal, f"{animal}-{kind}"]
        if rng.random() < 0.15:
            cols.append("sale")
        if rng.random() < 0.08:
            cols.append("new-arrivals")
        price = round(math.exp(rng.gauss(2.8, 0.7)), 2) + 0.99
        out.append((f"p-{1000 + i}", cols, round(price - price % 1 + 0.99, 2)))
    return out


def events(contacts: int = DEFAULTS["contacts"], events: int = DEFAULTS["events"],
           days: float = DEFAULTS["days"], seed: int = DEFAULTS["seed"],
           start: str | int = DEFAULTS["start"], stats: dict | None = None, **_ignored) -> Iterator[dict]:
    """The valid events in event-time order, as dicts (no duplicates, no invalid lines)."""
    for _ts, obj in _build(contacts, events, days, seed, start, stats):
        yield obj


def _build(n_contacts: int, n_events: int, days: float, seed: int, start: str | int,
           stats: dict | None) -> Iterator[tuple[int, dict]]:
    if n_contacts < 1 or n_events < 1 or days <= 0:
        raise ValueError("contacts, events and days must be positive")
    rng = random.Random(seed)
    r = rng.random
    expo = rng.expovariate
    t0 = parse_start(start) if isinstance(start, str) else int(start)
    span = int(days * DAY)
    t_end = t0 + span  # exclusive

    # Daily rhythm in UTC: local rhythm averaged over the country mix.
    cw = sum(c[1] for c in COUNTRIES)
    hw = [sum(c[1] * LOCAL_RHYTHM[(h + c[3]) % 24] for c in COUNTRIES) / cw for h in range(24)]
    hmax = max(hw)

    def at(a: int, b: int) -> int:
        """A time in [a, b) following the daily rhythm."""
        if b - a < 2 * HOUR:
            return a + int(r() * max(b - a, 1))
        while True:
            t = a + int(r() * (b - a))
            if r() * hmax < hw[t // HOUR % 24]:
                return t

    # ---- contacts -------------------------------------------------------------------
    n = n_contacts
    country_cum = list(itertools.accumulate(c[1] for c in COUNTRIES))
    cid = [f"c_{_obf(i, seed * 7919):012x}" for i in range(n)]
    weight = [min(rng.paretovariate(1.5), 300.0) for _ in range(n)]
    country = [bisect.bisect_right(country_cum, r() * cw) for _ in range(n)]
    early_end = t0 + min(12 * HOUR, span // 4)
    signup = [at(t0, early_end) if r() < 0.4 else at(t0, t0 + int(span * 0.95)) for _ in range(n)]
    platform = [("ios", "android", "web")[min(int(r() * 2.4), 2)] for _ in range(n)]

    evs: list[tuple] = []  # (sort key = ts*4+sub, kind, contact, aux); stable sort keeps list order on ties
    add = evs.append
    email_sub: list[tuple[int, int]] = []
    sms_sub: list[tuple[int, int]] = []
    push_sub: list[tuple[int, int]] = []
    all_sub = [(signup[c], c) for c in range(n)]
    email_first = [t_end] * n  # first email subscription (t_end: none)

    def consent(t: int, c: int, channel: str, status: str, reason: str | None) -> None:
        props = {"channel": channel, "status": status}
        if reason is not None:
            props["reason"] = reason
        add((t * 4 + 1, CONSENT, c, props))

    def pick_reason(options: tuple) -> str | None:
        x = r()
        for reason, p in options:
            if x < p:
                return reason
            x -= p
        return None

    email_reasons = (("double_opt_in", 0.45), ("signup_form", 0.25), ("checkout", 0.15))
    sms_reasons = (("checkout", 0.4), ("keyword", 0.3), ("double_opt_in", 0.1))
    unsub_reasons = (("user_request", 0.6), ("bounce", 0.15), ("spam_complaint", 0.05))
    n_md, n_bday_span = len(BIRTHDAY_MD), BIRTHDAY_LAST - BIRTHDAY_FIRST + 1
    bday_stats = {"at_signup": 0, "later_updates": 0, "month_day": 0, "full_date": 0, "feb_29": 0}

    def birthday() -> str:
        """60% "MM-DD", else "YYYY-MM-DD" (1950-2006); uniform over the calendar, valid dates only."""
        if r() < 0.6:
            bday_stats["month_day"] += 1
            b = BIRTHDAY_MD[int(r() * n_md)]
        else:
            bday_stats["full_date"] += 1
            b = date.fromordinal(BIRTHDAY_FIRST + int(r() * n_bday_span)).isoformat()
        if b.endswith("02-29"):
            bday_stats["feb_29"] += 1
        return b

    n_unsub = n_later = n_tz_change = 0
    for c in range(n):
        s = signup[c]
        has_email, has_sms, has_push = r() < 0.9, r() < 0.3, r() < 0.25
        if not (has_email or has_sms or has_push):
            has_email = True
        ctry = COUNTRIES[country[c]]
        name = FIRST_NAMES[int(r() * len(FIRST_NAMES))]
        subs = []
        if has_email:
            subs.append(("email", s))
        if has_sms:
            subs.append(("sms", s if not subs or r() < 0.7 else at(s + MIN, t_end)))
        if has_push:
            subs.append(("push", s if not subs else at(s + HOUR, t_end) if s + 2 * HOUR < t_end else s + 1))
        for i, (channel, t) in enumerate(subs):
            if i and t == s:
                t = s + 500 + int(r() * 3500)  # the same sign-up form, a moment later
            if t >= t_end:
                t = t_end - 1
            reason = pick_reason(email_reasons if channel == "email" else sms_reasons if channel == "sms"
                                 else (("app_prompt", 0.7),))
            consent(t, c, channel, "subscribed", reason)
            (email_sub if channel == "email" else sms_sub if channel == "sms" else push_sub).append((t, c))
            if channel == "email":
                email_first[c] = t
            p_unsub = 0.05 if channel == "email" else 0.08 if channel == "sms" else 0.06
            if r() < p_unsub and t + 2 * MIN < t_end:
                tu = at(t + MIN, t_end)
                why = "stop_keyword" if channel == "sms" and r() < 0.7 else pick_reason(unsub_reasons)
                if why == "bounce" and channel != "email":
                    why = "user_request"
                consent(tu, c, channel, "unsubscribed", why)
                n_unsub += 1
                if channel == "email" and r() < 0.15 and tu + 2 * MIN < t_end:
                    consent(at(tu + MIN, t_end), c, "email", "subscribed", "double_opt_in")
                    n_unsub += 1
        props = {"first_name": name, "country": ctry[0], "timezone": ctry[2]}
        if r() < 0.7:
            props["birthday"] = birthday()
            bday_stats["at_signup"] += 1
        if has_email:
            props["email"] = f"{name.lower()}.{_obf(c, 11) % 100000}@example.com"
        if has_sms:
            props["phone"] = f"{ctry[5]}{_obf(c, 13) % 10**9:09d}"
        tp = min(s + 200 + int(r() * 2800), t_end - 1)
        add((tp * 4 + 1, PROFILE, c, props))
        if r() < 0.2 and s + 2 * HOUR < t_end:
            n_later += 1
            x = r()
            if x < 0.02:  # moved: a timezone different from the sign-up one (and its country if that differs)
                k = int(r() * (len(COUNTRIES) - 1))
                o = COUNTRIES[k + (k >= country[c])]
                upd = {"timezone": o[2]} if o[0] == ctry[0] else {"country": o[0], "timezone": o[2]}
                n_tz_change += 1
            elif x < 0.45:
                upd = {"birthday": birthday()}
                bday_stats["later_updates"] += 1
            else:
                upd = {"first_name": FIRST_NAMES[int(r() * len(FIRST_NAMES))]}
            add((at(s + HOUR, t_end) * 4 + 1, PROFILE, c, upd))

    base = len(evs)
    budget = n_events - base
    if budget < 0:
        raise ValueError(f"--events {n_events} is too small for --contacts {n_contacts}: "
                         f"consents and profiles alone are {base} events")

    # ---- activity budget ------------------------------------------------------------
    cnt = {k: int(budget * f) for k, f in MIX.items()}
    cnt[APP] += budget - sum(cnt.values())
    P_all = _Prefix(all_sub, weight)
    P_email = _Prefix(email_sub, weight) if email_sub else None
    P_sms = _Prefix(sms_sub, weight) if sms_sub else None
    P_push = _Prefix(push_sub, weight) if push_sub else None
    start_day = datetime.fromtimestamp(t0 / 1000, timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)

    def campaigns(prefix: _Prefix | None, sched: dict[int, tuple[int, int]], prefix_name: str,
                  margin: int) -> list[tuple[int, str, float]]:
        out = []
        if prefix is None:
            return out
        d = 0
        while True:
            day = start_day + timedelta(days=d)
            if (day - _EPOCH) // timedelta(milliseconds=1) >= t_end:
                break
            hm = sched.get(day.weekday())
            if hm:
                t = (day.replace(hour=hm[0], minute=hm[1]) - _EPOCH) // timedelta(milliseconds=1)
                if t0 <= t and t + margin <= t_end and prefix.mass(t) > 0:
                    slug = CAMPAIGN_SLUGS[len(out) % len(CAMPAIGN_SLUGS)]
                    out.append((t, f"{prefix_name}-{day:%Y-%m-%d}-{slug}", prefix.mass(t)))
            d += 1
        return out

    def choose(camps: list, cum: list[float]) -> tuple[int, str]:
        i = bisect.bisect_right(cum, r() * cum[-1])
        t, name, _ = camps[min(i, len(camps) - 1)]
        return t, name

    def after(send: int, delay: int) -> int:
        t = send + SEC + delay
        return t if t < t_end else send + SEC + int(r() * (t_end - send - SEC))

    def random_pick(prefix: _Prefix | None) -> tuple[int, int]:
        """A rhythm-following time and a contact eligible for `prefix` before it."""
        if prefix is None:
            prefix = P_all
        while True:
            t = at(t0, t_end)
            c = prefix.pick(t, r())
            if c >= 0:
                return t, c

    # Orders first: the open+order same-millisecond ties come out of the open budget.
    catalog = _catalog(rng)
    n_cat = len(catalog)
    # Prices in each country's currency (views, carts and checkouts of a contact agree).
    local_price = [[round(price * FX[ctry[4]], 2) for _, _, price in catalog] for ctry in COUNTRIES]
    checkouts: list[tuple[int, int, dict]] = []
    clicks: list[tuple[int, int]] = []

    # email opens: campaigns (75%) and automated flows (25%)
    n_ties_target = int(cnt[ORDER] * 0.004)
    n_open = cnt[OPEN] - n_ties_target
    camps = campaigns(P_email, {1: (9, 0), 3: (9, 0), 5: (10, 0)}, "em", 6 * HOUR)
    opens: list[tuple[int, int, str]] = []
    n_camp_open = int(n_open * 0.75) if camps else 0
    if camps:
        ccum = list(itertools.accumulate(m for _, _, m in camps))
        for _ in range(n_camp_open):
            send, name = choose(camps, ccum)
            x = r()
            delay = int(expo(1 / (20 * MIN))) if x < 0.5 else int(expo(1 / (3 * HOUR))) if x < 0.85 else int(r() * 48 * HOUR)
            c = P_email.pick(send, r())  # type: ignore[union-attr]
            opens.append((after(send, delay), c, name))
    for _ in range(n_open - n_camp_open):
        t, c = random_pick(P_email)
        opens.append((t, c, AUTO_FLOWS[int(r() * len(AUTO_FLOWS))]))
    for t, c, name in opens:
        add((t * 4 + 1, OPEN, c, name))

    # email clicks: 80% follow an open by seconds (4% in the same millisecond)
    n_click_follow = int(cnt[CLICK] * 0.8) if opens else 0
    for _ in range(n_click_follow):
        t, c, name = opens[int(r() * len(opens))]
        if r() >= 0.04:
            t = min(t + 2 * SEC + int(math.exp(rng.gauss(3.0, 1.2)) * SEC) % (10 * MIN), t_end - 1)
        clicks.append((t, c))
        add((t * 4 + 1, CLICK, c, name))
    for _ in range(cnt[CLICK] - n_click_follow):
        t, c = random_pick(P_email)
        clicks.append((t, c))
        add((t * 4 + 1, CLICK, c, AUTO_FLOWS[int(r() * len(AUTO_FLOWS))]))

    # sms clicks: campaign bursts within minutes
    camps = campaigns(P_sms, {0: (17, 0), 4: (16, 0)}, "sms", 2 * HOUR)
    if camps:
        ccum = list(itertools.accumulate(m for _, _, m in camps))
    for _ in range(cnt[SMS]):
        if camps:
            send, name = choose(camps, ccum)
            delay = int(5 * SEC + expo(1 / (6 * MIN))) if r() < 0.85 else int(r() * 24 * HOUR)
            t = after(send, delay)
            c = P_sms.pick(send, r())  # type: ignore[union-attr]
        else:
            (t, c), name = random_pick(P_sms), "sms-flow"
        clicks.append((t, c))
        add((t * 4 + 1, SMS, c, name))

    # push opens (30% with an app_open in the same millisecond)
    camps = campaigns(P_push, {0: (18, 30), 2: (18, 30), 4: (18, 30), 5: (18, 30), 6: (18, 30)}, "push", 2 * HOUR)
    if camps:
        ccum = list(itertools.accumulate(m for _, _, m in camps))
    app_opens: list[tuple[int, int]] = []
    n_app_ties = min(int(cnt[PUSH] * 0.3), cnt[APP])
    for i in range(cnt[PUSH]):
        if camps:
            send, name = choose(camps, ccum)
            delay = int(expo(1 / (10 * MIN))) if r() < 0.75 else int(r() * 12 * HOUR)
            t = after(send, delay)
            c = P_push.pick(send, r())  # type: ignore[union-attr]
        else:
            (t, c), name = random_pick(P_push), "push-flow"
        add((t * 4 + 1, PUSH, c, name))
        if i < n_app_ties:
            add((t * 4 + 1, APP, c, None))
            app_opens.append((t, c))
    for _ in range(cnt[APP] - n_app_ties):
        t, c = random_pick(P_all)
        add((t * 4 + 1, APP, c, None))
        app_opens.append((t, c))

    # product views: 60% a few seconds to minutes after an app open or a click
    sources = app_opens + clicks
    n_view_follow = int(cnt[VIEW] * 0.6) if sources else 0
    views: list[tuple[int, int, int]] = []
    for i in range(cnt[VIEW]):
        if i < n_view_follow:
            t, c = sources[int(r() * len(sources))]
            t = min(t + 3 * SEC + int(r() * 3 * MIN), t_end - 1)
        else:
            t, c = random_pick(P_all)
        v = (t, c, int(n_cat * r() ** 2))
        views.append(v)
        add((t * 4 + 1, VIEW, c, v[2]))

    # added to cart: distinct views (25% of them) followed by a cart add of that product 5 s-10 min later
    carts: list[tuple[int, int, int, int]] = []
    for k in rng.sample(range(len(views)), cnt[CART]):  # MIX keeps cnt[CART] <= cnt[VIEW]
        t, c, prod = views[k]
        t = min(t + 5 * SEC + int(expo(1 / (80 * SEC))) % (595 * SEC), t_end - 1)
        q = 1 if r() < 0.8 else 2 if r() < 0.75 else 3
        carts.append((t, c, prod, q))
        add((t * 4 + 1, CART, c, (prod, q)))

    # checkouts: ~70% 30 s-30 min after a cart add (that product first), then 35% of the rest
    # 1-20 min after a click, the others at random times
    n_chk_cart = min(int(cnt[CHECKOUT] * CHECKOUT_AFTER_CART), len(carts))
    chk_carts = rng.sample(carts, n_chk_cart)
    n_chk_follow = n_chk_cart + (int((cnt[CHECKOUT] - n_chk_cart) * 0.35) if clicks else 0)
    for i in range(cnt[CHECKOUT]):
        first = None
        if i < n_chk_cart:
            t, c, prod, q = chk_carts[i]
            t = min(t + 30 * SEC + int(expo(1 / (4 * MIN))) % (30 * MIN), t_end - 1)
            first = (prod, q)
        elif i < n_chk_follow:
            t, c = clicks[int(r() * len(clicks))]
            t = min(t + MIN + int(r() * 19 * MIN), t_end - 1)
        else:
            t, c = random_pick(P_all)
        cur = COUNTRIES[country[c]][4]
        prices = local_price[country[c]]
        items, value = [], 0.0
        for j in range(1 + (r() < 0.4) + (r() < 0.15) + (r() < 0.05)):
            if j == 0 and first is not None:
                prod, q = first
            else:
                prod = int(n_cat * r() ** 2)
                q = 1 if r() < 0.8 else 2 if r() < 0.75 else 3
            pid, cols, _ = catalog[prod]
            p = prices[prod]
            items.append({"product_id": pid, "collection_ids": cols, "quantity": q, "price": p})
            value += p * q
        props = {"checkout_id": f"chk_{_obf(i, seed):012x}", "value": round(value, 2), "currency": cur,
                 "items": items}
        checkouts.append((t, c, props))
        add((t * 4 + 1, CHECKOUT, c, props))

    # orders for ~45% of checkouts; a few with an email_open in the same millisecond
    order_ix = sorted(rng.sample(range(len(checkouts)), min(cnt[ORDER], len(checkouts))))
    ties = 0
    tie_every = max(1, len(order_ix) // max(n_ties_target, 1))
    for j, i in enumerate(order_ix):
        t, c, chk = checkouts[i]
        t = min(t + 20 * SEC + int(math.exp(rng.gauss(5.2, 0.8)) * SEC) % (45 * MIN), t_end - 1)
        props = {"order_id": f"ord_{_obf(j, seed + 1):012x}", "checkout_id": chk["checkout_id"],
                 "value": chk["value"], "currency": chk["currency"], "items": chk["items"]}
        if ties < n_ties_target and j % tie_every == 0 and email_first[c] < t:
            sub = 0 if r() < 0.5 else 2
            add((t * 4 + sub, OPEN, c, "flow-cart-reminder"))
            ties += 1
        add((t * 4 + 1, ORDER, c, props))
    for _ in range(n_ties_target - ties):  # keep the count exact
        t, c = random_pick(P_email)
        add((t * 4 + 1, OPEN, c, AUTO_FLOWS[int(r() * len(AUTO_FLOWS))]))

    evs.sort(key=itemgetter(0))
    assert len(evs) == n_events, (len(evs), n_events)

    # ---- serialise ------------------------------------------------------------------
    iso = _IsoFormatter()
    iso_day, iso_sod, iso_ms = iso._days, iso._sod, iso._ms
    getbits = rng.getrandbits
    type_counts = [0] * len(TYPES)
    int_ts = 0
    for key, kind, c, aux in evs:
        ts = key >> 2
        h = f"{getbits(128):032x}"
        if r() < INT_TS[kind]:
            tsv: int | str = ts
            int_ts += 1
        else:
            d, rem = divmod(ts, DAY)
            day = iso_day.get(d) or iso(d * DAY)[:11]
            tsv = day + iso_sod[rem // SEC] + iso_ms[rem % SEC]
        if kind == OPEN or kind == CLICK or kind == SMS or kind == PUSH:
            props = {"campaign_id": aux}
            if kind == CLICK or kind == SMS:
                props["url"] = "https://shop.example.com/" + aux.rsplit("-", 1)[-1]
        elif kind == APP:
            props = {"platform": platform[c]}
        elif kind == VIEW:
            pid, cols, _ = catalog[aux]
            props = {"product_id": pid, "collection_ids": cols, "price": local_price[country[c]][aux]}
        elif kind == CART:
            props = {"product_id": catalog[aux[0]][0], "price": local_price[country[c]][aux[0]], "quantity": aux[1]}
        else:
            props = aux
        type_counts[kind] += 1
        yield ts, {"event_id": f"{h[:8]}-{h[8:12]}-4{h[13:16]}-a{h[17:20]}-{h[20:]}", "contact_id": cid[c],
                   "type": TYPES[kind], "ts": tsv, "properties": props}

    if stats is not None:
        stats.update({
            "contacts": n, "valid_events": len(evs), "unsubscribe_or_resubscribe_events": n_unsub,
            "types": dict(zip(TYPES, type_counts)), "int_ts_events": int_ts,
            "open_order_same_ms": ties, "push_app_same_ms": n_app_ties,
            "birthdays": bday_stats, "later_profile_updates": n_later, "later_timezone_changes": n_tz_change,
            "carts_after_view": len(carts), "checkouts_after_cart": n_chk_cart,
            "first_ts_ms": evs[0][0] >> 2 if evs else None, "last_ts_ms": evs[-1][0] >> 2 if evs else None,
            "start_ms": t0, "end_ms": t_end, "until": iso(t_end + WINDOW), "until_ms": t_end + WINDOW,
        })


# ---- noise ------------------------------------------------------------------------------

INVALID_KINDS = (  # (reason code a correct intake reports, weight)
    ("not_json", 0.30), ("not_object", 0.05), ("missing_field", 0.20), ("bad_ts", 0.20),
    ("bad_field", 0.10), ("bad_properties", 0.10), ("bad_consent", 0.05),
)


def _invalid(ev: dict, rng: random.Random) -> tuple[str, bytes]:
    r = rng.random
    bad = dict(ev)
    h = f"{rng.getrandbits(128):032x}"
    bad["event_id"] = f"bad-{h[:24]}"
    x = r()
    for reason, w in INVALID_KINDS:  # noqa: B007 - `reason` is the one the loop stops at
        if x < w:
            break
        x -= w
    if reason == "not_json":
        line = orjson.dumps(bad)
        choice = r()
        if choice < 0.6:
            return reason, line[: 1 + int(r() * (len(line) - 2))]  # truncated message
        if choice < 0.8:
            return reason, b"<html><body>502 Bad Gateway</body></html>"
        return reason, line.replace(b'"type"', b"type", 1)
    if reason == "not_object":
        return reason, (b"null", b"[1,2,3]", b'"email_open"', orjson.dumps([bad]))[int(r() * 4)]
    if reason == "missing_field":
        del bad[("event_id", "contact_id", "type", "ts")[int(r() * 4)]]
    elif reason == "bad_ts":
        bad["ts"] = ("2026-11-20 09:15:00", "2026-11-20T09:15:00", "yesterday", "", "2026-02-30T10:00:00Z",
                     -5, 1.7e12, "1763630100000")[int(r() * 8)]
    elif reason == "bad_field":
        if r() < 0.5:
            bad["contact_id"] = 12345
        else:
            bad["type"] = None if r() < 0.3 else 42
            if bad["type"] is None:
                reason = "missing_field"
    elif reason == "bad_properties":
        bad["properties"] = ("not-an-object", [1, 2], 7)[int(r() * 3)]
    elif reason == "bad_consent":
        bad["type"] = "consent_changed"
        bad["properties"] = ({"channel": "fax", "status": "subscribed"}, {"channel": "email", "status": "maybe"},
                             {"channel": "sms"})[int(r() * 3)]
    return reason, orjson.dumps(bad)


def generate(contacts: int = DEFAULTS["contacts"], events: int = DEFAULTS["events"],
             days: float = DEFAULTS["days"], seed: int = DEFAULTS["seed"], start: str | int = DEFAULTS["start"],
             dup_rate: float = DEFAULTS["dup_rate"], invalid_rate: float = DEFAULTS["invalid_rate"],
             stats: dict | None = None) -> Iterator[bytes]:
    """The JSONL lines (bytes ending in newline): valid events in event-time order plus noise.

    Noise uses its own random stream: the valid events do not depend on the noise rates.
    If `stats` is given it is filled in when the iterator is exhausted.
    """
    st: dict = {} if stats is None else stats
    nrng = random.Random(seed * 1_000_003 + 17)
    nr = nrng.random
    dumps = orjson.dumps
    pending: dict[int, list[bytes]] = {}
    lines = dups = 0
    invalid: dict[str, int] = {}
    i = 0
    for _ts, ev in _build(contacts, events, days, seed, start, st):
        if invalid_rate and nr() < invalid_rate:
            reason, bad = _invalid(ev, nrng)
            invalid[reason] = invalid.get(reason, 0) + 1
            lines += 1
            yield bad + b"\n"
        line = dumps(ev) + b"\n"
        lines += 1
        yield line
        i += 1
        if dup_rate and nr() < dup_rate:
            pending.setdefault(i + nrng.randint(1, 20), []).append(line)
        if pending:
            due = pending.pop(i, None)
            if due:
                for d in due:
                    dups += 1
                    lines += 1
                    yield d
    for k in sorted(pending):
        for d in pending[k]:
            dups += 1
            lines += 1
            yield d
    st.update({"lines": lines, "duplicate_lines": dups, "invalid_lines": sum(invalid.values()),
               "invalid_by_reason": invalid, "dup_rate": dup_rate, "invalid_rate": invalid_rate})


def write_stream(path: str | Path, **params) -> dict:
    """Write `generate(**params)` to `path` (atomically) and return its stats plus timing."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    stats: dict = {}
    t = time.perf_counter()
    with open(tmp, "wb", buffering=1 << 20) as f:
        buf: list[bytes] = []
        for line in generate(stats=stats, **params):
            buf.append(line)
            if len(buf) >= 8192:
                f.write(b"".join(buf))
                buf.clear()
        f.write(b"".join(buf))
    tmp.replace(path)
    stats["seconds"] = round(time.perf_counter() - t, 3)
    stats["bytes"] = path.stat().st_size
    stats["params"] = {**{k: v for k, v in params.items()}, "gen_version": GEN_VERSION}
    return stats


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--contacts", type=int, default=DEFAULTS["contacts"])
    p.add_argument("--events", type=int, default=DEFAULTS["events"], help="distinct valid events")
    p.add_argument("--days", type=float, default=DEFAULTS["days"])
    p.add_argument("--seed", type=int, default=DEFAULTS["seed"])
    p.add_argument("--start", default=DEFAULTS["start"], help="ISO-8601 instant of the stream start")
    p.add_argument("--out", type=Path, required=True, help="JSONL file to write ('-' for stdout)")
    p.add_argument("--dup-rate", type=float, default=DEFAULTS["dup_rate"], help="fraction of redelivered lines")
    p.add_argument("--invalid-rate", type=float, default=DEFAULTS["invalid_rate"], help="fraction of invalid lines")
    p.add_argument("--no-noise", action="store_true", help="neither duplicates nor invalid lines")
    p.add_argument("--meta", action="store_true", help="also write OUT.meta.json with counts and the --until to use")
    a = p.parse_args(argv)
    params = dict(contacts=a.contacts, events=a.events, days=a.days, seed=a.seed, start=a.start,
                  dup_rate=0.0 if a.no_noise else a.dup_rate, invalid_rate=0.0 if a.no_noise else a.invalid_rate)
    try:
        if str(a.out) == "-":
            stats: dict = {}
            out = sys.stdout.buffer
            for line in generate(stats=stats, **params):
                out.write(line)
            out.flush()
            return 0
        stats = write_stream(a.out, **params)
    except ValueError as exc:
        print(f"generate: {exc}", file=sys.stderr)
        return 2
    if a.meta:
        Path(str(a.out) + ".meta.json").write_bytes(orjson.dumps(stats, option=orjson.OPT_INDENT_2))
    print(f"generate: {stats['lines']} lines ({stats['valid_events']} events, {stats['duplicate_lines']} duplicates, "
          f"{stats['invalid_lines']} invalid) for {stats['contacts']} contacts in {stats['seconds']:.1f} s "
          f"({stats['lines'] / max(stats['seconds'], 1e-9):,.0f} lines/s) -> {a.out}; replay with --until {stats['until']}",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
