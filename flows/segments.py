"""The segment dataflow, shared by `espresso replay` and `espresso run`.

    source ──(partition, RawBatch)──▶ intake ──┬─ dead letters ──────────────▶ dlq sink
      (file or Kafka)      per partition:      │
                           parse, route,       └─(shard key, ShardBatch)──▶ segments ──▶ changes sink
                           event-time frontier                 per shard:    ├────▶ messages sink
                                                               state, timers ├────▶ decisions sink
                                                                             └────▶ conversions sink
                                                               (campaigns, if any)
                                                             └──▶ bases: each shard's whole state,
                                                                  written when it changes (recovery on)

Keys are partitions and shards, never contacts: a bounded number of Bytewax keys and
timers, each shard holding many contacts (see docs/architecture.md).
"""

from __future__ import annotations

from typing import Any

import bytewax.operators as op
from bytewax.dataflow import Dataflow
from bytewax.inputs import Source
from bytewax.outputs import FixedPartitionedSink, Sink

from state.campaigns import Conversion, Message
from state.changes import Change

from .config import FlowConfig
from .logic import BaseItem, BaseLogic, CatalogIntakeLogic, IntakeLogic, ShardLogic

__all__ = ["build_flow"]


def build_flow(cfg: FlowConfig, source: Source, changes: Sink, dead_letters: Sink,
               flow_id: str = "espresso", messages: Sink | None = None,
               decisions: Sink | None = None, conversions: Sink | None = None,
               catalog: Source | None = None) -> Dataflow:
    """With `cfg.campaigns`, shards also emit messages, decisions and conversions to those sinks;
    with `catalog` (and `cfg.catalog_parts`), every shard also hears every catalogue update."""
    flow = Dataflow(flow_id)
    raw = op.input("input", flow, source)
    intake = op.stateful_batch("intake", raw, lambda resume: IntakeLogic(cfg, resume))
    if catalog is not None:
        if not cfg.catalog_parts:
            raise ValueError("a flow with a catalogue source needs cfg.catalog_parts")
        cat_raw = op.input("catalog-input", flow, catalog)
        cat = op.stateful_batch("catalog-intake", cat_raw, lambda resume: CatalogIntakeLogic(cfg, resume))
        intake = op.merge("all-intake", intake, cat)
    tagged = op.map("untag", intake, lambda kv: kv[1])
    split = op.branch("split", tagged, lambda item: item[0] == "dead")
    _output("dead-letters", op.map("dead", split.trues, lambda item: item[1]), dead_letters)
    routed = op.map("route", split.falses, lambda item: item[1])
    shards = op.stateful_batch("segments", routed, lambda resume: ShardLogic(cfg, resume))
    if cfg.snapshots:  # a shard's whole state goes to its own key of `bases`, written only when it changes
        bases = op.branch("is-base", shards, lambda kv: isinstance(kv[1], BaseItem))
        op.stateful_batch("bases", bases.trues, BaseLogic)
        shards = bases.falses
    out = op.map("change", shards, lambda kv: kv[1])
    if cfg.campaigns is None:
        _output("changes", out, changes)
        return flow
    if messages is None or decisions is None or conversions is None:
        raise ValueError("a flow with campaigns needs messages, decisions and conversions sinks")
    kinds = op.branch("is-change", out, lambda item: isinstance(item, Change))
    _output("changes", kinds.trues, changes)
    outputs = op.branch("is-message", kinds.falses, lambda item: isinstance(item, Message))
    _output("messages", outputs.trues, messages)
    rest = op.branch("is-conversion", outputs.falses, lambda item: isinstance(item, Conversion))
    _output("conversions", rest.trues, conversions)
    _output("decisions", rest.falses, decisions)
    return flow


def _output(step_id: str, stream: Any, sink: Sink) -> None:
    """A `FixedPartitionedSink` (Kafka) takes `(key, item)` pairs, keyed by its `item_key`."""
    if isinstance(sink, FixedPartitionedSink):
        key = sink.item_key  # type: ignore[attr-defined]
        stream = op.map(f"key-{step_id}", stream, lambda item: (key(item), item))
    op.output(step_id, stream, sink)

