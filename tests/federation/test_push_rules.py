"""The pure push rule evaluator: conditions, globs, dotted paths, the default rules."""

from __future__ import annotations

import pytest

from federation.push_rules import (
    KINDS,
    PushContext,
    default_rules,
    evaluate,
    event_match,
    event_property_contains,
    event_property_is,
    merge_ruleset,
    notify_and_highlight,
    room_member_count_matches,
    split_path,
)

ME = "@alice:hs.test"


def ctx(**kw):
    base = dict(user_id=ME, display_name="Alice Liddell", member_count=5, sender_power_level=0,
                notification_levels={"room": 50})
    return PushContext(**{**base, **kw})


def msg(body="hello", **content):
    return {"type": "m.room.message", "sender": "@bob:hs.test", "room_id": "!r:hs.test",
            "content": {"msgtype": "m.text", "body": body, **content}}


def outcome(event, **kw):
    return notify_and_highlight(evaluate(merge_ruleset(default_rules(ME), {}), event, ctx(**kw)))


def test_paths_and_globs():
    assert split_path("content.m\\.relates_to.rel_type") == ("content", "m.relates_to", "rel_type")
    assert split_path("content.m\\\\foo") == ("content", "m\\foo")
    assert split_path("content.a\\xb") == ("content", "a\\xb")
    topic = {"content": {"topic": "Lunch plans"}}
    assert event_match(topic, "content.topic", "lunc?*")
    assert event_match({"content": {"topic": "LUNCH"}}, "content.topic", "lunc?*")
    assert not event_match({"content": {"topic": " lunch"}}, "content.topic", "lunc?*")
    assert not event_match({"content": {"topic": "lunc"}}, "content.topic", "lunc?*")
    assert not event_match({"content": {"topic": None}}, "content.topic", "*")
    assert not event_match({"content": {}}, "content.topic", "*")
    assert not event_match({"content": {"topic": "a.b"}}, "content.topic", "a[.]b")  # no character classes
    # content.body: a substring between word boundaries.
    assert event_match({"content": {"body": "An example event."}}, "content.body", "ex*ple")
    assert event_match({"content": {"body": "exple"}}, "content.body", "ex*ple")
    assert event_match({"content": {"body": "An exciting triple-whammy"}}, "content.body", "ex*ple")
    assert not event_match({"content": {"body": "complex examples"}}, "content.body", "example")


def test_property_is_and_contains_are_exact():
    ev = {"content": {"m.federate": True, "n": 1, "list": ["#a:x", 1, True, None, {"x": 1}]}}
    assert event_property_is(ev, "content.m\\.federate", True)
    assert not event_property_is(ev, "content.m\\.federate", "true")
    assert not event_property_is(ev, "content.m\\.federate", 1)
    assert not event_property_is(ev, "content.n", True)
    assert event_property_is(ev, "content.n", 1)
    assert not event_property_is(ev, "content.list", ["#a:x"])
    assert event_property_contains(ev, "content.list", "#a:x")
    assert event_property_contains(ev, "content.list", None)
    assert not event_property_contains(ev, "content.list", 1.5)
    assert not event_property_contains(ev, "content.list", ":x")
    assert not event_property_contains(ev, "content.list", {"x": 1})
    assert not event_property_contains(ev, "content.n", 1)


@pytest.mark.parametrize("spec,count,expected", [
    ("2", 2, True), ("==2", 3, False), ("<3", 2, True), ("<3", 3, False), (">=3", 3, True),
    ("<=10", 11, False), (">1", 2, True), ("abc", 2, False), ("=2", 2, False),
])
def test_room_member_count(spec, count, expected):
    assert room_member_count_matches(spec, count) is expected


def test_default_rule_set_is_complete_and_personal():
    rules = default_rules(ME)
    ids = {k: [r["rule_id"] for r in rules[k]] for k in KINDS}
    assert ids["override"] == [
        ".m.rule.master", ".m.rule.suppress_notices", ".m.rule.invite_for_me", ".m.rule.member_event",
        ".m.rule.is_user_mention", ".m.rule.contains_display_name", ".m.rule.is_room_mention",
        ".m.rule.roomnotif", ".m.rule.tombstone", ".m.rule.reaction", ".m.rule.room.server_acl",
        ".m.rule.suppress_edits"]
    assert ids["content"] == [".m.rule.contains_user_name"]
    assert ids["underride"] == [".m.rule.call", ".m.rule.encrypted_room_one_to_one", ".m.rule.room_one_to_one",
                                ".m.rule.message", ".m.rule.encrypted"]
    invite = rules["override"][2]
    assert {"kind": "event_match", "key": "state_key", "pattern": ME} in invite["conditions"]
    assert rules["content"][0]["pattern"] == "alice"
    assert rules["override"][0]["enabled"] is False
    assert all(r["default"] for k in KINDS for r in rules[k])


def test_default_rules_outcomes():
    assert outcome(msg()) == (True, False)  # .m.rule.message
    assert outcome(msg(), member_count=2) == (True, False)  # one to one: notify (with sound)
    assert outcome(msg(msgtype="m.notice")) == (False, False)
    assert outcome(msg(**{"m.mentions": {"user_ids": [ME]}})) == (True, True)
    assert outcome(msg(**{"m.mentions": {"user_ids": ["@carol:hs.test"]}})) == (True, False)
    # Room mentions need the 'room' notification level.
    assert outcome(msg(**{"m.mentions": {"room": True}})) == (True, False)
    assert outcome(msg(**{"m.mentions": {"room": True}}), sender_power_level=50) == (True, True)
    # Legacy body rules, skipped when the event has m.mentions.
    assert outcome(msg("hey Alice Liddell!")) == (True, True)
    assert outcome(msg("hey alice, look")) == (True, True)  # .m.rule.contains_user_name
    assert outcome(msg("hey alice", **{"m.mentions": {}})) == (True, False)
    assert outcome(msg("@room lunch"), sender_power_level=100) == (True, True)
    assert outcome(msg("@room lunch")) == (True, False)
    # Edits, reactions, member events: nothing.
    assert outcome(msg(**{"m.relates_to": {"rel_type": "m.replace", "event_id": "$x"}})) == (False, False)
    assert outcome({"type": "m.reaction", "content": {}, "sender": "@bob:hs.test"}) == (False, False)
    member = {"type": "m.room.member", "state_key": "@carol:hs.test", "content": {"membership": "join"}}
    assert outcome(member) == (False, False)
    invite = {"type": "m.room.member", "state_key": ME, "content": {"membership": "invite"}}
    assert outcome(invite) == (True, False)
    tomb = {"type": "m.room.tombstone", "state_key": "", "content": {}}
    assert outcome(tomb) == (True, True)
    assert outcome({"type": "m.call.invite", "content": {}}) == (True, False)
    assert outcome({"type": "m.room.encrypted", "content": {}}) == (True, False)
    assert outcome({"type": "m.room.encrypted", "content": {}}, member_count=2) == (True, False)
    assert outcome({"type": "m.room.server_acl", "state_key": "", "content": {}}) == (False, False)
    assert outcome({"type": "org.example.custom", "content": {}}) == (False, False)


def test_user_rules_order_and_master():
    defaults = default_rules(ME)
    mine = {"override": [{"rule_id": "quiet", "enabled": True, "default": False, "actions": [],
                          "conditions": [{"kind": "event_match", "key": "content.body", "pattern": "shh"}]}],
            "room": [{"rule_id": "!r:hs.test", "enabled": True, "default": False,
                      "actions": ["notify", {"set_tweak": "highlight", "value": False}]}]}
    rules = merge_ruleset(defaults, mine)
    assert [r["rule_id"] for r in rules["override"]][:3] == [".m.rule.master", "quiet", ".m.rule.suppress_notices"]
    assert notify_and_highlight(evaluate(rules, msg("shh now"), ctx())) == (False, False)
    assert evaluate(rules, msg("hi"), ctx()) == ["notify", {"set_tweak": "highlight", "value": False}]
    # A user rule beats the default mention rule's place (overrides come first)...
    assert notify_and_highlight(evaluate(rules, msg("shh Alice Liddell"), ctx())) == (False, False)
    # ...and the master rule, once enabled, beats everything.
    rules["override"][0]["enabled"] = True
    assert evaluate(rules, msg(**{"m.mentions": {"user_ids": [ME]}}), ctx()) == []
    # Unknown conditions never match; historical actions are dropped.
    odd = merge_ruleset(defaults, {"override": [
        {"rule_id": "x", "enabled": True, "actions": ["notify"], "conditions": [{"kind": "org.unknown"}]},
        {"rule_id": "y", "enabled": True, "actions": ["dont_notify", "coalesce"], "conditions": []}]})
    assert evaluate(odd, msg(), ctx()) == []
