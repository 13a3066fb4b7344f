"""Label vocabularies: bounded, and the same as the contract and the code producing them."""

from __future__ import annotations

import re
import threading
from pathlib import Path

import pytest

from metrics.labels import INVALID_REASONS, OTHER, OUTCOMES, BoundedLabel

INTERFACES = Path(__file__).resolve().parents[2] / "docs" / "interfaces.md"


def _codes_after(heading: str) -> tuple[str, ...]:
    """The backticked codes of the paragraph that starts with `heading`."""
    text = INTERFACES.read_text(encoding="utf-8")
    start = text.index("\n" + heading) + 1
    paragraph = text[start:text.find("\n\n", start)]
    return tuple(re.findall(r"`([a-z_]+)`", paragraph))


def test_known_values_pass_and_unknown_become_other():
    """Known values map to themselves; with no allowance the rest is `other`."""
    lab = BoundedLabel("t", ["a", "b"])
    assert (lab("a"), lab("b"), lab("zzz")) == ("a", "b", OTHER)


def test_extra_allowance_is_first_come_then_other():
    """`extra` admits that many undeclared values; later ones become `other`, admitted stay."""
    lab = BoundedLabel("segment", (), extra=2)
    assert [lab(v) for v in ("x", "y", "z", "x")] == ["x", "y", OTHER, "x"]
    assert set(lab.values()) == {"x", "y", OTHER}


def test_declared_values_use_no_allowance():
    """declare() makes values known without spending the allowance."""
    lab = BoundedLabel("segment", (), extra=1)
    lab.declare(["a", "b", "c"])
    assert (lab("c"), lab("new"), lab("newer")) == ("c", "new", OTHER)


def test_non_strings_and_empty_strings():
    """Values are labelled as strings; an empty undeclared value is `other`."""
    lab = BoundedLabel("partition", (), extra=5)
    assert lab(3) == "3"
    assert lab("") == OTHER


def test_negative_allowance_is_refused():
    """extra < 0 is a programming error, named with the rule and the value."""
    with pytest.raises(ValueError, match='"extra" must be >= 0: -1'):
        BoundedLabel("x", (), extra=-1)


def test_allowance_holds_under_concurrency():
    """Threads racing on new values never admit more than the allowance."""
    lab = BoundedLabel("segment", (), extra=10)
    threads = [threading.Thread(target=lambda i=i: [lab(f"v{i}-{j}") for j in range(100)]) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(lab.values()) == 11


def test_reason_codes_match_the_interface_contract_and_the_intake():
    """INVALID_REASONS equals docs/interfaces.md's reason codes and state.events.REASONS."""
    from state.events import REASONS

    assert INVALID_REASONS == _codes_after("Reason codes:")
    assert INVALID_REASONS == tuple(REASONS)


def test_outcomes_match_the_interface_contract():
    """OUTCOMES equals docs/interfaces.md's decision outcomes."""
    assert OUTCOMES == _codes_after("Outcomes:")
