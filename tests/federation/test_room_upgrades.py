"""The data side of room upgrades: the new create event, the state and power levels the
new room starts and ends with, the old room's restricted levels, canonical aliases,
m.direct and push rules (federation/room_upgrades.py)."""

from __future__ import annotations

from federation.room_upgrades import (
    direct_with_room,
    normalised_power_levels,
    push_rule_for_room,
    restricted_power_levels,
    split_canonical_alias,
    transferable_state,
    upgraded_create_content,
    upgraded_power_levels,
)
from federation.room_versions import RoomVersions

OLD = "!old:hs"
NEW = "!new:hs"


def test_create_content_per_version():
    old = {"creator": "@a:hs", "room_version": "1", "m.federate": False, "type": "m.space", "other": 1}
    v2 = upgraded_create_content(old, OLD, RoomVersions.V2, "@u:hs", "$tomb", ["@x:hs"])
    assert v2 == {"room_version": "2", "predecessor": {"room_id": OLD, "event_id": "$tomb"}, "creator": "@u:hs",
                  "m.federate": False, "type": "m.space"}
    v11 = upgraded_create_content({}, OLD, RoomVersions.V11, "@u:hs", "$tomb", ["@x:hs"])
    assert v11 == {"room_version": "11", "predecessor": {"room_id": OLD, "event_id": "$tomb"}}
    # Rooms 12: no event ID (the room ID hashes this event), the named extra creators
    # (the upgrader once), none copied from the old room.
    v12 = upgraded_create_content({"additional_creators": ["@old:hs"]}, OLD, RoomVersions.V12, "@u:hs", None,
                                  ["@x:hs", "@u:hs", "@x:hs"])
    assert v12 == {"room_version": "12", "predecessor": {"room_id": OLD}, "additional_creators": ["@x:hs"]}


def test_transferable_state_picks_the_recommended_types_and_space_links():
    state = {
        ("m.room.name", ""): {"name": "N"}, ("m.room.topic", ""): {"topic": "T"},
        ("m.room.join_rules", ""): {"join_rule": "public"}, ("m.room.power_levels", ""): {"users": {}},
        ("m.room.member", "@a:hs"): {"membership": "join"}, ("m.room.canonical_alias", ""): {"alias": "#a:hs"},
        ("org.example.custom", ""): {"x": 1}, ("m.room.name", "odd"): {"name": "keyed"},
        ("m.space.child", "!c:hs"): {"via": ["hs"]}, ("m.space.child", "!gone:hs"): {},
        ("m.space.parent", "!p:hs"): {"via": ["hs"], "canonical": True},
    }
    out = transferable_state(state)
    assert list(out) == [("m.room.join_rules", ""), ("m.room.history_visibility", ""), ("m.room.guest_access", ""),
                         ("m.room.name", ""), ("m.room.topic", ""),
                         ("m.space.child", "!c:hs"), ("m.space.parent", "!p:hs")]


def test_transferable_state_states_the_settings_left_to_their_defaults():
    # No guest_access or history_visibility in the old room: the new one says what
    # their absence meant (guests forbidden, history shared), so nothing changes for
    # its members and clients see the settings.
    out = transferable_state({("m.room.join_rules", ""): {"join_rule": "public"}})
    assert out[("m.room.guest_access", "")] == {"guest_access": "forbidden"}
    assert out[("m.room.history_visibility", "")] == {"history_visibility": "shared"}
    # Set ones are copied as they are.
    out = transferable_state({("m.room.guest_access", ""): {"guest_access": "can_join"},
                              ("m.room.history_visibility", ""): {"history_visibility": "joined"}})
    assert out[("m.room.guest_access", "")] == {"guest_access": "can_join"}
    assert out[("m.room.history_visibility", "")] == {"history_visibility": "joined"}


def test_power_levels_become_integers():
    content = {"ban": "60", "kick": 50.7, "redact": "x", "users": {"@a:hs": "75", "@b:hs": []},
               "events": {"m.room.name": " 40 "}, "notifications": "bad", "custom": True}
    assert normalised_power_levels(content, RoomVersions.V1) == {
        "ban": 60, "kick": 50, "users": {"@a:hs": 75}, "events": {"m.room.name": 40}, "custom": True}
    # Rooms 10 read only integers: the strings are dropped, not parsed.
    assert normalised_power_levels({"ban": "60", "kick": 50}, RoomVersions.V10) == {"kick": 50}


def test_upgrader_raised_for_the_copy_then_back():
    old = {"users": {"@admin:hs": 100, "@mod:hs": 50}, "events": {"m.room.tombstone": 50, "m.room.power_levels": 100},
           "state_default": 50, "ban": 50}
    initial, final = upgraded_power_levels(old, RoomVersions.V10, RoomVersions.V10, "@mod:hs", False, [])
    assert initial["users"] == {"@admin:hs": 100, "@mod:hs": 100}
    assert final == old
    # Already strong enough: one set of levels.
    initial, final = upgraded_power_levels(old, RoomVersions.V10, RoomVersions.V10, "@admin:hs", False, [])
    assert initial == final == old


def test_power_levels_into_and_out_of_rooms_with_privileged_creators():
    old = {"users": {"@u:hs": 100, "@x:hs": 100, "@y:hs": 20}, "events": {"m.room.tombstone": 150}}
    # Into 12: the new creators leave `users`.
    initial, final = upgraded_power_levels(old, RoomVersions.V10, RoomVersions.V12, "@u:hs", False,
                                           ["@u:hs", "@x:hs"])
    assert initial == final == {"users": {"@y:hs": 20}, "events": {"m.room.tombstone": 150}}
    # Out of 12: a creator of the old room (unlimited power) keeps the top level.
    old12 = {"users": {"@y:hs": 120}, "events": {"m.room.tombstone": 150}}
    initial, final = upgraded_power_levels(old12, RoomVersions.V12, RoomVersions.V11, "@u:hs", True, [])
    assert initial == final and final["users"] == {"@y:hs": 120, "@u:hs": 150}


def test_old_room_restricted():
    assert restricted_power_levels({"events_default": 0, "invite": 0, "users": {"@a:hs": 100}}, RoomVersions.V10) \
        == {"events_default": 50, "invite": 50, "users": {"@a:hs": 100}}
    # Unusual levels: above users_default.
    assert restricted_power_levels({"users_default": 80}, RoomVersions.V10) == \
        {"users_default": 80, "events_default": 81, "invite": 81}
    # Nothing to do.
    assert restricted_power_levels({"events_default": 60, "invite": 50}, RoomVersions.V10) is None
    assert restricted_power_levels({"events_default": "60", "invite": "55"}, RoomVersions.V1) is None


def test_canonical_alias_moves_with_the_local_aliases():
    local = lambda a: a.endswith(":hs")  # noqa: E731
    old, new = split_canonical_alias({"alias": "#a:hs", "alt_aliases": ["#b:hs", "#c:remote"]}, local)
    assert old == {"alt_aliases": ["#c:remote"]}
    assert new == {"alias": "#a:hs", "alt_aliases": ["#b:hs"]}
    old, new = split_canonical_alias({"alias": "#r:remote", "alt_aliases": ["#b:hs"]}, local)
    assert old == {"alias": "#r:remote"} and new == {"alt_aliases": ["#b:hs"]}


def test_direct_gets_the_new_room():
    direct = {"@bob:hs": ["!x:hs", OLD], "@carol:hs": ["!y:hs"]}
    assert direct_with_room(direct, OLD, NEW) == {"@bob:hs": ["!x:hs", OLD, NEW], "@carol:hs": ["!y:hs"]}
    assert direct_with_room({"@bob:hs": [OLD, NEW]}, OLD, NEW) is None
    assert direct_with_room({"@bob:hs": "junk"}, OLD, NEW) is None


def test_push_rules_about_the_old_room():
    assert push_rule_for_room("room", OLD, None, OLD, NEW) == (NEW, None)
    assert push_rule_for_room("room", "!other:hs", None, OLD, NEW) is None
    cond = [{"kind": "event_match", "key": "room_id", "pattern": OLD}, {"kind": "contains_display_name"}]
    assert push_rule_for_room("override", f"mute-{OLD}", cond, OLD, NEW) == (
        f"mute-{NEW}", [{"kind": "event_match", "key": "room_id", "pattern": NEW}, {"kind": "contains_display_name"}])
    assert push_rule_for_room("underride", "quiet", cond, OLD, NEW)[0] == f"quiet.{NEW}"
    assert push_rule_for_room("override", "x", [{"kind": "event_match", "key": "type", "pattern": OLD}],
                              OLD, NEW) is None
    assert push_rule_for_room("content", "x", None, OLD, NEW) is None
