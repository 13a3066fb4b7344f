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

    python bench/snapshot_bench.py --epochs 40          # also snapshots that cost what changed

`--epochs K`: the steady state of the live flow's snapshots since they carry only what changed
(`ShardLogic.snapshot`: `Shard.delta()`, a new whole base once the changes since the last one
exceed `COMPACT_SHARE` of the contacts). K epochs of 5 s at 10k events/s (50,000 email opens
per epoch on contacts drawn uniformly: the worst case, real traffic repeats contacts), each
followed by that epoch's snapshot; in the same run, the whole-state snapshot of the same
shard (what every epoch wrote before) at the first, middle and last epoch. The dedup tables
are sized as a process's 8 input partitions x 131,072 ids (they are written whole: bounded by
the horizon, not by the contacts). Restart: base + changes, unpickled, applied and rebuilt.
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
from state.blobs import pack, pack_state, unpack, unpack_state  # noqa: E402
from state.shard import Shard, apply_delta  # noqa: E402
from flows.config import COMPACT_MIN_ROWS, COMPACT_SHARE  # noqa: E402

T0 = 1_795_000_000_000
EVENTS_PER_S = 10_000
EPOCH_S = 5.0


def fill(n: int, horizon: int = 1 << 16) -> tuple[Shard, float]:
    """A shard holding `n` contacts, 2 events each; CPU seconds of applying them."""
    shard = Shard(compile_program(builtin_segments()), horizon)
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


def measure_epochs(n: int, epochs: int, seed: int = 7) -> dict:
    """Per-epoch snapshot cost with snapshots of what changed, against whole-state ones."""
    import random

    gc.collect()
    shard, _ = fill(n, horizon=8 * 131_072)
    program = shard.program
    base = pack_state(shard.snapshot(copy=False))
    shard.mark_base()
    rnd = random.Random(seed)
    per_epoch = int(EVENTS_PER_S * EPOCH_S)
    ts = T0 + n * 10 + 1000
    apply_cpu = delta_cpu = base_cpu = 0.0
    bases, delta_bytes, full = 0, [], []
    delta = b""
    for k in range(epochs):
        batch = []
        for j in range(per_epoch):
            cid = f"c{rnd.randrange(n):09d}"
            batch.append(Event(f"o{k}-{j}", cid, "email_open", ts + j * 100, {}))
        ts += per_epoch * 100
        t = time.process_time()
        for i in range(0, per_epoch, 5000):
            shard.apply(batch[i:i + 5000])
            shard.advance(batch[min(i + 5000, per_epoch) - 1].ts)
        apply_cpu += time.process_time() - t
        t = time.process_time()  # ShardLogic.snapshot: the changes since the base, pickled
        delta = pack(shard.delta())
        compact = shard.changed_rows() > max(COMPACT_MIN_ROWS, COMPACT_SHARE * len(shard))
        delta_cpu += time.process_time() - t
        delta_bytes.append(len(delta))
        if compact:  # ShardLogic._base, at the next batch
            t = time.process_time()
            base = pack_state(shard.snapshot(copy=False))
            shard.mark_base()
            base_cpu += time.process_time() - t
            bases += 1
        if k in (0, epochs // 2, epochs - 1):  # the whole state, as every epoch wrote before
            t = time.process_time()
            blob = pickle.dumps(shard.snapshot(copy=False), protocol=pickle.HIGHEST_PROTOCOL)
            full.append((time.process_time() - t, len(blob)))
            del blob
    t = time.process_time()
    state = apply_delta(unpack_state(base), unpack(delta))
    again = Shard(program, 8 * 131_072, state)
    restart = time.process_time() - t
    assert len(again) == len(shard)
    full_s = sorted(f[0] for f in full)[len(full) // 2]
    per_epoch_s = (delta_cpu + base_cpu) / epochs
    epoch_apply = apply_cpu / epochs
    out = {"contacts": n, "epochs": epochs, "events_per_epoch": per_epoch,
           "apply_cpu_s_per_epoch": round(epoch_apply, 3),
           "delta_s_per_epoch": round(delta_cpu / epochs, 3), "bases": bases,
           "base_s_each": round(base_cpu / max(bases, 1), 3),
           "snapshot_s_per_epoch": round(per_epoch_s, 3), "whole_state_s": round(full_s, 3),
           "delta_mb_median": round(sorted(delta_bytes)[len(delta_bytes) // 2] / 1e6, 1),
           "delta_mb_max": round(max(delta_bytes) / 1e6, 1), "whole_state_mb": round(full[-1][1] / 1e6, 1),
           "share_of_epoch": round(per_epoch_s / EPOCH_S, 3),
           "vs_processing": round(per_epoch_s / (per_epoch_s + epoch_apply), 3),
           "whole_state_vs_processing": round(full_s / (full_s + epoch_apply), 3),
           "restart_s_per_million": round(restart / (n / 1e6), 3)}
    del shard, again, state
    gc.collect()
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--contacts", type=int, nargs="*", default=[1_000_000, 5_000_000])
    ap.add_argument("--epochs", type=int, default=0, help="also the steady state of snapshots of what changed")
    args = ap.parse_args()
    rows = [measure(n) for n in args.contacts]
    steady = [measure_epochs(n, args.epochs) for n in args.contacts] if args.epochs else []
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
    if steady:
        print()
        print("| contacts | epochs | apply CPU s / epoch | snapshot s / epoch (changes + bases) | bases, s each "
              "| changes MB median / max | whole state s, MB | snapshot vs processing: changes / whole state "
              "| restart s / 1M |")
        print("|---|---|---|---|---|---|---|---|---|")
        for r in steady:
            print(f"| {r['contacts']:,} | {r['epochs']} | {r['apply_cpu_s_per_epoch']} | {r['snapshot_s_per_epoch']} "
                  f"({r['delta_s_per_epoch']} + bases) | {r['bases']}, {r['base_s_each']} "
                  f"| {r['delta_mb_median']} / {r['delta_mb_max']} | {r['whole_state_s']}, {r['whole_state_mb']} "
                  f"| **{r['vs_processing']:.0%}** / {r['whole_state_vs_processing']:.0%} "
                  f"| {r['restart_s_per_million']} |")
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    path = REPO / "bench" / "results" / f"snapshot-{stamp}.json"
    path.write_text(json.dumps({"machine": info, "rows": rows, "steady": steady}, indent=2))
    print(f"wrote {path.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
