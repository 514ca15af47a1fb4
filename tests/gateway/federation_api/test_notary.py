"""Our notary endpoints, in-process (remote keys come from a fake fetcher): answers
counter-signed by us, minimum_valid_until_ts honoured (default: now), bad queries
refused with M_BAD_JSON / M_INVALID_PARAM."""

from __future__ import annotations

import pytest

from federation.keyring import parse_key_response
from federation.signing import generate_signing_key, verify_json_signature
from tests.gateway.client_api.conftest import client, config_overrides, hs  # noqa: F401
from tests.gateway.services.federation.test_keyring import DAY, FakeFetcher, keyring_with

REMOTE = "remote.test"
KEY = generate_signing_key("r1")


@pytest.fixture
def fake(hs):
    frozen = hs.clock_ms()
    hs.clock_ms = lambda: frozen
    fetcher = FakeFetcher(hs, {REMOTE: KEY})
    hs.keyring = keyring_with(hs, fetcher)
    return fetcher


def check_countersigned(hs, doc, server):
    parse_key_response(doc, server)  # self-signed
    verify_json_signature(doc, hs.server_name, hs.signing_key.key_id, hs.signing_key.verify_key)


async def test_post_query_counter_signs_and_caches(client, hs, fake):
    now = hs.clock_ms()
    query = {"server_keys": {REMOTE: {KEY.key_id: {"minimum_valid_until_ts": now}}}}
    resp = await client.post("/_matrix/key/v2/query", json=query)
    (doc,) = (await resp.json())["server_keys"]
    assert resp.status == 200 and doc["valid_until_ts"] == now + DAY
    check_countersigned(hs, doc, REMOTE)
    assert len(fake.asked) == 1
    # Cached: the same query and the GET form are answered without fetching.
    assert (await (await client.post("/_matrix/key/v2/query", json=query)).json())["server_keys"] == [doc]
    resp = await client.get(f"/_matrix/key/v2/query/{REMOTE}")
    assert (await resp.json())["server_keys"] == [doc]
    assert len(fake.asked) == 1
    # Asked for more than we hold: fetched again.
    resp = await client.get(f"/_matrix/key/v2/query/{REMOTE}", params={"minimum_valid_until_ts": str(now + 2 * DAY)})
    assert resp.status == 200 and len(fake.asked) == 2
    # The server gave its key, only valid less long: it is up, so it is asked again next
    # time (what it has is served meanwhile).
    resp = await client.get(f"/_matrix/key/v2/query/{REMOTE}", params={"minimum_valid_until_ts": str(now + 2 * DAY)})
    assert (await resp.json())["server_keys"] == [doc] and len(fake.asked) == 3
    # A key ID it does not have: fetched once, then backed off for a while.
    query = {"server_keys": {REMOTE: {"ed25519:new": {}}}}
    assert len((await (await client.post("/_matrix/key/v2/query", json=query)).json())["server_keys"]) == 1
    assert len((await (await client.post("/_matrix/key/v2/query", json=query)).json())["server_keys"]) == 1
    assert len(fake.asked) == 4
    # The GET form naming the key ID (the spec's older form, which Synapse serves).
    resp = await client.get(f"/_matrix/key/v2/query/{REMOTE}/{KEY.key_id}")
    assert resp.status == 200 and (await resp.json())["server_keys"] == [doc]


async def test_our_own_keys_and_unreachable_servers(client, hs, fake):
    resp = await client.post("/_matrix/key/v2/query", json={"server_keys": {hs.server_name: {}, "down.test": {},
                                                                           "bad/name": {}}})
    (doc,) = (await resp.json())["server_keys"]
    check_countersigned(hs, doc, hs.server_name)
    assert [r[0].server_name for r in fake.asked] == ["down.test"]  # never ourselves, never a bad name
    resp = await client.get("/_matrix/key/v2/query/down.test")
    assert resp.status == 200 and (await resp.json()) == {"server_keys": []}


@pytest.mark.parametrize("body, errcode", [
    ({"server_keys": []}, "M_BAD_JSON"),
    ({"server_keys": {REMOTE: []}}, "M_BAD_JSON"),
    ({"server_keys": {REMOTE: {"ed25519:a": 5}}}, "M_BAD_JSON"),
    ({"server_keys": {REMOTE: {"ed25519:a": {"minimum_valid_until_ts": "soon"}}}}, "M_BAD_JSON"),
    ({"server_keys": {f"s{i}.test": {} for i in range(101)}}, "M_BAD_JSON"),
    ([1], "M_BAD_JSON"),
])
async def test_bad_queries(client, fake, body, errcode):
    resp = await client.post("/_matrix/key/v2/query", json=body)
    assert resp.status == 400 and (await resp.json())["errcode"] == errcode
    assert fake.asked == []


async def test_bad_get_query(client, fake):
    resp = await client.get(f"/_matrix/key/v2/query/{REMOTE}", params={"minimum_valid_until_ts": "x"})
    assert resp.status == 400 and (await resp.json())["errcode"] == "M_INVALID_PARAM"
