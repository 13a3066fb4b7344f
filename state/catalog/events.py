"""Catalogue input: parse and validate one `product_updated` record.

A catalogue event travels with the contact events of every shard as an `Event` whose
`contact_id` is "" (no contact event has an empty one: intake refuses it) and whose
properties carry `product_id`: one tuple shape through intake, batches and snapshots.
Invalid records are returned as `Invalid`, for the dead letters, never raised.
"""

from __future__ import annotations

import orjson

from ..events import DEFAULT_MAX_EVENT_BYTES, Event, Invalid
from ..timeutil import parse_ts
from .money import money

__all__ = ["CATALOG_TYPE", "parse_catalog_event", "catalog_event", "is_catalog"]

CATALOG_TYPE = "product_updated"
_new_event = tuple.__new__


def is_catalog(ev: Event) -> bool:
    return ev[1] == ""


def catalog_event(event_id: str, product_id: str, ts: int, properties: dict) -> Event:
    props = dict(properties)
    props["product_id"] = product_id
    return _new_event(Event, (event_id, "", CATALOG_TYPE, ts, props))


def _bad(name: str, value: object, what: str) -> Invalid:
    if value is None:
        return Invalid("missing_field", f"{name}: required")
    return Invalid("bad_field", f"{name} must be {what}: {value!r}"[:200])


def parse_catalog_event(raw: bytes | str, max_bytes: int = DEFAULT_MAX_EVENT_BYTES) -> Event | Invalid:
    """`{event_id, product_id, type: "product_updated", ts, properties: {price, inventory, ...}}`."""
    if len(raw) > max_bytes:
        return Invalid("too_large", f"record is {len(raw)} bytes, limit {max_bytes}")
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return Invalid("not_json", f"not JSON: {exc}"[:200])
    if type(obj) is not dict:
        return Invalid("not_object", f"expected a JSON object, got {type(obj).__name__}")
    eid, pid, etype = obj.get("event_id"), obj.get("product_id"), obj.get("type")
    if type(eid) is not str or not eid:
        return _bad("event_id", eid, "a non-empty string")
    if type(pid) is not str or not pid:
        return _bad("product_id", pid, "a non-empty string")
    if etype != CATALOG_TYPE:
        return _bad("type", etype, f"{CATALOG_TYPE!r} on the catalogue input")
    raw_ts = obj.get("ts")
    ts = parse_ts(raw_ts) if type(raw_ts) in (str, int) else None
    if ts is None:
        if raw_ts is None:
            return Invalid("missing_field", "ts: required")
        return Invalid("bad_ts", f"ts must be ISO-8601 with offset or integer epoch ms: {raw_ts!r}"[:200])
    props = obj.get("properties")
    if props is None:
        props = {}
    elif type(props) is not dict:
        return Invalid("bad_properties", f"properties must be an object, got {type(props).__name__}")
    price, inventory = props.get("price"), props.get("inventory")
    if price is not None and (type(price) is bool or money(price) is None):
        return _bad("properties.price", price, "a number >= 0 (or a decimal string)")
    if inventory is not None and (type(inventory) is not int or inventory < 0):
        return _bad("properties.inventory", inventory, "an integer >= 0")
    if price is None and inventory is None:
        return Invalid("missing_field", "properties.price or properties.inventory: an update needs one")
    return catalog_event(eid, pid, ts, props)
