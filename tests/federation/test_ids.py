"""Identifier grammar: one row per rule of https://spec.matrix.org/latest/appendices/#identifier-grammar"""

from __future__ import annotations

import pytest

from federation.ids import (
    EventID,
    InvalidIdentifierError,
    RoomAlias,
    RoomID,
    UserID,
    get_domain_from_id,
    is_historical_localpart,
    is_valid_event_id,
    is_valid_localpart,
    is_valid_room_alias,
    is_valid_room_id,
    is_valid_server_name,
    is_valid_user_id,
    parse_server_name,
)
from federation.room_versions import RoomVersions

HASH_URLSAFE = "Rqnc-F-dvnEYJTyHq_iKxU2bZ1CI92-kuZq3a5lr5Zg"
HASH_STANDARD = "CD66HAED5npg6074c6pDtLKalHjVfYb2q4Q3LZgrW6o"
HASH_STANDARD_SLASH = "CD66HAED5npg6074c6pDtLKalHjVfYb2q4Q3LZgr/+o"


# --- server names


@pytest.mark.parametrize(
    "name, expected",
    [
        ("matrix.org", ("matrix.org", None)),  # spec example
        ("matrix.org:8888", ("matrix.org", 8888)),  # spec example
        ("1.2.3.4", ("1.2.3.4", None)),  # IPv4 literal
        ("1.2.3.4:1234", ("1.2.3.4", 1234)),  # IPv4 with port
        ("[1234:5678::abcd]", ("[1234:5678::abcd]", None)),  # IPv6 literal keeps brackets
        ("[1234:5678::abcd]:5678", ("[1234:5678::abcd]", 5678)),
        ("[::1]", ("[::1]", None)),  # shortest IPv6 (2 chars)
        ("[::ffff:1.2.3.4]", ("[::ffff:1.2.3.4]", None)),  # '.' allowed in IPv6char
        ("localhost", ("localhost", None)),  # single label
        ("MATRIX.ORG", ("MATRIX.ORG", None)),  # case kept (case-sensitive)
        ("my-host.example", ("my-host.example", None)),  # hyphen
        ("a:1", ("a", 1)),  # lowest port
        ("a:65535", ("a", 65535)),  # highest port
        ("a" * 255, ("a" * 255, None)),  # dns-name is at most 255 chars
        ("1.2.3", ("1.2.3", None)),  # not a dotted quad, but dns-char only
    ],
)
def test_valid_server_names(name, expected):
    assert parse_server_name(name) == expected
    assert is_valid_server_name(name)


@pytest.mark.parametrize(
    "name, fragment",
    [
        ("", "empty"),
        (":8448", "empty hostname"),
        ("a" * 256, "longer than 255"),
        ("exa mple.org", "not a DNS name"),  # space
        ("exämple.org", "not a DNS name"),  # non-ASCII
        ("example.org/", "not a DNS name"),
        ("under_score.org", "not a DNS name"),
        ("256.1.1.1", "IPv4"),  # dotted quad out of range
        ("[1234:5678::abcd", "closing"),  # unterminated bracket
        ("[1234:5678::abcd]x", "after the IPv6"),
        ("[not:an:ipv6:address::g]", "IPv6"),
        ("[1:2:3:4:5:6:7:8:9]", "IPv6"),  # too many groups
        ("[]", "IPv6"),
        ("matrix.org:", "1 to 5 digits"),  # empty port
        ("matrix.org:0", "1-65535"),
        ("matrix.org:65536", "1-65535"),
        ("matrix.org:123456", "1 to 5 digits"),
        ("matrix.org:80a", "1 to 5 digits"),
        ("matrix.org:-1", "1 to 5 digits"),
        ("matrix.org:80:80", "1 to 5 digits"),
        ("1234:5678::abcd", "1 to 5 digits"),  # IPv6 without brackets
    ],
)
def test_invalid_server_names(name, fragment):
    with pytest.raises(InvalidIdentifierError, match=fragment):
        parse_server_name(name)
    assert not is_valid_server_name(name)


def test_invalid_identifier_error_is_a_value_error():
    # Callers (config) catch ValueError.
    assert issubclass(InvalidIdentifierError, ValueError)


# --- user IDs


@pytest.mark.parametrize(
    "localpart, valid",
    [
        ("alice", True),
        ("a1.b_c=d-e/f+g", True),  # every allowed punctuation mark
        ("0123", True),
        ("", False),  # must not be empty
        ("Alice", False),  # upper case
        ("al ice", False),
        ("al:ice", False),
        ("al*ice", False),  # '*' is a wildcard elsewhere
        ("al#ice", False),
        ("élodie", False),  # non-ASCII
        ("alice\n", False),  # a trailing newline is not ignored
    ],
)
def test_is_valid_localpart(localpart, valid):
    assert is_valid_localpart(localpart) is valid


@pytest.mark.parametrize(
    "localpart, valid",
    [
        ("Alice", True),
        ("élodie", True),
        ("", True),  # empty is historical but accepted
        ("tab\there", True),  # control characters are accepted
        ("a:b", False),
        ("a\x00b", False),
        ("a\ud800b", False),  # lone surrogate
    ],
)
def test_is_historical_localpart(localpart, valid):
    assert is_historical_localpart(localpart) is valid


def test_user_id_parse_and_str():
    uid = UserID.parse("@alice:example.org:8448")
    assert uid == UserID("alice", "example.org:8448")
    assert str(uid) == "@alice:example.org:8448"
    assert uid.is_compliant


def test_user_id_ipv6_server():
    assert UserID.parse("@bob:[::1]:8448").server_name == "[::1]:8448"


@pytest.mark.parametrize(
    "user_id, strict_ok, lenient_ok",
    [
        ("@alice:example.org", True, True),
        ("@Alice:example.org", False, True),  # historical: upper case
        ("@:example.org", False, True),  # historical: empty localpart
        ("@élodie:example.org", False, True),
        ("alice:example.org", False, False),  # no sigil
        ("#alice:example.org", False, False),  # wrong sigil
        ("@alice", False, False),  # no domain
        ("@alice:", False, False),  # empty domain
        ("@alice:exa mple.org", False, False),  # bad domain
        ("@a\x00b:example.org", False, False),  # NUL
        ("@" + "a" * 242 + ":example.org", True, True),  # exactly 255 bytes
        ("@" + "a" * 243 + ":example.org", False, False),  # 256 bytes
        ("@" + "é" * 121 + ":example.org", False, True),  # 1 + 242 + 12 = 255 bytes
        ("@" + "é" * 122 + ":example.org", False, False),  # 257 bytes: limit is in bytes
    ],
)
def test_user_id_table(user_id, strict_ok, lenient_ok):
    assert is_valid_user_id(user_id, strict=True) is strict_ok
    assert is_valid_user_id(user_id) is lenient_ok


def test_user_id_errors_name_the_rule():
    with pytest.raises(InvalidIdentifierError, match="a-z, 0-9"):
        UserID.parse("@Alice:example.org", strict=True)
    with pytest.raises(InvalidIdentifierError, match="255"):
        UserID.parse("@" + "a" * 300 + ":example.org")
    with pytest.raises(InvalidIdentifierError, match="server name"):
        UserID.parse("@a:bad_host")
    with pytest.raises(InvalidIdentifierError, match="start with '@'"):
        UserID.parse("alice")


@pytest.mark.parametrize(
    "user_id, compliant",
    [("@alice:x.org", True), ("@Alice:x.org", True), ("@:x.org", False), ("@a b:x.org", False), ("@é:x.org", False)],
)
def test_user_id_compliance(user_id, compliant):
    # Non-compliant: outside U+0021..U+007E, or empty.
    assert UserID.parse(user_id).is_compliant is compliant


# --- room IDs


def test_room_id_with_domain():
    rid = RoomID.parse("!opaque:example.org")
    assert (rid.opaque_id, rid.server_name) == ("opaque", "example.org")
    assert str(rid) == "!opaque:example.org"


def test_room_id_v12_has_no_server():
    rid = RoomID.parse("!" + HASH_URLSAFE)
    assert rid.server_name is None
    assert rid.opaque_id == HASH_URLSAFE
    assert str(rid) == "!" + HASH_URLSAFE
    assert RoomID.parse("!" + HASH_URLSAFE, RoomVersions.V12).server_name is None


@pytest.mark.parametrize(
    "room_id, version, valid",
    [
        ("!abc:example.org", None, True),
        ("!abc:example.org", RoomVersions.V11, True),
        ("!abc:example.org", RoomVersions.V12, False),  # v12 needs the hash form
        ("!" + HASH_URLSAFE, RoomVersions.V11, False),  # v11 needs a domain
        ("!" + HASH_URLSAFE, RoomVersions.V12, True),
        ("!" + HASH_URLSAFE[:-1], RoomVersions.V12, False),  # 42 chars
        ("!" + HASH_STANDARD_SLASH, RoomVersions.V12, False),  # not URL-safe
        ("!nodomain", None, False),  # no ':' and not a hash
        ("abc:example.org", None, False),  # no sigil
        ("!a\x00b:example.org", None, False),  # NUL
        ("!ÄÖ:example.org", None, True),  # any code point but ':' and NUL
        ("!" + "a" * 242 + ":example.org", None, True),  # 255 bytes
        ("!" + "a" * 243 + ":example.org", None, False),  # 256 bytes
        ("!abc:bad host", None, False),
    ],
)
def test_room_id_table(room_id, version, valid):
    assert is_valid_room_id(room_id, version) is valid


# --- room aliases


@pytest.mark.parametrize(
    "alias, valid",
    [
        ("#room:example.org", True),
        ("#Räume und mehr:example.org", True),  # any code point but ':' and NUL
        ("#room:example.org:8448", True),  # the domain may have a port
        ("room:example.org", False),
        ("#room", False),
        ("#ro\x00om:example.org", False),
        ("#room:", False),
        ("#" + "a" * 242 + ":example.org", True),  # 255 bytes
        ("#" + "a" * 243 + ":example.org", False),  # 256 bytes
    ],
)
def test_room_alias_table(alias, valid):
    assert is_valid_room_alias(alias) is valid


def test_room_alias_localpart_stops_at_first_colon():
    a = RoomAlias.parse("#room:example.org:8448")
    assert (a.localpart, a.server_name) == ("room", "example.org:8448")
    assert str(a) == "#room:example.org:8448"


# --- event IDs


@pytest.mark.parametrize(
    "event_id, version, valid",
    [
        ("$0:domain", RoomVersions.V1, True),
        ("$0:domain", RoomVersions.V2, True),
        ("$" + HASH_STANDARD, RoomVersions.V1, False),  # v1 needs a domain
        ("$" + HASH_STANDARD, RoomVersions.V3, True),
        ("$" + HASH_STANDARD_SLASH, RoomVersions.V3, True),
        ("$" + HASH_URLSAFE, RoomVersions.V3, False),  # '-' / '_' are not standard base64
        ("$" + HASH_URLSAFE, RoomVersions.V4, True),
        ("$" + HASH_URLSAFE, RoomVersions.V12, True),
        ("$" + HASH_STANDARD_SLASH, RoomVersions.V4, False),
        ("$0:domain", RoomVersions.V4, False),
        ("$" + HASH_URLSAFE + "A", RoomVersions.V4, False),  # 44 chars
        ("$" + HASH_URLSAFE, None, True),
        ("$" + HASH_STANDARD_SLASH, None, True),
        ("$0:domain", None, True),
        ("$short", None, False),
        ("0:domain", None, False),
        ("$" + "a" * 242 + ":example.org", None, True),  # 255 bytes
        ("$" + "a" * 243 + ":example.org", None, False),  # 256 bytes
    ],
)
def test_event_id_table(event_id, version, valid):
    assert is_valid_event_id(event_id, version) is valid


def test_event_id_parse():
    e = EventID.parse("$abc:example.org", RoomVersions.V1)
    assert (e.opaque_id, e.server_name, str(e)) == ("abc", "example.org", "$abc:example.org")
    h = EventID.parse("$" + HASH_URLSAFE, RoomVersions.V10)
    assert h.server_name is None and str(h) == "$" + HASH_URLSAFE


# --- get_domain_from_id


@pytest.mark.parametrize(
    "identifier, domain",
    [
        ("@alice:example.org", "example.org"),
        ("!room:example.org:8448", "example.org:8448"),
        ("#alias:[::1]:80", "[::1]:80"),
        ("$ev:example.org", "example.org"),
    ],
)
def test_get_domain_from_id(identifier, domain):
    assert get_domain_from_id(identifier) == domain


@pytest.mark.parametrize(
    "identifier, fragment",
    [
        ("", "empty"),
        ("alice:example.org", "sigil"),
        ("$" + HASH_URLSAFE, "no domain"),
        ("!" + HASH_URLSAFE, "no domain"),
        ("@alice:bad host", "invalid server name"),
    ],
)
def test_get_domain_from_id_errors(identifier, fragment):
    with pytest.raises(InvalidIdentifierError, match=fragment):
        get_domain_from_id(identifier)
