"""Catalog triggers at scale (issue 14, point 4): fan-out of a price drop, memory per watch entry.

    python bench/catalog_bench.py                 # 100k contacts, 10k products, ~1M watch entries, 30 days
    python bench/catalog_bench.py --quick         # 2k contacts, 500 products, 7 days (+ the CLI run)
    python bench/catalog_bench.py --cli quick     # also `espresso replay --catalog` on the quick stream
    python bench/catalog_bench.py --skip-memory --batch 500

One run:

1. Generates (seeded, cached under `bench/data/` by its parameters) a contact stream and a
   catalogue file. Contacts: consent + profile at sign-up (first 2 days), views and carts
   of a catalogue of `--products` products (Zipf-Mandelbrot popularity, weight 1/(rank+20)),
   about `--watch-per-contact` distinct products per contact within the period (so
   ~1M watch entries for 100k contacts), some orders, and ordinary engagement (email
   opens/clicks, push opens, sms clicks, app opens) so that the built-in espresso segments
   change. One hot product (`p_00000`) is viewed by `--hot-viewers` contacts (default: all).
   Catalogue: one `product_updated` for every product every hour (price, inventory,
   title, url): prices a random walk (3 % of products change per hour, half down, 30 % of
   drops >= 10 %), inventories sell down and restock (back in stock, low stock); the hot
   product keeps its price until one 25 % drop at `--hot-drop-at` (default: period - 12 h).
2. Measures in-process, each variant in a fresh subprocess (`run_measured`: CPU, peak RSS),
   a `Shard` + `CampaignEngine` driven like the flow (`engine.process(shard, batch,
   watermark)`, batches of `--batch` events of the stream merged in event time, contact
   events before updates of the same instant, watermark = the batch's last event time):
   (a) the espresso campaigns on the contact stream alone, (b) the same campaigns plus
   three catalog campaigns (price-drop, back-in-stock, low-stock) on the contact stream
   merged with the catalogue, a fan-out decided in one call (as `espresso replay`); (c) = (b)
   with `engine.sweep_limit` as the live flow sets it (a fan-out in slices, each further slice
   its own call). Per call: CPU seconds (`time.process_time`, parsing excluded), events,
   changes, messages, decisions.
3. Fan-out: the batch that releases the hot product's drop (messages, decisions, CPU s);
   batch latency p50/p99 overall and around the drop; a queue model (FIFO, one shard,
   batches arriving at a steady rate of rho x the measured mean throughput, each call taking
   every batch that has arrived and then one slice): the p99 latency of the batches that
   arrive from the release until the queue drains, and the stall itself.
4. Memory per watch entry: the contact stream's views/carts/orders fed into a bare
   `Watches` under tracemalloc (bytes retained / entries), and the containers alone.
5. Optionally (`--cli quick|full`) `espresso replay EVENTS --until T --out OUT --campaigns
   FILE --catalog CATALOG` end to end in a subprocess: wall, CPU, events/s, messages.

Prints a Markdown table and writes `bench/results/catalog-<UTC stamp>.json`. CPU seconds
rather than wall time: the machine is shared.
"""

from __future__ import annotations

import argparse
import gc
import heapq
import math
import os
import random
import shlex
import sys
import time
import tracemalloc
from datetime import datetime, timezone
from pathlib import Path

import orjson
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import REPO, count_lines, machine_info, run_measured  # noqa: E402

BENCH = REPO / "bench"
GEN_VERSION = 1
H_MS = 3_600_000
D_MS = 24 * H_MS
DEFAULTS = {"contacts": 100_000, "products": 10_000, "days": 30.0, "watch_per_contact": 10.0,
            "hot_viewers": None, "hot_drop_at": None, "seed": 42, "start": "2026-11-02T00:00:00Z"}
QUICK = {"contacts": 2_000, "products": 500, "days": 7.0}
HOT = "p_00000"
HOT_PRICE_CENTS = 8_000  # 80.00, then 60.00 (-25 %)
HOT_DROP_CENTS = 6_000
HOT_TITLE = "Product 00000"
ZIPF_Q = 20

CATALOG_CAMPAIGNS = [
    {"id": "price-drop", "name": "Price drop on a product you looked at",
     "trigger": {"catalog": "price_drop", "min_drop": "10%", "viewed_within": "30d"},
     "channel": "email", "priority": 40, "reentry": {"once_per": "7d"},
     "template": {"subject": "{{ products[0].title }} is now {{ products[0].price }}",
                  "body": "It was {{ products[0].previous_price }} when you looked: {{ products[0].url }}"}},
    {"id": "back-in-stock", "name": "Back in stock",
     "trigger": {"catalog": "back_in_stock", "viewed_within": "30d"},
     "channel": "push", "priority": 35, "reentry": {"once_per": "7d"},
     "template": {"subject": "Back in stock", "body": "{{ products[0].title }} is back: {{ products[0].url }}"}},
    {"id": "low-stock", "name": "Low stock on a carted product",
     "trigger": {"catalog": "low_stock", "below": 5, "carted_within": "7d"},
     "channel": "email", "priority": 38, "reentry": {"once_per": "7d"},
     "template": {"subject": "Only {{ products[0].inventory }} left", "body": "{{ products[0].title }}: "
                  "{{ products[0].url }}"}},
]


# -- the stream ------------------------------------------------------------------------------

def parse_start(s: str) -> int:
    return int(datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp() * 1000)


def iso_ms(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def resolve_params(a: argparse.Namespace) -> dict:
    p = dict(DEFAULTS)
    if a.quick:
        p.update(QUICK)
    for k in DEFAULTS:
        v = getattr(a, k, None)
        if v is not None:
            p[k] = v
    if p["hot_viewers"] is None:
        p["hot_viewers"] = p["contacts"]
    p["hot_viewers"] = min(p["hot_viewers"], p["contacts"])
    if p["hot_drop_at"] is None:
        p["hot_drop_at"] = iso_ms(parse_start(p["start"]) + int(p["days"] * D_MS) - 12 * H_MS)
    return p


def dataset_paths(data_dir: Path, p: dict) -> tuple[Path, Path, Path]:
    start = p["start"].replace(":", "").replace("-", "")
    drop = p["hot_drop_at"].replace(":", "").replace("-", "")
    stem = (f"catalog-c{p['contacts']}-p{p['products']}-d{p['days']:g}-w{p['watch_per_contact']:g}"
            f"-h{p['hot_viewers']}-{drop}-s{p['seed']}-{start}-g{GEN_VERSION}")
    return (data_dir / f"{stem}.events.jsonl", data_dir / f"{stem}.catalog.jsonl",
            data_dir / f"{stem}.meta.json")


def _poisson(rng: random.Random, lam: float) -> int:
    if lam <= 0:
        return 0
    n, t, limit = 0, rng.random(), math.exp(-lam)
    while t > limit:
        n += 1
        t *= rng.random()
    return n


def _price(cents: int) -> bytes:
    return b"%d.%02d" % divmod(cents, 100)


def generate(p: dict, events_path: Path, catalog_path: Path, meta_path: Path) -> dict:
    """Write both files and the metadata; deterministic for `p`."""
    t_gen = time.process_time()
    rng = random.Random(p["seed"])
    start = parse_start(p["start"])
    period = int(p["days"] * D_MS)
    hours = int(p["days"] * 24)
    n_prod = p["products"]
    drop_ms = parse_start(p["hot_drop_at"])
    drop_h = (drop_ms - start) // H_MS
    if not 0 < drop_h < hours or drop_ms != start + drop_h * H_MS:
        raise SystemExit(f"--hot-drop-at {p['hot_drop_at']}: must be on the hour, inside the period")

    # catalogue: price (cents) and inventory per product per hour
    prices: list[list[int]] = []
    stock: list[list[int]] = []
    changes = drops = big_drops = 0
    for j in range(n_prod):
        r = random.Random((p["seed"] << 20) ^ j)
        if j == 0:
            prices.append([HOT_PRICE_CENTS if h < drop_h else HOT_DROP_CENTS for h in range(hours)])
            stock.append([5_000 - h // 10 for h in range(hours)])
            continue
        c = max(199, int(round(math.exp(r.gauss(3.3, 0.8)) * 100)) // 10 * 10 - 1)
        inv = r.randint(0, 200)
        ps, inv_s, out_until = [], [], -1
        for h in range(hours):
            if h and r.random() < 0.03:
                changes += 1
                if r.random() < 0.5:
                    drops += 1
                    pct = r.uniform(10, 30) if r.random() < 0.3 else r.uniform(1, 9.5)
                    if pct >= 10:
                        big_drops += 1
                    c = max(99, int(c * (100 - pct) / 100))
                else:
                    c = int(c * (100 + r.uniform(1, 15)) / 100)
            if h:
                if inv == 0:
                    if out_until < 0:
                        out_until = h + r.randint(6, 48)
                    elif h >= out_until:
                        inv, out_until = r.randint(30, 200), -1
                else:
                    inv = max(0, inv - (r.randint(0, 3) if r.random() < 0.6 else 0))
            ps.append(c)
            inv_s.append(inv)
        prices.append(ps)
        stock.append(inv_s)

    rec = (b'{"event_id":"u%05d-%05d","product_id":"p_%05d","type":"product_updated","ts":%d,'
           b'"properties":{"price":%s,"inventory":%d,"title":"Product %05d","url":"https://shop.example/p/%05d"}}\n')
    n_cat = 0
    with open(catalog_path, "wb") as f:
        for h in range(hours):
            ts = start + h * H_MS
            f.write(b"".join(rec % (h, j, j, ts, _price(prices[j][h]), stock[j][h], j, j) for j in range(n_prod)))
            n_cat += n_prod

    # contacts
    weights = [0.0] + [1.0 / (r + ZIPF_Q) for r in range(1, n_prod)]
    cum = []
    acc = 0.0
    for w in weights:
        acc += w
        cum.append(acc)
    hot_viewers = set(rng.sample(range(p["contacts"]), p["hot_viewers"]))
    others_mean = max(0.0, p["watch_per_contact"] - p["hot_viewers"] / p["contacts"])
    lines: list[tuple[int, bytes]] = []
    counts: dict[str, int] = {}
    seq = 0
    end = start + period

    def emit(ts: int, cid: str, etype: str, props: bytes) -> None:
        nonlocal seq
        seq += 1
        lines.append((ts, b'{"event_id":"e%09d","contact_id":"%s","type":"%s","ts":%d,"properties":%s}\n'
                      % (seq, cid.encode(), etype.encode(), ts, props)))
        counts[etype] = counts.get(etype, 0) + 1

    def price_at(j: int, ts: int) -> bytes:
        return _price(prices[j][min(hours - 1, (ts - start) // H_MS)])

    orders = 0
    distinct_pairs = 0
    for i in range(p["contacts"]):
        cid = "c_%012x" % ((i * 2654435761 + 97) & 0xFFFFFFFFFFFF)
        bcid = cid.encode()
        signup = start + rng.randrange(2 * D_MS)
        email, sms, push = rng.random() < 0.9, rng.random() < 0.3, rng.random() < 0.25
        emit(signup, cid, "profile_updated",
             b'{"first_name":"N%d","email":"%s@example.com","phone":"+3360%07d","push_token":"tok-%s",'
             b'"timezone":"Europe/Paris","country":"FR"}' % (i, bcid, i % 10_000_000, bcid))
        for ch, on in (("email", email), ("sms", sms), ("push", push)):
            if on:
                emit(signup + 1, cid, "consent_changed",
                     b'{"channel":"%s","status":"subscribed","reason":"signup_form"}' % ch.encode())
        # products: the hot one, then Zipf-Mandelbrot picks (distinct)
        k = min(48, int(rng.expovariate(1.0 / others_mean) + 0.5)) if others_mean > 0 else 0
        picks: set[int] = set()
        tries = 0
        while len(picks) < k and tries < 20 * k:
            picks.add(rng.choices(range(n_prod), cum_weights=cum)[0])
            tries += 1
        watched = sorted(picks)
        if i in hot_viewers:
            watched.insert(0, 0)
        distinct_pairs += len(watched)
        span = end - signup - 2000
        for j in watched:
            hi = drop_ms - signup - 60_000 if j == 0 else span
            ts = signup + 2000 + rng.randrange(max(1, hi - 2000))
            views = [ts] + ([ts + rng.randrange(1, 3 * D_MS)] if rng.random() < 0.2 else [])
            for v in views:
                if v >= (drop_ms if j == 0 else end):
                    continue
                emit(v, cid, "product_viewed", b'{"product_id":"p_%05d","price":%s,"collection_ids":["c%d"]}'
                     % (j, price_at(j, v), j % 50))
            if rng.random() < 0.2:
                ct = ts + rng.randrange(5_000, 600_000)
                if ct < end:
                    pr = price_at(j, ct)
                    emit(ct, cid, "added_to_cart", b'{"product_id":"p_%05d","price":%s,"quantity":1}' % (j, pr))
                    if rng.random() < (0.02 if j == 0 else 0.08):
                        ot = ct + rng.randrange(300_000, 2_400_000)
                        if ot < end:
                            orders += 1
                            emit(ot, cid, "order_placed",
                                 b'{"order_id":"o%d","value":%s,"currency":"EUR","items":[{"product_id":"p_%05d",'
                                 b'"price":%s,"quantity":1}]}' % (orders, pr, j, pr))
        # ordinary engagement
        def at(signup: int = signup) -> int:
            return signup + 5000 + rng.randrange(max(1, end - signup - 5000))
        if email:
            for _ in range(_poisson(rng, 4.0)):
                t = at()
                emit(t, cid, "email_open", b'{"campaign_id":"nl-%d"}' % ((t - start) // D_MS))
                if rng.random() < 0.25 and t + 60_000 < end:
                    emit(t + rng.randrange(2_000, 60_000), cid, "email_click", b'{"url":"https://shop.example/"}')
        if push:
            for _ in range(_poisson(rng, 2.0)):
                emit(at(), cid, "push_open", b'{}')
        if sms:
            for _ in range(_poisson(rng, 1.0)):
                emit(at(), cid, "sms_click", b'{}')
        for _ in range(_poisson(rng, 2.0)):
            emit(at(), cid, "app_open", b'{"platform":"ios"}')

    lines.sort(key=lambda x: x[0])
    with open(events_path, "wb") as f:
        for k0 in range(0, len(lines), 100_000):
            f.write(b"".join(x[1] for x in lines[k0:k0 + 100_000]))
    meta = {
        "params": p, "gen_version": GEN_VERSION, "contact_events": len(lines), "catalog_updates": n_cat,
        "counts": dict(sorted(counts.items())), "distinct_contact_product_pairs": distinct_pairs,
        "orders": orders, "hours": hours, "price_changes": changes, "price_drops": drops,
        "price_drops_ge_10pct": big_drops, "hot_product": HOT, "hot_drop_ms": drop_ms,
        "hot_drop_at": p["hot_drop_at"], "first_ms": lines[0][0] if lines else start,
        "end_ms": max(end, start + (hours - 1) * H_MS), "until": iso_ms(end + D_MS),
        "generation_cpu_s": round(time.process_time() - t_gen, 1),
        "events_bytes": events_path.stat().st_size, "catalog_bytes": catalog_path.stat().st_size,
    }
    meta_path.write_bytes(orjson.dumps(meta, option=orjson.OPT_INDENT_2))
    return meta


def dataset(data_dir: Path, p: dict, regenerate: bool = False) -> tuple[Path, Path, dict]:
    ev, cat, meta_path = dataset_paths(data_dir, p)
    if ev.exists() and cat.exists() and meta_path.exists() and not regenerate:
        meta = orjson.loads(meta_path.read_bytes())
        meta["cached"] = True
        return ev, cat, meta
    print(f"generating {ev.name} and its catalogue ...", file=sys.stderr, flush=True)
    meta = generate(p, ev, cat, meta_path)
    print(f"  {meta['contact_events']:,} contact events, {meta['catalog_updates']:,} updates, "
          f"{meta['generation_cpu_s']} CPU s", file=sys.stderr, flush=True)
    meta["cached"] = False
    return ev, cat, meta


def campaign_files(data_dir: Path) -> tuple[Path, Path]:
    """(espresso campaigns alone, the same + the three catalog campaigns), as YAML files."""
    from importlib import resources
    base = yaml.safe_load(resources.files("state").joinpath("builtin/campaigns-espresso.yaml").read_text())
    plain = data_dir / "catalog-bench-campaigns-plain.yaml"
    full = data_dir / "catalog-bench-campaigns.yaml"
    plain.write_text(yaml.safe_dump(base, sort_keys=False))
    full.write_text(yaml.safe_dump({**base, "campaigns": base["campaigns"] + CATALOG_CAMPAIGNS}, sort_keys=False))
    return plain, full


# -- in-process measurement (worker) ------------------------------------------------------------

def _read(path: Path, parse):
    from state.events import Invalid
    with open(path, "rb") as f:
        for line in f:
            ev = parse(line)
            if type(ev) is not Invalid:
                yield ev


def worker(events_path: Path, catalog_path: Path | None, campaigns: Path, batch_size: int, until_ms: int,
           hot_drop_ms: int, out_path: Path, profile: bool = False, sweep: int | None = None) -> None:
    """Feed the stream through Shard + CampaignEngine; per-batch figures to `out_path` (JSON).
    `profile`: cProfile the batches from the one carrying the hot update to 12 after it."""
    import cProfile
    import io
    import pstats
    from state.campaigns import CampaignEngine, Decision, Message, load_campaigns
    from state.campaigns.ids import run_hex, run_id
    from state.catalog import parse_catalog_event
    from state.definitions import builtin_segments
    from state.events import parse_event
    from state.program import compile_program
    from state.shard import Shard

    camps = load_campaigns(str(campaigns), builtin_segments())
    shard = Shard(compile_program(list(camps.segments), camps.required_keep()))
    engine = CampaignEngine(camps)
    if sweep:  # as the live flow does (flows/logic.py SWEEP_LIMIT): a fan-out decided in slices
        if not hasattr(engine, "sweep_limit"):
            raise SystemExit("--sweep-limit: this engine has no sweep_limit")
        engine.sweep_limit = sweep
    contacts = _read(events_path, parse_event)
    if catalog_path is not None:
        stream = heapq.merge(((e[3], 0, e) for e in contacts),
                             ((e[3], 1, e) for e in _read(catalog_path, parse_catalog_event)),
                             key=lambda x: (x[0], x[1]))
        stream = (x[2] for x in stream)
    else:
        stream = contacts
    hot_update = hot_runs = None
    cols = {k: [] for k in ("cpu_s", "events", "updates", "changes", "messages", "decisions", "hot_messages",
                            "hot_decisions", "first_ts", "watermark", "slice")}
    totals = {"messages_by_campaign": {}, "decisions_by_outcome": {}}
    watch_at_drop = hot_watchers = None
    cpu_total = 0.0
    proc = time.process_time

    prof = cProfile.Profile() if profile else None

    def run(batch: list, watermark: int, settled: int | None = None, part: int = 0) -> None:
        nonlocal cpu_total
        on = prof is not None and hot_update is not None and hot_update <= len(cols["cpu_s"]) < hot_update + 12
        if on:
            prof.enable()
        t0 = proc()
        changes, out = engine.process(shard, batch, watermark, settled=settled)
        dt = proc() - t0
        if on:
            prof.disable()
        cpu_total += dt
        msgs = decs = hm = hd = 0
        mbc, dbo = totals["messages_by_campaign"], totals["decisions_by_outcome"]
        for o in out:
            if type(o) is Message:
                msgs += 1
                mbc[o.campaign_id] = mbc.get(o.campaign_id, 0) + 1
                if o.campaign_id == "price-drop" and hot_runs is not None and o.run_id == hot_runs(o.contact_id):
                    hm += 1
            elif type(o) is Decision:
                decs += 1
                key = f"{o.campaign_id}:{o.outcome}"
                dbo[key] = dbo.get(key, 0) + 1
                if o.campaign_id == "price-drop" and hot_runs is not None and o.run_id == hot_runs(o.contact_id):
                    hd += 1
        n_upd = sum(1 for e in batch if not e[1])
        for k, v in (("cpu_s", round(dt, 6)), ("events", len(batch) - n_upd), ("updates", n_upd),
                     ("changes", len(changes)), ("messages", msgs), ("decisions", decs), ("hot_messages", hm),
                     ("hot_decisions", hd), ("first_ts", batch[0][3] if batch else watermark),
                     ("watermark", watermark), ("slice", part)):
            cols[k].append(v)
        # a fan-out left for later calls (sweep_limit): the live flow calls again at once
        # (notify_at = now); each call is its own row, `slice` = its rank after the batch
        if not part and getattr(engine, "more", False):
            k = 1
            while engine.more:
                run([], watermark, settled, part=k)
                k += 1

    batch: list = []
    for ev in stream:
        batch.append(ev)
        if len(batch) == batch_size:
            if hot_update is None and engine.watches is not None and batch[-1][3] >= hot_drop_ms:
                for e in batch:
                    if not e[1] and e[4].get("product_id") == HOT and e[3] == hot_drop_ms:
                        hot_update = len(cols["cpu_s"])
                        hot_eid = e[0]

                        def hot_runs(cid: str, _e: str = hot_eid) -> str:  # the run id of the hot drop's run
                            return run_hex(run_id(cid, "price-drop", _e))
                        hot_watchers = len(engine.watches.by_product.get(HOT, ()))
                        watch_at_drop = len(engine.watches)
                        break
            run(batch, batch[-1][3])
            batch = []
    if batch:
        run(batch, batch[-1][3])
    run([], until_ms + 1, settled=until_ms)
    profile_text = None
    if prof is not None:
        buf = io.StringIO()
        pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(30)
        profile_text = buf.getvalue()
    res = {"sweep_limit": sweep, "git_head": _git_head(), "profile_fanout": profile_text,
           "cpu_s_process": round(cpu_total, 3), "batches": len(cols["cpu_s"]),
           "columns": cols,
           "hot_update_batch": hot_update, "hot_watchers_at_drop": hot_watchers,
           "watch_entries_at_drop": watch_at_drop,
           "watch_entries_end": None if engine.watches is None else len(engine.watches),
           "watch_products_end": None if engine.watches is None else len(engine.watches.by_product),
           "contacts": len(shard), "stats": {k: v for k, v in engine.stats.items() if isinstance(v, (int, float))},
           **totals}
    out_path.write_bytes(orjson.dumps(res))


def _git_head() -> str:
    import subprocess
    return subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()


# -- memory per watch entry ------------------------------------------------------------------

def watch_memory(events_path: Path, horizon_ms: int) -> dict:
    """Feed views, carts and orders into a bare `Watches` under tracemalloc; bytes retained per entry."""
    from state.catalog import Watches
    from state.events import Invalid, parse_event

    wanted = (b'"product_viewed"', b'"added_to_cart"', b'"order_placed"')
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    w = Watches(horizon_ms)
    book: dict = {}
    t0 = time.process_time()
    with open(events_path, "rb") as f:
        for line in f:
            if not any(x in line for x in wanted):
                continue
            ev = parse_event(line)
            if type(ev) is Invalid:
                continue
            w.note(ev[1], ev[2], ev[4], ev[3], book.get)
            ev = None
    gc.collect()
    retained = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    cpu = time.process_time() - t0
    entries = len(w)
    # the containers alone: dicts, row tuples, lists (strings and numbers referenced apart)
    containers = sys.getsizeof(w.by_product) + sys.getsizeof(w.by_contact)
    leaves: dict[int, int] = {}
    for pid, rows in w.by_product.items():
        containers += sys.getsizeof(rows)
        leaves[id(pid)] = sys.getsizeof(pid)
        for cid, row in rows.items():
            containers += sys.getsizeof(row)
            leaves[id(cid)] = sys.getsizeof(cid)
            for x in row:
                if type(x) in (int, float) and not -5 <= x <= 256:
                    leaves[id(x)] = sys.getsizeof(x)
    for cid, pids in w.by_contact.items():
        containers += sys.getsizeof(pids)
        leaves[id(cid)] = sys.getsizeof(cid)
        for pid in pids:
            leaves[id(pid)] = sys.getsizeof(pid)
    leaf = sum(leaves.values())
    return {"entries": entries, "contacts": len(w.by_contact), "products": len(w.by_product),
            "retained_bytes": retained, "bytes_per_entry": round(retained / max(entries, 1), 1),
            "container_bytes": containers, "container_bytes_per_entry": round(containers / max(entries, 1), 1),
            "leaf_bytes": leaf, "leaf_bytes_per_entry": round(leaf / max(entries, 1), 1),
            "cpu_s_traced": round(cpu, 1)}


# -- analysis ---------------------------------------------------------------------------------

def pct(xs: list[float], q: float) -> float:
    if not xs:
        return float("nan")
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, math.ceil(q / 100 * len(s)) - 1))]


def queue(service: list[float], sizes: list[int], slices: list[int], rate: float) -> tuple[list, list, list]:
    """One shard, one server. A batch row (slice 0) arrives when its last item has arrived at
    `rate` items/s. The rest of a fan-out (slice rows, `sweep_limit`) goes as the live flow
    does it: each call takes every batch that has arrived, then decides one slice; with no
    input waiting, the next slice comes at once (`notify_at` = now). Without slices: FIFO.
    Returns (arrival or ready time, start, finish) per row; rows served in one call share
    its finish."""
    n = len(service)
    ready, start, finish = [0.0] * n, [0.0] * n, [0.0] * n
    cum = 0
    for i in range(n):
        cum += sizes[i]
        ready[i] = cum / rate
    batches = [i for i in range(n) if not slices[i]]
    bi, sl, t = 0, None, 0.0
    while bi < len(batches) or sl is not None:
        call = []
        while bi < len(batches) and ready[batches[bi]] <= t and (sl is None or batches[bi] > sl):
            call.append(batches[bi])
            bi += 1
        if sl is not None:
            call.append(sl)
        if not call:  # idle until the next batch
            t = ready[batches[bi]]
            call.append(batches[bi])
            bi += 1
        for i in call:
            start[i] = t
        t += sum(service[i] for i in call)
        nxt = None
        for i in call:
            finish[i] = t
            if i + 1 < n and slices[i + 1]:
                nxt = i + 1
        sl = nxt
        if sl is not None:
            ready[sl] = t
    return ready, start, finish


def analyse(r: dict, rhos: tuple[float, ...]) -> dict:
    c = r["columns"]
    cpu = c["cpu_s"]
    slices = c.get("slice") or [0] * len(cpu)
    sizes = [e + u for e, u in zip(c["events"], c["updates"])]
    n = len(cpu)
    rows_b = [i for i in range(n) if not slices[i]]
    cpu_b = [cpu[i] for i in rows_b]
    total_ev = sum(sizes)
    out: dict = {"batches": len(rows_b), "slice_calls": n - len(rows_b), "events": sum(c["events"]),
                 "updates": sum(c["updates"]), "cpu_s": round(sum(cpu), 2),
                 "events_per_cpu_s": round(total_ev / max(sum(cpu), 1e-9)),
                 "batch_cpu_ms": {"p50": round(pct(cpu_b, 50) * 1e3, 2), "p99": round(pct(cpu_b, 99) * 1e3, 2),
                                  "max": round(max(cpu_b) * 1e3, 2) if cpu_b else None},
                 "call_cpu_ms_max": round(max(cpu) * 1e3, 2) if cpu else None,
                 "messages": sum(c["messages"]), "decisions": sum(c["decisions"]),
                 "changes": sum(c["changes"])}
    top = sorted(range(n), key=lambda i: -cpu[i])[:8]
    out["slowest_calls"] = [{"row": i, "slice": slices[i], "cpu_ms": round(cpu[i] * 1e3, 1), "events": c["events"][i],
                             "updates": c["updates"][i], "messages": c["messages"][i],
                             "decisions": c["decisions"][i], "hot_messages": c["hot_messages"][i],
                             "at": iso_ms(c["first_ts"][i])} for i in top]
    hot = [i for i in range(n) if c["hot_messages"][i] or c["hot_decisions"][i]]
    f0 = None
    if hot:
        f = max(hot, key=lambda i: cpu[i])
        f0 = max(i for i in rows_b if i <= hot[0])  # the batch whose call released it
        around = [i for i in rows_b if f0 - 50 <= i <= f0 + 50 and i not in hot and i != f0]
        ub = r.get("hot_update_batch")
        out["fanout"] = {
            "rows_with_hot_outputs": len(hot), "first_row": hot[0], "last_row": hot[-1], "release_batch": f0,
            "longest_call_row": f, "cpu_s": round(cpu[f], 3),
            "cpu_s_total": round(sum(cpu[i] for i in set(hot) | {f0}), 3),
            "hot_messages": sum(c["hot_messages"][i] for i in hot),
            "hot_decisions": sum(c["hot_decisions"][i] for i in hot),
            "messages_in_longest_call": c["messages"][f], "decisions_in_longest_call": c["decisions"][f],
            "events_in_release_batch": c["events"][f0], "updates_in_release_batch": c["updates"][f0],
            "update_row": ub, "update_row_cpu_s": None if ub is None else round(cpu[ub], 3),
            "batch_cpu_ms_around": {"window": "batches within 50 rows of the release, fan-out calls excluded",
                                    "p50": round(pct([cpu[i] for i in around], 50) * 1e3, 2),
                                    "p99": round(pct([cpu[i] for i in around], 99) * 1e3, 2)},
        }
    mean_rate = total_ev / max(sum(cpu), 1e-9)
    models = []
    for rho in rhos:
        rate = rho * mean_rate
        ready, start, finish = queue(cpu, sizes, slices, rate)
        lat = {i: finish[i] - ready[i] for i in rows_b}
        all_l = list(lat.values())
        m = {"rho": rho, "rate_items_per_s": round(rate),
             "batch_interval_ms": round(1e3 * (total_ev / max(len(rows_b), 1)) / rate, 1),
             "latency_ms_all": {"p50": round(pct(all_l, 50) * 1e3, 1), "p99": round(pct(all_l, 99) * 1e3, 1),
                                "max": round(max(all_l) * 1e3, 1)}}
        if hot:
            t0 = ready[f0]
            t_done = max(finish[i] for i in hot)
            later = [i for i in rows_b if i > f0 and ready[i] >= t_done and start[i] <= ready[i] + 1e-12]
            t_end = ready[later[0]] if later else max(finish)
            during = [lat[i] for i in rows_b if i != f0 and t0 <= ready[i] < t_end]
            rest = [lat[i] for i in rows_b if i != f0 and not t0 <= ready[i] < t_end]
            m["fanout_done_s"] = round(t_done - t0, 2)
            m["queued_during"] = len(during)
            m["drain_s"] = round(t_end - t0, 2)
            m["latency_ms_during"] = {"p50": round(pct(during, 50) * 1e3, 1) if during else None,
                                      "p99": round(pct(during, 99) * 1e3, 1) if during else None,
                                      "max": round(max(during) * 1e3, 1) if during else None}
            m["latency_ms_outside"] = {"p50": round(pct(rest, 50) * 1e3, 1), "p99": round(pct(rest, 99) * 1e3, 1)}
        models.append(m)
    out["queue_model"] = models
    return out


# -- end to end -------------------------------------------------------------------------------

def cli_run(events: Path, catalog: Path, campaigns: Path, until: str, out_dir: Path) -> dict:
    venv = REPO / ".venv" / "bin" / "python"
    py = str(venv) if venv.exists() else sys.executable
    out = out_dir / "cli.changes.jsonl"
    cmd = [py, "-m", "commands.cli", "replay", str(events), "--until", until, "--out", str(out),
           "--campaigns", str(campaigns), "--catalog", str(catalog)]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    print(f"  cli: {shlex.join(cmd)}", file=sys.stderr, flush=True)
    m = run_measured(cmd, cwd=REPO, env=env, stdout_path=out_dir / "cli.stdout", stderr_path=out_dir / "cli.stderr")
    lines = count_lines(events) + count_lines(catalog)
    res = {"command": cmd, "returncode": m.returncode, "wall_s": m.wall_s, "cpu_s": round(m.cpu_s, 2),
           "peak_rss": m.peak_rss, "input_lines": lines, "events_per_s": round(lines / max(m.wall_s, 1e-9)),
           "events_per_cpu_s": round(lines / max(m.cpu_s, 1e-9)),
           "changes": count_lines(out), "messages": count_lines(out.with_name("cli.changes.messages.jsonl")),
           "decisions": count_lines(out.with_name("cli.changes.decisions.jsonl")),
           "dead_letters": count_lines(out.with_name("cli.changes.dead-letters.jsonl")),
           "stderr_tail": m.stderr_tail if m.returncode else ""}
    hot = 0
    mp = out.with_name("cli.changes.messages.jsonl")
    if mp.exists():
        with open(mp, "rb") as f:
            for line in f:
                if b'"price-drop"' in line and HOT_TITLE.encode() in line:
                    hot += 1
    res["hot_messages"] = hot
    return res


# -- main -------------------------------------------------------------------------------------

def run_variant(name: str, events: Path, catalog: Path | None, campaigns: Path, a, until_ms: int, drop_ms: int,
                tmp: Path, sweep: int | None = None) -> dict:
    out = tmp / f"worker-{name}.json"
    cmd = [sys.executable, __file__, "--worker", str(events), str(catalog or "-"), str(campaigns), str(a.batch),
           str(until_ms), str(drop_ms), str(out), *(["--profile"] if a.profile_fanout and name == "b" else []),
           *([f"--sweep={sweep}"] if sweep else [])]
    print(f"  ({name}) {shlex.join(cmd)}  [load {os.getloadavg()[0]:.2f}]", file=sys.stderr, flush=True)
    m = run_measured(cmd, cwd=REPO, stderr_path=tmp / f"worker-{name}.stderr")
    if m.returncode != 0:
        raise SystemExit(f"({name}) failed with exit code {m.returncode}:\n{m.stderr_tail}")
    r = orjson.loads(out.read_bytes())
    r["process"] = {"wall_s": m.wall_s, "cpu_s": round(m.cpu_s, 2), "peak_rss": m.peak_rss,
                    "load_before": m.load_before, "load_after": m.load_after}
    print(f"      {r['cpu_s_process']:.1f} CPU s in engine.process, {m.cpu_s:.1f} CPU s in all (parsing included), "
          f"{m.peak_rss / 1e6:,.0f} MB peak RSS", file=sys.stderr, flush=True)
    return r


LABELS = {"a": "(a) espresso campaigns, contact events only",
          "b": "(b) + catalog campaigns and catalogue (replay: fan-out in one call)",
          "c": "(c) = (b) with sweep_limit (live: fan-out in slices)"}


def markdown(res: dict) -> str:
    vs = res["variants"]
    keys = [k for k in ("a", "b", "c") if k in vs]
    L = ["| figure | " + " | ".join(LABELS[k] for k in keys) + " |", "|---|" + "---|" * len(keys)]

    def row(label: str, f) -> None:
        cells = []
        for k in keys:
            try:
                v = f(vs[k], vs[k]["analysis"])
            except (KeyError, TypeError, IndexError):
                v = None
            cells.append("-" if v is None else str(v))
        L.append(f"| {label} | " + " | ".join(cells) + " |")

    row("contact events / catalogue updates", lambda v, x: f"{x['events']:,} / {x['updates']:,}")
    row("batches (+ slice calls)", lambda v, x: f"{x['batches']:,}" + (f" (+{x['slice_calls']:,})"
                                                                       if x["slice_calls"] else ""))
    row("CPU s in engine.process", lambda v, x: x["cpu_s"])
    row("CPU s of the process (parsing, merging included)", lambda v, x: v["process"]["cpu_s"])
    row("items / CPU-s (engine.process)", lambda v, x: f"{x['events_per_cpu_s']:,}")
    row("peak RSS MB", lambda v, x: f"{v['process']['peak_rss'] / 1e6:,.0f}")
    row("changes / messages / decisions", lambda v, x: f"{x['changes']:,} / {x['messages']:,} / {x['decisions']:,}")
    row("messages of price-drop / back-in-stock / low-stock", lambda v, x: None if v.get("watch_entries_end") is None
        else " / ".join(f"{v['messages_by_campaign'].get(k, 0):,}" for k in ("price-drop", "back-in-stock",
                                                                             "low-stock")))
    row("batch CPU ms p50 / p99 / max",
        lambda v, x: " / ".join(str(x["batch_cpu_ms"][k]) for k in ("p50", "p99", "max")))
    row("watch entries at the drop / at the end", lambda v, x: None if v.get("watch_entries_end") is None
        else f"{v['watch_entries_at_drop'] or 0:,} / {v['watch_entries_end']:,}")
    row("hot product: watchers at the drop", lambda v, x: None if v.get("hot_watchers_at_drop") is None
        else f"{v['hot_watchers_at_drop']:,}")
    row("hot drop: messages / decisions released", lambda v, x: f"{x['fanout']['hot_messages']:,} / "
        f"{x['fanout']['hot_decisions']:,}")
    row("hot drop: calls releasing it; longest call CPU s (the stall)",
        lambda v, x: f"{x['fanout']['rows_with_hot_outputs']}; {x['fanout']['cpu_s']} "
                     f"({x['fanout']['messages_in_longest_call']:,} messages)")
    row("hot drop: CPU s of all its calls; of the call carrying the update", lambda v, x:
        f"{x['fanout']['cpu_s_total']}; {x['fanout']['update_row_cpu_s']}")
    row("batch CPU ms p50 / p99 within 50 batches of it", lambda v, x:
        f"{x['fanout']['batch_cpu_ms_around']['p50']} / {x['fanout']['batch_cpu_ms_around']['p99']}")
    rhos = [m["rho"] for m in vs[keys[-1]]["analysis"]["queue_model"]]
    for j, rho in enumerate(rhos):
        row(f"model rho={rho}: rate items/s; batch latency ms p50 / p99, all batches", lambda v, x, j=j:
            f"{x['queue_model'][j]['rate_items_per_s']:,}; {x['queue_model'][j]['latency_ms_all']['p50']} / "
            f"{x['queue_model'][j]['latency_ms_all']['p99']}")
        row(f"model rho={rho}: fan-out done s; batches arriving until the queue drains: count, latency ms p50 / p99 "
            "/ max; drain s", lambda v, x, j=j: f"{x['queue_model'][j]['fanout_done_s']}; "
            f"{x['queue_model'][j]['queued_during']}, {x['queue_model'][j]['latency_ms_during']['p50']} / "
            f"{x['queue_model'][j]['latency_ms_during']['p99']} / {x['queue_model'][j]['latency_ms_during']['max']}; "
            f"{x['queue_model'][j]['drain_s']}")
        row(f"model rho={rho}: latency ms p50 / p99 of the other batches", lambda v, x, j=j:
            f"{x['queue_model'][j]['latency_ms_outside']['p50']} / {x['queue_model'][j]['latency_ms_outside']['p99']}")
    mem = res.get("watch_memory")
    if mem:
        L.append(f"\nMemory per watch entry (a bare `Watches` fed the stream's views, carts and orders, tracemalloc): "
                 f"**{mem['bytes_per_entry']} B** for {mem['entries']:,} entries of {mem['contacts']:,} contacts on "
                 f"{mem['products']:,} products (containers {mem['container_bytes_per_entry']} B, strings and numbers "
                 f"{mem['leaf_bytes_per_entry']} B).")
    if "a" in vs and "b" in vs and vs["b"].get("watch_entries_end"):
        d = vs["b"]["process"]["peak_rss"] - vs["a"]["process"]["peak_rss"]
        L.append(f"Peak RSS (b) - (a): {d / 1e6:,.0f} MB = {d / vs['b']['watch_entries_end']:,.0f} B per watch entry "
                 "at the end (everything the catalogue adds, an upper bound).")
    return "\n".join(L)


def _live_sweep_limit() -> int:
    try:
        from flows.logic import SWEEP_LIMIT
        return int(SWEEP_LIMIT)
    except Exception:  # an engine without slices
        return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--worker":
        ev, cat, camps, batch, until, drop, out = argv[1:8]
        sweep = next((int(x[8:]) for x in argv[8:] if x.startswith("--sweep=")), None)
        worker(Path(ev), None if cat == "-" else Path(cat), Path(camps), int(batch), int(until), int(drop), Path(out),
               profile="--profile" in argv[8:], sweep=sweep)
        return 0
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true",
                   help=f"smoke run: {QUICK['contacts']:,} contacts, {QUICK['products']} products, "
                        f"{QUICK['days']:g} days")
    p.add_argument("--contacts", type=int)
    p.add_argument("--products", type=int)
    p.add_argument("--days", type=float)
    p.add_argument("--watch-per-contact", type=float, help="distinct products viewed per contact (default 10)")
    p.add_argument("--hot-viewers", type=int, help="contacts who viewed the hot product (default: all)")
    p.add_argument("--hot-drop-at", help="instant of the hot product's drop, on the hour (default: period end - 12 h)")
    p.add_argument("--seed", type=int)
    p.add_argument("--start")
    p.add_argument("--batch", type=int, default=2000, help="events per engine.process call (default 2000)")
    p.add_argument("--rho", type=float, nargs="+", default=[0.5, 0.8],
                   help="queue model loads: arrival rate = rho x measured mean throughput (default 0.5 0.8)")
    p.add_argument("--skip-a", action="store_true", help="skip variant (a) (no catalog campaigns)")
    p.add_argument("--sweep-limit", type=int, default=_live_sweep_limit(),
                   help="variant (c): (b) with the engine's sweep_limit as the live flow sets it (default: "
                        "flows.logic.SWEEP_LIMIT, %(default)s); 0: no (c)")
    p.add_argument("--skip-memory", action="store_true")
    p.add_argument("--profile-fanout", action="store_true",
                   help="cProfile the batches around the hot drop in (b) (their CPU figures then include the "
                        "profiler); the top functions are printed and saved")
    p.add_argument("--cli", choices=("none", "quick", "full"), default="quick",
                   help="`espresso replay --catalog` end to end on the quick stream (default), the full one, or not")
    p.add_argument("--regenerate", action="store_true")
    p.add_argument("--analyse", type=Path, metavar="RESULTS_JSON",
                   help="only re-analyse a results file and print the table (writes RESULTS.reanalysed.json)")
    p.add_argument("--data-dir", type=Path, default=BENCH / "data")
    p.add_argument("--results-dir", type=Path, default=BENCH / "results")
    a = p.parse_args(argv)

    if a.analyse:
        res = orjson.loads(a.analyse.read_bytes())
        for v in res["variants"].values():
            v["analysis"] = analyse(v, tuple(a.rho))
        print(markdown(res))
        a.analyse.with_suffix(".reanalysed.json").write_bytes(orjson.dumps(res))
        return 0
    params = resolve_params(a)
    a.data_dir.mkdir(parents=True, exist_ok=True)
    a.results_dir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    tmp = a.data_dir / "out" / f"catalog-{stamp}"
    tmp.mkdir(parents=True, exist_ok=True)
    info = machine_info()
    started = time.time()

    events, catalog, meta = dataset(a.data_dir, params, a.regenerate)
    plain, full = campaign_files(a.data_dir)
    until_ms = meta["end_ms"] + D_MS
    drop_ms = meta["hot_drop_ms"]
    variants: dict = {}
    if not a.skip_a:
        variants["a"] = run_variant("a", events, None, plain, a, until_ms, drop_ms, tmp)
    variants["b"] = run_variant("b", events, catalog, full, a, until_ms, drop_ms, tmp)
    if a.sweep_limit:
        variants["c"] = run_variant("c", events, catalog, full, a, until_ms, drop_ms, tmp, sweep=a.sweep_limit)
    for v in variants.values():
        v["analysis"] = analyse(v, tuple(a.rho))
        v["columns_summary"] = {k: len(x) for k, x in v["columns"].items()}
    mem = None
    if not a.skip_memory:
        print("  memory per watch entry (tracemalloc) ...", file=sys.stderr, flush=True)
        mem = watch_memory(events, 30 * D_MS)
    cli = None
    if a.cli != "none":
        if a.cli == "quick" and not a.quick:
            qp = resolve_params(argparse.Namespace(**{**vars(a), "quick": True, "contacts": None, "products": None,
                                                       "days": None, "hot_viewers": None, "hot_drop_at": None}))
            qe, qc, qm = dataset(a.data_dir, qp, a.regenerate)
        else:
            qe, qc, qm = events, catalog, meta
        cli = cli_run(qe, qc, full, qm["until"], tmp)
        if qe == events:
            bb = variants["b"]["analysis"]
            cli["same_as_b"] = (cli["messages"], cli["decisions"]) == (bb["messages"], bb["decisions"])
        cli["stream"] = {"contact_events": qm["contact_events"], "catalog_updates": qm["catalog_updates"],
                         "params": qm["params"]}

    info["loadavg_after"] = os.getloadavg()
    res = {"benchmark": "catalog", "timestamp": stamp, "command_line": [sys.executable, __file__, *argv],
           "duration_s": round(time.time() - started, 1), "machine": info,
           "dataset": {"events": str(events), "catalog": str(catalog), **meta},
           "campaigns": {"plain": str(plain), "catalog": str(full), "catalog_campaigns": CATALOG_CAMPAIGNS},
           "batch": a.batch, "variants": variants, "watch_memory": mem, "cli": cli,
           "notes": {
               "cpu": "time.process_time around each engine.process call; parsing and merging are outside",
               "batches": "the contact stream merged with the catalogue in event time (contact events first at "
                          "one instant), cut every --batch items; watermark = the batch's last event time; "
                          "a final call runs time to the end + 24 h",
               "queue_model": "one shard, FIFO; batch i arrives when its last item has arrived at a steady rate of "
                              "rho x (items / CPU s of engine.process); latency = finish - arrival; 'during' = "
                              "batches arriving after the fan-out batch until the queue is empty again",
               "watch_memory": "a bare Watches fed the stream's views, carts and orders with tracemalloc on: bytes "
                               "retained (dicts, row tuples, lists, and the strings/numbers they keep) / entries",
           }}
    for v in variants.values():  # per-batch columns are large: keep them compact
        v["columns"] = {k: x for k, x in v["columns"].items()}
    path = a.results_dir / f"catalog-{stamp}.json"
    path.write_bytes(orjson.dumps(res))

    print()
    print(f"Catalog triggers: {meta['contact_events']:,} contact events of {params['contacts']:,} contacts over "
          f"{params['days']:g} days, {params['products']:,} products updated hourly ({meta['catalog_updates']:,} "
          f"updates; {meta['price_drops_ge_10pct']:,} drops >= 10 %), hot product {HOT} viewed by "
          f"{params['hot_viewers']:,} contacts, dropped 25 % at {meta['hot_drop_at']}; batches of {a.batch}")
    print(f"Machine: {info['cpu_model']}, {info['logical_cores']} logical cores, Python {info['python']}; "
          f"load average before {info['loadavg'][0]:.2f}, after {info['loadavg_after'][0]:.2f}")
    print()
    print(markdown(res))
    if cli:
        print(f"\nEnd to end (`espresso replay --campaigns --catalog`, {cli['stream']['contact_events']:,} contact "
              f"events + {cli['stream']['catalog_updates']:,} updates): exit {cli['returncode']}, {cli['wall_s']} s "
              f"wall, {cli['cpu_s']} CPU s, {cli['events_per_s']:,} lines/s, {cli['events_per_cpu_s']:,} lines/CPU-s, "
              f"{cli['messages']:,} messages ({cli['hot_messages']:,} for the hot drop), {cli['decisions']:,} "
              f"decisions, {cli['dead_letters']} dead letters")
        if cli["returncode"]:
            print(cli["stderr_tail"])
        if cli.get("same_as_b") is not None:
            same = "equal" if cli["same_as_b"] else "DIFFER from"
            print(f"The CLI's messages and decisions {same} the counts of (b) in-process on the same stream.")
    if variants["b"].get("profile_fanout"):
        print("\ncProfile of the batches from the hot update on (12 batches, by own time):")
        print(variants["b"]["profile_fanout"])
    print(f"\nResults: {path}")
    for f in tmp.iterdir():
        f.unlink()
    tmp.rmdir()
    return 0


if __name__ == "__main__":
    sys.exit(main())
