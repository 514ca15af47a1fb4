"""federation.net.key_fetchers with a fake federation client: direct and notary
fetching, notary signature checks, batching, fallback, coalescing and backoff."""

from __future__ import annotations

import asyncio

from federation.keyring import KeyRequest
from federation.net.client import FederationRequestError
from federation.net.key_fetchers import (
    Backoff,
    ChainedKeyFetcher,
    CoalescingKeyFetcher,
    DirectKeyFetcher,
    Notary,
    NotaryKeyFetcher,
)
from federation.signing import encode_verify_key, generate_signing_key, sign_json

NOW = 1_700_000_000_000
DAY = 86_400_000


def key_doc(server, key, valid_until=NOW + DAY):
    return sign_json({"server_name": server, "valid_until_ts": valid_until,
                      "verify_keys": {key.key_id: {"key": encode_verify_key(key.verify_key)}}}, server, key)


class FakeClient:
    """Servers' own key documents, notaries that counter-sign what they know."""

    def __init__(self, servers: dict, notaries: dict | None = None, *, gate: asyncio.Event | None = None):
        self.servers = servers  # name -> signing key (absent: unreachable)
        self.notaries = notaries or {}  # name -> (notary signing key, names it knows)
        self.calls: list[tuple[str, str, object]] = []
        self.gate = gate

    async def request(self, method, destination, path, *, query=None, content=None, signed=True):
        assert signed is False  # key requests are never signed
        self.calls.append((method, destination, content))
        if self.gate is not None:
            await self.gate.wait()
        if path == "/_matrix/key/v2/server" and destination in self.servers:
            return key_doc(destination, self.servers[destination])
        if path == "/_matrix/key/v2/query" and destination in self.notaries:
            nkey, knows = self.notaries[destination]
            return {"server_keys": [sign_json(key_doc(s, self.servers[s]), destination, nkey)
                                    for s in content["server_keys"] if s in knows]}
        raise FederationRequestError(destination, "unreachable")


def clock():
    return NOW


async def test_direct_fetch_checks_and_skips_failures():
    a, b = generate_signing_key("a"), generate_signing_key("b")
    client = FakeClient({"a.test": a, "b.test": b})
    fetcher = DirectKeyFetcher(client, clock)
    got = await fetcher.fetch([KeyRequest("a.test", "ed25519:a"), KeyRequest("a.test", "ed25519:x"),
                               KeyRequest("down.test", "ed25519:d"), KeyRequest("bad/../name", "ed25519:d")])
    assert [r.server_name for r in got] == ["a.test"]
    assert got[0].keys[0].fetched_ts == NOW and got[0].has(KeyRequest("a.test", "ed25519:a", NOW))
    # One GET per server, none for an invalid name.
    assert sorted(c[1] for c in client.calls) == ["a.test", "down.test"]


async def test_direct_fetch_refuses_a_doc_for_another_server():
    a = generate_signing_key("a")

    class Lying(FakeClient):
        async def request(self, method, destination, path, **kw):
            return key_doc("other.test", a)

    assert await DirectKeyFetcher(Lying({}), clock).fetch([KeyRequest("a.test", "ed25519:a")]) == []


async def test_notary_fetch_is_batched_and_checks_the_notary_signature():
    t1, t2, n, wrong = (generate_signing_key(x) for x in ("t1", "t2", "n", "w"))
    client = FakeClient({"t1.test": t1, "t2.test": t2}, {"notary.test": (n, {"t1.test", "t2.test"})})
    good = Notary("notary.test", {n.key_id: encode_verify_key(n.verify_key)})
    requests = [KeyRequest("t1.test", "ed25519:t1", NOW), KeyRequest("t2.test", "ed25519:t2", NOW + 5),
                KeyRequest("t2.test", "ed25519:t2", NOW)]
    got = await NotaryKeyFetcher(client, [good], clock).fetch(requests)
    assert sorted(r.server_name for r in got) == ["t1.test", "t2.test"]
    # One POST for both servers, naming each key with the largest validity asked.
    assert client.calls == [("POST", "notary.test", {"server_keys": {
        "t1.test": {"ed25519:t1": {"minimum_valid_until_ts": NOW}},
        "t2.test": {"ed25519:t2": {"minimum_valid_until_ts": NOW + 5}}}})]

    # Configured with a key the notary does not sign with: nothing is accepted.
    bad = Notary("notary.test", {n.key_id: encode_verify_key(wrong.verify_key)})
    assert await NotaryKeyFetcher(client, [bad], clock).fetch(requests) == []
    # Batches of at most batch_size servers.
    client.calls.clear()
    await NotaryKeyFetcher(client, [good], clock, batch_size=1).fetch(requests)
    assert [list(c[2]["server_keys"]) for c in client.calls] == [["t1.test"], ["t2.test"]]


async def test_notaries_in_turn_then_direct():
    t1, t2, t3, n1, n2 = (generate_signing_key(x) for x in ("t1", "t2", "t3", "n1", "n2"))
    client = FakeClient({"t1.test": t1, "t2.test": t2, "t3.test": t3},
                        {"n1.test": (n1, {"t1.test"}), "n2.test": (n2, {"t1.test", "t2.test"})})
    notaries = [Notary("n1.test", None), Notary("n2.test", None)]
    chain = ChainedKeyFetcher([NotaryKeyFetcher(client, notaries, clock), DirectKeyFetcher(client, clock)])
    got = await chain.fetch([KeyRequest(s, f"ed25519:{s[:2]}", NOW) for s in ("t1.test", "t2.test", "t3.test")])
    assert sorted(r.server_name for r in got) == ["t1.test", "t2.test", "t3.test"]
    # n1 answered t1; n2 was asked only about the rest; t3 was fetched directly.
    assert [(c[0], c[1], sorted(c[2]["server_keys"]) if c[2] else None) for c in client.calls] == [
        ("POST", "n1.test", ["t1.test", "t2.test", "t3.test"]),
        ("POST", "n2.test", ["t2.test", "t3.test"]),
        ("GET", "t3.test", None),
    ]


async def test_a_notary_is_not_asked_about_itself():
    n = generate_signing_key("n")
    client = FakeClient({"notary.test": n}, {"notary.test": (n, {"notary.test"})})
    got = await NotaryKeyFetcher(client, [Notary("notary.test", None)], clock).fetch(
        [KeyRequest("notary.test", "ed25519:n")])
    assert got == [] and client.calls == []


async def test_concurrent_fetches_for_one_server_are_coalesced():
    a = generate_signing_key("a")
    gate = asyncio.Event()
    client = FakeClient({"a.test": a}, gate=gate)
    fetcher = CoalescingKeyFetcher(DirectKeyFetcher(client, clock))
    tasks = [asyncio.create_task(fetcher.fetch([KeyRequest("a.test", "ed25519:a", NOW)])) for _ in range(20)]
    await asyncio.sleep(0)
    gate.set()
    results = await asyncio.gather(*tasks)
    assert all(len(r) == 1 and r[0].server_name == "a.test" for r in results)
    assert len(client.calls) == 1 and fetcher.fetches == 1


async def test_failing_servers_are_backed_off_exponentially():
    t = [0.0]
    backoff = Backoff(initial_s=10, multiplier=2, maximum_s=25, monotonic=lambda: t[0])
    client = FakeClient({})
    fetcher = CoalescingKeyFetcher(DirectKeyFetcher(client, clock), backoff)
    req = [KeyRequest("down.test", "ed25519:x", NOW)]
    for _ in range(5):
        assert await fetcher.fetch(req) == []
    assert len(client.calls) == 1  # no fetch storm
    t[0] = 10.0
    await fetcher.fetch(req)
    assert len(client.calls) == 2
    t[0] = 29.0  # second failure: 20 s
    await fetcher.fetch(req)
    assert len(client.calls) == 2
    t[0] = 30.0
    await fetcher.fetch(req)
    assert len(client.calls) == 3
    t[0] = 54.0  # capped at 25 s
    await fetcher.fetch(req)
    assert len(client.calls) == 3
    t[0] = 55.0
    await fetcher.fetch(req)
    assert len(client.calls) == 4
    # The server comes back (or proves it is up): no more backoff.
    client.servers["down.test"] = generate_signing_key("x")
    backoff.reset("down.test")
    assert len(await fetcher.fetch(req)) == 1
    assert not backoff.blocked("down.test")


async def test_a_server_answering_without_the_key_is_backed_off_too():
    a = generate_signing_key("a")
    client = FakeClient({"a.test": a})
    fetcher = CoalescingKeyFetcher(DirectKeyFetcher(client, clock))
    unknown = [KeyRequest("a.test", "ed25519:forged", NOW)]
    assert len(await fetcher.fetch(unknown)) == 1  # its doc came, without the key
    assert await fetcher.fetch(unknown) == []
    assert len(client.calls) == 1


async def test_a_refused_key_does_not_block_the_servers_other_keys():
    """The backoff is per key: a server that refused (or lacked) one key is still asked
    for another one at once, and the refused key stays backed off."""
    a = generate_signing_key("a")
    client = FakeClient({})  # refuses everything at first
    fetcher = CoalescingKeyFetcher(DirectKeyFetcher(client, clock))
    assert await fetcher.fetch([KeyRequest("a.test", "ed25519:old", NOW)]) == []
    client.servers["a.test"] = a
    got = await fetcher.fetch([KeyRequest("a.test", "ed25519:a", NOW)])
    assert [r.server_name for r in got] == ["a.test"] and len(client.calls) == 2
    assert await fetcher.fetch([KeyRequest("a.test", "ed25519:old", NOW)]) == []
    assert len(client.calls) == 2
    assert fetcher.backoff.blocked("a.test", "ed25519:old") and not fetcher.backoff.blocked("a.test", "ed25519:a")


async def test_a_fetcher_bug_does_not_hang_waiters():
    class Broken:
        async def fetch(self, requests):
            await asyncio.sleep(0)
            raise RuntimeError("bug")

    fetcher = CoalescingKeyFetcher(Broken())
    results = await asyncio.gather(*(fetcher.fetch([KeyRequest("a.test", "ed25519:a")]) for _ in range(3)))
    assert results == [[], [], []]
