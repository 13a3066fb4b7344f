"""`espresso backfill` against the full re-read it replaces (`espresso replay` of the whole history).

    python bench/backfill_bench.py                  # 100k contacts, 1M events, 30 days, 3 repetitions
    python bench/backfill_bench.py --quick          # 10k contacts, 100k events
    python bench/backfill_bench.py --lost-retention --repeat 5 --profile

What one run does:

1. Generates (seeded, cached under `bench/data/` by its parameters) a JSONL archive of contact
   events in the input topic's format (`event_id`, `contact_id`, `type`, `ts` ISO-8601 with
   `Z` for ~90 %, epoch ms for the rest, `properties`), in event-time order, over `--days`:
   every contact signs up with `consent_changed` (email 90 %, sms 30 %, push 25 %; 40 % of
   contacts in the first 12 h, the others over the period), then activity of heavy-tailed
   contacts (Pareto weights): email_open 35 %, email_click 10 %, sms_click 5 %, push_open 8 %,
   product_viewed 30 %, order_placed 10.5 % (`value` log-normal around 60), consent changes
   1.5 % (mostly unsubscribes).
2. Builds, without Kafka, the recovery directory a stopped `espresso run` with the built-in
   segments leaves: `bytewax.recovery.init_db_dir(dir, 1)`, events routed to the shard keys
   "P.S" as the live intake does (P = crc32 partitioner over 8 input partitions, S =
   `shard_of(contact_id, 8)`), applied to one `Shard(built-in program)` per key (with the
   dedup horizon `espresso run` gives a shard: 131072 / 8) in chunks of 1000 events, each
   followed by `advance(last ts - 60 s)` (the allowed lateness), and a final
   `advance(frontier)`; then one `espresso.segments` row per key at epoch 1 with the
   flow's payload `(SNAPSHOT_V2, shard.snapshot(copy=False), (frontier, frontier - 1,
   frontier), None, None)`, pickled as `ShardLogic.snapshot` and Bytewax do; plus the
   input offsets (`espresso.input`) and a commit of epoch 1. With `--lost-retention` the
   state holds only the events after the first 25 % of the archive (the topic lost them),
   while the archive still holds everything: the backfill then also adds the contacts only
   the archive knows.
3. New definitions: the built-in segments plus a lifetime sum (`order_placed` value >= 100)
   and a window on a type no built-in segment reads (`product_viewed` at least 2 within 2d):
   two facts to build from the whole history.
4. Measures, back to back, `--repeat` times each (alternating), every run in a fresh
   subprocess (the imports are not timed; the peak RSS is that process's VmHWM, interpreter
   and imports included):
   (a) `flows.backfill.backfill(copy of the recovery dir, program, ArchiveHistory([archive]),
       input_partitions=8)`, on a fresh copy of the directory each time (copied untimed);
   (b) the full re-read: `flows.replay.replay(archive, until=frontier, out, new segments)`,
       single process (`parse_ahead=False`), what `espresso replay` does with the new
       definitions (it also writes every change, as a re-read for new definitions must).
   Wall seconds and CPU seconds (`time.process_time`, all threads of the process) around
   the call alone; events/s = archive events / wall s. The ratio (b)/(a) is how many times
   faster the backfill is than the re-read; read the CPU ratio when the machine is busy.
5. Checks once, untimed, that the backfill is right: for a few shards, `Shard(new program,
   state=filled snapshot, switch_at=frontier)` switches the two new segments in (none
   refused), and their memberships at the switch equal those of a shard fed the same events
   with the new definitions from the start.

Each child calls, after its imports, `connectors.runtime.tune_process()` (GC thresholds,
malloc), as every `espresso` command does before it runs. `--profile` also runs the
backfill once more under cProfile (a child, on another copy) and prints the top entries by
cumulative and by own time (cProfile's overhead inflates the totals).

Prints Markdown tables; writes `bench/results/backfill-<UTC stamp>.json`.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import io
import json
import math
import os
import pickle
import platform
import pstats
import random
import resource
import shlex
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from datetime import datetime, timezone
from pathlib import Path

import orjson
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import REPO, machine_info  # noqa: E402

BENCH = REPO / "bench"
GEN_VERSION = 1
D_MS = 86_400_000
H_MS = 3_600_000
LATENESS_MS = 60_000
PARTITIONS = 8
SHARDS = 8
CHUNK = 1000
#: `espresso run`'s dedup horizon per shard (flows/run.py: DEFAULT_HORIZON split over the shards)
DEDUP_PER_SHARD = -(-131_072 // SHARDS)
FLOW_ID = "espresso"
DEFAULTS = {"contacts": 100_000, "events": 1_000_000}
QUICK = {"contacts": 10_000, "events": 100_000}
START = "2026-11-02T00:00:00Z"

NEW_SEGMENTS = """\
include_builtin: true
segments:
  - id: spent-100
    name: Spent 100 or more
    when: {lifetime: {type: order_placed, aggregate: sum, property: value, op: ">=", value: 100}}
  - id: browsing
    name: Browsing
    when: {event: {type: product_viewed, at_least: 2, within: 2d}}
"""
NEW_IDS = ("spent-100", "browsing")

# activity mix (after the sign-up consents): type, share
MIX = (("email_open", 0.35), ("email_click", 0.10), ("sms_click", 0.05), ("push_open", 0.08),
       ("product_viewed", 0.30), ("order_placed", 0.105), ("consent_changed", 0.015))


# -- the archive --------------------------------------------------------------------------
def archive_path(contacts: int, events: int, days: float, seed: int) -> Path:
    return BENCH / "data" / f"backfill-c{contacts}-e{events}-d{days:g}-s{seed}-g{GEN_VERSION}.jsonl"


def generate(path: Path, contacts: int, events: int, days: float, seed: int) -> None:
    """`events` valid events of `contacts` contacts over `days` (see the module docstring)."""
    from state.timeutil import format_ms, parse_ts

    rnd = random.Random(seed)
    t0 = parse_ts(START)
    end = t0 + int(days * D_MS)
    rows: list[tuple] = []  # (ts, contact, type, properties)
    signup = []
    for c in range(contacts):
        s = t0 + (rnd.randrange(12 * H_MS) if rnd.random() < 0.4 else rnd.randrange(int((end - t0) * 0.9)))
        signup.append(s)
        k = 0
        for channel, share in (("email", 0.9), ("sms", 0.3), ("push", 0.25)):
            if rnd.random() < share:
                reason = {"email": "signup_form", "sms": "keyword", "push": "app_prompt"}[channel]
                rows.append((s + 200 * k, c, "consent_changed",
                             {"channel": channel, "status": "subscribed", "reason": reason}))
                k += 1
    activity = events - len(rows)
    if activity <= 0:
        raise SystemExit(f"--events {events} is too few for {contacts} contacts' sign-up consents ({len(rows)})")
    cum, total = [], 0.0
    for _ in range(contacts):  # Pareto(1.5) activity weights, capped at 300x the lightest
        total += min((1.0 - rnd.random()) ** (-1 / 1.5), 300.0)
        cum.append(total)
    who = rnd.choices(range(contacts), cum_weights=cum, k=activity)
    types = rnd.choices([t for t, _ in MIX], weights=[w for _, w in MIX], k=activity)
    for c, etype in zip(who, types):
        s = signup[c]
        ts = s + 1000 + int(rnd.random() * (end - s - 1000))
        if etype == "order_placed":
            props: dict = {"order_id": f"o{len(rows)}", "value": round(min(rnd.lognormvariate(4.1, 0.6), 2000), 2),
                           "currency": "EUR"}
        elif etype == "product_viewed":
            props = {"product_id": f"p_{int(rnd.paretovariate(1.2)) % 5000:05d}", "price": rnd.choice((9.9, 24.5, 49, 120))}
        elif etype == "consent_changed":
            props = {"channel": rnd.choices(("email", "sms", "push"), (6, 2, 2))[0],
                     "status": "unsubscribed" if rnd.random() < 0.7 else "subscribed",
                     "reason": "user_request"}
        else:
            props = {"campaign_id": f"{etype.split('_')[0]}-{ts // D_MS % 1000}"}
        rows.append((ts, c, etype, props))
    rows.sort(key=lambda r: r[0])
    tmp = path.with_suffix(".tmp")
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(tmp, "wb") as f:
        buf = []
        for k, (ts, c, etype, props) in enumerate(rows):
            stamp = ts if rnd.random() < 0.1 else format_ms(ts)
            buf.append(orjson.dumps({"event_id": f"e{k:09d}", "contact_id": f"contact-{c:07d}", "type": etype,
                                     "ts": stamp, "properties": props}))
            if len(buf) >= 50_000:
                f.write(b"\n".join(buf) + b"\n")
                buf = []
        if buf:
            f.write(b"\n".join(buf) + b"\n")
    tmp.replace(path)


# -- the recovery directory --------------------------------------------------------------
def route(cid: str) -> str:
    from connectors.partitioners import PARTITIONERS
    from state.intake import shard_of

    return f"{PARTITIONERS['crc32'](cid.encode(), PARTITIONS)}.{shard_of(cid, SHARDS)}"


def read_archive(archive: Path, skip_fraction: float = 0.0) -> tuple[dict[str, list], dict[str, int], int]:
    """{key: events in order} of the whole archive, {key: how many of them come before the
    archive's first `skip_fraction` of lines end} (a prefix of each key's list), lines."""
    from state.events import Invalid, parse_event

    with open(archive, "rb") as f:
        lines = f.read().splitlines()
    start = int(len(lines) * skip_fraction)
    by_key: dict[str, list] = defaultdict(list)
    keys: dict[str, str] = {}
    skipped: dict[str, int] = defaultdict(int)
    for n, raw in enumerate(lines):
        ev = parse_event(raw)
        assert type(ev) is not Invalid, ev
        key = keys.get(ev.contact_id)
        if key is None:
            key = keys[ev.contact_id] = route(ev.contact_id)
        by_key[key].append(ev)
        if n < start:
            skipped[key] += 1
    return by_key, skipped, len(lines)


def feed(shard, events: list) -> int:
    """As the live flow: chunks, each followed by the watermark (allowed lateness behind);
    at the end everything before the frontier evaluated. Returns the frontier."""
    frontier = 0
    for i in range(0, len(events), CHUNK):
        chunk = events[i:i + CHUNK]
        shard.apply(chunk)
        frontier = max(frontier, max(e.ts for e in chunk))
        shard.advance(frontier - LATENESS_MS)
    shard.advance(frontier)
    return frontier


def build_recovery(recovery: Path, by_key: dict[str, list]) -> dict:
    """The recovery directory of a stopped `espresso run` with the built-in segments."""
    from bytewax.recovery import init_db_dir

    from flows.logic import SNAPSHOT_V2
    from state.dedup import DEFAULT_HORIZON
    from state.definitions import builtin_segments
    from state.program import compile_program
    from state.shard import Shard

    assert DEDUP_PER_SHARD == -(-DEFAULT_HORIZON // SHARDS)
    recovery.mkdir(parents=True)
    init_db_dir(recovery, 1)
    program = compile_program(builtin_segments())
    rows, offsets, frontiers, contacts, size = [], defaultdict(int), {}, 0, 0
    cpu0, wall0 = time.process_time(), time.perf_counter()
    for key in sorted(by_key, key=lambda k: tuple(map(int, k.split(".")))):
        shard = Shard(program, DEDUP_PER_SHARD)
        frontier = feed(shard, by_key[key])
        payload = (SNAPSHOT_V2, shard.snapshot(copy=False), (frontier, frontier - 1, frontier), None, None)
        blob = pickle.dumps(pickle.dumps(payload, protocol=pickle.HIGHEST_PROTOCOL))
        rows.append((f"{FLOW_ID}.segments", key, 1, blob))
        offsets[int(key.split(".")[0])] += len(by_key[key])
        frontiers[key] = frontier
        contacts += len(shard)
        size += len(blob)
        del shard, payload
    build_cpu, build_wall = time.process_time() - cpu0, time.perf_counter() - wall0
    rows += [(f"{FLOW_ID}.input", str(p), 1, pickle.dumps(off)) for p, off in sorted(offsets.items())]
    con = sqlite3.connect(recovery / "part-0.sqlite3")
    try:
        with con:
            con.executemany("INSERT INTO snaps(step_id, state_key, snap_epoch, ser_change) VALUES (?, ?, ?, ?)", rows)
            con.execute("INSERT INTO commits(part_index, commit_epoch) VALUES (0, 1)")
    finally:
        con.close()
    return {"keys": len(frontiers), "contacts": contacts, "snapshot_bytes": size, "frontiers": frontiers,
            "build_cpu_s": round(build_cpu, 3), "build_wall_s": round(build_wall, 3)}


# -- one measured run (child process) ---------------------------------------------------
def _vm(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    return 0


def one(args: argparse.Namespace) -> int:
    """Run (a) or (b) once in this process; print one JSON line. After the imports, the process
    settings every `espresso` command starts with (commands/cli.py: `tune_process`)."""
    from connectors.runtime import tune_process

    prof = cProfile.Profile() if args.profile else None
    if args.one == "backfill":
        from flows.backfill import ArchiveHistory, backfill
        from state.definitions import parse_segments
        from state.program import compile_program

        program = compile_program(parse_segments(yaml.safe_load(args.segments.read_text()), str(args.segments)))
        history = ArchiveHistory([args.archive], args.dead_letters)
        tune_process()
        rss0 = _vm("VmRSS")
        wall0, cpu0 = time.perf_counter(), time.process_time()
        if prof:
            prof.enable()
        r = backfill(args.recovery, program, history, input_partitions=PARTITIONS)
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
        out = {"events": r.events, "detail": {"facts": r.facts, "snapshots": r.snapshots, "applied": r.applied,
                                              "added": r.added, "after_cutoff": r.after_cutoff,
                                              "unplaced": r.unplaced, "invalid": r.invalid,
                                              "partitioner": r.partitioner, "rebuilt": r.rebuilt}}
    else:
        from flows.replay import replay

        tune_process()
        rss0 = _vm("VmRSS")
        wall0, cpu0 = time.perf_counter(), time.process_time()
        if prof:
            prof.enable()
        r = replay(args.archive, args.until, args.out, args.segments, progress=False, parse_ahead=False)
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
        out = {"events": args.events, "detail": {"changes": r.changes, "dead_letters": r.dead_letters}}
    if prof:
        prof.disable()
        out["profile"] = [_stats(prof, order, args.profile_top) for order in ("cumulative", "tottime")]
    out.update(wall_s=wall, cpu_s=cpu, rss_before=rss0, peak_rss=_vm("VmHWM"),
               ru_maxrss=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    print(json.dumps(out))
    return 0


def _stats(prof: cProfile.Profile, order: str, top: int) -> str:
    buf = io.StringIO()
    pstats.Stats(prof, stream=buf).sort_stats(order).print_stats(top)
    text = buf.getvalue()
    return text[text.index("   ncalls"):].rstrip() if "   ncalls" in text else text


def run_child(argv: list[str]) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), *argv]
    p = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    if p.returncode != 0:
        raise SystemExit(f"{shlex.join(cmd)} failed ({p.returncode}):\n{p.stderr[-4000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


# -- correctness (untimed) ----------------------------------------------------------------
def verify(recovery: Path, program, by_key: dict[str, list], frontiers: dict[str, int], n: int) -> dict:
    """The filled snapshots switch the new segments in, with the memberships a shard built
    with the new definitions from the start (the whole archive: `by_key`) has at the switch
    instant, for every contact of the archive."""
    from flows.backfill import _read_snaps
    from state.shard import Shard

    snaps = {s.key: s for s in _read_snaps(recovery, FLOW_ID)}
    new_bits = [i for i, s in enumerate(program.segments) if s.id in NEW_IDS]
    checked, contacts, mismatches, members = [], 0, 0, dict.fromkeys(NEW_IDS, 0)
    for key in sorted(snaps)[:: max(1, len(snaps) // n)][:n]:
        s = snaps[key]
        assert s.frontier == frontiers[key], (key, s.frontier, frontiers[key])
        switched = Shard(program, state=s.state, switch_at=s.frontier)
        plan = switched.migration
        assert plan is not None and not plan.refused, (key, plan and plan.refused)
        assert set(NEW_IDS) <= set(plan.rebuilt), (key, plan.rebuilt)
        reference = Shard(program, DEDUP_PER_SHARD)
        feed(reference, by_key[key])
        reference.advance(s.frontier + 1)  # every event and timer at or before the switch instant
        for cid, row in reference.index.items():
            got, want = switched.I[0][switched.row_of(cid)], reference.I[0][row]
            for i in new_bits:
                mismatches += (got >> i & 1) != (want >> i & 1)
                members[program.segments[i].id] += want >> i & 1
        contacts += len(reference)
        checked.append(key)
    assert mismatches == 0, f"{mismatches} memberships of the new segments differ from the reference"
    return {"shards": checked, "contacts": contacts, "mismatches": mismatches, "members": members,
            "rebuilt": list(plan.rebuilt)}


# -- main -----------------------------------------------------------------------------------
def median(xs: list[float]) -> float:
    return statistics.median(xs)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--contacts", type=int, default=None, help=f"default {DEFAULTS['contacts']:,}")
    ap.add_argument("--events", type=int, default=None, help=f"archive events (default {DEFAULTS['events']:,})")
    ap.add_argument("--days", type=float, default=30.0)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--quick", action="store_true",
                    help=f"{QUICK['contacts']:,} contacts, {QUICK['events']:,} events")
    ap.add_argument("--repeat", type=int, default=3, help="runs of each measurement; the median is reported")
    ap.add_argument("--lost-retention", action="store_true",
                    help="the state holds only the events after the archive's first 25 %% (the topic lost them)")
    ap.add_argument("--verify-shards", type=int, default=4, help="shards checked after a backfill (0: none)")
    ap.add_argument("--profile", action="store_true", help="also profile one backfill with cProfile")
    ap.add_argument("--profile-top", type=int, default=8)
    ap.add_argument("--workdir", type=Path, default=None, help="where the recovery copies go (default: a temp dir)")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    # one measured run, in a child process
    ap.add_argument("--one", choices=("backfill", "replay"), help=argparse.SUPPRESS)
    ap.add_argument("--recovery", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--archive", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--segments", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--dead-letters", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--until", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        return one(args)

    size = {**DEFAULTS, **(QUICK if args.quick else {})}
    contacts = args.contacts or size["contacts"]
    events = args.events or size["events"]
    info = machine_info()
    print(f"command: {shlex.join([sys.executable, *sys.argv])}")
    print(f"machine: {info['cpu_model'] or platform.processor()}, os.cpu_count() {os.cpu_count()} "
          f"({info['usable_cores']} usable), Python {info['python']}, bytewax {info['bytewax']}, "
          f"commit {(info['git'] or {}).get('commit', '?')[:10]}")
    print("load average at start: " + " ".join(f"{x:.2f}" for x in os.getloadavg()), flush=True)

    archive = archive_path(contacts, events, args.days, args.seed)
    if not archive.exists():
        t = time.perf_counter()
        generate(archive, contacts, events, args.days, args.seed)
        print(f"generated {archive.relative_to(REPO)} in {time.perf_counter() - t:.1f} s", file=sys.stderr)
    work = Path(tempfile.mkdtemp(prefix="backfill-bench-", dir=args.workdir))
    try:
        return _bench(args, archive, contacts, events, work, info)
    finally:
        if args.keep:
            print(f"kept {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)


def _bench(args, archive: Path, contacts: int, events: int, work: Path, info: dict) -> int:
    from flows.config import load_program
    from state.definitions import parse_segments
    from state.program import compile_program

    segments = work / "new-segments.yaml"
    segments.write_text(NEW_SEGMENTS)
    program = compile_program(parse_segments(yaml.safe_load(NEW_SEGMENTS), str(segments)))
    assert program.fingerprint == load_program(segments, None)[0].fingerprint  # what replay runs

    t = time.perf_counter()
    skip = 0.25 if args.lost_retention else 0.0
    by_key, skipped, lines = read_archive(archive, skip)
    assert lines == events, (lines, events)
    base = work / "recovery"
    kept = {k: v[skipped.get(k, 0):] for k, v in by_key.items()}  # what the input still held
    built = build_recovery(base, {k: v for k, v in kept.items() if v})
    del kept
    frontiers = built.pop("frontiers")
    until = max(frontiers.values())
    print(f"recovery dir: {built['keys']} shard snapshots, {built['contacts']:,} contacts, "
          f"{built['snapshot_bytes'] / 1e6:.1f} MB of snapshots; built in {time.perf_counter() - t:.1f} s "
          f"(shards {built['build_cpu_s']:.1f} CPU s)", file=sys.stderr, flush=True)
    gc.collect()

    runs: dict[str, list[dict]] = {"backfill": [], "replay": []}
    last = None
    for i in range(args.repeat):
        copy = work / f"recovery-{i}"
        shutil.copytree(base, copy)
        load = os.getloadavg()[0]
        r = run_child(["--one", "backfill", "--recovery", str(copy), "--archive", str(archive),
                       "--segments", str(segments), "--dead-letters", str(work / "dead.jsonl")])
        r["load"] = load
        runs["backfill"].append(r)
        print(f"  ({i + 1}/{args.repeat}) backfill: {r['wall_s']:.2f} s wall, {r['cpu_s']:.2f} CPU s, "
              f"peak RSS {r['peak_rss'] / 1e6:.0f} MB  [load {load:.2f}]", file=sys.stderr, flush=True)
        if last is not None:
            shutil.rmtree(last)
        last = copy
        load = os.getloadavg()[0]
        out = work / "changes.jsonl"
        r = run_child(["--one", "replay", "--archive", str(archive), "--segments", str(segments),
                       "--out", str(out), "--until", str(until), "--events", str(events)])
        r["load"] = load
        runs["replay"].append(r)
        for f in work.glob("changes*.jsonl"):
            f.unlink()
        print(f"  ({i + 1}/{args.repeat}) full re-read: {r['wall_s']:.2f} s wall, {r['cpu_s']:.2f} CPU s, "
              f"peak RSS {r['peak_rss'] / 1e6:.0f} MB  [load {load:.2f}]", file=sys.stderr, flush=True)

    checked = None
    if args.verify_shards and last is not None:
        checked = verify(last, program, by_key, frontiers, args.verify_shards)
        print(f"verified: {len(checked['shards'])} shards ({', '.join(checked['shards'])}), {checked['contacts']:,} "
              f"contacts: {', '.join(NEW_IDS)} switched in, memberships equal to new definitions from the start "
              f"({', '.join(f'{k} {v}' for k, v in checked['members'].items())} members)", flush=True)
    del by_key
    gc.collect()

    prof = None
    if args.profile:
        copy = work / "recovery-profile"
        shutil.copytree(base, copy)
        prof = run_child(["--one", "backfill", "--recovery", str(copy), "--archive", str(archive),
                          "--segments", str(segments), "--dead-letters", str(work / "dead.jsonl"), "--profile",
                          "--profile-top", str(args.profile_top)])["profile"]

    rows = {}
    for name, rs in runs.items():
        rows[name] = {"wall_s": median([r["wall_s"] for r in rs]), "cpu_s": median([r["cpu_s"] for r in rs]),
                      "events": rs[0]["events"], "peak_rss": median([r["peak_rss"] for r in rs]),
                      "rss_before": median([r["rss_before"] for r in rs]),
                      "walls": [round(r["wall_s"], 2) for r in rs], "cpus": [round(r["cpu_s"], 2) for r in rs],
                      "detail": rs[-1]["detail"]}
    a, b = rows["backfill"], rows["replay"]
    d = a["detail"]
    print()
    print(f"archive: {events:,} events of {contacts:,} contacts over {args.days:g} days "
          f"({archive.stat().st_size / 1e6:.0f} MB); state: {built['contacts']:,} contacts in {built['keys']} shards "
          f"({PARTITIONS} partitions x {SHARDS}), {'the last 75 % of the history' if skip else 'the whole history'}")
    print(f"backfill: facts {', '.join(d['facts'])}; {d['applied']:,} events applied, {d['added']:,} contacts added, "
          f"{d['after_cutoff']:,} after the cutoff; partitioner {d['partitioner']}; switch in: {', '.join(d['rebuilt'])}")
    print(f"full re-read: {b['detail']['changes']:,} changes written")
    print()
    print(f"| measurement (median of {args.repeat}) | wall s | CPU s | events/s (wall) | events/CPU s | peak RSS MB "
          "| RSS after imports MB | wall s per run |")
    print("|---|---|---|---|---|---|---|---|")
    for label, r in (("(a) espresso backfill", a), ("(b) full re-read (espresso replay)", b)):
        print(f"| {label} | {r['wall_s']:.2f} | {r['cpu_s']:.2f} | {r['events'] / r['wall_s']:,.0f} "
              f"| {r['events'] / r['cpu_s']:,.0f} | {r['peak_rss'] / 1e6:.0f} | {r['rss_before'] / 1e6:.0f} "
              f"| {', '.join(map(str, r['walls']))} |")
    ratio_wall, ratio_cpu = b["wall_s"] / a["wall_s"], b["cpu_s"] / a["cpu_s"]
    print(f"| (c) ratio (b)/(a): backfill faster by | {ratio_wall:.2f}x | {ratio_cpu:.2f}x | | | "
          f"{a['peak_rss'] / b['peak_rss']:.2f}x RSS of (b) | | |")
    print()
    print("load average at end: " + " ".join(f"{x:.2f}" for x in os.getloadavg()))
    if prof is not None:
        print()
        print(f"cProfile of one backfill, top {args.profile_top} by cumulative time:")
        print(prof[0])
        print()
        print(f"top {args.profile_top} by own time:")
        print(prof[1])
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    path = BENCH / "results" / f"backfill-{stamp}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({
        "benchmark": "backfill", "timestamp": stamp, "command_line": [sys.executable, *sys.argv], "machine": info,
        "params": {"contacts": contacts, "events": events, "days": args.days, "seed": args.seed,
                   "repeat": args.repeat, "lost_retention": args.lost_retention, "partitions": PARTITIONS,
                   "shards": SHARDS},
        "recovery": built, "runs": runs, "median": rows,
        "ratio": {"wall": ratio_wall, "cpu": ratio_cpu}, "verified": checked,
        "profile": None if prof is None else {"cumulative": prof[0], "tottime": prof[1]},
        "loadavg_end": os.getloadavg()}, indent=2, default=str))
    print(f"wrote {path.relative_to(REPO)}")
    if not math.isfinite(ratio_wall):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
