"""A tiny espresso-like process for the Prometheus test: `python -m tests.metrics.fake_flow PORT`.

Serves `metrics.server.serve(PORT)` with `get_metrics()`, records every hook ten times a
second, and runs a real Bytewax dataflow through `cli_main` with the Dataflow API enabled,
so Bytewax's own metrics reach the same `/metrics`. Runs until killed (or 120 s).
"""

from __future__ import annotations

import os
import sys
import threading
import time

STOP_AFTER_S = 120.0


def record_forever(m, stop: threading.Event) -> None:
    i = 0
    while not stop.wait(0.1):
        i += 1
        now = time.time()
        m.on_event("email_open", 5)
        m.on_event("order_placed")
        m.on_invalid("bad_ts")
        m.on_late()
        m.on_duplicate()
        m.on_ignored(2)
        m.on_change("email-espresso", "enter" if i % 2 else "exit", event_time_lag_s=0.2 + i % 70,
                    ingest_latency_s=0.001 * (1 + i % 20))
        m.set_members("email-espresso", 100 + i % 7, shard=0)
        m.set_members("email-espresso", 50, shard=1)
        m.on_message("email-espresso-resend", "email", "sent")
        if i % 5 == 0:
            m.on_message("email-espresso-resend", "email", "failed")
        m.observe_send("email", 0.02 + 0.01 * (i % 10))
        m.set_state(10_000 + i, 3_000, shard=0)
        m.set_watermark(now - 60.0, now)
        m.set_consumer_lag("contact-events", 0, 100 + i)
        m.set_consumer_lag("contact-events", 1, 5)


def build_flow():
    import bytewax.operators as op
    from bytewax.dataflow import Dataflow
    from bytewax.inputs import DynamicSource, StatelessSourcePartition
    from bytewax.outputs import DynamicSink, StatelessSinkPartition

    class Ticks(StatelessSourcePartition):
        def __init__(self) -> None:
            self.n, self.end = 0, time.monotonic() + STOP_AFTER_S

        def next_batch(self):
            if time.monotonic() > self.end:
                raise StopIteration()
            time.sleep(0.05)
            self.n += 1
            return [(f"p{self.n % 4}", self.n)]

    class Source(DynamicSource):
        def build(self, step_id, worker_index, worker_count):
            return Ticks()

    class Drop(StatelessSinkPartition):
        def write_batch(self, items) -> None:
            pass

    class Sink(DynamicSink):
        def build(self, step_id, worker_index, worker_count):
            return Drop()

    flow = Dataflow("fake")
    s = op.input("input", flow, Source())
    s = op.stateful_map("segments", s, lambda st, v: ((st or 0) + v, v))
    op.output("changes", s, Sink())
    return flow


def main(port: int) -> None:
    from bytewax.run import cli_main

    from metrics.registry import get_metrics
    from metrics.server import serve

    m = get_metrics()
    m.declare(segments=["email-espresso", "sms-espresso"], campaigns=["email-espresso-resend"])
    serve(port, host="127.0.0.1")
    stop = threading.Event()
    threading.Thread(target=record_forever, args=(m, stop), daemon=True).start()
    assert os.environ.get("BYTEWAX_DATAFLOW_API_ENABLED") is not None, "the test sets the Bytewax API variables"
    cli_main(build_flow(), workers_per_process=1)
    stop.set()


if __name__ == "__main__":
    main(int(sys.argv[1]))
