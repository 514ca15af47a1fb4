"""The PDU model: format checks, content and reference hashes, event IDs, v12 room IDs."""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
from pathlib import Path

import pytest
import signedjson.key
import signedjson.sign
from hypothesis import given, settings
from hypothesis import strategies as st

from federation.canonical_json import encode_base64, encode_base64_urlsafe, encode_canonical_json
from federation.events import (
    MAX_PDU_SIZE,
    PDU,
    InvalidEventError,
    add_content_hash,
    build_event,
    check_content_hash,
    check_pdu_format,
    compute_content_hash,
    compute_event_id,
    compute_reference_hash,
)
from federation.redaction import redact
from federation.room_versions import KNOWN_ROOM_VERSIONS, RoomVersions, get_room_version

V = RoomVersions
VECTORS = json.loads((Path(__file__).parents[1] / "data" / "events" / "vectors.json").read_text())

# --- the spec's "Event Signing" vectors (appendices, "Cryptographic Test Vectors") ---------

SPEC_SEED = "YJDBA9Xnr2sVqXD9Vj7XVUnmFZcZrlw8Md7kMW+3XA1"

SPEC_MINIMAL = {
    "auth_events": [], "content": {}, "depth": 3,
    "hashes": {"sha256": "5jM4wQpv6lnBo7CLIghJuHdW+s2CMBJPUOGOC89ncos"},
    "origin": "domain", "origin_server_ts": 1000000, "prev_events": [], "room_id": "!x:domain",
    "sender": "@a:domain",
    "signatures": {"domain": {"ed25519:1": "KxwGjPSDEtvnFgU00fwFz+l6d2pJM6XBIaMEn81SXPTRl16AqLAYqfIReFGZlHi5KLjAWbOoMszkwsQma+lYAg"}},
    "type": "X", "unsigned": {"age_ts": 1000000},
}

SPEC_WITH_CONTENT = {
    "content": {"body": "Here is the message content"}, "event_id": "$0:domain",
    "hashes": {"sha256": "onLKD1bGljeBWQhWZ1kaP9SorVmRQNdN5aM2JYU2n/g"},
    "origin": "domain", "origin_server_ts": 1000000, "type": "m.room.message", "room_id": "!r:domain",
    "sender": "@u:domain",
    "signatures": {"domain": {"ed25519:1": "Wm+VzmOUOz08Ds+0NTWb1d4CZrVsJSikkeRxh6aCcUwu6pNC78FunoD7KNWzqFn241eYHYMGCA5McEiVPdhzBA"}},
    "unsigned": {"age_ts": 1000000},
}


def _spec_key():
    key = signedjson.key.decode_signing_key_base64("ed25519", "1", SPEC_SEED)
    return key, signedjson.key.get_verify_key(key)


@pytest.mark.parametrize("vector", [SPEC_MINIMAL, SPEC_WITH_CONTENT], ids=["minimal", "with-content"])
def test_spec_event_signing_vectors(vector):
    # The content hash covers everything but unsigned, signatures and hashes.
    assert encode_base64(compute_content_hash(vector)) == vector["hashes"]["sha256"]
    assert check_content_hash(vector)
    unhashed = {k: v for k, v in vector.items() if k != "hashes"}
    assert add_content_hash({**unhashed, "signatures": {}})["hashes"] == vector["hashes"]
    # The signature is over our redacted form: signing it again with the spec's key
    # (ed25519 is deterministic) gives the spec's signature, and it verifies.
    key, verify_key = _spec_key()
    redacted = redact(vector, V.V1)
    assert "body" not in json.dumps(redacted)
    signedjson.sign.verify_signed_json(redacted, "domain", verify_key)
    resigned = signedjson.sign.sign_json({**redacted, "signatures": {}}, "domain", key)
    assert resigned["signatures"] == vector["signatures"]


def test_spec_vector_reference_hash_ignores_content_and_unsigned():
    # Redaction drops the message body, so the reference hash (and a v3+ event ID)
    # does not depend on it; the content hash does.
    rv = V.V1
    changed = {**SPEC_WITH_CONTENT, "content": {"body": "other"}, "unsigned": {"age": 9}}
    assert compute_reference_hash(changed, rv) == compute_reference_hash(SPEC_WITH_CONTENT, rv)
    assert compute_content_hash(changed) != compute_content_hash(SPEC_WITH_CONTENT)
    assert not check_content_hash(changed)
    expected = {k: v for k, v in SPEC_WITH_CONTENT.items() if k not in ("signatures", "unsigned")}
    expected["content"] = {}
    assert compute_reference_hash(SPEC_WITH_CONTENT, rv) == hashlib.sha256(encode_canonical_json(expected)).digest()


def test_content_hash_mismatch_detection():
    assert not check_content_hash({**SPEC_MINIMAL, "depth": 4})
    assert not check_content_hash({**SPEC_MINIMAL, "content": {"a": 1}})
    assert not check_content_hash({**SPEC_MINIMAL, "hashes": {"sha256": "!!"}})
    assert not check_content_hash({**SPEC_MINIMAL, "hashes": {}})
    assert not check_content_hash({k: v for k, v in SPEC_MINIMAL.items() if k != "hashes"})
    # What the hash does not cover.
    assert check_content_hash({**SPEC_MINIMAL, "unsigned": {"age": 1}, "signatures": {"x": {}}})


# --- vectors computed by Synapse for every room version (tests/data/events) ---------------


@pytest.mark.parametrize("vector", VECTORS, ids=[f"v{v['room_version']}-{v['event']['type']}-{i}" for i, v in enumerate(VECTORS)])
def test_synapse_vectors(vector):
    rv = get_room_version(vector["room_version"])
    event = vector["event"]
    assert encode_base64(compute_content_hash(event)) == vector["content_hash"]
    assert check_content_hash(event)
    assert compute_event_id(event, rv) == vector["event_id"]
    pdu = PDU.from_pdu_json(event, rv)
    assert pdu.event_id == vector["event_id"]
    assert pdu.room_id == vector["room_id"]
    # A redacted copy (what a server may hand out) has the same ID.
    assert compute_event_id(redact(event, rv), rv) == vector["event_id"]


def test_vectors_cover_every_room_version():
    assert {v["room_version"] for v in VECTORS} == set(KNOWN_ROOM_VERSIONS)


# --- event IDs and room IDs ------------------------------------------------------------------


def _create(rv, sender="@alice:example.org", **content):
    content = {"room_version": rv.identifier, **content}
    if not rv.implicit_room_creator:
        content.setdefault("creator", sender)
    kwargs = {} if rv.event_format.value > 1 else {"event_id": "$create:example.org"}
    room_id = None if rv.room_id_from_create_event else "!room:example.org"
    return build_event(rv, type="m.room.create", sender=sender, room_id=room_id, content=content,
                       state_key="", prev_event_ids=[], auth_event_ids=[], depth=1,
                       origin_server_ts=1_700_000_000_000, **kwargs)


def test_v12_room_id_comes_from_the_create_event():
    create = _create(V.V12)
    pdu = PDU.from_pdu_json(create, V.V12)
    assert "room_id" not in pdu.get_pdu_json()
    digest = compute_reference_hash(create, V.V12)
    assert pdu.event_id == "$" + encode_base64_urlsafe(digest)
    assert pdu.room_id == "!" + encode_base64_urlsafe(digest)
    # A different create event gives a different room.
    other = PDU.from_pdu_json(_create(V.V12, additional_creators=["@bob:example.org"]), V.V12)
    assert other.room_id != pdu.room_id
    msg = build_event(V.V12, type="m.room.message", sender="@alice:example.org", room_id=pdu.room_id,
                      content={"body": "hi"}, prev_event_ids=[pdu.event_id], auth_event_ids=[],
                      depth=2, origin_server_ts=1)
    parsed = PDU.from_pdu_json(msg, V.V12)
    assert parsed.prev_event_ids == (pdu.event_id,) and parsed.room_id == pdu.room_id


def test_v12_create_event_rules():
    create = _create(V.V12)
    with pytest.raises(InvalidEventError, match="must not have a room_id"):
        PDU.from_pdu_json({**create, "room_id": "!x:y"}, V.V12)
    with pytest.raises(InvalidEventError, match="no auth_events or prev_events"):
        PDU.from_pdu_json({**create, "prev_events": ["$p"]}, V.V12)
    with pytest.raises(InvalidEventError, match="no auth_events or prev_events"):
        PDU.from_pdu_json({**create, "auth_events": ["$a"]}, V.V12)
    # Only a create event may lack room_id, and only in v12.
    with pytest.raises(InvalidEventError, match="room_id"):
        PDU.from_pdu_json({k: v for k, v in _msg().items() if k != "room_id"}, V.V12)
    v11_create = {k: v for k, v in _create(V.V11).items() if k != "room_id"}
    with pytest.raises(InvalidEventError, match="room_id"):
        PDU.from_pdu_json(v11_create, V.V11)
    with pytest.raises(InvalidEventError, match="room_id is required"):
        build_event(V.V12, type="m.room.message", sender="@a:x", room_id=None, content={},
                    prev_event_ids=[], auth_event_ids=[], depth=1, origin_server_ts=1)


def test_event_id_formats():
    create = _create(V.V3)
    v3, v4 = compute_event_id(create, V.V3), compute_event_id(create, V.V4)
    digest = compute_reference_hash(create, V.V3)
    assert v3 == "$" + encode_base64(digest) and v4 == "$" + encode_base64_urlsafe(digest)
    assert len(v3) == len(v4) == 44
    assert PDU.from_pdu_json(_create(V.V1), V.V1).event_id == "$create:example.org"
    assert PDU.from_pdu_json(_create(V.V2), V.V2).event_id == "$create:example.org"


def test_v3_event_id_uses_the_standard_alphabet():
    # Find an event whose reference hash has a '+' or '/' in standard base64.
    for depth in range(1, 200):
        e = _msg_v(V.V3, depth=depth)
        digest = compute_reference_hash(e, V.V3)
        std = encode_base64(digest)
        if "+" in std or "/" in std:
            assert compute_event_id(e, V.V3) == "$" + std
            assert "+" not in compute_event_id(e, V.V4) and "/" not in compute_event_id(e, V.V4)
            return
    pytest.fail("no hash with + or / found")


def test_event_id_is_cached_on_the_pdu():
    pdu = PDU.from_pdu_json(_msg(), V.V11)
    assert pdu.event_id == compute_event_id(_msg(), V.V11)
    with pytest.raises(AttributeError):
        pdu.extra = 1
    with pytest.raises(AttributeError, match="read-only"):
        pdu.event_id = "$other"
    with pytest.raises(AttributeError, match="read-only"):
        del pdu.type
    assert pdu.event_id == compute_event_id(_msg(), V.V11) and pdu.type == "m.room.message"


# --- the model ------------------------------------------------------------------------------


def _msg_v(rv, **changes):
    kwargs = {"event_id": "$m:x", "origin": "x"} if rv.event_id_in_event else {}
    e = build_event(rv, type="m.room.message", sender="@a:x", room_id="!r:x", content={"body": "b"},
                    prev_event_ids=["$p:x"], auth_event_ids=["$a:x"], depth=5, origin_server_ts=1, **kwargs)
    e.update(changes)
    return e


def _msg(**changes):
    return _msg_v(V.V11, **changes)


def test_pdu_attributes():
    e = build_event(V.V10, type="m.room.member", sender="@a:x", room_id="!r:x", state_key="@a:x",
                    content={"membership": "join"}, prev_event_ids=["$p1", "$p2"], auth_event_ids=["$a1"],
                    depth=7, origin_server_ts=123, origin="x")
    e["unsigned"] = {"age": 4}
    pdu = PDU.from_pdu_json(e, V.V10)
    assert (pdu.type, pdu.state_key, pdu.sender, pdu.room_id) == ("m.room.member", "@a:x", "@a:x", "!r:x")
    assert (pdu.depth, pdu.origin_server_ts) == (7, 123)
    assert pdu.prev_event_ids == ("$p1", "$p2") and pdu.auth_event_ids == ("$a1",)
    assert pdu.content == {"membership": "join"} and pdu.unsigned == {"age": 4}
    assert pdu.is_state and not PDU.from_pdu_json(_msg(), V.V11).is_state
    assert pdu.redacts is None and pdu.room_version is V.V10
    assert pdu.hashes == e["hashes"] and pdu.signatures == {}
    # get_pdu_json is a copy: changing it does not change the PDU.
    wire = pdu.get_pdu_json()
    assert wire == e
    wire["type"] = "changed"
    assert pdu.get_pdu_json()["type"] == "m.room.member"
    assert "event_id" not in wire  # v3+
    same = PDU.from_pdu_json(copy.deepcopy(e), V.V10)
    assert same == pdu and hash(same) == hash(pdu) and len({same, pdu}) == 1


def test_v1_references_are_pairs():
    e = build_event(V.V1, type="m.room.message", sender="@a:x", room_id="!r:x", content={},
                    prev_event_ids=["$p:x"], auth_event_ids=["$a:x", "$b:x"], depth=2, origin_server_ts=1,
                    event_id="$e:x", origin="x", reference_hashes={"$p:x": "aGFzaA", "$a:x": "b3RoZXI"})
    assert e["prev_events"] == [["$p:x", {"sha256": "aGFzaA"}]]
    assert e["auth_events"] == [["$a:x", {"sha256": "b3RoZXI"}], ["$b:x", {"sha256": ""}]]
    pdu = PDU.from_pdu_json(e, V.V1)
    assert pdu.prev_event_ids == ("$p:x",) and pdu.auth_event_ids == ("$a:x", "$b:x")
    assert pdu.get_pdu_json()["event_id"] == "$e:x" and pdu.event_id == "$e:x"
    with pytest.raises(InvalidEventError, match="pairs"):
        PDU.from_pdu_json({**e, "prev_events": ["$p:x"]}, V.V1)
    with pytest.raises(InvalidEventError, match="pairs"):
        PDU.from_pdu_json({**e, "auth_events": [["$a:x"]]}, V.V1)
    with pytest.raises(InvalidEventError, match="event_id is required"):
        PDU.from_pdu_json({k: v for k, v in e.items() if k != "event_id"}, V.V2)
    with pytest.raises(InvalidEventError, match="need an event_id"):
        build_event(V.V2, type="m.room.message", sender="@a:x", room_id="!r:x", content={},
                    prev_event_ids=[], auth_event_ids=[], depth=1, origin_server_ts=1)


def test_redacts_field_moves_into_content_in_v11():
    for rv, where in ((V.V10, "top"), (V.V11, "content"), (V.V12, "content")):
        e = build_event(rv, type="m.room.redaction", sender="@a:x", room_id="!r:x", content={"reason": "r"},
                        redacts="$target", prev_event_ids=["$p"], auth_event_ids=["$a"], depth=5,
                        origin_server_ts=1)
        assert ("redacts" in e) == (where == "top") and ("redacts" in e["content"]) == (where == "content")
        assert PDU.from_pdu_json(e, rv).redacts == "$target"
    # v11: a top-level redacts is not signed once redacted, so it is not trusted.
    top_only = _msg(type="m.room.redaction", redacts="$t", content={})
    assert PDU.from_pdu_json(top_only, V.V11).redacts is None
    assert PDU.from_pdu_json({**_msg_v(V.V10), "redacts": "$t"}, V.V10).redacts is None  # not a redaction


def test_build_event_origin_and_hash():
    for rv in (V.V10, V.V11):
        e = build_event(rv, type="m.room.message", sender="@a:x", room_id="!r:x", content={"b": 1},
                        prev_event_ids=[], auth_event_ids=[], depth=1, origin_server_ts=1, origin="x")
        assert ("origin" in e) == (not rv.updated_redaction_rules)
        assert check_content_hash(e) and e["signatures"] == {}
    content = {"body": "x"}
    e = build_event(V.V11, type="m.room.message", sender="@a:x", room_id="!r:x", content=content,
                    prev_event_ids=[], auth_event_ids=[], depth=1, origin_server_ts=1, redacts=None)
    e["content"]["extra"] = 1
    assert content == {"body": "x"}  # the caller's content is not shared


def test_built_and_signed_event_verifies():
    key = signedjson.key.generate_signing_key("k")
    for rv in KNOWN_ROOM_VERSIONS.values():
        e = _create(rv) if rv.room_id_from_create_event else _msg_v(rv)
        signed = signedjson.sign.sign_json(redact(e, rv), "x", key)
        e["signatures"] = signed["signatures"]
        pdu = PDU.from_pdu_json(e, rv)
        signedjson.sign.verify_signed_json(redact(pdu.get_pdu_json(), rv), "x", signedjson.key.get_verify_key(key))
        assert check_content_hash(pdu.get_pdu_json())
        # Signatures do not change the event ID.
        assert pdu.event_id == compute_event_id({**e, "signatures": {}}, rv)


def test_flags_not_identifiers_decide():
    custom = dataclasses.replace(V.V12, identifier="org.example.custom")
    create = _create(custom)
    assert PDU.from_pdu_json(create, custom).room_id == PDU.from_pdu_json(create, V.V12).room_id
    legacy = dataclasses.replace(V.V3, identifier="org.example.legacy")
    assert compute_event_id(_msg_v(V.V3), legacy) == compute_event_id(_msg_v(V.V3), V.V3)


# --- format checks: one failure per rule ----------------------------------------------------


@pytest.mark.parametrize("changes, fragment", [
    ({"type": 5}, "type must be a string"),
    ({"sender": 5}, "sender must be a string"),
    ({"sender": "nobody"}, "sender must be a user ID"),
    ({"room_id": "room"}, "room_id"),
    ({"room_id": 7}, "room_id"),
    ({"depth": -1}, "depth"),
    ({"depth": True}, "depth"),
    ({"depth": "5"}, "depth"),
    ({"depth": 2**53}, "depth must be an integer from 0 to 2\\^53 - 1"),
    ({"origin_server_ts": "now"}, "origin_server_ts"),
    ({"origin_server_ts": False}, "origin_server_ts"),
    ({"content": []}, "content must be an object"),
    ({"hashes": {}}, "hashes.sha256"),
    ({"hashes": "abc"}, "hashes.sha256"),
    ({"signatures": {"x": "sig"}}, "signatures"),
    ({"signatures": {"x": {"ed25519:1": 5}}}, "signatures"),
    ({"signatures": []}, "signatures"),
    ({"unsigned": []}, "unsigned must be an object"),
    ({"prev_events": "$p"}, "prev_events must be a list"),
    ({"auth_events": {"$a": 1}}, "auth_events must be a list"),
    ({"prev_events": [["$p", {}]]}, "prev_events entries must be event IDs"),
    ({"auth_events": ["a"]}, "auth_events entries must be event IDs"),
    ({"prev_events": [f"$p{i}" for i in range(21)]}, "at most 20"),
    ({"auth_events": [f"$a{i}" for i in range(11)]}, "at most 10"),
    ({"state_key": 1}, "state_key must be a string"),
    ({"content": {"n": 1.5}}, "canonical JSON"),
    ({"content": {"n": 2**60}}, "canonical JSON"),
    ({"content": {"n": -(2**53)}}, "canonical JSON"),
    ({"content": {"n": [1, {"m": 1.0}]}}, "canonical JSON"),
    ({"content": {"body": "x" * 70000}}, "limit is 65536"),
    ({"sender": "@" + "a" * 300 + ":x"}, "sender is longer than 255"),
    ({"room_id": "!" + "r" * 300 + ":x"}, "room_id is longer than 255"),
    ({"type": "t" * 256}, "type is longer than 255"),
    ({"state_key": "é" * 128}, "state_key is longer than 255 bytes"),  # 128 characters, 256 bytes
    ({"type": "m.room.redaction", "content": {"redacts": 5}}, "redacts must be an event ID"),
])
def test_format_failures(changes, fragment):
    with pytest.raises(InvalidEventError, match=fragment):
        PDU.from_pdu_json(_msg(**changes), V.V11)


def test_format_limits_are_inclusive():
    assert PDU.from_pdu_json(_msg(prev_events=[f"$p{i}" for i in range(20)]), V.V11)
    assert PDU.from_pdu_json(_msg(auth_events=[f"$a{i}" for i in range(10)]), V.V11)
    assert PDU.from_pdu_json(_msg(state_key="é" * 127 + "a"), V.V11)  # 255 bytes
    assert PDU.from_pdu_json(_msg(type="t" * 255, depth=2**53 - 1), V.V11)
    # Exactly at the size limit is allowed, one byte more is not.
    e = _msg(content={"body": ""})
    e["content"]["body"] = "x" * (MAX_PDU_SIZE - len(encode_canonical_json(e)))
    assert len(encode_canonical_json(e)) == MAX_PDU_SIZE
    check_pdu_format(e, V.V11)
    e["content"]["body"] += "x"
    with pytest.raises(InvalidEventError, match="65537 bytes"):
        check_pdu_format(e, V.V11)


def test_size_counts_signatures_and_unsigned():
    e = _msg(content={"body": "x" * (MAX_PDU_SIZE - 1000)})
    check_pdu_format(e, V.V11)
    with pytest.raises(InvalidEventError, match="limit is 65536"):
        check_pdu_format({**e, "signatures": {"x": {"ed25519:1": "s" * 2000}}}, V.V11)


def test_missing_keys():
    for key in ("auth_events", "content", "depth", "hashes", "origin_server_ts", "prev_events", "sender",
                "signatures", "type"):
        e = _msg()
        del e[key]
        with pytest.raises(InvalidEventError, match=key):
            PDU.from_pdu_json(e, V.V11)
    with pytest.raises(InvalidEventError, match="JSON object"):
        PDU.from_pdu_json([], V.V11)


def test_rules_before_room_version_6():
    # Floats and large integers were allowed before room version 6; depth went to 2^63 - 1.
    assert PDU.from_pdu_json(_msg_v(V.V5, content={"n": 1.5, "big": 2**60}), V.V5).content["n"] == 1.5
    assert PDU.from_pdu_json(_msg_v(V.V5, depth=2**60), V.V5).depth == 2**60
    with pytest.raises(InvalidEventError, match="2\\^63 - 1"):
        PDU.from_pdu_json(_msg_v(V.V5, depth=2**63), V.V5)
    # An integral float is written as an integer (appendices, canonical JSON), so it
    # hashes like the integer.
    assert compute_event_id(_msg_v(V.V5, depth=5.0), V.V5) == compute_event_id(_msg_v(V.V5, depth=5), V.V5)


# --- properties -----------------------------------------------------------------------------

json_leaf = st.none() | st.booleans() | st.integers(-(2**53) + 1, 2**53 - 1) | st.text(max_size=6)
json_value = st.recursive(json_leaf, lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=5), c, max_size=3),
                          max_leaves=10)
event_types = st.sampled_from(["m.room.member", "m.room.create", "m.room.join_rules", "m.room.power_levels",
                               "m.room.message", "m.room.redaction", "m.room.aliases"])


@settings(max_examples=150)
@given(st.dictionaries(st.text(max_size=6), json_value, max_size=5), st.integers(0, 2**53 - 1), event_types,
       st.sampled_from(sorted(KNOWN_ROOM_VERSIONS)), st.randoms(use_true_random=False), st.integers(0, 4))
def test_event_id_stable_under_reserialisation(content, depth, type_, version, rnd, indent):
    rv = KNOWN_ROOM_VERSIONS[version]
    e = _create(rv) if rv.room_id_from_create_event and type_ == "m.room.create" else _msg_v(rv, type=type_)
    e.update(content=content, depth=depth)
    first = compute_event_id(e, rv)
    items = list(e.items())
    rnd.shuffle(items)
    reordered = json.loads(json.dumps(dict(items), indent=indent or None, ensure_ascii=bool(indent % 2)))
    assert compute_event_id(reordered, rv) == first
    # unsigned and signatures do not change the ID; redaction does not either.
    assert compute_event_id({**e, "unsigned": {"age": 1}, "signatures": {"s": {"k": "v"}}}, rv) == first
    assert compute_event_id(redact(e, rv), rv) == first
    assert PDU.from_pdu_json(e, rv).event_id == first


@given(st.dictionaries(st.text(max_size=6), json_value, max_size=5))
def test_content_hash_changes_with_content(content):
    e = add_content_hash(_msg(content=content))
    assert check_content_hash(e)
    assert not check_content_hash({**e, "content": {**content, "\x00extra": 1}})


def test_redacted_pdu_keeps_its_id_and_records_the_redaction():
    e = build_event(V.V11, type="m.room.member", sender="@a:x", room_id="!r:x", state_key="@a:x",
                    content={"membership": "join", "displayname": "Alice"}, prev_event_ids=["$p"],
                    auth_event_ids=["$a"], depth=3, origin_server_ts=1)
    e["unsigned"] = {"age_ts": 5, "transaction_id": "t"}
    pdu = PDU.from_pdu_json(e, V.V11)
    because = {"event_id": "$r", "type": "m.room.redaction", "content": {"redacts": pdu.event_id}}
    red = pdu.redacted(because)
    assert red.event_id == pdu.event_id == compute_event_id(red.get_pdu_json(), V.V11)
    assert red.content == {"membership": "join"} and red.state_key == "@a:x"
    assert red.unsigned == {"age_ts": 5, "redacted_because": because}
    assert pdu.content["displayname"] == "Alice"  # the original is untouched
    assert not check_content_hash(red.get_pdu_json())  # the hash covers the full content
    # v12 create: the derived room ID survives; v10 redaction: top-level redacts is dropped.
    create = PDU.from_pdu_json(_create(V.V12), V.V12)
    assert create.redacted().room_id == create.room_id
    r10 = build_event(V.V10, type="m.room.redaction", sender="@a:x", room_id="!r:x", content={}, redacts="$t",
                      prev_event_ids=[], auth_event_ids=[], depth=2, origin_server_ts=1)
    assert PDU.from_pdu_json(r10, V.V10).redacted().redacts is None
    r11 = build_event(V.V11, type="m.room.redaction", sender="@a:x", room_id="!r:x", content={}, redacts="$t",
                      prev_event_ids=[], auth_event_ids=[], depth=2, origin_server_ts=1)
    assert PDU.from_pdu_json(r11, V.V11).redacted().redacts == "$t"
