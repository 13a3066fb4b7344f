"""MessageSink in a real Bytewax dataflow: messages keyed by contact reach the webhook once."""

from __future__ import annotations

from collections import Counter

import bytewax.operators as op
import pytest
from bytewax.dataflow import Dataflow
from bytewax.testing import TestingSource, run_main

from connectors.delivery import RetryPolicy
from connectors.idempotency import IdempotencyConfig, RedisIdempotency
from connectors.sender import MessageSink, Sender, SenderConfig
from connectors.webhook import WebhookChannel, WebhookConfig

pytestmark = pytest.mark.integration


def test_dataflow_delivers_through_message_sink(webhook, redis_url, key_prefix):
    """A dataflow emitting 100 messages (10 of them twice) into a 2-partition MessageSink:
    every message accepted by the provider exactly once, a decision for each of the 110."""
    decisions: list[dict] = []

    def build(part: str) -> Sender:
        store = RedisIdempotency(IdempotencyConfig(redis_url, key_prefix=key_prefix))
        channel = WebhookChannel(WebhookConfig(url=webhook.url, retry=RetryPolicy(3, 0.01, 0.05)))
        return Sender(SenderConfig(max_in_flight=8, max_queued=32, name=f"sink-{part}"), store,
                      {"sms": channel}, on_result=decisions.append)

    msgs = [{"schema": 1, "message_id": f"{i:032x}", "campaign_id": "k", "channel": "sms", "contact_id": f"c-{i}",
             "data": {}} for i in range(100)]
    flow = Dataflow("message_sink_test")
    stream = op.input("in", flow, TestingSource(msgs + msgs[:10], batch_size=7))
    keyed = op.key_on("key", stream, lambda m: m["contact_id"])
    op.output("out", keyed, MessageSink(build, partitions=2))
    run_main(flow)
    assert webhook.delivered() == Counter({m["message_id"]: 1 for m in msgs})
    assert Counter(d["outcome"] for d in decisions) == {"sent": 100, "skipped_duplicate": 10}
