"""Turning a decided step into message text: A/B arm, template context and rendering.

Rendering is the most expensive part of a send (a Jinja2 render is tens of
microseconds), and most messages of a step differ only in the few fields their template
reads. So a rendering is cached by exactly what the template reads (the values of the
contact fields it uses, the trigger instant and direction, the variant) unless it reads
`products`, the segment's name or the whole contact (`TemplateInfo.key_fields`). The cache is
bounded per template and changes no output: same inputs, same text.
"""

from __future__ import annotations

from typing import Any

import xxhash

from ..timeutil import format_ms
from .model import Campaign, Step, Variant
from .templates import render

__all__ = ["pick_variant", "Composer"]

_xxh64 = xxhash.xxh3_64_intdigest
_CACHE_MAX = 4096
_SCALARS = (str, int, float, bool, type(None))


def _freeze(v: Any) -> Any:
    """A hashable copy of JSON data (lists and mappings as tuples), for cache keys. Numbers
    keep their type: 20 and 20.0 (and 1 and True) render differently but are equal keys."""
    t = type(v)
    if t is str or v is None:
        return v
    if t is int or t is float or t is bool:
        return (t, v)
    if isinstance(v, _SCALARS):
        return v
    if isinstance(v, dict):
        return ("{", tuple((k, _freeze(x)) for k, x in v.items()))
    if isinstance(v, (list, tuple)):
        return ("[", tuple(_freeze(x) for x in v))
    raise TypeError("not JSON data")


def pick_variant(camp: Campaign, step: Step, contact_id: str) -> Variant:
    """The contact's arm: the same in every step and on every worker (hash of contact and campaign)."""
    vs = step.variants
    if len(vs) == 1:
        return vs[0]
    h = _xxh64(f"{contact_id}\x1f{camp.id}".encode()) % step.total_weight
    for v in vs:
        if h < v.weight:
            return v
        h -= v.weight
    return vs[-1]


class Composer:
    """Renders subject, body and html for a contact; one per engine (holds the caches)."""

    def __init__(self, seg_names: dict[str, str]) -> None:
        self.seg_names = seg_names
        self._caches: dict[int, dict] = {}
        self._cols: dict[str, int] = {}

    def bind(self, profile_cols: dict[str, int]) -> None:
        """The shard's profile columns (object columns by field name)."""
        self._cols = dict(profile_cols)

    def _field(self, camp: Campaign, name: str, cid: str, row: int | None, O: list) -> Any:
        if name == "id":
            return cid
        col = self._cols.get(name)
        v = None if col is None or row is None else O[col][row]
        return camp.fallbacks.get(name) if v is None or v == "" else v

    def texts(self, camp: Campaign, variant: Variant, cid: str, row: int | None, shard: Any, products: list,
              trigger_at: int) -> tuple[str | None, str, str | None]:
        """(subject, body, html) of `variant` for the contact; the context is built only when
        some template is not in the cache."""
        O = shard.O
        ctx: dict | None = None
        out: list = []
        seg = camp.segment or ""
        for tpl in (variant.subject, variant.body, variant.html):
            if tpl is None:
                out.append(None)
                continue
            info = tpl.info
            key = None
            if info.key_fields is not None:
                key = (tuple(_freeze(self._field(camp, f, cid, row, O)) for f in info.key_fields),
                       trigger_at if info.reads_change else None, variant.name, seg, None)
                cache = self._caches.get(id(tpl))
                if cache is None:
                    cache = self._caches[id(tpl)] = {}
                try:
                    if info.uses_products:
                        key = key[:4] + (_freeze(products),)
                    text = cache.get(key)
                except TypeError:  # a profile value that is a list or a mapping: not a key
                    key, text = None, None
                if text is not None:
                    out.append(text)
                    continue
            if ctx is None:
                profile = shard.profile(row) if row is not None else {}
                ctx = self.context(camp, variant, cid, profile, products, camp.segment, trigger_at)
            text = render(tpl, ctx)
            if key is not None:
                if len(cache) >= _CACHE_MAX:
                    cache.clear()
                cache[key] = text
            out.append(text)
        return out[0], out[1] or "", out[2]

    def context(self, camp: Campaign, variant: Variant, contact_id: str, profile: dict, products: list,
                segment_id: str | None, trigger_at: int) -> dict:
        contact = dict(camp.fallbacks)
        for k, v in profile.items():
            if v is not None and v != "":
                contact[k] = v
        contact["id"] = contact_id
        seg = segment_id or ""
        return {"contact": contact, "segment": {"id": seg, "name": self.seg_names.get(seg) or seg},
                "change": {"at": format_ms(trigger_at), "direction": camp.on or ""},
                "products": products, "variant": variant.name}

    @staticmethod
    def products(camp: Campaign, items_of: Any, trigger_items: list | tuple | None) -> list:
        """`products` of the context: the trigger event's items (or its one product, kept as
        `(product_id, price)`), else for segment and date runs the latest items of `products_from`."""
        if isinstance(trigger_items, tuple):
            pid, price = trigger_items
            return [{"product_id": pid} if price is None else {"product_id": pid, "price": price}]
        if trigger_items:
            return [dict(i) if isinstance(i, dict) else i for i in trigger_items]
        if camp.event is not None:
            return []  # an event-triggered run shows its own event's products, or none
        for etype in camp.products_from:
            items = items_of(etype)
            if isinstance(items, list) and items:
                return [dict(i) if isinstance(i, dict) else i for i in items]
        return []
