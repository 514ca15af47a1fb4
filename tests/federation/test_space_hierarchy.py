"""Space children (which count, their order) and other servers' hierarchy answers."""

from __future__ import annotations

import pytest

from federation.space_hierarchy import (
    child_via,
    is_valid_order,
    open_to_anyone,
    parse_hierarchy_answer,
    sanitise_summary,
    space_children,
    stripped_child,
)


def child(room_id, ts, **content):
    return {"type": "m.space.child", "state_key": room_id, "sender": "@a:x", "origin_server_ts": ts,
            "content": {"via": ["example.org"], **content}}


def test_the_spec_example_order():
    children = [
        child("!b:example.org", 1640341000000, order=" "),
        child("!a:example.org", 1640141000000, order="aaaa"),
        child("!c:example.org", 1640841000000, order="first"),
        child("!e:example.org", 1640641000000),
        child("!d:example.org", 1640741000000),
    ]
    ordered = [c["state_key"] for c in space_children(children, suggested_only=False)]
    assert ordered == ["!b:example.org", "!a:example.org", "!c:example.org", "!e:example.org", "!d:example.org"]


def test_ties_and_invalid_orders():
    children = [
        child("!z:x", 5, order="same"), child("!y:x", 5, order="same"), child("!x:x", 1, order="same"),
        child("!w:x", 1, order="x" * 51),  # too long: counts as no order
        child("!v:x", 0, order="\u00e9"),  # outside U+0020-U+007E
        child("!u:x", 0, order=7),
    ]
    ordered = [c["state_key"] for c in space_children(children, suggested_only=False)]
    assert ordered == ["!x:x", "!y:x", "!z:x", "!u:x", "!v:x", "!w:x"]


@pytest.mark.parametrize("content, via", [
    ({"via": ["a.org", "b.org"]}, ["a.org", "b.org"]),
    ({}, None), ({"via": []}, None), ({"via": "a.org"}, None), ({"via": ["a.org", 3]}, None), ({"via": [""]}, None),
])
def test_via(content, via):
    assert child_via(content) == via


def test_children_that_do_not_count_and_suggested():
    children = [child("!a:x", 1, suggested=True), child("!b:x", 2), child("!c:x", 3, suggested="yes"),
                {**child("!d:x", 4), "content": {}}]  # a redacted child
    assert [c["state_key"] for c in space_children(children, suggested_only=False)] == ["!a:x", "!b:x", "!c:x"]
    assert [c["state_key"] for c in space_children(children, suggested_only=True)] == ["!a:x"]


def test_valid_order():
    assert is_valid_order(" ") and is_valid_order("~" * 50) and is_valid_order("")
    assert not is_valid_order("\x1f") and not is_valid_order(None) and not is_valid_order("a" * 51)


def test_stripped_child():
    assert stripped_child("m.space.child", "!r:x", {"via": ["x"]}, "@a:x", 5) == \
        {"type": "m.space.child", "state_key": "!r:x", "content": {"via": ["x"]}, "sender": "@a:x",
         "origin_server_ts": 5}
    for bad in (("m.room.name", "!r:x", {}, "@a:x", 5), ("m.space.child", "not-a-room", {}, "@a:x", 5),
                ("m.space.child", "!r:x", [], "@a:x", 5), ("m.space.child", "!r:x", {}, None, 5),
                ("m.space.child", "!r:x", {}, "@a:x", True), ("m.space.child", "!r:x", {}, "@a:x", "5")):
        assert stripped_child(*bad) is None


def test_open_to_anyone():
    assert open_to_anyone({"join_rule": "public"}) and open_to_anyone({"join_rule": "knock"})
    assert open_to_anyone({"join_rule": "knock_restricted"}) and open_to_anyone({"world_readable": True})
    assert not open_to_anyone({"join_rule": "invite", "world_readable": False})
    assert not open_to_anyone({"join_rule": "restricted", "world_readable": "true"})


def test_sanitise_summary_keeps_only_typed_spec_fields():
    got = sanitise_summary({"room_id": "!r:x", "num_joined_members": 3, "name": "N", "topic": 5,
                            "world_readable": "yes", "guest_can_join": True, "join_rule": "public",
                            "allowed_room_ids": ["!a:x", 4, "b"], "evil": "<script>", "children_state": []})
    assert got == {"room_id": "!r:x", "num_joined_members": 3, "name": "N", "world_readable": False,
                   "guest_can_join": True, "join_rule": "public", "allowed_room_ids": ["!a:x"]}
    for bad in (None, [], {"room_id": "!r:x"}, {"room_id": "r", "num_joined_members": 1},
                {"room_id": "!r:x", "num_joined_members": True}, {"room_id": "!r:x", "num_joined_members": -1}):
        assert sanitise_summary(bad) is None


def test_parse_hierarchy_answer():
    answer = {
        "room": {"room_id": "!s:x", "num_joined_members": 2, "room_type": "m.space", "join_rule": "public",
                 "children_state": [child("!b:x", 2), child("!a:x", 1), {"type": "m.space.child"}, "junk",
                                    {**child("!c:x", 3), "content": {"via": []}}]},
        "children": [{"room_id": "!a:x", "num_joined_members": 1}, {"room_id": 5}, "junk"],
        "inaccessible_children": ["!b:x", 7],
    }
    parsed = parse_hierarchy_answer(answer, "!s:x", suggested_only=False)
    assert parsed.room["room_type"] == "m.space" and "children_state" not in parsed.room
    assert [c["state_key"] for c in parsed.children_state] == ["!a:x", "!b:x"]
    assert set(parsed.children) == {"!a:x"} and parsed.inaccessible == frozenset({"!b:x"})
    assert parse_hierarchy_answer({"room": {"room_id": "!s:x", "num_joined_members": 0}}, "!s:x",
                                  suggested_only=True).children == {}
    for bad in ([], {}, {"room": {"room_id": "!other:x", "num_joined_members": 1}}, {"room": "x"}):
        with pytest.raises(ValueError):
            parse_hierarchy_answer(bad, "!s:x", suggested_only=False)
