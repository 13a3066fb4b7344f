"""Loading campaign files: defaults, YAML quirks, and errors naming file, path and fix."""

from __future__ import annotations

import textwrap

import yaml

import pytest

from state.campaigns import DEFAULT_CAPS, builtin_campaigns, load_campaigns
from state.definitions import builtin_segments, load_segments
from state.errors import DefinitionError

from .helpers import D, H, campaigns

BASE = """
campaigns:
  - id: em
    trigger: {segment: email-espresso}
    channel: email
    template: {subject: "Hi", body: "Hello {{ contact.first_name }}"}
    fallbacks: {first_name: there}
"""


def error(text: str, **kw) -> DefinitionError:
    with pytest.raises(DefinitionError) as exc:
        campaigns(text, **kw)
    return exc.value


def test_minimal_campaign_and_defaults():
    """A minimal campaign gets: trigger on enter, priority 0, reentry once, no delay, caps skip, 24 h max_defer, 1 h staleness."""
    [c] = campaigns(BASE).campaigns
    assert (c.on, c.priority, c.reentry, c.delay_ms, c.cap_policy) == ("enter", 0, "once", 0, "skip")
    assert (c.max_defer_ms, c.max_staleness_ms, c.allow_stale, c.quiet) == (24 * H, H, False, None)
    assert c.products_from == ("checkout_started", "order_placed")
    assert campaigns(BASE).caps == DEFAULT_CAPS and campaigns(BASE).default_timezone == "UTC"


def test_builtin_campaigns_load():
    """`builtin` is the three espresso campaigns of seed 000 and the shop automations of seeds 002-004;
    `builtin:NAME` one file."""
    c = builtin_campaigns()
    assert [x.id for x in c.campaigns] == [
        "email-espresso-resend", "email-espresso-sms-followup", "push-espresso-urgent", "post-purchase",
        "checkout-series", "browse-abandonment", "welcome-series", "win-back", "cross-sell", "birthday",
        "price-drop", "back-in-stock", "low-stock"]
    assert [s.id for s in c.segments] == ["email-espresso", "sms-espresso", "push-espresso", "lapsed-customer"]
    assert [x.id for x in load_campaigns("builtin:espresso").campaigns] == [x.id for x in c.campaigns[:3]]
    shop = load_campaigns("builtin:shop")
    assert [x.id for x in shop.campaigns] == [x.id for x in c.campaigns[3:]]
    assert shop.by_id["checkout-series"].run_key == ("checkout_id",)
    assert [s.after_ms for s in shop.by_id["post-purchase"].steps] == [0, 2 * D, 7 * D, 21 * D]
    assert shop.by_id["birthday"].date.at_min == 9 * 60
    drop = shop.by_id["price-drop"].catalog
    assert (drop.kind, str(drop.drop), drop.within_ms) == ("price_drop", "10%", 30 * D)
    assert (shop.by_id["low-stock"].catalog.below, shop.by_id["low-stock"].catalog.within_ms) == (5, 7 * D)
    sms = c.by_id["email-espresso-sms-followup"]
    assert (sms.channel, sms.delay_ms, sms.quiet) == ("sms", 2 * H, (21 * 60, 8 * 60))
    assert load_campaigns(None).fingerprint == c.fingerprint


def test_unknown_segment_is_named():
    """A trigger on a segment the flow does not run is an error naming that segment id and where it is."""
    e = error(BASE.replace("email-espresso", "email-espreso"))
    assert (e.file, e.path) == ("test.yaml", "campaigns[0].trigger.segment")
    assert "'email-espreso'" in e.problem and "email-espresso" in e.fix


def test_segments_given_by_the_flow_are_the_known_ones():
    """Campaigns are checked against the segments passed in (the flow's), not always the built-ins."""
    custom = [s for s in builtin_segments() if s.id != "email-espresso"]
    assert error(BASE, segments=custom).path == "campaigns[0].trigger.segment"


def test_segments_in_the_same_file():
    """A campaign file may define its own segments; they join the flow's segments."""
    text = """
    segments:
      - id: vip
        when: {lifetime: {type: order_placed, aggregate: sum, property: value, op: ">", value: 500}}
    campaigns:
      - id: vip-thanks
        trigger: {segment: vip}
        channel: push
        template: {body: thanks}
    """
    c = campaigns(text)
    assert [s.id for s in c.segments][-1] == "vip" and c.campaigns[0].segment == "vip"


def test_yaml_quirks_on_and_unquoted_times():
    """`on: exit` (YAML 1.1 reads `on` as true) and unquoted 21:00 (read as 1260) mean what they say."""
    text = """
    campaigns:
      - id: s
        trigger: {segment: sms-espresso, on: exit}
        channel: sms
        quiet_hours: {start: 21:30, end: 07:45}
        template: {body: hi}
    """
    [c] = campaigns(text).campaigns
    assert c.on == "exit" and c.quiet == (21 * 60 + 30, 7 * 60 + 45)


@pytest.mark.parametrize("change, path, words", [
    (("channel: email", "channel: fax"), "campaigns[0].channel", "fax"),
    (("trigger: {segment: email-espresso}", "trigger: {segment: email-espresso, on: leave}"), "campaigns[0].trigger.on", "leave"),
    (("    fallbacks:", "    delay: 2\n    fallbacks:"), "campaigns[0].delay", "positive duration"),
    (("    fallbacks:", "    delay: 2 hours\n    fallbacks:"), "campaigns[0].delay", "positive duration"),
    (("    fallbacks:", "    reentry: twice\n    fallbacks:"), "campaigns[0].reentry", "once_per"),
    (("    fallbacks:", "    reentry: {once_per: 0s}\n    fallbacks:"), "campaigns[0].reentry", "positive"),
    (("    fallbacks:", "    caps: maybe\n    fallbacks:"), "campaigns[0].caps", "maybe"),
    (("    fallbacks:", "    quiet_hours: {start: '25:00', end: '08:00'}\n    fallbacks:"), "campaigns[0].quiet_hours.start", "HH:MM"),
    (("    fallbacks:", "    quiet_hours: {start: '08:00', end: '08:00'}\n    fallbacks:"), "campaigns[0].quiet_hours", "equal"),
    (("    fallbacks:", "    colour: red\n    fallbacks:"), "campaigns[0].colour", "unknown key"),
    (("    fallbacks:", "    max_staleness: soon\n    fallbacks:"), "campaigns[0].max_staleness", "duration"),
    (("id: em", "id: Em!"), "campaigns[0].id", "invalid campaign id"),
])
def test_field_errors(change, path, words):
    """Each wrong field is reported with its path in the file and the problem."""
    e = error(BASE.replace(*change))
    assert e.path == path, str(e)
    assert words in str(e)
    assert str(e).startswith(f"test.yaml: {path}: ") and "(fix: " in str(e)


def test_duplicate_campaign_id():
    """Two campaigns with one id is an error on the second."""
    body = BASE.split("campaigns:\n", 1)[1]
    e = error(BASE + body)
    assert e.path == "campaigns[1].id" and "duplicate" in e.problem


def test_channel_template_rules():
    """Email needs a subject; an SMS has neither subject nor html; a push has no html."""
    assert error(BASE.replace('subject: "Hi", ', "")).path == "campaigns[0].template.subject"
    sms = BASE.replace("channel: email", "channel: sms")
    assert error(sms).path == "campaigns[0].template.subject"
    push = BASE.replace('body: "Hello', 'html: "<p>x</p>", body: "Hello').replace("channel: email", "channel: push")
    assert error(push).path == "campaigns[0].template.html"
    assert error(BASE.replace("    template: {subject: \"Hi\", body: \"Hello {{ contact.first_name }}\"}\n", "")).path \
        == "campaigns[0].template"


def test_variant_errors_point_into_the_variant():
    """A broken variant template is reported at variants[i].template.<field>; names and weights are checked."""
    text = BASE + """    variants:
      - {name: A, weight: 1}
      - {name: B, weight: 1, template: {subject: "{{ contact.nickname }}"}}
"""
    e = error(text)
    assert e.path == "campaigns[0].variants[1].template.subject" and "nickname" in e.problem
    assert error(BASE + "    variants: [{name: A}, {name: A}]\n").path == "campaigns[0].variants[1].name"
    assert error(BASE + "    variants: [{name: A, weight: 0}]\n").path == "campaigns[0].variants"
    assert error(BASE + "    variants: [{name: A, weight: -1}]\n").path == "campaigns[0].variants[0].weight"


def test_caps_section():
    """`caps:` replaces the defaults it names, `null` removes one, lists give several windows."""
    text = BASE + """
caps:
  sms: null
  email: [{max: 1, per: 16h}, {max: 4, per: 7d}]
"""
    caps = {(c.name, c.channel, c.max, c.per_ms) for c in campaigns(text).caps}
    assert caps == {("email1", "email", 1, 16 * H), ("email2", "email", 4, 7 * 24 * H),
                    ("push", "push", 1, 24 * H), ("all", None, 3, 24 * H)}
    assert error(BASE + "caps: {fax: {max: 1, per: 1h}}\n").path == "caps.fax"
    assert error(BASE + "caps: {sms: {max: 0, per: 1h}}\n").path == "caps.sms.max"
    assert error(BASE + "caps: {sms: {max: 1, per: forever}}\n").path == "caps.sms.per"


def test_default_timezone():
    """`default_timezone` must be an IANA zone; the loader argument overrides the file."""
    assert campaigns(BASE + "default_timezone: Europe/Paris\n").default_timezone == "Europe/Paris"
    assert campaigns(BASE, default_timezone="Asia/Tokyo").default_timezone == "Asia/Tokyo"
    assert error(BASE + "default_timezone: Mars/Olympus\n").path == "default_timezone"


def test_top_level_errors():
    """A file without `campaigns:` or with an unknown top-level key says what is allowed."""
    assert "campaigns" in error("segments: []\n").fix
    assert error(BASE + "campains: []\n").path == "campains"
    assert error("campaigns: []\n").path == "campaigns"


def test_errors_name_the_file(tmp_path):
    """load_campaigns reports the path it read, and YAML syntax errors with line and column."""
    p = tmp_path / "camps.yaml"
    p.write_text(textwrap.dedent(BASE).replace("email-espresso", "nope"))
    with pytest.raises(DefinitionError) as exc:
        load_campaigns(p)
    assert exc.value.file == str(p) and exc.value.path == "campaigns[0].trigger.segment"
    p.write_text("campaigns:\n  - id: [\n")
    with pytest.raises(DefinitionError) as exc:
        load_campaigns(p)
    assert exc.value.path.startswith("line ")
    with pytest.raises(DefinitionError) as exc:
        load_campaigns(tmp_path / "missing.yaml")
    assert "cannot read" in exc.value.problem


def test_segment_loader_accepts_a_campaigns_only_key():
    """A segments file may carry a `campaigns:` list (state/definitions.py ignores it)."""
    text = "segments:\n  - id: x\n    when: {consent: {channel: email}}\n" + textwrap.dedent(BASE)
    import yaml
    from state.definitions import parse_segments
    assert [s.id for s in parse_segments(yaml.safe_load(text), "f.yaml")] == ["x"]
    assert load_segments(None)  # built-ins still load


def test_sequence_definitions_refuse_what_would_be_ignored(tmp_path):
    """Variants beside steps, match without an event trigger, run_key on a segment trigger, steps out of order
    and a delay beside steps are refused with the path and the fix."""
    base = {"id": "s", "channel": "email", "trigger": {"event": "order_placed"},
            "steps": [{"id": "a", "after": "0s", "template": {"subject": "s", "body": "b"}}]}
    cases = [
        ({**base, "variants": [{"name": "A"}]}, "campaigns[0].variants", "per step"),
        ({**base, "trigger": {"segment": "email-espresso"}, "exit_when": [{"event": "x", "match": {"a": "a"}}]},
         "campaigns[0].exit_when[0].match", "event trigger"),
        ({**base, "trigger": {"segment": "email-espresso"}, "run_key": "order_id"}, "campaigns[0].run_key", "event trigger"),
        ({**base, "steps": [{"id": "a", "after": "2h", "template": {"subject": "s", "body": "b"}},
                            {"id": "b", "after": "1h", "template": {"subject": "s", "body": "b"}}]},
         "campaigns[0].steps[1].after", "order"),
        ({**base, "delay": "1h"}, "campaigns[0].delay", "after"),
        ({**base, "trigger": {"date": "birthday", "at": "25:00"}}, "campaigns[0].trigger.at", "HH:MM"),
        ({**base, "trigger": {"event": "order_placed", "segment": "email-espresso"}}, "campaigns[0].trigger", "exactly one"),
    ]
    for body, path, words in cases:
        with pytest.raises(DefinitionError) as err:
            campaigns(yaml.safe_dump({"campaigns": [body]}))
        assert err.value.path == path and words in str(err.value), (path, str(err.value))
