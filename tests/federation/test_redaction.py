"""The redaction algorithm of each room version, as input/expected pairs."""

from __future__ import annotations

import copy

import pytest
from hypothesis import given
from hypothesis import strategies as st

from federation.redaction import prune_event_for_client, redact
from federation.room_versions import KNOWN_ROOM_VERSIONS, RoomVersions

V = RoomVersions


def ev(type_: str, content: dict, **top) -> dict:
    base = {
        "type": type_, "room_id": "!r:x", "sender": "@a:x", "content": content, "depth": 3,
        "origin_server_ts": 5, "prev_events": [], "auth_events": [], "hashes": {"sha256": "h"},
        "signatures": {"x": {"ed25519:1": "s"}}, "unsigned": {"age_ts": 1}, "origin": "x",
        "membership": "join", "prev_state": [], "extra_top": 1,
    }
    base.update(top)
    return base


FULL_PL = {"ban": 50, "events": {"m.room.name": 50}, "events_default": 0, "kick": 50, "redact": 50,
           "state_default": 50, "users": {"@a:x": 100}, "users_default": 0, "invite": 0,
           "notifications": {"room": 50}}

CASES = [
    # (event, room version, expected content)
    (ev("m.room.member", {"membership": "join", "displayname": "A", "join_authorised_via_users_server": "@b:x"}, state_key="@a:x"),
     V.V8, {"membership": "join"}),
    (ev("m.room.member", {"membership": "join", "displayname": "A", "join_authorised_via_users_server": "@b:x"}, state_key="@a:x"),
     V.V9, {"membership": "join", "join_authorised_via_users_server": "@b:x"}),
    (ev("m.room.member", {"membership": "invite", "third_party_invite": {"display_name": "d", "signed": {"token": "t"}}}, state_key="@a:x"),
     V.V10, {"membership": "invite"}),
    (ev("m.room.member", {"membership": "invite", "third_party_invite": {"display_name": "d", "signed": {"token": "t"}}}, state_key="@a:x"),
     V.V11, {"membership": "invite", "third_party_invite": {"signed": {"token": "t"}}}),
    (ev("m.room.create", {"creator": "@a:x", "room_version": "10", "m.federate": False}, state_key=""),
     V.V10, {"creator": "@a:x"}),
    (ev("m.room.create", {"room_version": "11", "m.federate": False}, state_key=""),
     V.V11, {"room_version": "11", "m.federate": False}),
    (ev("m.room.join_rules", {"join_rule": "restricted", "allow": [{"type": "m.room_membership"}]}, state_key=""),
     V.V7, {"join_rule": "restricted"}),
    (ev("m.room.join_rules", {"join_rule": "restricted", "allow": [{"type": "m.room_membership"}]}, state_key=""),
     V.V8, {"join_rule": "restricted", "allow": [{"type": "m.room_membership"}]}),
    (ev("m.room.power_levels", FULL_PL, state_key=""), V.V10,
     {k: v for k, v in FULL_PL.items() if k not in ("invite", "notifications")}),
    (ev("m.room.power_levels", FULL_PL, state_key=""), V.V11,
     {k: v for k, v in FULL_PL.items() if k != "notifications"}),
    (ev("m.room.aliases", {"aliases": ["#a:x"]}, state_key="x"), V.V5, {"aliases": ["#a:x"]}),
    (ev("m.room.aliases", {"aliases": ["#a:x"]}, state_key="x"), V.V6, {}),
    (ev("m.room.history_visibility", {"history_visibility": "shared", "other": 1}, state_key=""), V.V1,
     {"history_visibility": "shared"}),
    (ev("m.room.redaction", {"redacts": "$e", "reason": "spam"}), V.V10, {}),
    (ev("m.room.redaction", {"redacts": "$e", "reason": "spam"}), V.V11, {"redacts": "$e"}),
    (ev("m.room.message", {"body": "hi", "msgtype": "m.text"}), V.V12, {}),
    (ev("m.room.name", {"name": "secret"}, state_key=""), V.V1, {}),
]


@pytest.mark.parametrize("event, version, expected", CASES)
def test_content_kept(event, version, expected):
    assert redact(event, version)["content"] == expected


def test_top_level_keys_before_and_after_v11():
    event = ev("m.room.message", {"body": "x"}, event_id="$e:x", state_key="s")
    old = redact(event, V.V10)
    assert set(old) == {"type", "room_id", "sender", "content", "depth", "origin_server_ts", "prev_events",
                        "auth_events", "hashes", "signatures", "origin", "membership", "prev_state",
                        "event_id", "state_key"}
    new = redact(event, V.V11)
    assert not {"origin", "membership", "prev_state", "unsigned", "extra_top"} & set(new)


def test_redact_does_not_mutate():
    event = ev("m.room.member", {"membership": "join", "displayname": "A"}, state_key="@a:x")
    before = copy.deepcopy(event)
    redact(event, V.V11)
    assert event == before


def test_prune_for_client_keeps_redacted_because():
    event = ev("m.room.message", {"body": "x"})
    pruned = prune_event_for_client(event, V.V11, {"event_id": "$r", "type": "m.room.redaction"})
    assert pruned["content"] == {}
    assert pruned["unsigned"] == {"age_ts": 1, "redacted_because": {"event_id": "$r", "type": "m.room.redaction"}}


json_leaf = st.none() | st.booleans() | st.integers() | st.text(max_size=5)
json_obj = st.dictionaries(st.text(max_size=8), st.recursive(json_leaf, lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=5), c, max_size=3), max_leaves=8), max_size=6)
event_types = st.sampled_from(["m.room.member", "m.room.create", "m.room.join_rules", "m.room.power_levels",
                               "m.room.aliases", "m.room.history_visibility", "m.room.redaction", "m.room.message"])


@given(event_types, json_obj, json_obj, st.sampled_from(sorted(KNOWN_ROOM_VERSIONS)))
def test_redaction_is_idempotent(event_type, content, top, version):
    rv = KNOWN_ROOM_VERSIONS[version]
    event = {**top, "type": event_type, "content": content}
    once = redact(event, rv)
    assert redact(once, rv) == once
