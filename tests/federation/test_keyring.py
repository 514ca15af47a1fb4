"""federation.keyring: key responses, notary answers, validity windows, which keys
events and requests need."""

from __future__ import annotations

import copy

import pytest

from federation.keyring import (
    KeyRequest,
    KeyResponseError,
    ServerKey,
    check_notary_response,
    effective_valid_until,
    key_request_for_x_matrix,
    key_requests_for_event,
    merge_key_requests,
    notary_query_body,
    parse_key_response,
    satisfies,
    valid_server_name,
)
from federation.room_versions import RoomVersions
from federation.signing import (
    MAX_KEY_VALIDITY_MS,
    encode_verify_key,
    generate_signing_key,
    parse_x_matrix_authorization,
    build_x_matrix_authorization,
    sign_event,
    sign_json,
    verify_event_signatures,
)

DAY = 24 * 3600 * 1000
NOW = 1_700_000_000_000


def key_doc(server: str, key, *, valid_until: int = NOW + DAY, old: dict | None = None, signers=None) -> dict:
    doc = {"server_name": server, "valid_until_ts": valid_until,
           "verify_keys": {key.key_id: {"key": encode_verify_key(key.verify_key)}}}
    if old is not None:
        doc["old_verify_keys"] = old
    for signer in signers or [key]:
        doc = sign_json(doc, server, signer)
    return doc


# --- parse_key_response


def test_parse_key_response_returns_current_and_old_keys():
    key, old = generate_signing_key("a1"), generate_signing_key("a0")
    doc = key_doc("a.test", key, old={old.key_id: {"key": encode_verify_key(old.verify_key), "expired_ts": NOW - DAY}})
    keys = parse_key_response(doc, "a.test", fetched_ts=NOW)
    assert keys == [
        ServerKey("a.test", key.key_id, encode_verify_key(key.verify_key), NOW + DAY, None, NOW),
        ServerKey("a.test", old.key_id, encode_verify_key(old.verify_key), NOW - DAY, NOW - DAY, NOW),
    ]
    assert keys[0].known_key().verify_key == key.verify_key


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d.update(server_name="b.test"), "not 'a.test'"),
    (lambda d: d.update(valid_until_ts="soon"), "valid_until_ts must be an integer"),
    (lambda d: d.update(valid_until_ts=True), "valid_until_ts must be an integer"),
    (lambda d: d.update(verify_keys={}), "verify_keys must be a non-empty object"),
    (lambda d: d.update(verify_keys={"curve:1": {"key": "abc"}}), "no ed25519 key"),
    (lambda d: d["verify_keys"]["ed25519:a1"].pop("key"), "has no key"),
    (lambda d: d.pop("signatures"), "not signed by ed25519:a1"),
    (lambda d: d.update(valid_until_ts=d["valid_until_ts"] + 1), "not signed by ed25519:a1"),
    (lambda d: d["signatures"]["a.test"].update({"ed25519:a1": "AAAA"}), "not signed by ed25519:a1"),
])
def test_parse_key_response_refuses(mutate, message):
    doc = key_doc("a.test", generate_signing_key("a1"))
    mutate(doc)
    with pytest.raises(KeyResponseError, match=message):
        parse_key_response(doc, "a.test")


def test_parse_key_response_refuses_non_object():
    with pytest.raises(KeyResponseError, match="not a JSON object"):
        parse_key_response(["x"], "a.test")


def test_every_current_key_must_sign_and_malformed_old_keys_are_skipped():
    k1, k2 = generate_signing_key("k1"), generate_signing_key("k2")
    doc = {"server_name": "a.test", "valid_until_ts": NOW,
           "verify_keys": {k.key_id: {"key": encode_verify_key(k.verify_key)} for k in (k1, k2)},
           "old_verify_keys": {"ed25519:bad": {"key": "!!!", "expired_ts": 1},
                               "ed25519:nots": {"key": encode_verify_key(k1.verify_key)},
                               "ed25519:k1": {"key": encode_verify_key(k2.verify_key), "expired_ts": 1}}}
    with pytest.raises(KeyResponseError, match="ed25519:k2"):
        parse_key_response(sign_json(copy.deepcopy(doc), "a.test", k1), "a.test")
    both = sign_json(sign_json(doc, "a.test", k1), "a.test", k2)
    keys = parse_key_response(both, "a.test")
    # Only the two current keys: the old entries are malformed or shadow a current key.
    assert sorted(k.key_id for k in keys) == ["ed25519:k1", "ed25519:k2"]
    assert {k.verify_key for k in keys if k.key_id == "ed25519:k1"} == {encode_verify_key(k1.verify_key)}


# --- Validity (room v5+: the lesser of valid_until_ts and seven days after fetching)


def test_effective_validity_is_capped_at_seven_days_after_fetching():
    far = ServerKey("a.test", "ed25519:a", "k", NOW + 365 * DAY, None, NOW)
    assert effective_valid_until(far) == NOW + MAX_KEY_VALIDITY_MS == NOW + 7 * DAY
    near = ServerKey("a.test", "ed25519:a", "k", NOW + DAY, None, NOW)
    assert effective_valid_until(near) == NOW + DAY
    unknown_fetch = ServerKey("a.test", "ed25519:a", "k", NOW + 365 * DAY, None, None)
    assert effective_valid_until(unknown_fetch) == NOW + 365 * DAY
    assert satisfies(far, NOW + 7 * DAY) and not satisfies(far, NOW + 7 * DAY + 1)
    assert satisfies(near, 0)


def test_key_request_answered_by():
    current = ServerKey("a.test", "ed25519:a", "k", NOW + DAY, None, NOW)
    old = ServerKey("a.test", "ed25519:o", "k", NOW - DAY, NOW - DAY, NOW)
    assert KeyRequest("a.test", "ed25519:a", NOW).answered_by(current)
    assert not KeyRequest("a.test", "ed25519:a", NOW + 2 * DAY).answered_by(current)
    assert not KeyRequest("b.test", "ed25519:a", 0).answered_by(current)
    assert KeyRequest("a.test", "ed25519:o", 0).answered_by(old)
    assert not KeyRequest("a.test", "ed25519:o", NOW).answered_by(old)
    # "Any key": a current one only.
    assert KeyRequest("a.test", None, NOW).answered_by(current)
    assert not KeyRequest("a.test", None, 0).answered_by(old)


def test_merge_and_notary_query_body():
    merged = merge_key_requests([KeyRequest("a.test", "ed25519:1", 5), KeyRequest("a.test", "ed25519:1", 9),
                                 KeyRequest("a.test", "ed25519:1", 2), KeyRequest("b.test", None, 3)])
    assert merged == [KeyRequest("a.test", "ed25519:1", 9), KeyRequest("b.test", None, 3)]
    assert notary_query_body(merged) == {"server_keys": {
        "a.test": {"ed25519:1": {"minimum_valid_until_ts": 9}}, "b.test": {}}}


# --- Which keys an event or request needs


def _event(room_version, sender="@u:a.test", **extra):
    ev = {"type": "m.room.message", "room_id": "!r:a.test", "sender": sender, "origin_server_ts": NOW,
          "content": {"body": "hi"}, "depth": 3, "prev_events": [], "auth_events": [], **extra}
    if room_version.event_id_in_event:
        ev.setdefault("event_id", "$e:c.test")
    return ev


def test_event_needs_sender_key_valid_at_origin_server_ts_from_v5():
    key = generate_signing_key("s1")
    for rv, minimum in ((RoomVersions.V4, 0), (RoomVersions.V5, NOW), (RoomVersions.V12, NOW)):
        signed = sign_event(_event(rv), "a.test", key, room_version=rv)
        assert key_requests_for_event(signed, rv) == [KeyRequest("a.test", "ed25519:s1", minimum)]


def test_v1_event_needs_event_id_server_and_restricted_join_needs_authoriser():
    a, c = generate_signing_key("a"), generate_signing_key("c")
    rv = RoomVersions.V1
    ev = sign_event(sign_event(_event(rv), "a.test", a, room_version=rv), "c.test", c, room_version=rv)
    assert key_requests_for_event(ev, rv) == [KeyRequest("a.test", "ed25519:a", 0), KeyRequest("c.test", "ed25519:c", 0)]

    rv = RoomVersions.V10
    join = _event(rv, type="m.room.member", state_key="@u:a.test",
                  content={"membership": "join", "join_authorised_via_users_server": "@x:c.test"})
    join = sign_event(join, "a.test", a, room_version=rv)
    # c.test did not sign: nothing to fetch for it, and verification then fails.
    assert key_requests_for_event(join, rv) == [KeyRequest("a.test", "ed25519:a", NOW)]
    join = sign_event(join, "c.test", c, room_version=rv)
    assert key_requests_for_event(join, rv) == [KeyRequest("a.test", "ed25519:a", NOW),
                                                KeyRequest("c.test", "ed25519:c", NOW)]


def test_keys_of_servers_that_need_not_sign_are_not_requested():
    a, z = generate_signing_key("a"), generate_signing_key("z")
    rv = RoomVersions.V11
    ev = sign_event(sign_event(_event(rv), "a.test", a, room_version=rv), "z.test", z, room_version=rv)
    ev["signatures"]["a.test"]["curve25519:x"] = "AAAA"
    assert key_requests_for_event(ev, rv) == [KeyRequest("a.test", "ed25519:a", NOW)]
    unsigned = dict(ev)
    unsigned.pop("signatures")
    assert key_requests_for_event(unsigned, rv) == []


def test_requested_keys_verify_the_event_and_validity_is_enforced():
    key = generate_signing_key("s1")
    rv = RoomVersions.V5
    ev = sign_event(_event(rv), "a.test", key, room_version=rv)
    (req,) = key_requests_for_event(ev, rv)
    good = ServerKey("a.test", req.key_id, encode_verify_key(key.verify_key), NOW, None, NOW - DAY)
    expired = ServerKey("a.test", req.key_id, encode_verify_key(key.verify_key), NOW - 1, None, NOW - DAY)
    stale = ServerKey("a.test", req.key_id, encode_verify_key(key.verify_key), NOW + DAY, None, NOW - 8 * DAY)
    assert req.answered_by(good) and not req.answered_by(expired) and not req.answered_by(stale)
    verify_event_signatures(ev, rv, lambda s, k: good.known_key())
    for bad in (expired, stale):
        with pytest.raises(Exception, match="no known, valid key"):
            verify_event_signatures(ev, rv, lambda s, k, bad=bad: bad.known_key())


def test_x_matrix_request_needs_a_key_valid_now():
    key = generate_signing_key("r")
    header = build_x_matrix_authorization("GET", "/x", "a.test", "b.test", None, key)
    assert key_request_for_x_matrix(parse_x_matrix_authorization(header), NOW) == KeyRequest("a.test", "ed25519:r", NOW)


# --- Notary answers


def test_check_notary_response():
    notary, target, other = generate_signing_key("n"), generate_signing_key("t"), generate_signing_key("o")
    notary_keys = {notary.key_id: encode_verify_key(notary.verify_key)}
    good = sign_json(key_doc("t.test", target), "notary.test", notary)
    unsigned_by_notary = key_doc("t.test", target)
    wrong_notary_key = sign_json(key_doc("t.test", target), "notary.test", other)
    forged_target = sign_json(key_doc("t.test", target, signers=[other]), "notary.test", notary)
    not_asked = sign_json(key_doc("o.test", other), "notary.test", notary)
    answer = {"server_keys": [good, unsigned_by_notary, wrong_notary_key, forged_target, not_asked, "junk"]}

    ok, problems = check_notary_response(answer, "notary.test", notary_keys, {"t.test"}, fetched_ts=NOW)
    assert [r.doc for r in ok] == [good]
    assert ok[0].keys[0].fetched_ts == NOW and ok[0].has(KeyRequest("t.test", "ed25519:t", NOW))
    assert len(problems) == 5
    assert sum("without a valid signature" in p for p in problems) == 2
    assert sum("did not ask for" in p for p in problems) == 2
    assert sum("bad keys of t.test" in p for p in problems) == 1

    # Without configured notary keys only the self-signatures are checked.
    ok, _ = check_notary_response(answer, "notary.test", None, {"t.test"})
    assert [r.doc for r in ok] == [good, unsigned_by_notary, wrong_notary_key]
    assert check_notary_response({"server_keys": {}}, "n", None, []) == ([], ["answer of n has no server_keys list"])


def test_valid_server_name():
    assert valid_server_name("example.org:8448") and valid_server_name("[::1]:80")
    assert not valid_server_name("a/../b") and not valid_server_name("")
