"""Signed federation requests both ways with a real Synapse: it queries a profile on our
server (we fetch its key and check its X-Matrix signature), and we query one on it."""

from __future__ import annotations

import aiohttp

from federation.signing import build_x_matrix_authorization, generate_signing_key
from gateway.server import HomeServer
from tests.gateway.client_api.conftest import auth_header
from tests.support.gateway_server import running_gateway
from tests.support.synapse import register_synapse_user, unique_localpart


async def test_signed_requests_both_ways(tmp_path, shared_synapse):
    synapse = shared_synapse
    ca = synapse.ca
    extra = {"federation_custom_ca_list": [str(ca.ca_path)], "ip_range_whitelist": ["127.0.0.0/8"],
             "enable_registration": True, "enable_registration_without_verification": True, "bcrypt_rounds": 4}
    async with running_gateway(tmp_path, ca, extra) as gw, aiohttp.ClientSession() as s:
        # A user on our side with a display name.
        async with s.post(f"{gw.client_url}/_matrix/client/v3/register", json={
                "username": "alice", "password": "alice-pass", "auth": {"type": "m.login.dummy"}}) as r:
            ours = await r.json()
        async with s.put(f"{gw.client_url}/_matrix/client/v3/profile/@alice:{gw.server_name}/displayname",
                         json={"displayname": "Alice from Gateway"}, headers=auth_header(ours["access_token"])) as r:
            assert r.status == 200
        # 1. Synapse asks us (a signed request from Synapse that we must verify).
        bob = unique_localpart("bob")  # the Synapse is shared with other modules
        bob_token = await register_synapse_user(synapse, bob)
        async with s.get(f"{synapse.client_url}/_matrix/client/v3/profile/@alice:{gw.server_name}",
                         headers=auth_header(bob_token)) as r:
            assert r.status == 200, await r.text()
            assert (await r.json())["displayname"] == "Alice from Gateway"

        # 2. We ask Synapse (Synapse fetches our key and checks our signature).
        hs = await HomeServer.open(gw.config)
        try:
            answer = await hs.federation_client.request(
                "GET", synapse.server_name, "/_matrix/federation/v1/query/profile",
                query={"user_id": f"@{bob}:{synapse.server_name}", "field": "displayname"},
            )
            assert answer == {"displayname": bob}  # Synapse's default: the localpart
            # Synapse's key is now cached in our database.
            (key_id,) = [k async for k in _synapse_key_ids(s, synapse)]
            assert await hs.keyring.store.get_key(synapse.server_name, key_id) is not None
        finally:
            await hs.close()

        # 3. Forged and misdirected requests are refused.
        url = f"{gw.federation_url}/_matrix/federation/v1/query/profile?user_id=%40alice%3A{gw.server_name}"
        ssl_ctx = __import__("ssl").create_default_context(cafile=str(ca.ca_path))
        target = f"/_matrix/federation/v1/query/profile?user_id=%40alice%3A{gw.server_name}"
        forged = build_x_matrix_authorization("GET", target, synapse.server_name, gw.server_name, None,
                                              generate_signing_key(key_id.split(":")[1]))
        wrong_dest = build_x_matrix_authorization("GET", target, synapse.server_name, "elsewhere.test", None,
                                                  generate_signing_key("x"))
        # A header that cannot even be parsed is a bad request (400), as Synapse answers.
        for headers, status, fragment in (({}, 401, "Missing"), ({"Authorization": forged}, 401, "Invalid X-Matrix"),
                                          ({"Authorization": wrong_dest}, 401, "not"),
                                          ({"Authorization": "X-Matrix garbage"}, 400, "Malformed X-Matrix")):
            async with s.get(aiohttp.client.URL(url, encoded=True), headers=headers, ssl=ssl_ctx) as r:
                body = await r.json()
                assert r.status == status and body["errcode"] == "M_UNAUTHORIZED", body
                assert fragment in body["error"]


async def _synapse_key_ids(session, synapse):
    import ssl

    insecure = ssl.create_default_context()
    insecure.check_hostname = False
    insecure.verify_mode = ssl.CERT_NONE
    async with session.get(f"https://{synapse.server_name}/_matrix/key/v2/server", ssl=insecure) as r:
        for key_id in (await r.json())["verify_keys"]:
            yield key_id
