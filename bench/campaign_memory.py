"""Memory of open runs: bytes per pending step of the campaign engine's run store.

    python bench/campaign_memory.py                      # the replay bench stream (1.5M events)
    python bench/campaign_memory.py --quick              # 30k events
    python bench/campaign_memory.py --campaigns FILE     # another campaign file

Feeds the generated stream through a real `Shard` + `CampaignEngine` in batches of 2,000
events (as `espresso replay` does) and samples, every 10 batches, the run store's bytes:
its columns, chains and timers (`RunStore.bytes_used()[0]`), and, apart, what runs carry
for their templates (the trigger event's items, deep size). Reports both per open run at
the sampled peak of open runs (the target of issue 12 is <= 120 bytes per pending step for
the store). Prints a Markdown table and writes bench/results/campaign-memory-<stamp>.json.
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import REPO, machine_info  # noqa: E402
from replay_bench import add_stream_arguments, dataset, stream_params  # noqa: E402

from state.campaigns import CampaignEngine, load_campaigns  # noqa: E402
from state.definitions import builtin_segments  # noqa: E402
from state.events import Event, parse_event  # noqa: E402
from state.program import compile_program  # noqa: E402
from state.shard import Shard  # noqa: E402

BATCH = 2_000


def measure(events_path: Path, campaigns: str) -> dict:
    camps = load_campaigns(campaigns, builtin_segments())
    shard = Shard(compile_program(list(camps.segments), camps.required_keep()))
    engine = CampaignEngine(camps)
    batch: list[Event] = []
    n = peak_open = peak_store = peak_payload = 0
    started = time.process_time()

    def sample() -> None:
        nonlocal peak_open, peak_store, peak_payload
        if engine.pending_count() > peak_open:
            peak_open = engine.pending_count()
            peak_store, peak_payload = engine.runs.bytes_used()

    with open(events_path, "rb") as f:
        for line in f:
            ev = parse_event(line)
            if not isinstance(ev, Event):
                continue
            batch.append(ev)
            if len(batch) == BATCH:
                engine.process(shard, batch, batch[-1].ts)
                batch = []
                n += 1
                if n % 10 == 0:
                    sample()
    if batch:
        engine.process(shard, batch, batch[-1].ts)
    sample()
    return {"campaigns": campaigns, "peak_open_runs": peak_open, "store_bytes": peak_store,
            "payload_bytes": peak_payload, "store_bytes_per_run": round(peak_store / max(peak_open, 1), 1),
            "payload_bytes_per_run": round(peak_payload / max(peak_open, 1), 1),
            "contacts": len(shard), "cpu_s": round(time.process_time() - started, 2)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_stream_arguments(p)
    p.add_argument("--campaigns", default="builtin")
    p.add_argument("--data-dir", type=Path, default=REPO / "bench" / "data")
    p.add_argument("--results-dir", type=Path, default=REPO / "bench" / "results")
    a = p.parse_args()
    params = stream_params(a)
    a.data_dir.mkdir(parents=True, exist_ok=True)
    path, _ = dataset(a.data_dir, params)
    r = measure(path, a.campaigns)
    r["machine"] = machine_info()
    r["stream"] = path.name
    print("| campaigns | contacts | peak open runs | store B/run | payload B/run |")
    print("|---|---|---|---|---|")
    print(f"| {r['campaigns']} | {r['contacts']:,} | {r['peak_open_runs']:,} | {r['store_bytes_per_run']} "
          f"| {r['payload_bytes_per_run']} |")
    a.results_dir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    (a.results_dir / f"campaign-memory-{stamp}.json").write_bytes(orjson.dumps(r, option=orjson.OPT_INDENT_2))


if __name__ == "__main__":
    main()
