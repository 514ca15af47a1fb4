"""Pure parts of server discovery: names, well-known bodies, cache lifetimes, SRV order."""

from __future__ import annotations

import ipaddress
import json
import random
from collections import Counter

import pytest

from federation.server_discovery import (
    WELL_KNOWN_DEFAULT_CACHE_SECONDS,
    WELL_KNOWN_FAILURE_CACHE_SECONDS,
    WELL_KNOWN_MAX_BODY_BYTES,
    WELL_KNOWN_MAX_CACHE_SECONDS,
    WELL_KNOWN_MAX_STALE_SECONDS,
    WELL_KNOWN_MIN_CACHE_SECONDS,
    InvalidServerName,
    InvalidWellKnown,
    ServiceUnavailable,
    SrvRecord,
    cache_lifetime,
    entry_after_failure,
    entry_after_success,
    order_srv_records,
    parse_well_known,
    refresh_retry_delay,
    split_server_name,
)

NOW = 1_700_000_000.0


# -- server names ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, host, port, ip",
    [
        ("matrix.org", "matrix.org", None, None),
        ("matrix.org:8888", "matrix.org", 8888, None),
        ("1.2.3.4", "1.2.3.4", None, "1.2.3.4"),
        ("1.2.3.4:1234", "1.2.3.4", 1234, "1.2.3.4"),
        ("[1234:5678::abcd]", "1234:5678::abcd", None, "1234:5678::abcd"),
        ("[1234:5678::abcd]:5678", "1234:5678::abcd", 5678, "1234:5678::abcd"),
        ("[::ffff:1.2.3.4]", "::ffff:1.2.3.4", None, "::ffff:1.2.3.4"),
        ("localhost:65535", "localhost", 65535, None),
        ("1.2.3", "1.2.3", None, None),  # not four parts: a DNS name by the grammar
        ("my-host.example.com.", "my-host.example.com.", None, None),
    ],
)
def test_split_server_name_valid(name, host, port, ip):
    address = split_server_name(name)
    assert (address.host, address.port) == (host, port)
    assert address.ip == (ipaddress.ip_address(ip) if ip else None)
    assert address.is_ip_literal is (ip is not None)
    assert address.host_header == name == str(address)
    assert address.tls_name == (str(ipaddress.ip_address(ip)) if ip else host)


@pytest.mark.parametrize(
    "name",
    ["", "matrix.org:", "matrix.org:0", "matrix.org:65536", "matrix.org:123456", "matrix.org:80a",
     "::1", "1234:5678::abcd:80", "[::1", "[::1]x", "[::1]:", "[nothex::1]", "[1.2.3.4]",
     "1.2.3.256", "999.1.1.1:80", "under_score.org", "spa ce.org", "a" * 256, "ex\u00e4mple.org",
     "host:port:1"],
)
def test_split_server_name_invalid(name):
    with pytest.raises(InvalidServerName):
        split_server_name(name)


def test_split_server_name_rejects_non_strings():
    with pytest.raises(InvalidServerName):
        split_server_name(None)  # type: ignore[arg-type]


def test_cache_key_ignores_dns_case_but_host_header_keeps_it():
    a, b = split_server_name("Example.ORG"), split_server_name("example.org")
    assert a.cache_key == b.cache_key
    assert a.host_header == "Example.ORG"


# -- well-known bodies -------------------------------------------------------------------


def test_parse_well_known_valid():
    delegated = parse_well_known(b'{"m.server": "delegated.example.com:1234"}')
    assert (delegated.host, delegated.port) == ("delegated.example.com", 1234)
    assert parse_well_known('{"m.server": "[::1]", "other": 1}').ip == ipaddress.ip_address("::1")


@pytest.mark.parametrize(
    "body",
    [b"", b"not json", b"[]", b'"m.server"', b"{}", b'{"m.server": 42}', b'{"m.server": null}',
     b'{"m.server": ""}', b'{"m.server": "bad name!"}', b'{"m.server": "host:99999"}',
     b"\xff\xfe{}", b"[" * 100_000 + b"]" * 100_000],
)
def test_parse_well_known_invalid(body):
    with pytest.raises(InvalidWellKnown):
        parse_well_known(body)


def test_parse_well_known_refuses_oversized_body():
    body = json.dumps({"m.server": "ok.example", "pad": "x" * WELL_KNOWN_MAX_BODY_BYTES}).encode()
    with pytest.raises(InvalidWellKnown, match="over"):
        parse_well_known(body)


# -- cache lifetime ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers, expected",
    [
        ({}, WELL_KNOWN_DEFAULT_CACHE_SECONDS),
        ({"Cache-Control": "max-age=3600"}, 3600),
        ({"cache-control": "public, max-age=7200"}, 7200),
        ({"Cache-Control": 'max-age="900"'}, 900),
        ({"Cache-Control": "max-age=10"}, WELL_KNOWN_MIN_CACHE_SECONDS),
        ({"Cache-Control": "max-age=0"}, WELL_KNOWN_MIN_CACHE_SECONDS),
        ({"Cache-Control": "max-age=99999999"}, WELL_KNOWN_MAX_CACHE_SECONDS),
        ({"Cache-Control": "no-store"}, WELL_KNOWN_MIN_CACHE_SECONDS),
        ({"Cache-Control": "no-cache, max-age=3600"}, WELL_KNOWN_MIN_CACHE_SECONDS),
        ({"Cache-Control": "max-age=abc"}, WELL_KNOWN_DEFAULT_CACHE_SECONDS),
        ({"Cache-Control": "max-age=-5"}, WELL_KNOWN_DEFAULT_CACHE_SECONDS),
        # Expires relative to Date: two hours apart.
        ({"Date": "Tue, 14 Nov 2023 22:00:00 GMT", "Expires": "Wed, 15 Nov 2023 00:00:00 GMT"}, 7200),
        # Expires relative to now when there is no Date (NOW is 2023-11-14T22:13:20Z).
        ({"Expires": "Tue, 14 Nov 2023 23:13:20 GMT"}, 3600),
        ({"Expires": "0"}, WELL_KNOWN_MIN_CACHE_SECONDS),
        ({"Expires": "Thu, 01 Jan 1970 00:00:00 GMT"}, WELL_KNOWN_MIN_CACHE_SECONDS),
        # max-age wins over Expires.
        ({"Cache-Control": "max-age=1800", "Expires": "Thu, 01 Jan 1970 00:00:00 GMT"}, 1800),
    ],
)
def test_cache_lifetime(headers, expected):
    assert cache_lifetime(headers, NOW) == expected


def test_cache_lifetime_accepts_header_pairs_and_custom_bounds():
    pairs = [("CACHE-CONTROL", "max-age=50")]
    assert cache_lifetime(pairs, NOW, minimum=10, maximum=100, default=20) == 50
    assert cache_lifetime([], NOW, minimum=10, maximum=100, default=20) == 20


# -- cache entries -----------------------------------------------------------------------


def test_success_entry_refreshes_before_it_expires():
    delegated = split_server_name("d.example:443")
    entry = entry_after_success(delegated, 1000, NOW)
    assert entry.delegated == delegated
    assert NOW < entry.refresh_at < entry.expires_at == NOW + 1000
    assert not entry.needs_refresh(NOW + 1) and entry.needs_refresh(entry.refresh_at)
    assert entry.usable(entry.expires_at + 1)
    assert not entry.usable(entry.expires_at + WELL_KNOWN_MAX_STALE_SECONDS)


def test_transient_failure_keeps_good_answer_with_backoff():
    good = entry_after_success(split_server_name("d.example"), 1000, NOW)
    first = entry_after_failure(good, NOW + 900, transient=True)
    assert first.delegated == good.delegated and first.failures == 1
    assert first.refresh_at == NOW + 900 + 120
    second = entry_after_failure(first, NOW + 1020, transient=True)
    assert second.refresh_at == NOW + 1020 + 240 and second.failures == 2
    assert second.expires_at == good.expires_at
    assert [refresh_retry_delay(n) for n in (1, 2, 3, 6, 20)] == [120, 240, 480, 3600, 3600]


def test_transient_failure_retries_no_later_than_the_stale_limit():
    good = entry_after_success(split_server_name("d.example"), 1000, NOW)
    late = good.usable_until - 10
    entry = entry_after_failure(good, late, transient=True)
    assert entry.refresh_at == good.usable_until
    assert entry.delegated is not None


def test_definitive_failure_drops_good_answer():
    good = entry_after_success(split_server_name("d.example"), 1000, NOW)
    entry = entry_after_failure(good, NOW + 900, transient=False)
    assert entry.delegated is None
    assert entry.refresh_at == entry.expires_at == NOW + 900 + WELL_KNOWN_FAILURE_CACHE_SECONDS


def test_failure_without_good_answer_is_cached_an_hour():
    entry = entry_after_failure(None, NOW, transient=True)
    assert entry.delegated is None and entry.failures == 1
    assert entry.refresh_at == NOW + WELL_KNOWN_FAILURE_CACHE_SECONDS
    again = entry_after_failure(entry, entry.refresh_at, transient=True)
    assert again.failures == 2 and again.delegated is None


def test_stale_answer_past_its_limit_is_not_reused():
    good = entry_after_success(split_server_name("d.example"), 1000, NOW)
    entry = entry_after_failure(good, good.usable_until + 1, transient=True)
    assert entry.delegated is None


def test_success_with_no_delegation_has_no_stale_window():
    entry = entry_after_success(None, 600, NOW)
    assert entry.refresh_at == entry.expires_at == entry.usable_until == NOW + 600


# -- SRV ordering -----------------------------------------------------------------------


def _seq(*values):
    it = iter(values)
    return lambda: next(it)


def test_srv_lowest_priority_first():
    records = [SrvRecord(20, 0, 1, "c.example"), SrvRecord(10, 0, 2, "a.example"), SrvRecord(15, 0, 3, "b.example")]
    assert [r.target for r in order_srv_records(records, lambda: 0.0)] == ["a.example", "b.example", "c.example"]


def test_srv_weighted_pick_uses_running_sum():
    a, b, c = SrvRecord(10, 10, 1, "a"), SrvRecord(10, 30, 2, "b"), SrvRecord(10, 60, 3, "c")
    # total 100: pick = int(r * 101). 0.5 -> 50: running 10, 40, 100 -> c first.
    # Then a, b with total 40: 0.0 -> 0 -> a (running 10 >= 0), then b.
    assert order_srv_records([a, b, c], _seq(0.5, 0.0, 0.0)) == [c, a, b]
    # 0.2 -> 20 -> b (10 < 20 <= 40); then a, c total 70: 0.99 -> 70 -> c.
    assert order_srv_records([a, b, c], _seq(0.2, 0.99, 0.0)) == [b, c, a]


def test_srv_zero_weight_records_go_first_in_the_running_sum():
    zero, heavy = SrvRecord(1, 0, 1, "zero"), SrvRecord(1, 5, 2, "heavy")
    assert order_srv_records([heavy, zero], _seq(0.0, 0.0)) == [zero, heavy]
    assert order_srv_records([heavy, zero], _seq(0.5, 0.0)) == [heavy, zero]


def test_srv_weights_give_proportional_first_choice():
    rng = random.Random(1234)
    light, heavy = SrvRecord(0, 1, 1, "light"), SrvRecord(0, 3, 2, "heavy")
    firsts = Counter(order_srv_records([light, heavy], rng.random)[0].target for _ in range(4000))
    # RFC 2782 picks in 0..sum inclusive: light wins for picks 0 and 1 out of 0..4, so 2/5.
    assert 0.3 < firsts["light"] / 4000 < 0.5
    assert firsts["heavy"] > firsts["light"]


def test_srv_single_dot_target_means_no_service():
    with pytest.raises(ServiceUnavailable):
        order_srv_records([SrvRecord(0, 0, 0, ".")], lambda: 0.0)


def test_srv_dot_targets_among_others_are_dropped():
    good = SrvRecord(5, 0, 8448, "a.example")
    assert order_srv_records([SrvRecord(0, 0, 0, "."), good], lambda: 0.0) == [good]


def test_srv_empty_answer_gives_empty_order():
    assert order_srv_records([], lambda: 0.0) == []
