"""The key cache (gateway.services.federation.keyring): own keys never fetched, validity windows
(incl. the seven-day cap), refetching what is too old, batch event verification,
notary duty. The network is replaced by a recording fake fetcher."""

from __future__ import annotations

import pytest

from federation.keyring import KeyRequest, ServerKey, ServerKeyResponse, parse_key_response
from federation.net.key_fetchers import Backoff
from federation.room_versions import RoomVersions
from federation.signing import SignatureError, encode_verify_key, generate_signing_key, sign_event, sign_json
from gateway.services.federation.keyring import KeyRing, own_server_keys
from gateway.storage.keys import ServerKeyStore
from tests.gateway.client_api.conftest import config_overrides, hs  # noqa: F401

DAY = 24 * 3600 * 1000


class FakeFetcher:
    """Answers from a dict of server -> signing keys, recording what it was asked."""

    def __init__(self, hs, keys: dict, valid_for: int = DAY):
        self.hs, self.keys, self.valid_for = hs, keys, valid_for
        self.asked: list[list[KeyRequest]] = []

    async def fetch(self, requests):
        self.asked.append(list(requests))
        out = []
        for server in sorted({r.server_name for r in requests}):
            if server in self.keys:
                key = self.keys[server]
                doc = sign_json({"server_name": server, "valid_until_ts": self.hs.clock_ms() + self.valid_for,
                                 "verify_keys": {key.key_id: {"key": encode_verify_key(key.verify_key)}}}, server, key)
                out.append(ServerKeyResponse(server, doc, tuple(parse_key_response(doc, server,
                                                                                   fetched_ts=self.hs.clock_ms()))))
        return out


def make_keyring(hs, keys, **kw):
    frozen = hs.clock_ms()
    hs.clock_ms = lambda: frozen
    fake = FakeFetcher(hs, keys, **kw)
    return keyring_with(hs, fake), fake


def keyring_with(hs, fetcher) -> KeyRing:
    """The server's key ring, asking ``fetcher`` instead of the network."""
    return KeyRing(store=ServerKeyStore(hs.db), server_name=hs.server_name,
                   own_keys=own_server_keys(hs.server_name, hs.signing_key, hs.config.old_signing_keys),
                   fetcher=fetcher, direct_fetcher=fetcher, clock_ms=lambda: hs.clock_ms(),
                   backoff=Backoff(initial_s=60))


async def test_own_keys_are_local_never_fetched(hs):
    keyring, fake = make_keyring(hs, {hs.server_name: generate_signing_key("evil")})
    assert await keyring.get_verify_key(hs.server_name, hs.signing_key.key_id,
                                        minimum_valid_until_ts=hs.clock_ms() + 30 * DAY) == hs.signing_key.verify_key
    assert await keyring.get_verify_key(hs.server_name, "ed25519:evil") is None
    assert fake.asked == []


@pytest.mark.parametrize("config_overrides", [{"old_signing_keys": {
    "ed25519:old": {"key": encode_verify_key(generate_signing_key("old").verify_key), "expired_ts": 1000}}}])
async def test_our_old_keys_verify_old_events_only(hs):
    keyring, fake = make_keyring(hs, {})
    assert await keyring.get_verify_key(hs.server_name, "ed25519:old") is not None
    assert await keyring.get_verify_key(hs.server_name, "ed25519:old", minimum_valid_until_ts=1001) is None
    assert fake.asked == []


async def test_cached_keys_respect_validity_and_are_refetched_when_too_old(hs):
    remote, old = generate_signing_key("r1"), generate_signing_key("r0")
    keyring, fake = make_keyring(hs, {"remote.test": remote})
    now = hs.clock_ms()
    await keyring.store.store_keys(
        [ServerKey("remote.test", remote.key_id, encode_verify_key(remote.verify_key), now + 60_000, None),
         ServerKey("remote.test", old.key_id, encode_verify_key(old.verify_key), now - 60_000, now - 60_000)],
        {"server_name": "remote.test"}, now,
    )
    assert await keyring.get_verify_key("remote.test", remote.key_id, minimum_valid_until_ts=now) == remote.verify_key
    # The old key is known for old events, but not valid now, and the server does not have it any more.
    assert await keyring.get_verify_key("remote.test", old.key_id) == old.verify_key
    assert fake.asked == []
    assert await keyring.get_verify_key("remote.test", old.key_id, minimum_valid_until_ts=now) is None
    assert fake.asked == [[KeyRequest("remote.test", old.key_id, now)]]
    # remote.test failed to answer that: backed off, no second fetch.
    assert await keyring.get_verify_key("remote.test", old.key_id, minimum_valid_until_ts=now) is None
    assert len(fake.asked) == 1
    # That fetch brought the server's current response: r1 is now valid for a day.
    stored = await keyring.store.get_key("remote.test", remote.key_id)
    assert stored.valid_until_ts == now + DAY and stored.fetched_ts == now
    keyring.reset_backoff("remote.test")
    # Needed later than what we hold: fetched again.
    later = now + 2 * DAY
    assert await keyring.get_verify_key("remote.test", remote.key_id, minimum_valid_until_ts=later) is None
    assert fake.asked[-1] == [KeyRequest("remote.test", remote.key_id, later)]


async def test_seven_day_cap(hs):
    remote = generate_signing_key("r")
    keyring, fake = make_keyring(hs, {"remote.test": remote}, valid_for=365 * DAY)
    now = hs.clock_ms()
    assert await keyring.get_verify_key("remote.test", remote.key_id, minimum_valid_until_ts=now + 6 * DAY)
    # Published for a year, trusted for seven days: beyond that we cannot get it (and do not even ask).
    asked = len(fake.asked)
    assert await keyring.get_verify_key("remote.test", remote.key_id, minimum_valid_until_ts=now + 8 * DAY) is None
    assert len(fake.asked) == asked
    # Fetched eight days ago: too old to trust for an event sent now.
    hs.clock_ms = lambda: now + 8 * DAY
    assert await keyring.get_verify_key("remote.test", remote.key_id, minimum_valid_until_ts=now + 8 * DAY)
    assert len(fake.asked) == asked + 1


async def test_verify_events_in_one_fetch(hs):
    a, b = generate_signing_key("a"), generate_signing_key("b")
    keyring, fake = make_keyring(hs, {"a.test": a, "b.test": b})
    rv = RoomVersions.V10
    now = hs.clock_ms()

    def event(server, key, ts=now, body="hi"):
        ev = {"type": "m.room.message", "room_id": "!r:a.test", "sender": f"@u:{server}", "origin_server_ts": ts,
              "content": {"body": body}, "depth": 3, "prev_events": [], "auth_events": []}
        return sign_event(ev, server, key, room_version=rv)

    tampered = event("a.test", a)
    tampered["origin_server_ts"] += 1
    forged = event("b.test", a)  # b.test's sender, signed with a's key under b's name
    events = [event("a.test", a), event("b.test", b), tampered, forged, event("a.test", a, ts=now + 30 * DAY),
              {"type": "x"}]
    errors = await keyring.verify_events([(e, rv) for e in events])
    assert errors[:2] == [None, None]
    assert all(isinstance(e, SignatureError) for e in errors[2:])
    assert "no known, valid key" in str(errors[4])  # from the future: no key can be valid then
    assert len(fake.asked) == 1 and {r.server_name for r in fake.asked[0]} == {"a.test", "b.test"}
    # Cached now.
    await keyring.verify_event(events[0], rv)
    assert len(fake.asked) == 1
    with pytest.raises(SignatureError):
        await keyring.verify_event(tampered, rv)


async def test_notary_duty_refreshes_too_old_docs(hs):
    remote = generate_signing_key("r")
    keyring, fake = make_keyring(hs, {"remote.test": remote})
    now = hs.clock_ms()
    docs = await keyring.key_docs_for_notary("remote.test", now)
    assert len(docs) == 1 and docs[0]["valid_until_ts"] == now + DAY and len(fake.asked) == 1
    assert await keyring.key_docs_for_notary("remote.test", now + DAY) == docs
    assert len(fake.asked) == 1
    # Asked for more than we hold: fetched again; the server's doc is still short-lived, we serve it anyway.
    assert await keyring.key_docs_for_notary("remote.test", now + 2 * DAY, ["ed25519:r"]) == docs
    assert len(fake.asked) == 2
    # A server that answered with its key, only not valid long enough, is up: asked again
    # next time (no backoff, unlike one that is unreachable or lacks the key).
    assert await keyring.key_docs_for_notary("remote.test", now + 2 * DAY, ["ed25519:r"]) == docs
    assert len(fake.asked) == 3
    assert await keyring.key_docs_for_notary("gone.test", now) == []
    # The server forgets its key for a new one: asked for the old key, we still answer
    # with the response that has it (a newer one without it does not hide it).
    fake.keys["remote.test"] = generate_signing_key("r2")
    newer = await keyring.key_docs_for_notary("remote.test", now + 3 * DAY, ["ed25519:r2"])
    assert list(newer[0]["verify_keys"]) == ["ed25519:r2"]
    old = await keyring.key_docs_for_notary("remote.test", now, ["ed25519:r"])
    assert [list(d["verify_keys"]) for d in old] == [["ed25519:r"]]


async def test_notary_duty_keeps_a_valid_key_over_a_spurious_answer(hs):
    """A notary asked by several servers: the origin refusing one query does not stop
    the next query for another key, and the origin answering later without a key it
    used to have does not make us forget that key (Synapse issue 5305's scenario)."""
    remote, other = generate_signing_key("k1"), generate_signing_key("k2")
    keyring, fake = make_keyring(hs, {})
    now = hs.clock_ms()
    assert await keyring.key_docs_for_notary("remote.test", now, ["ed25519:k0"]) == []  # refused
    fake.keys["remote.test"] = remote
    first = await keyring.key_docs_for_notary("remote.test", 0, ["ed25519:k1"])
    assert [list(d["verify_keys"]) for d in first] == [["ed25519:k1"]] and len(fake.asked) == 2
    fake.keys["remote.test"] = other  # the origin forgets k1
    await keyring.key_docs_for_notary("remote.test", now + 2 * DAY, ["ed25519:k1"])
    assert len(fake.asked) == 3
    again = await keyring.key_docs_for_notary("remote.test", 0, ["ed25519:k1"])
    assert [list(d["verify_keys"]) for d in again] == [["ed25519:k1"]]


async def test_keys_are_remembered_between_requests(hs):
    remote = generate_signing_key("r")
    keyring, fake = make_keyring(hs, {"remote.test": remote})
    reads = []
    original = keyring.store.get_server_keys

    async def counting(server_name):
        reads.append(server_name)
        return await original(server_name)

    keyring.store.get_server_keys = counting
    now = hs.clock_ms()
    for _ in range(5):
        assert await keyring.get_verify_key("remote.test", remote.key_id, minimum_valid_until_ts=now)
    # One read before the fetch, one after storing what came; then from memory.
    assert reads == ["remote.test", "remote.test"] and len(fake.asked) == 1
