"""`make bench`: every benchmark in one go, each writing its JSON to bench/results/.

- replay_bench.py: `espresso replay` vs the one-logic-per-contact Bytewax baseline
  (1.5M events, 100k contacts, 21 days): events/s and resident bytes per contact;
- kafka_bench.py: Kafka -> `espresso run` -> Kafka on the embedded broker: events/s per
  worker and produce-to-readable latency at 10k events/s;
- delivery_bench.py: Sender -> webhook with Redis idempotency: messages/s and latency at 1k/s;
- e2e_bench.py: event produced -> `espresso run --campaigns` -> Kafka -> `espresso deliver` ->
  webhook POST received: latency at 1k events/s and messages/s, on 4 partitions and on 1.

`--quick` runs small sizes (a smoke test of the scripts, not figures to record).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main(argv: list[str]) -> int:
    quick = "--quick" in argv
    runs = [
        ["replay_bench.py", "--quick"] if quick else ["replay_bench.py", "--wait-idle", "120"],
        ["kafka_bench.py", "--quick"] if quick else ["kafka_bench.py"],
        ["delivery_bench.py", "--messages", "5000", "--seconds", "3"] if quick else ["delivery_bench.py"],
        ["e2e_bench.py", "--quick", "--tuned"] if quick else ["e2e_bench.py", "--tuned"],
    ]
    if not quick:
        runs.append(["e2e_bench.py", "--tuned", "--partitions", "1"])
    failed = []
    for script, *args in runs:
        print(f"==> bench/{script} {' '.join(args)}", flush=True)
        if subprocess.run([sys.executable, str(HERE / script), *args], cwd=HERE.parent).returncode != 0:
            failed.append(script)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
