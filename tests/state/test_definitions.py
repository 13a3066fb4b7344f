"""Segment definition files: what loads, and errors that name file, path, problem and fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from state.conditions import Abandoned, All, AnyOf, Consent, EventCount, Inactive, Lifetime, Profile
from state.definitions import builtin_segments, load_segments
from state.errors import DefinitionError

ROOT = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "segments.yaml"
    p.write_text(text)
    return p


def test_builtin_ids_are_the_contract():
    """The three built-in espresso segment ids are exactly those of the product contract."""
    assert [s.id for s in builtin_segments()] == ["email-espresso", "sms-espresso", "push-espresso"]


def test_email_espresso_reads_as_the_spec_says():
    """email-espresso = email consent AND (open OR click within 72 h) AND zero orders within 72 h."""
    seg = builtin_segments()[0]
    assert isinstance(seg.when, All)
    consent, interest, orders = seg.when.items
    assert consent == Consent("email")
    assert isinstance(interest, AnyOf)
    assert {c.selector.type for c in interest.items} == {"email_open", "email_click"}
    assert all(c.within == 72 * 3600_000 and c.op == "at_least" and c.n == 1 for c in interest.items)
    assert orders.selector.type == "order_placed" and orders.op == "exactly" and orders.n == 0


def test_seed_001_example_loads_every_rule_kind():
    """The shipped seed-001 example uses money spent, periods, win-back, counts, products, collections, checkout."""
    segs = {s.id: s for s in load_segments(ROOT / "examples" / "segments-seed-001.yaml")}
    assert isinstance(segs["big-spenders"].when, Lifetime) and segs["big-spenders"].when.aggregate == "sum"
    assert isinstance(segs["win-back-90d"].when, Inactive)
    assert isinstance(segs["ordered-last-month"].when, EventCount)
    assert segs["bought-product-sku-42"].when.selector.filters[0].path == ("items", "product_id")
    assert isinstance(segs["abandoned-checkout-1h"].when.items[0], Abandoned)
    assert isinstance(segs["sms-double-opt-in-fr"].when.items[1], Profile)
    assert "email-espresso" in segs  # include_builtin


@pytest.mark.parametrize("body, path, words", [
    ("segments:\n  - id: x\n    when: {event: {type: email_open, at_least: 1, within: 72}}\n",
     "segments[0].when.event.within", "positive duration"),
    ("segments:\n  - id: x\n    when: {event: {type: email_open, within: 3h}}\n",
     "segments[0].when.event", "exactly one of at_least"),
    ("segments:\n  - id: x\n    when: {evnt: {type: email_open}}\n",
     "segments[0].when", "unknown condition kind 'evnt'"),
    ("segments:\n  - id: x\n    when: {consent: {channel: fax}}\n",
     "segments[0].when.consent.channel", "'email', 'sms' or 'push'"),
    ("segments:\n  - id: x\n    when: {all: []}\n",
     "segments[0].when.all", "non-empty list"),
    ("segments:\n  - id: Bad Id\n    when: {consent: {channel: sms}}\n",
     "segments[0].id", "invalid segment id"),
    ("segments:\n  - id: a\n    when: {consent: {channel: sms}}\n  - id: a\n    when: {consent: {channel: sms}}\n",
     "segments[1].id", "duplicate segment id 'a'"),
    ("segments:\n  - id: x\n    when: {lifetime: {type: order_placed, aggregate: sum, op: '>', value: 3}}\n",
     "segments[0].when.lifetime", "needs the property"),
    ("segments:\n  - id: x\n    when: {event: {type: order_placed, at_least: 1, wher: []}}\n",
     "segments[0].when.event.wher", "unknown key"),
    ("segments:\n  - id: x\n    when: {abandoned_checkout: {after: 2h, expires_after: 1h}}\n",
     "segments[0].when.abandoned_checkout.expires_after", "longer than 'after'"),
    ("segments:\n  - id: x\n    when: {event: {type: order_placed, at_least: 1, where: [{property: v, op: '>', value: big}]}}\n",
     "segments[0].when.event.where.0", "needs a number"),
])
def test_errors_name_file_path_problem_and_fix(tmp_path, body, path, words):
    """A wrong definition fails at load with the file, the path in it, the problem and a fix."""
    f = write(tmp_path, body)
    with pytest.raises(DefinitionError) as info:
        load_segments(f)
    msg = str(info.value)
    assert msg.startswith(f"{f}: {path}"), msg
    assert words in msg
    assert "(fix: " in msg


def test_yaml_syntax_error_names_the_line(tmp_path):
    """Broken YAML is reported with its line and column."""
    f = write(tmp_path, "segments:\n  - id: x\n    when: {consent: {channel: sms}\n")
    with pytest.raises(DefinitionError, match=r"line \d+, column \d+: not valid YAML"):
        load_segments(f)


def test_missing_file_is_a_clear_error(tmp_path):
    """A path that does not exist is named in the error."""
    with pytest.raises(DefinitionError, match="nope.yaml: cannot read"):
        load_segments(tmp_path / "nope.yaml")
