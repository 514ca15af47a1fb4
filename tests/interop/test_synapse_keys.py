"""Keys and signed requests with a real Synapse (one Synapse and one gateway G for the
whole module; Synapse trusts G as its key server):

- we fetch Synapse's keys directly, and through Synapse's notary endpoint (asking with
  key IDs and minimum_valid_until_ts);
- Synapse fetches ours directly (as a notary) and through our notary endpoint;
- signed requests both ways (federation profile queries).
"""

from __future__ import annotations

import logging
import ssl
import time

import aiohttp
import pytest
import pytest_asyncio

from federation.signing import decode_verify_key, verify_json_signature
from gateway.server import HomeServer
from tests.gateway.client_api.conftest import auth_header
from tests.support.gateway_server import running_gateway
from tests.support.synapse import SynapseServer, register_synapse_user
from tests.support.tls import TestCA

pytestmark = pytest.mark.asyncio(loop_scope="module")


def now_ms() -> int:
    return int(time.time() * 1000)


class Env:
    ca: TestCA
    base: dict
    gw: object
    gw_keys: dict
    synapse: SynapseServer
    synapse_keys: dict
    tmp: object


async def _get_keys(url: str, ctx: ssl.SSLContext) -> dict:
    async with aiohttp.ClientSession() as s, s.get(f"{url}/_matrix/key/v2/server", ssl=ctx) as r:
        return await r.json()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def env(tmp_path_factory):
    e = Env()
    e.tmp = tmp_path_factory.mktemp("synapse_keys")
    e.ca = TestCA(e.tmp / "ca")
    e.base = {"federation_custom_ca_list": [str(e.ca.ca_path)], "ip_range_whitelist": ["127.0.0.0/8"],
              "enable_registration": True, "enable_registration_without_verification": True, "bcrypt_rounds": 4}
    ctx = ssl.create_default_context(cafile=str(e.ca.ca_path))
    (e.tmp / "g").mkdir()
    async with running_gateway(e.tmp / "g", e.ca, e.base) as gw:
        e.gw = gw
        e.gw_keys = await _get_keys(gw.federation_url, ctx)
        e.synapse = SynapseServer(e.tmp / "synapse", e.ca)
        await e.synapse.start({"trusted_key_servers": [{
            "server_name": gw.server_name,
            "verify_keys": {k: v["key"] for k, v in e.gw_keys["verify_keys"].items()}}]})
        try:
            e.synapse_keys = await _get_keys(f"https://{e.synapse.server_name}", ctx)
            yield e
        finally:
            await e.synapse.stop()


def _check_signed(doc: dict, server: str, keys_doc: dict) -> None:
    for key_id, entry in keys_doc["verify_keys"].items():
        verify_json_signature(doc, server, key_id, decode_verify_key(entry["key"]))


async def test_we_fetch_synapse_keys_directly(env):
    hs = await HomeServer.open(env.gw.config)
    try:
        (key_id,) = env.synapse_keys["verify_keys"]
        got = await hs.keyring.get_verify_key(env.synapse.server_name, key_id, minimum_valid_until_ts=now_ms())
        assert got == decode_verify_key(env.synapse_keys["verify_keys"][key_id]["key"])
        (doc,) = await hs.keyring.store.get_key_docs(env.synapse.server_name)
        assert set(doc["signatures"]) == {env.synapse.server_name}
    finally:
        await hs.close()


async def test_we_fetch_keys_through_synapse_as_notary(env):
    """Gateway G2 trusts Synapse as its key server and gets G's keys from it: Synapse
    fetches them from G directly (so this also covers Synapse fetching ours directly)
    and counter-signs them."""
    (env.tmp / "g2").mkdir()
    trusted = [{"server_name": env.synapse.server_name,
                "verify_keys": {k: v["key"] for k, v in env.synapse_keys["verify_keys"].items()}}]
    async with running_gateway(env.tmp / "g2", env.ca, {**env.base, "trusted_key_servers": trusted}) as g2:
        hs = await HomeServer.open(g2.config)
        try:
            (key_id,) = env.gw_keys["verify_keys"]
            got = await hs.keyring.get_verify_key(env.gw.server_name, key_id, minimum_valid_until_ts=now_ms())
            assert got == decode_verify_key(env.gw_keys["verify_keys"][key_id]["key"])
            (doc,) = await hs.keyring.store.get_key_docs(env.gw.server_name)
        finally:
            await hs.close()
    assert set(doc["signatures"]) == {env.gw.server_name, env.synapse.server_name}
    _check_signed(doc, env.gw.server_name, env.gw_keys)
    _check_signed(doc, env.synapse.server_name, env.synapse_keys)


async def test_synapse_fetches_keys_through_our_notary(env, caplog):
    """Gateway G3 sends Synapse a signed request: Synapse asks its key server (our G)
    for G3's key; G fetches it from G3 and counter-signs it."""
    caplog.set_level(logging.INFO, logger="gateway.access")
    await register_synapse_user(env.synapse, "carol")
    (env.tmp / "g3").mkdir()
    async with running_gateway(env.tmp / "g3", env.ca, env.base) as g3:
        hs = await HomeServer.open(g3.config)
        try:
            answer = await hs.federation_client.request(
                "GET", env.synapse.server_name, "/_matrix/federation/v1/query/profile",
                query={"user_id": f"@carol:{env.synapse.server_name}", "field": "displayname"})
        finally:
            await hs.close()
        assert answer == {"displayname": "carol"}
    notary_queries = [m for m in caplog.messages if "POST /_matrix/key/v2/query 200" in m]
    assert notary_queries, caplog.messages
    # G holds G3's key now, fetched directly for its notary duty.
    hs = await HomeServer.open(env.gw.config)
    try:
        (doc,) = await hs.keyring.store.get_key_docs(g3.server_name)
        assert set(doc["signatures"]) == {g3.server_name}
    finally:
        await hs.close()


async def test_signed_requests_both_ways(env):
    async with aiohttp.ClientSession() as s:
        async with s.post(f"{env.gw.client_url}/_matrix/client/v3/register", json={
                "username": "alice", "password": "alice-pass", "auth": {"type": "m.login.dummy"}}) as r:
            ours = await r.json()
        async with s.put(f"{env.gw.client_url}/_matrix/client/v3/profile/@alice:{env.gw.server_name}/displayname",
                         json={"displayname": "Alice from Gateway"}, headers=auth_header(ours["access_token"])) as r:
            assert r.status == 200
        # Synapse asks us (its signed request is checked by our middleware).
        token = await register_synapse_user(env.synapse, "bob")
        async with s.get(f"{env.synapse.client_url}/_matrix/client/v3/profile/@alice:{env.gw.server_name}",
                         headers=auth_header(token)) as r:
            assert r.status == 200, await r.text()
            assert (await r.json())["displayname"] == "Alice from Gateway"
    # We ask Synapse (it checks our signature, with our key from our own notary endpoint).
    hs = await HomeServer.open(env.gw.config)
    try:
        answer = await hs.federation_client.request(
            "GET", env.synapse.server_name, "/_matrix/federation/v1/query/profile",
            query={"user_id": f"@bob:{env.synapse.server_name}", "field": "displayname"})
        assert answer == {"displayname": "bob"}
    finally:
        await hs.close()
