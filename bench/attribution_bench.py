"""Cost of attribution: the campaign stage on the replay bench stream with touches.

    python bench/attribution_bench.py            # 300k events, 20k contacts
    python bench/attribution_bench.py --quick    # 30k events

The bench stream has opens and clicks but none names a message espresso released (they
come from the shop's own newsletters). So, in process, with a real `Shard` +
`CampaignEngine` and `--campaigns builtin`: (1) run the stream and collect the released
messages; (2) add touches of them: an `email_open` (push: `push_open`, SMS: `sms_click`)
for 30 % of the messages 1 min-48 h after release, an `email_click` 0-5 min after 40 % of
those opens, 5 % of the opens flagged `machine_open`; (3) run the stream with the touches
(events sorted by time, batches of 2,000 as `espresso replay` does) and time, with a
wrapper, the engine's attribution code (touches, orders, releases, pruning) against the
whole stage. Prints a Markdown table, writes bench/results/attribution-<stamp>.json.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import REPO, machine_info  # noqa: E402
from replay_bench import add_stream_arguments, dataset, stream_params  # noqa: E402

from state.campaigns import CampaignEngine, Conversion, Message, load_campaigns  # noqa: E402
from state.campaigns.attribution import Attribution  # noqa: E402
from state.definitions import builtin_segments  # noqa: E402
from state.events import Event, parse_event  # noqa: E402
from state.program import compile_program  # noqa: E402
from state.shard import Shard  # noqa: E402

BATCH = 2_000
SIZES = {"contacts": 20_000, "events": 300_000}  # a tenth of the replay bench stream
TOUCH_OF = {"email": "email_open", "sms": "sms_click", "push": "push_open"}


def run(events: list[Event], until: int, timed: dict | None = None) -> tuple[list, float, CampaignEngine]:
    camps = load_campaigns("builtin", builtin_segments())
    shard = Shard(compile_program(list(camps.segments), camps.required_keep()))
    engine = CampaignEngine(camps)
    outs: list = []
    t0 = time.process_time()
    for i in range(0, len(events), BATCH):
        batch = events[i:i + BATCH]
        outs += engine.process(shard, batch, batch[-1].ts)[1]
    outs += engine.process(shard, [], until + 1)[1]
    return outs, time.process_time() - t0, engine


def touches_for(messages: list[Message], seed: int) -> list[Event]:
    rnd = random.Random(seed)
    out = []
    for m in messages:
        if rnd.random() >= 0.30:
            continue
        t = m.due_at + rnd.randint(60_000, 48 * 3_600_000)
        props: dict = {"message_id": m.message_id}
        if m.channel == "email" and rnd.random() < 0.05:
            props["machine_open"] = True
        out.append(Event(f"t-{m.message_id}", m.contact_id, TOUCH_OF[m.channel], t, props))
        if m.channel == "email" and rnd.random() < 0.40:
            out.append(Event(f"k-{m.message_id}", m.contact_id, "email_click", t + rnd.randint(0, 300_000),
                             {"message_id": m.message_id}))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_stream_arguments(p, SIZES)
    p.add_argument("--touch-seed", type=int, default=7, help="seed of the touches added to the stream")
    p.add_argument("--data-dir", type=Path, default=REPO / "bench" / "data")
    p.add_argument("--results-dir", type=Path, default=REPO / "bench" / "results")
    a = p.parse_args()
    params = stream_params(a, SIZES)
    a.data_dir.mkdir(parents=True, exist_ok=True)
    path, meta = dataset(a.data_dir, params)
    events = [e for e in (parse_event(line) for line in open(path, "rb")) if isinstance(e, Event)]
    until = max(e.ts for e in events) + 86_400_000
    outs, base_cpu, _ = run(events, until)
    messages = [o for o in outs if isinstance(o, Message)]
    touches = touches_for(messages, a.touch_seed)
    mixed = sorted(events + touches, key=lambda e: e.ts)

    spent = {"cpu": 0.0, "calls": 0}

    def timed(fn):
        def wrapper(*args, **kw):
            t = time.process_time()
            try:
                return fn(*args, **kw)
            finally:
                spent["cpu"] += time.process_time() - t
                spent["calls"] += 1
        return wrapper

    originals = {n: getattr(Attribution, n) for n in ("_attribute", "_released", "_prune_attribution")}
    for n, fn in originals.items():
        setattr(Attribution, n, timed(fn))
    try:
        outs2, cpu, engine = run(mixed, until)
    finally:
        for n, fn in originals.items():
            setattr(Attribution, n, fn)
    convs = [o for o in outs2 if isinstance(o, Conversion)]
    orders = sum(1 for e in events if e.type == "order_placed")
    r = {"stream": path.name, "events": len(events), "touches_added": len(touches), "orders": orders,
         "messages_pass1": len(messages), "conversions": sum(1 for c in convs if c.group == "message"),
         "holdout_conversions": sum(1 for c in convs if c.group == "holdout"),
         "ignored_touches": {k: engine.stats.get(k, 0) for k in ("touches_unknown", "touches_machine")},
         "stage_cpu_s_without_touches": round(base_cpu, 2), "stage_cpu_s_with_touches": round(cpu, 2),
         "attribution_cpu_s": round(spent["cpu"], 2), "attribution_share": round(spent["cpu"] / cpu, 3),
         "attribution_us_per_touch_or_order": round(spent["cpu"] / max(1, len(touches) + orders) * 1e6, 1),
         "machine": machine_info()}
    print("| events | touches added | orders | conversions | stage CPU s (no touches / touches) | attribution CPU s | share | us per touch or order |")
    print("|---|---|---|---|---|---|---|---|")
    print(f"| {r['events']:,} | {r['touches_added']:,} | {orders:,} | {r['conversions']:,} | "
          f"{r['stage_cpu_s_without_touches']} / {r['stage_cpu_s_with_touches']} | {r['attribution_cpu_s']} | "
          f"{r['attribution_share']:.1%} | {r['attribution_us_per_touch_or_order']} |")
    a.results_dir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    (a.results_dir / f"attribution-{stamp}.json").write_bytes(orjson.dumps(r, option=orjson.OPT_INDENT_2))


if __name__ == "__main__":
    main()
