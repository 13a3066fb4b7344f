"""Recovery snapshot cost of one shard, at 1M and more contacts (issue 16's baseline).

    python bench/snapshot_bench.py                      # 1M and 5M contacts
    python bench/snapshot_bench.py --contacts 200000    # one size, quick

A `Shard` with the built-in segments is filled with N contacts, 2 events each (a consent
and an email open, 10 ms apart per contact), as at 10k events/s. Then, as the live flow
does at every epoch (`flows/logic.py` `ShardLogic.snapshot`): the state
(`Shard.snapshot(copy=False)`: ids packed, columns shared), its pickle (what Bytewax
stores), and on restart the unpickle and the rebuild (`Shard(program, state=...)`). CPU seconds (time.process_time) of each, bytes, and
the resident memory per contact. Also the share of processing time a snapshot every 5 s
(`--epoch-interval` default) would take at 10k events/s, when every shard changes each
epoch. Prints a Markdown table; writes bench/results/snapshot-<UTC>.json.
"""

from __future__ import annotations

import argparse
import gc
import json
import pickle
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import REPO, machine_info  # noqa: E402

from state.definitions import builtin_segments  # noqa: E402
from state.events import Event  # noqa: E402
from state.program import compile_program  # noqa: E402
from state.shard import Shard  # noqa: E402

T0 = 1_795_000_000_000
EVENTS_PER_S = 10_000
EPOCH_S = 5.0


def fill(n: int) -> tuple[Shard, float]:
    """A shard holding `n` contacts, 2 events each; CPU seconds of applying them."""
    shard = Shard(compile_program(builtin_segments()), 1 << 16)
    cpu = 0.0
    batch: list[Event] = []
    for i in range(n):
        cid = f"c{i:09d}"
        ts = T0 + i * 10
        batch.append(Event(f"{cid}-c", cid, "consent_changed", ts, {"channel": "email", "status": "subscribed"}))
        batch.append(Event(f"{cid}-o", cid, "email_open", ts + 5, {}))
        if len(batch) >= 20_000:
            t = time.process_time()
            shard.apply(batch)
            shard.advance(ts)
            cpu += time.process_time() - t
            batch = []
    if batch:
        t = time.process_time()
        shard.apply(batch)
        cpu += time.process_time() - t
    return shard, cpu


def measure(n: int) -> dict:
    gc.collect()
    rss0 = psutil.Process().memory_info().rss
    shard, apply_cpu = fill(n)
    gc.collect()
    rss1 = psutil.Process().memory_info().rss
    program = shard.program
    # A flow snapshots every epoch: the median of 3, as the first one of a process also pays
    # for the first touch of a buffer of hundreds of MB (up to 3x the steady cost at 5M).
    copies, pickles = [], []
    for _ in range(3):
        blob = None
        t = time.process_time()
        state = shard.snapshot(copy=False)  # as flows/logic.py: pickled at once, nothing to copy
        copies.append(time.process_time() - t)
        t = time.process_time()
        blob = pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL)
        pickles.append(time.process_time() - t)
        del state
    copy_s, pickle_s = sorted(copies)[1], sorted(pickles)[1]
    t = time.process_time()
    restored = pickle.loads(blob)
    unpickle_s = time.process_time() - t
    t = time.process_time()
    again = Shard(program, 1 << 16, restored)
    rebuild_s = time.process_time() - t
    assert len(again) == n
    snapshot_s = copy_s + pickle_s
    # 10k events/s, 2 events per contact: the time to process one epoch's events here
    epoch_events = EVENTS_PER_S * EPOCH_S
    epoch_cpu = apply_cpu / (2 * n) * epoch_events
    out = {"contacts": n, "apply_cpu_s": round(apply_cpu, 3), "copy_s": round(copy_s, 3),
           "pickle_s": round(pickle_s, 3), "snapshot_s": round(snapshot_s, 3), "bytes": len(blob),
           "unpickle_s": round(unpickle_s, 3), "rebuild_s": round(rebuild_s, 3),
           "restart_s_per_million": round((unpickle_s + rebuild_s) / (n / 1e6), 3),
           "rss_bytes_per_contact": round((rss1 - rss0) / n, 1),
           "snapshot_share_of_epoch": round(snapshot_s / EPOCH_S, 3),
           "snapshot_vs_processing": round(snapshot_s / (snapshot_s + epoch_cpu), 3)}
    del blob, restored, again, shard
    gc.collect()
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--contacts", type=int, nargs="*", default=[1_000_000, 5_000_000])
    args = ap.parse_args()
    rows = [measure(n) for n in args.contacts]
    info = machine_info()
    import os

    print(f"machine: {info['cpu_model']}, {info['usable_cores']} cores, Python {info['python']}; "
          f"load average {os.getloadavg()[0]:.1f}")
    print("| contacts | copy s | pickle s | snapshot MB | unpickle s | rebuild s | restart s / 1M | RSS B/contact "
          "| snapshot / 5 s epoch | snapshot vs shard apply at 10k ev/s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['contacts']:,} | {r['copy_s']} | {r['pickle_s']} | {r['bytes'] / 1e6:.0f} | {r['unpickle_s']} "
              f"| {r['rebuild_s']} | {r['restart_s_per_million']} | {r['rss_bytes_per_contact']} "
              f"| {r['snapshot_share_of_epoch']:.0%} | {r['snapshot_vs_processing']:.0%} |")
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    path = REPO / "bench" / "results" / f"snapshot-{stamp}.json"
    path.write_text(json.dumps({"machine": info, "rows": rows}, indent=2))
    print(f"wrote {path.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
