"""Templates are compiled and checked when definitions load, never failing at send time for names."""

from __future__ import annotations

import pytest

from state.campaigns.templates import compile_template, render
from state.errors import DefinitionError

from .helpers import campaigns


def check(source: str, fallbacks: dict | None = None, html: bool = False, always=frozenset({"id"})):
    return compile_template(source, html=html, fallbacks=fallbacks or {}, always=always, file="f.yaml",
                            path="campaigns[0].template.body")


def test_syntax_error_at_load_with_file_path_and_line():
    """A Jinja2 syntax error is a DefinitionError naming file, path and line."""
    with pytest.raises(DefinitionError) as exc:
        check("Hi\n{% if contact.first_name %}unclosed", {"first_name": "x"})
    e = exc.value
    assert (e.file, e.path) == ("f.yaml", "campaigns[0].template.body")
    assert "syntax error at line 2" in e.problem


def test_unknown_variable_at_load():
    """A name outside contact/segment/change/products/variant is refused at load, with the fix."""
    with pytest.raises(DefinitionError) as exc:
        check("Hi {{ first_name }}")
    assert "'first_name'" in exc.value.problem and "contact.first_name" in exc.value.fix


def test_contact_field_without_fallback_at_load():
    """A contact field that may be missing needs a fallback (or a default/defined guard)."""
    with pytest.raises(DefinitionError) as exc:
        check("Hi {{ contact.first_name }}")
    assert "contact.first_name has no fallback" in exc.value.problem and "fallbacks" in exc.value.fix
    check("Hi {{ contact.first_name }}", {"first_name": "there"})
    check("Hi {{ contact.first_name | default('you') }}")
    check("Hi{% if contact.first_name is defined %} {{ contact.first_name }}{% endif %}")
    check("Hi {{ contact.first_name if contact.first_name is defined else 'you' }}")
    check("{{ contact.id }} {{ contact.email }}", always=frozenset({"id", "email"}))


def test_guard_does_not_leak_into_else():
    """An `is defined` guard covers the if-branch only."""
    with pytest.raises(DefinitionError):
        check("{% if contact.city is defined %}x{% else %}{{ contact.city }}{% endif %}")


def test_segment_and_change_fields_checked():
    """segment has id and name; change has at and direction; others are load-time errors."""
    check("{{ segment.id }} {{ segment.name }} {{ change.at }} {{ change.direction }} {{ variant }}")
    with pytest.raises(DefinitionError, match="segment.size"):
        check("{{ segment.size }}")
    with pytest.raises(DefinitionError, match="change.seq"):
        check("{{ change.seq }}")


def test_computed_contact_key_refused():
    """contact[expr] hides which field is read (the shard must keep it): refused at load."""
    with pytest.raises(DefinitionError, match="computed key"):
        check("{% set k = 'first_name' %}{{ contact[k] }}")


def test_template_reports_fields_and_products():
    """The analysis lists the contact fields read (for Keep) and whether products are used."""
    t = check("{{ contact.first_name }}{% for p in products %}{{ p.product_id }}{% endfor %}"
              "{{ contact.get('city') }}", {"first_name": "x"})
    assert t.info.contact_fields == {"first_name", "city"} and t.info.uses_products


def test_sandbox_blocks_unsafe_attributes_at_render():
    """Templates run in Jinja2's sandbox: no access to Python internals."""
    from jinja2.exceptions import SecurityError
    t = check("{{ products.__class__.__mro__ }}")
    with pytest.raises(SecurityError):
        render(t, {"products": []})


def test_campaign_fields_feed_required_keep():
    """Fields used by templates and fallbacks, the channel's address and timezone are kept."""
    c = campaigns("""
    campaigns:
      - id: p
        trigger: {segment: push-espresso}
        channel: push
        fallbacks: {first_name: there, contact.city: Paris}
        template: {body: "{{ contact.first_name }} in {{ contact.city }}"}
    """)
    keep = c.required_keep()
    assert set(keep.profile_fields) == {"first_name", "city", "push_token", "timezone"}
    assert keep.consent_channels == ("push",) and keep.items_of == ()
