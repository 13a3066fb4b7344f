"""The `not_equals` filter: no value at the path equals it (a missing property passes)."""

from state.conditions import Filter


def test_not_equals_passes_missing_and_other_values_only():
    f = Filter(("machine_open",), "not_equals", True)
    assert f.matches({}) and f.matches({"machine_open": False}) and f.matches({"machine_open": 1})
    assert not f.matches({"machine_open": True})
    g = Filter(("items", "product_id"), "not_equals", "p1")
    assert g.matches({"items": [{"product_id": "p2"}]}) and not g.matches({"items": [{"product_id": "p2"}, {"product_id": "p1"}]})
