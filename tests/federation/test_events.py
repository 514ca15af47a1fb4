"""The PDU model: format checks, content and reference hashes, event IDs, v12 room IDs."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from federation.events import (
    PDU,
    InvalidEventError,
    build_event,
    check_content_hash,
    compute_content_hash,
    compute_event_id,
)
from federation.canonical_json import encode_base64
from federation.room_versions import RoomVersions

V = RoomVersions

# The spec's minimal event-signing vector (appendices, "Event Signing").
SPEC_MINIMAL = {
    "auth_events": [], "content": {}, "depth": 3,
    "hashes": {"sha256": "5jM4wQpv6lnBo7CLIghJuHdW+s2CMBJPUOGOC89ncos"},
    "origin": "domain", "origin_server_ts": 1000000, "prev_events": [], "room_id": "!x:domain",
    "sender": "@a:domain", "signatures": {}, "type": "X", "unsigned": {"age_ts": 1000000},
}


def test_spec_content_hash_vector():
    assert encode_base64(compute_content_hash(SPEC_MINIMAL)) == SPEC_MINIMAL["hashes"]["sha256"]
    assert check_content_hash(SPEC_MINIMAL)
    assert not check_content_hash({**SPEC_MINIMAL, "depth": 4})
    assert not check_content_hash({**SPEC_MINIMAL, "hashes": {"sha256": "!!"}})


def _create(rv, sender="@alice:example.org"):
    content = {"room_version": rv.identifier}
    if not rv.implicit_room_creator:
        content["creator"] = sender
    kwargs = {} if rv.event_format.value > 1 else {"event_id": "$create:example.org"}
    room_id = None if rv.room_id_from_create_event else "!room:example.org"
    return build_event(rv, type="m.room.create", sender=sender, room_id=room_id, content=content,
                       state_key="", prev_event_ids=[], auth_event_ids=[], depth=1,
                       origin_server_ts=1_700_000_000_000, **kwargs)


def test_v12_room_id_comes_from_the_create_event():
    pdu = PDU.from_pdu_json(_create(V.V12), V.V12)
    assert "room_id" not in pdu.get_pdu_json()
    assert pdu.room_id == "!" + pdu.event_id[1:]
    assert "+" not in pdu.event_id and "/" not in pdu.event_id  # URL-safe alphabet
    msg = build_event(V.V12, type="m.room.message", sender="@alice:example.org", room_id=pdu.room_id,
                      content={"body": "hi"}, prev_event_ids=[pdu.event_id], auth_event_ids=[],
                      depth=2, origin_server_ts=1)
    assert PDU.from_pdu_json(msg, V.V12).prev_event_ids == (pdu.event_id,)


def test_event_id_formats():
    v3 = compute_event_id(_create(V.V3), V.V3)
    v4 = compute_event_id(_create(V.V4), V.V4)
    assert v3.startswith("$") and len(v3) == 44 and v4.startswith("$") and len(v4) == 44
    assert PDU.from_pdu_json(_create(V.V1), V.V1).event_id == "$create:example.org"


def test_redaction_event_redacts_field_moves_in_v11():
    for rv, where in ((V.V10, "top"), (V.V11, "content")):
        e = build_event(rv, type="m.room.redaction", sender="@a:x", room_id="!r:x", content={},
                        redacts="$target", prev_event_ids=["$p"], auth_event_ids=["$a"], depth=5,
                        origin_server_ts=1)
        assert ("redacts" in e) == (where == "top") and ("redacts" in e["content"]) == (where == "content")
        assert PDU.from_pdu_json(e, rv).redacts == "$target"


def _msg(**changes):
    e = build_event(V.V11, type="m.room.message", sender="@a:x", room_id="!r:x", content={"body": "b"},
                    prev_event_ids=["$p"], auth_event_ids=["$a"], depth=5, origin_server_ts=1)
    e.update(changes)
    return e


@pytest.mark.parametrize("changes, fragment", [
    ({"type": 5}, "type must be a string"),
    ({"sender": "nobody"}, "sender must be a user ID"),
    ({"room_id": "room"}, "room_id"),
    ({"depth": -1}, "depth"),
    ({"depth": True}, "depth"),
    ({"origin_server_ts": "now"}, "origin_server_ts"),
    ({"content": []}, "content must be an object"),
    ({"hashes": {}}, "hashes.sha256"),
    ({"signatures": {"x": "sig"}}, "signatures"),
    ({"prev_events": "$p"}, "prev_events must be a list"),
    ({"prev_events": [["$p", {}]]}, "prev_events entries must be event IDs"),
    ({"prev_events": [f"$p{i}" for i in range(21)]}, "at most 20"),
    ({"auth_events": [f"$a{i}" for i in range(11)]}, "at most 10"),
    ({"state_key": 1}, "state_key must be a string"),
    ({"content": {"n": 1.5}}, "canonical JSON"),
    ({"content": {"n": 2**60}}, "canonical JSON"),
    ({"content": {"body": "x" * 70000}}, "limit is 65536"),
    ({"sender": "@" + "a" * 300 + ":x"}, "longer than 255"),
])
def test_format_failures(changes, fragment):
    with pytest.raises(InvalidEventError, match=fragment):
        PDU.from_pdu_json(_msg(**changes), V.V11)


def test_missing_keys_and_v12_create_rules():
    for key in ("auth_events", "content", "depth", "hashes", "origin_server_ts", "prev_events", "sender",
                "signatures", "type"):
        e = _msg()
        del e[key]
        with pytest.raises(InvalidEventError, match=key):
            PDU.from_pdu_json(e, V.V11)
    create = _create(V.V12)
    with pytest.raises(InvalidEventError, match="must not have a room_id"):
        PDU.from_pdu_json({**create, "room_id": "!x:y"}, V.V12)
    with pytest.raises(InvalidEventError, match="room_id"):
        PDU.from_pdu_json({k: v for k, v in _msg().items() if k != "room_id"}, V.V12)
    # Floats were allowed before room version 6.
    assert PDU.from_pdu_json(_msg(content={"n": 1.5}), V.V5).content == {"n": 1.5}


@given(st.dictionaries(st.text(max_size=6), st.integers(-(2**53) + 1, 2**53 - 1) | st.text(max_size=6), max_size=5),
       st.integers(0, 1000))
def test_event_id_stable_under_reserialisation(content, depth):
    e = _msg(content=content, depth=depth)
    first = compute_event_id(e, V.V11)
    reordered = json.loads(json.dumps(dict(reversed(list(e.items()))), indent=3))
    assert compute_event_id(reordered, V.V11) == first
    # unsigned and signatures do not change the ID.
    assert compute_event_id({**e, "unsigned": {"age": 1}, "signatures": {"s": {"k": "v"}}}, V.V11) == first
