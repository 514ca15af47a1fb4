"""Room directory over federation with a real Synapse, both ways: it resolves our alias
and lists our public rooms; we resolve its alias and list its public rooms."""

from __future__ import annotations

import asyncio
from urllib.parse import quote

import aiohttp
from yarl import URL

from tests.gateway.client_api.conftest import auth_header
from tests.support.gateway_server import running_gateway
from tests.support.synapse import register_synapse_user, unique_localpart


def alias_url(base: str, alias: str) -> URL:
    return URL(f"{base}/_matrix/client/v3/directory/room/{quote(alias, safe='')}", encoded=True)


async def test_directory_both_ways(tmp_path, shared_synapse):
    # The process's Synapse (tests/interop/conftest.py; it publishes rooms over federation
    # and lets users publish): other modules use it too, so its room here has a name
    # and alias of its own.
    synapse = shared_synapse
    ca = synapse.ca
    garden_name = unique_localpart("Garden")
    extra = {"federation_custom_ca_list": [str(ca.ca_path)], "ip_range_whitelist": ["127.0.0.0/8"],
             "enable_registration": True, "enable_registration_without_verification": True, "bcrypt_rounds": 4,
             "allow_public_rooms_over_federation": True}
    async with running_gateway(tmp_path, ca, extra) as gw, aiohttp.ClientSession() as s:
        async with s.post(f"{gw.client_url}/_matrix/client/v3/register", json={
                "username": "alice", "password": "alice-pass", "auth": {"type": "m.login.dummy"}}) as r:
            alice = (await r.json())["access_token"]
        async with s.post(f"{gw.client_url}/_matrix/client/v3/createRoom", headers=auth_header(alice), json={
                "visibility": "public", "preset": "public_chat", "name": "Lobby", "room_alias_name": "lobby"}) as r:
            assert r.status == 200, await r.text()
            our_room = (await r.json())["room_id"]
        bob = await register_synapse_user(synapse, unique_localpart("bob"))

        # Synapse resolves our alias (federation query/directory) and lists our public rooms.
        our_alias = f"#lobby:{gw.server_name}"
        async with s.get(alias_url(synapse.client_url, our_alias), headers=auth_header(bob)) as r:
            assert r.status == 200, await r.text()
            body = await r.json()
        assert body["room_id"] == our_room and gw.server_name in body["servers"]
        async with s.post(f"{synapse.client_url}/_matrix/client/v3/publicRooms", params={"server": gw.server_name},
                          json={"limit": 10}, headers=auth_header(bob)) as r:
            assert r.status == 200, await r.text()
            listed = (await r.json())["chunk"]
        assert [(x["room_id"], x.get("name"), x.get("canonical_alias")) for x in listed] == \
            [(our_room, "Lobby", our_alias)]
        async with s.get(alias_url(synapse.client_url, f"#nothing:{gw.server_name}"), headers=auth_header(bob)) as r:
            assert r.status == 404 and (await r.json())["errcode"] == "M_NOT_FOUND"

        # We resolve Synapse's alias and list its public rooms.
        async with s.post(f"{synapse.client_url}/_matrix/client/v3/createRoom", headers=auth_header(bob), json={
                "visibility": "public", "preset": "public_chat", "name": garden_name,
                "room_alias_name": garden_name.lower()}) as r:
            assert r.status == 200, await r.text()
            their_room = (await r.json())["room_id"]
        their_alias = f"#{garden_name.lower()}:{synapse.server_name}"
        async with s.get(alias_url(gw.client_url, their_alias)) as r:
            assert r.status == 200, await r.text()
            body = await r.json()
        assert body["room_id"] == their_room and body["servers"][0] == synapse.server_name
        async with s.get(alias_url(gw.client_url, f"#nothing:{synapse.server_name}")) as r:
            assert r.status == 404 and (await r.json())["errcode"] == "M_NOT_FOUND"
        # Synapse fills its room list in the background: wait until it lists the room
        # itself (filtered requests bypass its response cache).
        garden = {"limit": 10, "filter": {"generic_search_term": garden_name}}
        deadline = asyncio.get_running_loop().time() + 30
        while True:
            async with s.post(f"{synapse.client_url}/_matrix/client/v3/publicRooms", json=garden,
                              headers=auth_header(bob)) as r:
                if [x["room_id"] for x in (await r.json())["chunk"]] == [their_room]:
                    break
            assert asyncio.get_running_loop().time() < deadline, "Synapse never listed its room"
            await asyncio.sleep(0.2)
        async with s.post(f"{gw.client_url}/_matrix/client/v3/publicRooms", params={"server": synapse.server_name},
                          json=garden, headers=auth_header(alice)) as r:
            assert r.status == 200, await r.text()
            listed = (await r.json())["chunk"]
        assert [(x["room_id"], x.get("name")) for x in listed] == [(their_room, garden_name)]
        # Joining it by alias works over federation (make_join/send_join through Synapse).
        async with s.post(URL(f"{gw.client_url}/_matrix/client/v3/join/{quote(their_alias, safe='')}",
                              encoded=True), json={}, headers=auth_header(alice)) as r:
            body = await r.json()
            assert r.status == 200 and body == {"room_id": their_room}, body
