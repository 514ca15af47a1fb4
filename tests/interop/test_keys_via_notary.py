"""Fetching keys through a notary: gateway A trusts gateway B as its key server; when a
real Synapse sends A a signed request, A gets Synapse's key from B (which fetched it
directly and counter-signed it)."""

from __future__ import annotations

import json
import ssl

import aiohttp
import pytest

from gateway.server import HomeServer
from tests.gateway.client_api.conftest import auth_header
from tests.support.gateway_server import running_gateway
from tests.support.synapse import register_synapse_user, unique_localpart


@pytest.mark.parametrize("notary_key_ok", [True, False])
async def test_keys_fetched_through_a_notary(tmp_path, notary_key_ok, shared_synapse):
    synapse = shared_synapse  # the process's (tests/interop/conftest.py): a user of our own below
    ca = synapse.ca
    base = {"federation_custom_ca_list": [str(ca.ca_path)], "ip_range_whitelist": ["127.0.0.0/8"],
            "enable_registration": True, "enable_registration_without_verification": True, "bcrypt_rounds": 4}
    (tmp_path / "b").mkdir()
    (tmp_path / "a").mkdir()
    async with running_gateway(tmp_path / "b", ca, base) as notary:
        ctx = ssl.create_default_context(cafile=str(ca.ca_path))
        async with aiohttp.ClientSession() as s:
            async with s.get(f"{notary.federation_url}/_matrix/key/v2/server", ssl=ctx) as r:
                notary_keys = (await r.json())["verify_keys"]
        if notary_key_ok:
            verify_keys = {k: v["key"] for k, v in notary_keys.items()}
        else:  # a key the notary does not have: its answers must be refused
            from federation.signing import encode_verify_key, generate_signing_key

            wrong = generate_signing_key("wrong")
            verify_keys = {k: encode_verify_key(wrong.verify_key) for k in notary_keys}
        trusted = [{"server_name": notary.server_name, "verify_keys": verify_keys}]
        async with running_gateway(tmp_path / "a", ca, {**base, "trusted_key_servers": trusted}) as gw, \
                aiohttp.ClientSession() as s:
            async with s.post(f"{gw.client_url}/_matrix/client/v3/register", json={
                    "username": "dana", "password": "pw", "auth": {"type": "m.login.dummy"}}) as r:
                assert r.status == 200
            token = await register_synapse_user(synapse, unique_localpart("erik"))
            async with s.get(f"{synapse.client_url}/_matrix/client/v3/profile/@dana:{gw.server_name}",
                             headers=auth_header(token)) as r:
                assert r.status == 200, await r.text()
            hs = await HomeServer.open(gw.config)
            try:
                rows = await hs.db.fetch("SELECT key_json FROM server_keys WHERE server_name = $1",
                                         synapse.server_name)
            finally:
                await hs.close()
    assert rows, "Synapse's key was stored"
    doc = json.loads(rows[0][0])
    if notary_key_ok:
        # It came through the notary: counter-signed by B, and self-signed by Synapse.
        assert set(doc["signatures"]) == {synapse.server_name, notary.server_name}
    else:
        # The notary's answer failed its signature check; A fetched from Synapse directly.
        assert set(doc["signatures"]) == {synapse.server_name}
