"""Signing: the spec's test vectors, cross-checks with signedjson, X-Matrix parsing."""

from __future__ import annotations

import copy

import nacl.signing
import pytest
import signedjson.key
import signedjson.sign

from federation.canonical_json import encode_base64
from federation.room_versions import RoomVersions
from federation.signing import (
    MAX_KEY_VALIDITY_MS,
    POLICY_SERVER_KEY_ID,
    KnownKey,
    ServerSigningKey,
    SignatureError,
    XMatrixAuth,
    XMatrixParseError,
    add_content_hash,
    build_x_matrix_authorization,
    check_content_hash,
    compute_content_hash,
    decode_verify_key,
    encode_verify_key,
    format_signing_keys,
    generate_signing_key,
    key_valid_at,
    parse_signing_keys,
    parse_x_matrix_authorization,
    quote_path_segment,
    servers_that_must_sign,
    sign_event,
    sign_json,
    signing_key_from_seed,
    verify_event_signatures,
    verify_json_signature,
    verify_policy_server_signature,
    verify_request,
)

# https://spec.matrix.org/latest/appendices/#cryptographic-test-vectors
SEED = "YJDBA9Xnr2sVqXD9Vj7XVUnmFZcZrlw8Md7kMW+3XA1"
KEY = signing_key_from_seed("1", SEED)
OTHER = signing_key_from_seed("2", bytes(range(32)))


def keys_for_table(table):
    return lambda server, key_id: table.get((server, key_id))


# --- the key file


def test_key_file_round_trip():
    k = generate_signing_key("a_bcDE")
    text = format_signing_keys([k, KEY])
    assert text.splitlines()[0].startswith("ed25519 a_bcDE ")
    parsed = parse_signing_keys(text)
    assert [p.key_id for p in parsed] == ["ed25519:a_bcDE", "ed25519:1"]
    assert parsed[0].seed == k.seed
    assert bytes(parsed[1].verify_key) == bytes(KEY.verify_key)


def test_key_file_matches_synapse_format():
    # Synapse writes "<alg> <version> <unpadded base64 seed>\n" via signedjson.
    sj = signedjson.key.decode_signing_key_base64("ed25519", "1", SEED)
    import io

    buf = io.StringIO()
    signedjson.key.write_signing_keys(buf, [sj])
    assert format_signing_keys([KEY]) == buf.getvalue()
    assert parse_signing_keys(buf.getvalue())[0].seed == bytes(sj)


def test_key_file_ignores_blank_and_comment_lines():
    text = "\n# my key\n" + format_signing_keys([KEY]) + "\n"
    assert [k.key_id for k in parse_signing_keys(text)] == ["ed25519:1"]


def test_key_attributes():
    assert KEY.alg == "ed25519"
    assert KEY.version == "1"
    assert KEY.key_id == "ed25519:1"
    assert isinstance(KEY.verify_key, nacl.signing.VerifyKey)
    # The public key of the spec seed, as signedjson computes it.
    sj = signedjson.key.decode_signing_key_base64("ed25519", "1", SEED)
    assert encode_verify_key(KEY.verify_key) == signedjson.key.encode_verify_key_base64(
        signedjson.key.get_verify_key(sj)
    )
    assert bytes(decode_verify_key(encode_verify_key(KEY.verify_key))) == bytes(KEY.verify_key)


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("ed25519 1\n", "line 1: expected"),
        ("\ned25519 1 AAAA extra\n", "line 2: expected"),
        ("rsa 1 " + SEED + "\n", "line 1: unsupported key algorithm 'rsa'"),
        ("ed25519 1 !!!notbase64\n", "line 1: invalid base64"),
        ("ed25519 1 AAAA\n", "line 1: an ed25519 seed is 32 bytes, got 3"),
        ("ed25519 bad:version " + SEED + "\n", "line 1: key version"),
    ],
)
def test_key_file_errors_name_the_line(text, fragment):
    with pytest.raises(ValueError, match=fragment):
        parse_signing_keys(text)


def test_generate_rejects_bad_version():
    with pytest.raises(ValueError):
        generate_signing_key("")
    with pytest.raises(ValueError):
        generate_signing_key("a b")


# --- JSON signing: the spec vectors


def test_sign_empty_object_vector():
    assert sign_json({}, "domain", KEY) == {
        "signatures": {
            "domain": {
                "ed25519:1": "K8280/U9SSy9IVtjBuVeLr+HpOB4BQFWbg+UZaADMtTdGYI7Geitb76LTrr5QV/7Xg4ahLwYGYZzuHGZKM5ZAQ"
            }
        }
    }


def test_sign_object_with_data_vector():
    assert sign_json({"one": 1, "two": "Two"}, "domain", KEY) == {
        "one": 1,
        "signatures": {
            "domain": {
                "ed25519:1": "KqmLSbO39/Bzb0QIYE82zqLwsA+PDzYIpIRA2sRQ4sL53+sN6/fpNSoqE7BP7vBZhG6kYdD13EIMJpvhJI+6Bw"
            }
        },
        "two": "Two",
    }


def test_sign_json_does_not_mutate_and_keeps_unsigned_and_other_signatures():
    obj = {"a": 1, "unsigned": {"age": 5}, "signatures": {"other": {"ed25519:x": "sig"}}}
    before = copy.deepcopy(obj)
    signed = sign_json(obj, "domain", KEY)
    assert obj == before
    assert signed["unsigned"] == {"age": 5}
    assert signed["signatures"]["other"] == {"ed25519:x": "sig"}
    # unsigned is not covered: same signature as without it.
    assert signed["signatures"]["domain"] == sign_json({"a": 1}, "domain", KEY)["signatures"]["domain"]


def test_sign_json_agrees_with_signedjson():
    obj = {"b": [1, 2, {"z": "é", "a": None}], "a": True, "unsigned": {"x": 1}}
    ours = sign_json(obj, "example.org", KEY)
    sj_key = signedjson.key.decode_signing_key_base64("ed25519", "1", SEED)
    theirs = signedjson.sign.sign_json(copy.deepcopy(obj), "example.org", sj_key)
    assert ours == theirs
    signedjson.sign.verify_signed_json(ours, "example.org", signedjson.key.get_verify_key(sj_key))


def test_verify_json_signature_accepts_signedjson_output():
    sj_key = signedjson.key.decode_signing_key_base64("ed25519", "1", SEED)
    signed = signedjson.sign.sign_json({"x": "y"}, "example.org", sj_key)
    verify_json_signature(signed, "example.org", "ed25519:1", KEY.verify_key)


@pytest.mark.parametrize(
    "mutate, fragment",
    [
        (lambda o: o.update(one=2), "bad signature"),
        (lambda o: o.pop("signatures"), "no signatures"),
        (lambda o: o["signatures"].pop("domain"), "not signed by domain"),
        (lambda o: o["signatures"]["domain"].pop("ed25519:1"), "with key ed25519:1"),
        (lambda o: o["signatures"]["domain"].update({"ed25519:1": "!!"}), "not valid base64"),
        (lambda o: o["signatures"]["domain"].update({"ed25519:1": "AAAA"}), "not 64"),
        (lambda o: o["signatures"]["domain"].update({"ed25519:1": 5}), "not a string"),
    ],
)
def test_verify_json_signature_failures(mutate, fragment):
    signed = sign_json({"one": 1}, "domain", KEY)
    mutate(signed)
    with pytest.raises(SignatureError, match=fragment):
        verify_json_signature(signed, "domain", "ed25519:1", KEY.verify_key)


def test_verify_json_signature_wrong_key_and_unknown_algorithm():
    signed = sign_json({"one": 1}, "domain", KEY)
    with pytest.raises(SignatureError, match="bad signature"):
        verify_json_signature(signed, "domain", "ed25519:1", OTHER.verify_key)
    with pytest.raises(SignatureError, match="algorithm"):
        verify_json_signature(signed, "domain", "curve25519:1", KEY.verify_key)


def test_unsigned_changes_do_not_break_signature():
    signed = sign_json({"one": 1}, "domain", KEY)
    signed["unsigned"] = {"age": 1234}
    verify_json_signature(signed, "domain", "ed25519:1", KEY.verify_key)


# --- content hash


MINIMAL_EVENT = {
    "room_id": "!x:domain",
    "sender": "@a:domain",
    "origin": "domain",
    "origin_server_ts": 1000000,
    "signatures": {},
    "hashes": {},
    "type": "X",
    "content": {},
    "prev_events": [],
    "auth_events": [],
    "depth": 3,
    "unsigned": {"age_ts": 1000000},
}

MESSAGE_EVENT = {
    "content": {"body": "Here is the message content"},
    "event_id": "$0:domain",
    "origin": "domain",
    "origin_server_ts": 1000000,
    "type": "m.room.message",
    "room_id": "!r:domain",
    "sender": "@u:domain",
    "signatures": {},
    "unsigned": {"age_ts": 1000000},
}


def test_content_hash_vectors():
    assert encode_base64(compute_content_hash(MINIMAL_EVENT)) == "5jM4wQpv6lnBo7CLIghJuHdW+s2CMBJPUOGOC89ncos"
    assert encode_base64(compute_content_hash(MESSAGE_EVENT)) == "onLKD1bGljeBWQhWZ1kaP9SorVmRQNdN5aM2JYU2n/g"


def test_content_hash_ignores_unsigned_signatures_and_hashes():
    a = dict(MINIMAL_EVENT, unsigned={"x": 1}, signatures={"s": {}}, hashes={"sha256": "zz"})
    assert compute_content_hash(a) == compute_content_hash(MINIMAL_EVENT)


def test_add_and_check_content_hash():
    hashed = add_content_hash(MINIMAL_EVENT)
    assert hashed["hashes"] == {"sha256": "5jM4wQpv6lnBo7CLIghJuHdW+s2CMBJPUOGOC89ncos"}
    assert MINIMAL_EVENT["hashes"] == {}  # not mutated
    assert check_content_hash(hashed)
    assert not check_content_hash(dict(hashed, content={"changed": True}))
    assert not check_content_hash(MINIMAL_EVENT)  # no sha256
    assert not check_content_hash(dict(hashed, hashes={"sha256": "!!"}))
    assert not check_content_hash(dict(hashed, hashes="nope"))


# --- key validity (room v5+)

DAY = 24 * 3600 * 1000


@pytest.mark.parametrize(
    "valid_until, ts, now, ok",
    [
        (1000, 1000, None, True),  # valid_until_ts equal to origin_server_ts is enough
        (1000, 1001, None, False),
        (None, 10**15, None, True),  # no published limit
        (10 * DAY, 5 * DAY, 0, True),  # within both limits
        (10 * DAY, 8 * DAY, 0, False),  # capped at now + 7 days
        (10 * DAY, 7 * DAY, 0, True),
        (None, 8 * DAY, 0, False),  # the cap applies without a published limit
        (3 * DAY, 4 * DAY, 0, False),  # the lesser limit is valid_until_ts
    ],
)
def test_key_valid_at(valid_until, ts, now, ok):
    assert key_valid_at(valid_until, ts, now) is ok


def test_max_key_validity_is_seven_days():
    assert MAX_KEY_VALIDITY_MS == 7 * DAY


# --- which servers must sign


@pytest.mark.parametrize(
    "event, version, origin, expected",
    [
        ({"sender": "@a:one.org", "type": "m.room.message"}, RoomVersions.V10, None, {"one.org"}),
        # v1/v2: the event ID's server too
        ({"sender": "@a:one.org", "event_id": "$x:two.org", "type": "X"}, RoomVersions.V1, None, {"one.org", "two.org"}),
        ({"sender": "@a:one.org", "event_id": "$x:one.org", "type": "X"}, RoomVersions.V2, None, {"one.org"}),
        # v3+: event_id is not part of the event
        ({"sender": "@a:one.org", "event_id": "$x:two.org", "type": "X"}, RoomVersions.V3, None, {"one.org"}),
        # restricted join, v8+: the authorising user's server
        (
            {"sender": "@a:one.org", "type": "m.room.member", "state_key": "@a:one.org",
             "content": {"membership": "join", "join_authorised_via_users_server": "@b:three.org"}},
            RoomVersions.V8, None, {"one.org", "three.org"},
        ),
        (
            {"sender": "@a:one.org", "type": "m.room.member", "state_key": "@a:one.org",
             "content": {"membership": "join", "join_authorised_via_users_server": "@b:three.org"}},
            RoomVersions.V7, None, {"one.org"},
        ),
        (
            {"sender": "@a:one.org", "type": "m.room.member", "state_key": "@a:one.org",
             "content": {"membership": "leave", "join_authorised_via_users_server": "@b:three.org"}},
            RoomVersions.V9, None, {"one.org"},
        ),
        # third-party invite: the sending server, when known, replaces the sender's
        (
            {"sender": "@a:one.org", "type": "m.room.member", "state_key": "@c:four.org",
             "content": {"membership": "invite", "third_party_invite": {"signed": {}}}},
            RoomVersions.V10, "four.org", {"four.org"},
        ),
        (
            {"sender": "@a:one.org", "type": "m.room.member", "state_key": "@c:four.org",
             "content": {"membership": "invite", "third_party_invite": {"signed": {}}}},
            RoomVersions.V10, None, {"one.org"},
        ),
        # an ordinary invite still needs the sender's server
        (
            {"sender": "@a:one.org", "type": "m.room.member", "state_key": "@c:four.org",
             "content": {"membership": "invite"}},
            RoomVersions.V10, "four.org", {"one.org"},
        ),
    ],
)
def test_servers_that_must_sign(event, version, origin, expected):
    assert servers_that_must_sign(event, version, origin=origin) == expected


@pytest.mark.parametrize(
    "event, fragment",
    [
        ({"type": "X"}, "sender"),
        ({"type": "X", "sender": "@nodomain"}, "sender"),
        ({"type": "m.room.member", "sender": "@a:x.org",
          "content": {"membership": "join", "join_authorised_via_users_server": 5}}, "join_authorised"),
    ],
)
def test_servers_that_must_sign_errors(event, fragment):
    with pytest.raises(SignatureError, match=fragment):
        servers_that_must_sign(event, RoomVersions.V10)


# --- X-Matrix


def test_x_matrix_header_format():
    header = build_x_matrix_authorization("GET", "/_matrix/federation/v1/version", "origin.org", "dest.org", None, KEY)
    assert header.startswith('X-Matrix origin="origin.org",destination="dest.org",key="ed25519:1",sig="')
    # Same signature as signing the request JSON by hand (spec step 1).
    expected = sign_json(
        {"method": "GET", "uri": "/_matrix/federation/v1/version", "origin": "origin.org", "destination": "dest.org"},
        "origin.org",
        KEY,
    )["signatures"]["origin.org"]["ed25519:1"]
    assert header.endswith(f'sig="{expected}"')


@pytest.mark.parametrize(
    "header, expected",
    [
        # the form we send
        ('X-Matrix origin="o.org",destination="d.org",key="ed25519:1",sig="' + "A" * 86 + '"',
         XMatrixAuth("o.org", "d.org", "ed25519:1", "A" * 86)),
        # unquoted values, colons in unquoted values (old servers)
        ("X-Matrix origin=o.org:8448,destination=d.org,key=ed25519:1,sig=" + "A" * 86,
         XMatrixAuth("o.org:8448", "d.org", "ed25519:1", "A" * 86)),
        # scheme case, several spaces, spaces and tabs around commas, name case, order
        ('x-matrix   SIG="' + "A" * 86 + '" ,\tKey = "ed25519:1" , Origin="o.org"',
         XMatrixAuth("o.org", None, "ed25519:1", "A" * 86)),
        # comma inside quotes, backslash escapes, unknown parameters ignored
        ('X-Matrix foo="a,b\\"c",origin="o.org",key="ed25519:1",sig="' + "A" * 86 + '",bar=baz',
         XMatrixAuth("o.org", None, "ed25519:1", "A" * 86)),
        ('X-Matrix origin="o\\.org",key="ed25519:1",sig="' + "A" * 86 + '"',
         XMatrixAuth("o.org", None, "ed25519:1", "A" * 86)),
        # IPv6 server name in quotes
        ('X-Matrix origin="[::1]:8448",key="ed25519:k",sig="' + "A" * 86 + '"',
         XMatrixAuth("[::1]:8448", None, "ed25519:k", "A" * 86)),
        # trailing comma, leading/trailing whitespace
        ('  X-Matrix origin=o.org,key=ed25519:1,sig=' + "A" * 86 + ",  ",
         XMatrixAuth("o.org", None, "ed25519:1", "A" * 86)),
    ],
)
def test_parse_x_matrix(header, expected):
    assert parse_x_matrix_authorization(header) == expected


@pytest.mark.parametrize(
    "header, fragment",
    [
        ("Bearer abc", "not X-Matrix"),
        ("X-Matrixorigin=o.org", "not X-Matrix"),
        ("", "not X-Matrix"),
        ('X-Matrix key="ed25519:1",sig="' + "A" * 86 + '"', "'origin'"),
        ('X-Matrix origin="o.org",sig="' + "A" * 86 + '"', "'key'"),
        ('X-Matrix origin="o.org",key="ed25519:1"', "'sig'"),
        ('X-Matrix origin="",key="ed25519:1",sig="' + "A" * 86 + '"', "'origin'"),
        ('X-Matrix origin="o.org",key="ed25519:1",sig="!!!"', "base64"),
        ('X-Matrix origin="o.org",key="ed25519:1",sig="AAAA"', "not 64"),
        ('X-Matrix origin="o.org",key="ed25519",sig="' + "A" * 86 + '"', "algorithm:version"),
        ('X-Matrix origin="bad host",key="ed25519:1",sig="' + "A" * 86 + '"', "server name"),
        ('X-Matrix origin="o.org,key="ed25519:1"', "expected ','"),
        ('X-Matrix origin="o.org', "unterminated"),
        ("X-Matrix origin", "no '=value'"),
        ("X-Matrix origin=", "empty or invalid value"),
        ('X-Matrix origin="o.org" key="ed25519:1"', "expected ','"),
        ('X-Matrix origin="a.org",origin="b.org",key="ed25519:1",sig="' + "A" * 86 + '"', "twice"),
        ('X-Matrix origin="o.org",destination="",key="ed25519:1",sig="' + "A" * 86 + '"', "destination"),
        ('X-Matrix =x', "parameter name"),
    ],
)
def test_parse_x_matrix_errors(header, fragment):
    with pytest.raises(XMatrixParseError, match=fragment):
        parse_x_matrix_authorization(header)


def test_x_matrix_parse_error_is_a_signature_error():
    assert issubclass(XMatrixParseError, SignatureError)


def test_quote_path_segment_encodes_reserved_characters():
    assert quote_path_segment("$a/b+c:d") == "%24a%2Fb%2Bc%3Ad"
    assert quote_path_segment("!room:example.org") == "%21room%3Aexample.org"
    assert quote_path_segment("@ü:x") == "%40%C3%BC%3Ax"


EVENT_ID = "$CD66HAED5npg6074c6pDtLKal/jVfYb2q4Q3+ZgrW6o"
URI = "/_matrix/federation/v1/event/" + quote_path_segment(EVENT_ID) + "?limit=10&x=%2B"


def test_x_matrix_round_trip_with_encoded_path():
    body = {"pdus": [{"content": {"body": "é"}}], "edus": []}
    header = build_x_matrix_authorization("PUT", URI, "origin.org", "dest.org", body, KEY)
    auth = parse_x_matrix_authorization(header)
    assert auth.origin == "origin.org" and auth.destination == "dest.org" and auth.key_id == "ed25519:1"
    verify_request(auth, "PUT", URI, body, "dest.org", KEY.verify_key)


def test_x_matrix_signature_is_a_signedjson_signature():
    # What Synapse would compute for the same request.
    sj_key = signedjson.key.decode_signing_key_base64("ed25519", "1", SEED)
    request = {"method": "GET", "uri": URI, "origin": "origin.org", "destination": "dest.org"}
    sig = signedjson.sign.sign_json(request, "origin.org", sj_key)["signatures"]["origin.org"]["ed25519:1"]
    auth = parse_x_matrix_authorization(build_x_matrix_authorization("GET", URI, "origin.org", "dest.org", None, KEY))
    assert auth.signature == sig


@pytest.mark.parametrize(
    "method, uri, content, ours, fragment",
    [
        ("GET", URI, {"pdus": []}, "dest.org", "bad signature"),  # method changed
        ("PUT", URI.replace("%24", "$"), {"pdus": []}, "dest.org", "bad signature"),  # decoded path
        ("PUT", URI + "&more=1", {"pdus": []}, "dest.org", "bad signature"),  # query changed
        ("PUT", URI, {"pdus": [1]}, "dest.org", "bad signature"),  # body changed
        ("PUT", URI, None, "dest.org", "bad signature"),  # body dropped
        ("PUT", URI, {"pdus": []}, "other.org", "not this server"),  # destination mismatch
    ],
)
def test_verify_request_failures(method, uri, content, ours, fragment):
    header = build_x_matrix_authorization("PUT", URI, "origin.org", "dest.org", {"pdus": []}, KEY)
    auth = parse_x_matrix_authorization(header)
    with pytest.raises(SignatureError, match=fragment):
        verify_request(auth, method, uri, content, ours, KEY.verify_key)


def test_verify_request_without_destination_uses_our_name():
    # An old server leaves destination out of the header but signed with it.
    header = build_x_matrix_authorization("GET", URI, "origin.org", "dest.org", None, KEY)
    auth = parse_x_matrix_authorization(header.replace('destination="dest.org",', ""))
    assert auth.destination is None
    verify_request(auth, "GET", URI, None, "dest.org", KEY.verify_key)
    with pytest.raises(SignatureError):
        verify_request(auth, "GET", URI, None, "elsewhere.org", KEY.verify_key)


def test_verify_request_wrong_key_and_algorithm():
    header = build_x_matrix_authorization("GET", URI, "origin.org", "dest.org", None, KEY)
    auth = parse_x_matrix_authorization(header)
    with pytest.raises(SignatureError, match="bad signature"):
        verify_request(auth, "GET", URI, None, "dest.org", OTHER.verify_key)
    odd = XMatrixAuth(auth.origin, auth.destination, "rsa:1", auth.signature)
    with pytest.raises(SignatureError, match="algorithm"):
        verify_request(odd, "GET", URI, None, "dest.org", KEY.verify_key)


# --- event signing: the spec vectors (they need federation/redaction.py)

EVENT_VECTOR_1 = {
    "auth_events": [],
    "content": {},
    "depth": 3,
    "hashes": {"sha256": "5jM4wQpv6lnBo7CLIghJuHdW+s2CMBJPUOGOC89ncos"},
    "origin": "domain",
    "origin_server_ts": 1000000,
    "prev_events": [],
    "room_id": "!x:domain",
    "sender": "@a:domain",
    "signatures": {
        "domain": {
            "ed25519:1": "KxwGjPSDEtvnFgU00fwFz+l6d2pJM6XBIaMEn81SXPTRl16AqLAYqfIReFGZlHi5KLjAWbOoMszkwsQma+lYAg"
        }
    },
    "type": "X",
    "unsigned": {"age_ts": 1000000},
}

EVENT_VECTOR_2 = {
    "content": {"body": "Here is the message content"},
    "event_id": "$0:domain",
    "hashes": {"sha256": "onLKD1bGljeBWQhWZ1kaP9SorVmRQNdN5aM2JYU2n/g"},
    "origin": "domain",
    "origin_server_ts": 1000000,
    "type": "m.room.message",
    "room_id": "!r:domain",
    "sender": "@u:domain",
    "signatures": {
        "domain": {
            "ed25519:1": "Wm+VzmOUOz08Ds+0NTWb1d4CZrVsJSikkeRxh6aCcUwu6pNC78FunoD7KNWzqFn241eYHYMGCA5McEiVPdhzBA"
        }
    },
    "unsigned": {"age_ts": 1000000},
}


@pytest.mark.parametrize("version", [RoomVersions.V1, RoomVersions.V10])
def test_event_signing_vector_minimal(version):
    # The vectors predate room version 11 (they keep "origin"); the redaction rules
    # for these fields are the same in versions 1 to 10.
    assert sign_event(MINIMAL_EVENT, "domain", KEY, room_version=version) == EVENT_VECTOR_1


def test_event_signing_vector_redactable_content():
    assert sign_event(MESSAGE_EVENT, "domain", KEY, room_version=RoomVersions.V1) == EVENT_VECTOR_2


def test_sign_event_does_not_mutate_and_keeps_an_existing_hash():
    before = copy.deepcopy(MESSAGE_EVENT)
    sign_event(MESSAGE_EVENT, "domain", KEY, room_version=RoomVersions.V1)
    assert MESSAGE_EVENT == before
    # Co-signing: the hash already there is kept, signatures are added side by side.
    cosigned = sign_event(EVENT_VECTOR_2, "other.org", OTHER, room_version=RoomVersions.V1)
    assert cosigned["hashes"] == EVENT_VECTOR_2["hashes"]
    assert set(cosigned["signatures"]) == {"domain", "other.org"}
    assert cosigned["signatures"]["domain"] == EVENT_VECTOR_2["signatures"]["domain"]


def test_sign_event_agrees_with_signedjson_on_the_redacted_event():
    from federation.redaction import redact

    signed = sign_event(MESSAGE_EVENT, "domain", KEY, room_version=RoomVersions.V1)
    sj_key = signedjson.key.decode_signing_key_base64("ed25519", "1", SEED)
    redacted = redact(copy.deepcopy(signed), RoomVersions.V1)
    redacted.pop("signatures", None)
    theirs = signedjson.sign.sign_json(redacted, "domain", sj_key)
    assert theirs["signatures"]["domain"] == signed["signatures"]["domain"]


def test_verify_event_signatures_on_the_vectors():
    table = {("domain", "ed25519:1"): KEY.verify_key}
    # (vector 1 has no event_id, which rooms 1 and 2 need; its fields redact alike in v3)
    verify_event_signatures(EVENT_VECTOR_1, RoomVersions.V3, keys_for_table(table))
    verify_event_signatures(EVENT_VECTOR_2, RoomVersions.V1, keys_for_table(table))
    # the redacted copy verifies too
    from federation.redaction import redact

    verify_event_signatures(redact(copy.deepcopy(EVENT_VECTOR_2), RoomVersions.V1), RoomVersions.V1, keys_for_table(table))
    # a changed essential field does not
    with pytest.raises(SignatureError, match="bad signature"):
        verify_event_signatures(dict(EVENT_VECTOR_2, origin_server_ts=1), RoomVersions.V1, keys_for_table(table))
    # an unknown key is skipped, leaving nothing to check
    with pytest.raises(SignatureError, match="no known, valid key of domain"):
        verify_event_signatures(EVENT_VECTOR_2, RoomVersions.V1, keys_for_table({}))


def test_verify_event_signatures_key_validity_v5():
    event = sign_event(dict(MINIMAL_EVENT, origin_server_ts=5000), "domain", KEY, room_version=RoomVersions.V5)
    ok = {("domain", "ed25519:1"): KnownKey(KEY.verify_key, valid_until_ts=5000)}
    old = {("domain", "ed25519:1"): KnownKey(KEY.verify_key, valid_until_ts=4999)}
    verify_event_signatures(event, RoomVersions.V5, keys_for_table(ok))
    with pytest.raises(SignatureError, match="no known, valid key"):
        verify_event_signatures(event, RoomVersions.V5, keys_for_table(old))
    # before v5 the validity is not enforced
    event4 = sign_event(dict(MINIMAL_EVENT, origin_server_ts=5000), "domain", KEY, room_version=RoomVersions.V4)
    verify_event_signatures(event4, RoomVersions.V4, keys_for_table(old))


def test_verify_event_signatures_all_known_keys_must_verify():
    event = sign_event(MINIMAL_EVENT, "domain", KEY, room_version=RoomVersions.V10)
    event["signatures"]["domain"]["ed25519:2"] = event["signatures"]["domain"]["ed25519:1"]
    table = {("domain", "ed25519:1"): KEY.verify_key, ("domain", "ed25519:2"): OTHER.verify_key}
    with pytest.raises(SignatureError, match="ed25519:2"):
        verify_event_signatures(event, RoomVersions.V10, keys_for_table(table))
    # unknown algorithms are ignored
    event["signatures"]["domain"].pop("ed25519:2")
    event["signatures"]["domain"]["curve25519:x"] = "AAAA"
    verify_event_signatures(event, RoomVersions.V10, keys_for_table(table))


def test_strict_rooms_do_not_normalise_floats():
    # v6+: floats are invalid; an integral float is not rewritten, so the hash fails.
    event = add_content_hash(dict(MINIMAL_EVENT, content={"n": 1}))
    assert check_content_hash(event, RoomVersions.V10)
    floaty = dict(event, content={"n": 1.0})
    assert check_content_hash(floaty)  # plain canonical JSON writes 1.0 as 1
    assert check_content_hash(floaty, RoomVersions.V5)
    assert not check_content_hash(floaty, RoomVersions.V10)


def test_policy_server_signature():
    policy_key = signing_key_from_seed("policy_server", bytes([7]) * 32)
    assert policy_key.key_id == POLICY_SERVER_KEY_ID
    event = sign_event(MINIMAL_EVENT, "domain", KEY, room_version=RoomVersions.V10)
    signed = sign_event(event, "policy.org", policy_key, room_version=RoomVersions.V10)
    verify_policy_server_signature(signed, RoomVersions.V10, "policy.org", encode_verify_key(policy_key.verify_key))
    with pytest.raises(SignatureError, match="not signed by policy.org"):
        verify_policy_server_signature(event, RoomVersions.V10, "policy.org", policy_key.verify_key)
    with pytest.raises(SignatureError, match="bad signature"):
        verify_policy_server_signature(signed, RoomVersions.V10, "policy.org", OTHER.verify_key)
    with pytest.raises(SignatureError, match="public key"):
        verify_policy_server_signature(signed, RoomVersions.V10, "policy.org", "AAAA")
