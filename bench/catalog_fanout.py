"""The call that reads one product update and leaves a trigger for each of its watchers.

    python bench/catalog_fanout.py                   # 100,000 watchers
    python bench/catalog_fanout.py --watchers 20000

An engine with one `price_drop` campaign; N contacts viewed product p1 at one of 3 prices;
a drop that qualifies all of them. Times `CampaignEngine._on_catalog` (CPU seconds): the
part of a fan-out the live flow does not slice (bench/catalog_bench.py measures the rest).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from state.campaigns import CampaignEngine, parse_campaigns  # noqa: E402
from state.catalog import catalog_event  # noqa: E402

import yaml  # noqa: E402

T0 = 1_795_000_000_000
CAMPAIGNS = """
campaigns:
  - id: price-drop
    trigger: {catalog: price_drop, min_drop: 10%, viewed_within: 30d}
    channel: email
    reentry: {once_per: 7d}
    template: {subject: "{{ products[0].title }} is now {{ products[0].price }}", body: "was {{ products[0].previous_price }}"}
"""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--watchers", type=int, default=100_000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    best = None
    for _ in range(args.repeat):
        eng = CampaignEngine(parse_campaigns(yaml.safe_load(CAMPAIGNS), "bench.yaml"))
        eng.book.apply(catalog_event("u0", "p1", T0, {"price": 80.0, "title": "Mug"}))
        for i in range(args.watchers):
            eng.watches.note(f"c{i}", "product_viewed", {"product_id": "p1", "price": (80.0, 79.99, 75.5)[i % 3]},
                             T0 + i, eng.book.price_of)
        t = time.process_time()
        eng._on_catalog(catalog_event("u1", "p1", T0 + 7_200_000, {"price": 60.0}))
        cpu = time.process_time() - t
        assert sum(len(v) for v in eng.inbox.values()) == args.watchers
        best = cpu if best is None else min(best, cpu)
    print(f"_on_catalog, {args.watchers:,} qualifying watchers: {best:.3f} CPU s (best of {args.repeat}), "
          f"{best / args.watchers * 1e6:.1f} us each; load average {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
