from __future__ import annotations

from .conftest import auth_header, register

C = "/_matrix/client/v3"


async def test_profile_round_trip(client):
    reg = await register(client, "pat")
    h = auth_header(reg["access_token"])
    assert await (await client.get(f"{C}/profile/@pat:hs.test", headers=h)).json() == {"displayname": "pat"}
    assert (await client.put(f"{C}/profile/@pat:hs.test/displayname", json={"displayname": "Pat ✓"}, headers=h)).status == 200
    assert (await client.put(f"{C}/profile/@pat:hs.test/avatar_url", json={"avatar_url": "mxc://hs.test/abc"}, headers=h)).status == 200
    assert await (await client.get(f"{C}/profile/@pat:hs.test", headers=h)).json() == {
        "displayname": "Pat ✓", "avatar_url": "mxc://hs.test/abc"}
    assert await (await client.get(f"{C}/profile/@pat:hs.test/displayname", headers=h)).json() == {"displayname": "Pat ✓"}


async def test_profile_errors(client):
    pat = await register(client, "pat")
    other = await register(client, "quinn")
    h = auth_header(pat["access_token"])
    resp = await client.put(f"{C}/profile/@quinn:hs.test/displayname", json={"displayname": "x"}, headers=h)
    assert resp.status == 403 and (await resp.json())["errcode"] == "M_FORBIDDEN"
    resp = await client.put(f"{C}/profile/@pat:hs.test/displayname", json={"displayname": 5}, headers=h)
    assert resp.status == 400 and (await resp.json())["errcode"] == "M_BAD_JSON"
    resp = await client.put(f"{C}/profile/@pat:hs.test/avatar_url", json={"avatar_url": "http://evil"}, headers=h)
    assert resp.status == 400
    resp = await client.get(f"{C}/profile/@nobody:hs.test", headers=h)
    assert resp.status == 404 and (await resp.json())["errcode"] == "M_NOT_FOUND"
    assert other["user_id"] == "@quinn:hs.test"


async def test_filters(client):
    reg = await register(client, "rae")
    h = auth_header(reg["access_token"])
    f = {"room": {"timeline": {"limit": 10, "types": ["m.room.message"]}}}
    first = await (await client.post(f"{C}/user/@rae:hs.test/filter", json=f, headers=h)).json()
    second = await (await client.post(f"{C}/user/@rae:hs.test/filter", json={}, headers=h)).json()
    assert first["filter_id"] != second["filter_id"]
    assert await (await client.get(f"{C}/user/@rae:hs.test/filter/{first['filter_id']}", headers=h)).json() == f
    assert (await client.get(f"{C}/user/@rae:hs.test/filter/999", headers=h)).status == 404
    assert (await client.get(f"{C}/user/@rae:hs.test/filter/abc", headers=h)).status == 404
    assert (await client.post(f"{C}/user/@rae:hs.test/filter", json={"room": []}, headers=h)).status == 400
    assert (await client.post(f"{C}/user/@other:hs.test/filter", json={}, headers=h)).status == 403
