"""A real Synapse fetches our server keys over TLS federation and notarises them."""

from __future__ import annotations

import ssl
import time

import aiohttp
import pytest
import signedjson.key
import signedjson.sign

from tests.support.gateway_server import running_gateway
from tests.support.synapse import SynapseServer
from tests.support.tls import TestCA


@pytest.fixture
def synapse(shared_synapse) -> SynapseServer:
    """The process's Synapse (tests/interop/conftest.py): each test asks it about a
    server of ours of its own."""
    return shared_synapse


def _verify_key(doc: dict, key_id: str):
    return signedjson.key.decode_verify_key_base64("ed25519", key_id.split(":", 1)[1], doc["verify_keys"][key_id]["key"])


async def test_synapse_notary_serves_our_keys(tmp_path, synapse):
    ca = TestCA(tmp_path / "ca")
    async with running_gateway(tmp_path, ca) as gw:
        ctx = ssl.create_default_context(cafile=str(ca.ca_path))
        insecure = ssl.create_default_context()
        insecure.check_hostname = False
        insecure.verify_mode = ssl.CERT_NONE
        async with aiohttp.ClientSession() as s:
            async with s.get(f"{gw.federation_url}/_matrix/key/v2/server", ssl=ctx) as r:
                ours = await r.json()
            key_id = next(iter(ours["verify_keys"]))
            # Ask Synapse (as a notary) for our key: it must fetch it from us over TLS.
            query = {"server_keys": {gw.server_name: {key_id: {"minimum_valid_until_ts": int(time.time() * 1000)}}}}
            async with s.post(f"https://{synapse.server_name}/_matrix/key/v2/query", json=query, ssl=insecure) as r:
                assert r.status == 200, await r.text()
                notarised = await r.json()
            async with s.get(f"https://{synapse.server_name}/_matrix/key/v2/server", ssl=insecure) as r:
                synapse_keys = await r.json()

    (doc,) = [d for d in notarised["server_keys"] if d["server_name"] == gw.server_name]
    assert doc["verify_keys"][key_id] == ours["verify_keys"][key_id]
    # Our own signature survives the round trip through Synapse ...
    signedjson.sign.verify_signed_json(doc, gw.server_name, _verify_key(ours, key_id))
    # ... and Synapse counter-signed it with its key.
    synapse_key_id = next(iter(synapse_keys["verify_keys"]))
    signedjson.sign.verify_signed_json(doc, synapse.server_name, _verify_key(synapse_keys, synapse_key_id))
