"""The redaction algorithm of each room version, as input/expected pairs."""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from federation.redaction import prune_event_for_client, redact
from federation.room_versions import KNOWN_ROOM_VERSIONS, RoomVersions, get_room_version

V = RoomVersions
VECTORS = json.loads((Path(__file__).parents[1] / "data" / "events" / "vectors.json").read_text())


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


@pytest.mark.parametrize("vector", VECTORS, ids=[f"v{v['room_version']}-{v['event']['type']}-{i}" for i, v in enumerate(VECTORS)])
def test_synapse_vectors(vector):
    """Redacted forms computed by Synapse (tests/data/events/make_vectors.py), minus
    the ``unsigned`` keys Synapse keeps for clients."""
    assert redact(vector["event"], get_room_version(vector["room_version"])) == vector["redacted"]


# Each algorithm as the spec lists it (rooms v1, v6, v8, v9, v11 "Redactions"), written
# out independently of the implementation: (versions, top-level keys, content keys by type).
_V1_TOP = {"event_id", "type", "room_id", "sender", "state_key", "content", "hashes", "signatures", "depth",
           "prev_events", "prev_state", "auth_events", "origin", "origin_server_ts", "membership"}
_V11_TOP = _V1_TOP - {"origin", "membership", "prev_state"}
_PL = {"ban", "events", "events_default", "kick", "redact", "state_default", "users", "users_default"}
ALGORITHMS = [
    (("1", "2", "3", "4", "5"), _V1_TOP, {
        "m.room.member": {"membership"}, "m.room.create": {"creator"}, "m.room.join_rules": {"join_rule"},
        "m.room.power_levels": _PL, "m.room.aliases": {"aliases"},
        "m.room.history_visibility": {"history_visibility"}, "m.room.redaction": set()}),
    (("6", "7"), _V1_TOP, {
        "m.room.member": {"membership"}, "m.room.create": {"creator"}, "m.room.join_rules": {"join_rule"},
        "m.room.power_levels": _PL, "m.room.aliases": set(),
        "m.room.history_visibility": {"history_visibility"}, "m.room.redaction": set()}),
    (("8",), _V1_TOP, {
        "m.room.member": {"membership"}, "m.room.create": {"creator"},
        "m.room.join_rules": {"join_rule", "allow"}, "m.room.power_levels": _PL, "m.room.aliases": set(),
        "m.room.history_visibility": {"history_visibility"}, "m.room.redaction": set()}),
    (("9", "10"), _V1_TOP, {
        "m.room.member": {"membership", "join_authorised_via_users_server"}, "m.room.create": {"creator"},
        "m.room.join_rules": {"join_rule", "allow"}, "m.room.power_levels": _PL, "m.room.aliases": set(),
        "m.room.history_visibility": {"history_visibility"}, "m.room.redaction": set()}),
    (("11", "12"), _V11_TOP, {
        "m.room.member": {"membership", "join_authorised_via_users_server", "third_party_invite"},
        "m.room.create": None,  # all keys
        "m.room.join_rules": {"join_rule", "allow"}, "m.room.power_levels": _PL | {"invite"},
        "m.room.aliases": set(), "m.room.history_visibility": {"history_visibility"},
        "m.room.redaction": {"redacts"}}),
]
EVERY_KEY = ["membership", "join_authorised_via_users_server", "third_party_invite", "creator", "room_version",
             "m.federate", "join_rule", "allow", *sorted(_PL), "invite", "notifications", "aliases",
             "history_visibility", "redacts", "reason", "body", "displayname"]


def test_algorithms_cover_every_room_version():
    assert sorted(v for versions, _, _ in ALGORITHMS for v in versions) == sorted(KNOWN_ROOM_VERSIONS)


@pytest.mark.parametrize("versions, top_level, content_keys", ALGORITHMS, ids=lambda x: "v" + "-".join(x) if isinstance(x, tuple) else "")
def test_every_algorithm(versions, top_level, content_keys):
    content = {k: {"signed": {"token": "t"}, "x": 1} if k == "third_party_invite" else f"v-{k}" for k in EVERY_KEY}
    for version in versions:
        rv = KNOWN_ROOM_VERSIONS[version]
        for event_type, kept in [*content_keys.items(), ("m.room.message", set()), ("m.room.topic", set())]:
            event = {k: "top" for k in _V1_TOP | {"unsigned", "extra", "redacts", "age_ts"}}
            event.update(type=event_type, content=content)
            out = redact(event, rv)
            assert set(out) == top_level, (version, event_type)
            assert set(out["content"]) == (set(content) if kept is None else kept), (version, event_type)
            if event_type == "m.room.member" and "third_party_invite" in out["content"]:
                assert out["content"]["third_party_invite"] == {"signed": {"token": "t"}}


@pytest.mark.parametrize("tpi, kept", [
    ({"signed": {"a": 1}, "display_name": "d"}, {"signed": {"a": 1}}),
    ({"display_name": "d"}, {}),  # stays as an empty object, as Synapse and ruma do
    ({}, {}),
    ("not an object", None),
    ([1], None),
    (None, None),
])
def test_third_party_invite_in_v11(tpi, kept):
    event = ev("m.room.member", {"membership": "invite", "third_party_invite": tpi}, state_key="@c:z")
    content = redact(event, V.V11)["content"]
    assert content.get("third_party_invite") == kept and ("third_party_invite" in content) == (kept is not None)
    assert "third_party_invite" not in redact(event, V.V10)["content"]


def test_flags_not_identifiers_decide():
    event = ev("m.room.power_levels", FULL_PL, state_key="")
    custom_new = dataclasses.replace(V.V10, identifier="org.example.a", updated_redaction_rules=True)
    custom_old = dataclasses.replace(V.V11, identifier="org.example.b", updated_redaction_rules=False)
    assert redact(event, custom_new) == redact(event, V.V11)
    assert redact(event, custom_old)["content"] == redact(event, V.V10)["content"]


def test_malformed_content_redacts_to_empty_object():
    for content in ([1], "x", None, 5):
        assert redact(ev("m.room.member", content), V.V11)["content"] == {}
    assert redact({"type": "m.room.message"}, V.V1) == {"type": "m.room.message", "content": {}}


def test_kept_values_are_not_copied_deeply():
    # Performance: redaction copies the top-level dicts only; kept values are shared.
    event = ev("m.room.power_levels", FULL_PL, state_key="")
    out = redact(event, V.V11)
    assert out["content"]["users"] is FULL_PL["users"] and out["prev_events"] is event["prev_events"]


@given(event_types, json_obj, json_obj, st.sampled_from(sorted(KNOWN_ROOM_VERSIONS)))
def test_redaction_never_mutates_and_only_removes(event_type, content, top, version):
    rv = KNOWN_ROOM_VERSIONS[version]
    event = {**top, "type": event_type, "content": content}
    before = copy.deepcopy(event)
    out = redact(event, rv)
    assert event == before
    assert set(out) <= set(event) | {"content"}
    assert set(out["content"]) <= set(content)
    for key, value in out.items():
        if key != "content":
            assert value == event[key]
