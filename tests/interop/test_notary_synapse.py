"""Our notary with a real Synapse: we serve its keys counter-signed, and a Synapse that
trusts us as its key server gets our keys through our notary endpoint."""

from __future__ import annotations

import logging
import ssl
import time

import aiohttp
import signedjson.key
import signedjson.sign

from gateway.server import HomeServer
from tests.support.gateway_server import running_gateway
from tests.support.synapse import SynapseServer, register_synapse_user
from tests.support.tls import TestCA


def _vk(doc: dict, key_id: str):
    return signedjson.key.decode_verify_key_base64("ed25519", key_id.split(":", 1)[1], doc["verify_keys"][key_id]["key"])


async def test_notary_both_ways(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="gateway.access")
    ca = TestCA(tmp_path / "ca")
    extra = {"federation_custom_ca_list": [str(ca.ca_path)], "ip_range_whitelist": ["127.0.0.0/8"]}
    async with running_gateway(tmp_path, ca, extra) as gw:
        ctx = ssl.create_default_context(cafile=str(ca.ca_path))
        async with aiohttp.ClientSession() as s:
            async with s.get(f"{gw.federation_url}/_matrix/key/v2/server", ssl=ctx) as r:
                ours = await r.json()
        our_key = next(iter(ours["verify_keys"]))
        synapse = SynapseServer(tmp_path / "synapse", ca)
        await synapse.start({"trusted_key_servers": [{
            "server_name": gw.server_name, "verify_keys": {our_key: ours["verify_keys"][our_key]["key"]}}]})
        try:
            now = int(time.time() * 1000)
            async with aiohttp.ClientSession() as s:
                # Our notary fetches Synapse's keys and counter-signs them.
                async with s.get(f"https://{synapse.server_name}/_matrix/key/v2/server", ssl=ctx) as r:
                    theirs = await r.json()
                synapse_key = next(iter(theirs["verify_keys"]))
                query = {"server_keys": {synapse.server_name: {synapse_key: {"minimum_valid_until_ts": now}}}}
                async with s.post(f"{gw.federation_url}/_matrix/key/v2/query", json=query, ssl=ctx) as r:
                    assert r.status == 200
                    (doc,) = (await r.json())["server_keys"]
                async with s.get(f"{gw.federation_url}/_matrix/key/v2/query/{synapse.server_name}", ssl=ctx) as r:
                    assert (await r.json())["server_keys"][0]["verify_keys"] == theirs["verify_keys"]
                async with s.post(f"{gw.federation_url}/_matrix/key/v2/query", json={"server_keys": []}, ssl=ctx) as r:
                    assert r.status == 400 and (await r.json())["errcode"] == "M_BAD_JSON"
            signedjson.sign.verify_signed_json(doc, synapse.server_name, _vk(theirs, synapse_key))
            signedjson.sign.verify_signed_json(doc, gw.server_name, _vk(ours, our_key))

            # Synapse trusts us as its key server: to check our signed request it asks our notary.
            await register_synapse_user(synapse, "carol")
            hs = await HomeServer.open(gw.config)
            try:
                answer = await hs.federation_client.request(
                    "GET", synapse.server_name, "/_matrix/federation/v1/query/profile",
                    query={"user_id": f"@carol:{synapse.server_name}"},
                )
            finally:
                await hs.close()
            assert answer["displayname"] == "carol"
            # Synapse asked our notary (the only queries to it besides ours above came from Synapse).
            notary_queries = [m for m in caplog.messages if "/_matrix/key/v2/query" in m]
            assert len(notary_queries) >= 4, notary_queries
            assert "POST /_matrix/key/v2/query 200" in notary_queries[3]
        finally:
            await synapse.stop()
