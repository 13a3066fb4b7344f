"""Catalogue input: parse and validate one `product_updated` record.

A catalogue event travels with the contact events of every shard as an `Event` whose
`contact_id` is "" (no contact event has an empty one: intake refuses it) and whose
properties carry `product_id`: one tuple shape through intake, batches and snapshots.
Invalid records are returned as `Invalid`, for the dead letters, never raised.
"""

from __future__ import annotations

from ..events import DEFAULT_MAX_EVENT_BYTES, Event, Invalid, bad_field, bad_ts, load_object, properties_of
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


def parse_catalog_event(raw: bytes | str, max_bytes: int = DEFAULT_MAX_EVENT_BYTES) -> Event | Invalid:
    """`{event_id, product_id, type: "product_updated", ts, properties: {price, inventory, ...}}`."""
    obj = load_object(raw, max_bytes)
    if type(obj) is Invalid:
        return obj
    eid, pid, etype = obj.get("event_id"), obj.get("product_id"), obj.get("type")
    if type(eid) is not str or not eid:
        return bad_field("event_id", eid)
    if type(pid) is not str or not pid:
        return bad_field("product_id", pid)
    if etype != CATALOG_TYPE:
        return bad_field("type", etype, f"{CATALOG_TYPE!r} on the catalogue input")
    raw_ts = obj.get("ts")
    ts = parse_ts(raw_ts) if type(raw_ts) in (str, int) else None
    if ts is None:
        return bad_ts(raw_ts)
    props = properties_of(obj)
    if type(props) is Invalid:
        return props
    price, inventory = props.get("price"), props.get("inventory")
    if price is not None and (type(price) is bool or money(price) is None):
        return bad_field("properties.price", price, "a number >= 0 (or a decimal string)")
    if inventory is not None and (type(inventory) is not int or inventory < 0):
        return bad_field("properties.inventory", inventory, "an integer >= 0")
    if price is None and inventory is None:
        return Invalid("missing_field", "properties.price or properties.inventory: an update needs one")
    return catalog_event(eid, pid, ts, props)
