"""Two (three) instances of our server on loopback over TLS, trusting a test CA through
federation_custom_ca_list: they fetch each other's keys directly (and check each
other's signed requests), and through a notary (one of them, counter-signing)."""

from __future__ import annotations

import json
import ssl
import time

import aiohttp

from federation.signing import decode_verify_key, encode_verify_key, generate_signing_key, verify_json_signature
from gateway.server import HomeServer
from tests.support.gateway_server import running_gateway
from tests.support.tls import TestCA


async def _keys(url: str, ca: TestCA) -> dict:
    ctx = ssl.create_default_context(cafile=str(ca.ca_path))
    async with aiohttp.ClientSession() as s, s.get(f"{url}/_matrix/key/v2/server", ssl=ctx) as r:
        return await r.json()


async def _register(gw, name: str) -> None:
    async with aiohttp.ClientSession() as s, s.post(f"{gw.client_url}/_matrix/client/v3/register", json={
            "username": name, "password": "pw", "auth": {"type": "m.login.dummy"}}) as r:
        assert r.status == 200, await r.text()


async def test_gateways_fetch_each_others_keys_directly_and_via_a_notary(tmp_path):
    ca = TestCA(tmp_path / "ca")
    base = {"federation_custom_ca_list": [str(ca.ca_path)], "ip_range_whitelist": ["127.0.0.0/8"],
            "enable_registration": True, "enable_registration_without_verification": True, "bcrypt_rounds": 4}
    for d in "abc":
        (tmp_path / d).mkdir()
    async with running_gateway(tmp_path / "a", ca, base) as a, running_gateway(tmp_path / "b", ca, base) as b:
        a_doc, b_doc = await _keys(a.federation_url, ca), await _keys(b.federation_url, ca)
        (a_key,), (b_key,) = a_doc["verify_keys"], b_doc["verify_keys"]
        await _register(a, "anna")
        await _register(b, "bert")

        # Directly, both ways: each one's signed request makes the other fetch its key.
        for me, other, user in ((a, b, "bert"), (b, a, "anna")):
            hs = await HomeServer.open(me.config)
            try:
                answer = await hs.federation_client.request(
                    "GET", other.server_name, "/_matrix/federation/v1/query/profile",
                    query={"user_id": f"@{user}:{other.server_name}"})
                assert answer == {"displayname": user}
                other_key = a_key if other is a else b_key
                now = int(time.time() * 1000)
                got = await hs.keyring.get_verify_key(other.server_name, other_key, minimum_valid_until_ts=now)
                assert encode_verify_key(got) == (a_doc if other is a else b_doc)["verify_keys"][other_key]["key"]
            finally:
                await hs.close()
        # The other side fetched and stored the requester's key while checking the request.
        for me, other, key_id in ((a, b, b_key), (b, a, a_key)):
            hs = await HomeServer.open(me.config)
            try:
                stored = await hs.keyring.store.get_key(other.server_name, key_id)
                assert stored is not None and stored.fetched_ts is not None
            finally:
                await hs.close()

        # Through a notary: C trusts B as its key server and gets A's keys from B,
        # counter-signed by B (configured key) and self-signed by A.
        for notary_key_ok in (True, False):
            verify_keys = {b_key: b_doc["verify_keys"][b_key]["key"]} if notary_key_ok else \
                {b_key: encode_verify_key(generate_signing_key("x").verify_key)}
            c_dir = tmp_path / f"c{int(notary_key_ok)}"
            c_dir.mkdir()
            extra = {**base, "trusted_key_servers": [{"server_name": b.server_name, "verify_keys": verify_keys}]}
            async with running_gateway(c_dir, ca, extra) as c:
                hs = await HomeServer.open(c.config)
                try:
                    now = int(time.time() * 1000)
                    got = await hs.keyring.get_verify_key(a.server_name, a_key, minimum_valid_until_ts=now)
                    assert got is not None
                    (doc,) = await hs.keyring.store.get_key_docs(a.server_name)
                finally:
                    await hs.close()
            verify_json_signature(doc, a.server_name, a_key, decode_verify_key(a_doc["verify_keys"][a_key]["key"]))
            if notary_key_ok:
                assert set(doc["signatures"]) == {a.server_name, b.server_name}
                verify_json_signature(doc, b.server_name, b_key, decode_verify_key(b_doc["verify_keys"][b_key]["key"]))
            else:  # B's answer failed the check against the configured key: C went to A directly
                assert set(doc["signatures"]) == {a.server_name}

        # And B serves its own keys and A's through its notary endpoints.
        ctx = ssl.create_default_context(cafile=str(ca.ca_path))
        query = {"server_keys": {a.server_name: {a_key: {"minimum_valid_until_ts": now}}, b.server_name: {}}}
        async with aiohttp.ClientSession() as s, \
                s.post(f"{b.federation_url}/_matrix/key/v2/query", json=query, ssl=ctx) as r:
            docs = {d["server_name"]: d for d in (await r.json())["server_keys"]}
        assert set(docs) == {a.server_name, b.server_name}
        assert docs[a.server_name]["verify_keys"] == a_doc["verify_keys"]
        assert json.dumps(docs[b.server_name]["verify_keys"]) == json.dumps(b_doc["verify_keys"])
