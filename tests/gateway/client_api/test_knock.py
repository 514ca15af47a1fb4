"""Knocking on a room of this server over HTTP, on both engines: ``POST /knock`` by room
ID and by alias, the knock in the knocker's /sync (``rooms.knock`` with the room's
stripped state) and in the room's timeline, accepting it with an invite, denying it
with a kick, retracting it with a leave, and the errors a client gets (join rules that
do not allow knocking, room versions without knocking, bad input).

Spec: https://spec.matrix.org/latest/client-server-api/#knocking-on-rooms
"""

from __future__ import annotations

from urllib.parse import quote

import pytest

from .conftest import auth_header, register

C = "/_matrix/client/v3"


async def call(client, token, method, path, body=None, **params):
    resp = await client.request(method, f"{C}{path}", json=body, params=params, headers=auth_header(token))
    return resp.status, await resp.json()


async def create(client, token, join_rule: str = "knock", version: str = "12", **body) -> str:
    status, data = await call(client, token, "POST", "/createRoom", {
        "preset": "private_chat", "room_version": version, "name": "Members only",
        "initial_state": [{"type": "m.room.join_rules", "content": {"join_rule": join_rule}}], **body})
    assert status == 200, data
    return data["room_id"]


async def sync(client, token, since: str | None = None) -> dict:
    status, body = await call(client, token, "GET", "/sync", **({"since": since} if since else {}))
    assert status == 200, body
    return body


def membership_of(body: dict, room_id: str, user_id: str) -> str | None:
    room = body["rooms"]["join"].get(room_id, {})
    found = None
    for e in room.get("timeline", {}).get("events", []) + room.get("state", {}).get("events", []):
        if e["type"] == "m.room.member" and e["state_key"] == user_id:
            found = e["content"]["membership"]
    return found


@pytest.fixture
async def users(client):
    alice = await register(client, "alice")
    bob = await register(client, "bob")
    return alice, bob


async def test_knock_then_invite_and_join(client, users):
    alice, bob = users
    room = await create(client, alice["access_token"], room_alias_name="members")
    first = await sync(client, bob["access_token"])
    alias = quote("#members:hs.test", safe="")

    status, body = await call(client, bob["access_token"], "POST", f"/knock/{alias}", {"reason": "let me in"})
    assert (status, body) == (200, {"room_id": room})

    # The knocker's /sync: the room under rooms.knock with its stripped state and the knock.
    after = await sync(client, bob["access_token"], first["next_batch"])
    knocked = after["rooms"]["knock"][room]["knock_state"]["events"]
    by_type = {e["type"]: e for e in knocked}
    assert by_type["m.room.join_rules"]["content"] == {"join_rule": "knock"}
    assert by_type["m.room.name"]["content"] == {"name": "Members only"}
    assert "m.room.create" in by_type
    own = by_type["m.room.member"]
    assert own["state_key"] == bob["user_id"] and own["content"]["membership"] == "knock"
    assert own["content"]["reason"] == "let me in"
    assert room not in after["rooms"]["join"] and room not in after["rooms"]["invite"]

    # The room sees the knock; alice accepts it with an invite and bob joins.
    assert membership_of(await sync(client, alice["access_token"]), room, bob["user_id"]) == "knock"
    status, _ = await call(client, alice["access_token"], "POST", f"/rooms/{room}/invite", {"user_id": bob["user_id"]})
    assert status == 200
    invited = await sync(client, bob["access_token"], after["next_batch"])
    assert room in invited["rooms"]["invite"] and room not in invited["rooms"]["knock"]
    status, _ = await call(client, bob["access_token"], "POST", f"/join/{room}")
    assert status == 200
    assert membership_of(await sync(client, alice["access_token"]), room, bob["user_id"]) == "join"

    # Knocking once joined is refused.
    status, body = await call(client, bob["access_token"], "POST", f"/knock/{room}", {})
    assert status == 403 and body["errcode"] == "M_FORBIDDEN"


async def test_knock_denied_and_retracted(client, users):
    alice, bob = users
    room = await create(client, alice["access_token"])
    start = await sync(client, bob["access_token"])

    # Denied: alice kicks the knocker; bob's /sync shows the room as left.
    assert (await call(client, bob["access_token"], "POST", f"/knock/{room}", {}))[0] == 200
    status, _ = await call(client, alice["access_token"], "POST", f"/rooms/{room}/kick",
                           {"user_id": bob["user_id"], "reason": "not now"})
    assert status == 200
    denied = await sync(client, bob["access_token"], start["next_batch"])
    assert room in denied["rooms"]["leave"] and room not in denied["rooms"]["knock"]

    # Knocking again after a denial is allowed; retracting it is a leave.
    assert (await call(client, bob["access_token"], "POST", f"/knock/{room}", {"reason": "please"}))[0] == 200
    knocked = await sync(client, bob["access_token"], denied["next_batch"])
    assert room in knocked["rooms"]["knock"]
    assert (await call(client, bob["access_token"], "POST", f"/rooms/{room}/leave", {}))[0] == 200
    retracted = await sync(client, bob["access_token"], knocked["next_batch"])
    assert room in retracted["rooms"]["leave"]
    assert membership_of(await sync(client, alice["access_token"]), room, bob["user_id"]) == "leave"


@pytest.mark.parametrize(("version", "join_rule", "status", "errcode"), [
    ("12", "public", 403, "M_FORBIDDEN"),  # the join rules do not allow knocking
    ("12", "invite", 403, "M_FORBIDDEN"),
    ("10", "knock_restricted", 200, None),  # knock_restricted allows knocking from v10
    ("9", "knock_restricted", 403, "M_FORBIDDEN"),  # ... and means nothing before
    ("7", "knock", 200, None),
    ("6", "knock", 400, "M_INCOMPATIBLE_ROOM_VERSION"),  # no knocking before v7
])
async def test_join_rules_and_room_versions(client, users, version, join_rule, status, errcode):
    alice, bob = users
    room = await create(client, alice["access_token"], join_rule=join_rule, version=version)
    got, body = await call(client, bob["access_token"], "POST", f"/knock/{room}", {})
    assert got == status, body
    if errcode:
        assert body["errcode"] == errcode
        if errcode == "M_INCOMPATIBLE_ROOM_VERSION":
            assert body["room_version"] == version
    else:
        assert body == {"room_id": room}


async def test_bad_knock_requests(client, users):
    alice, bob = users
    room = await create(client, alice["access_token"])
    token = bob["access_token"]
    status, body = await call(client, token, "POST", f"/knock/{room}", {"reason": 42})
    assert status == 400 and body["errcode"] == "M_BAD_JSON"
    status, body = await call(client, token, "POST", "/knock/not-a-room", {})
    assert status == 400 and body["errcode"] == "M_INVALID_PARAM"
    status, body = await call(client, token, "POST", f"/knock/{quote('!nowhere:hs.test', safe='')}", {})
    assert status == 404 and body["errcode"] == "M_NOT_FOUND"
    status, body = await call(client, token, "POST", f"/knock/{quote('#missing:hs.test', safe='')}", {})
    assert status == 404 and body["errcode"] == "M_NOT_FOUND"
    resp = await client.post(f"{C}/knock/{room}", data=b"[1]", headers=auth_header(token))
    assert resp.status == 400 and (await resp.json())["errcode"] in ("M_BAD_JSON", "M_NOT_JSON")
    resp = await client.post(f"{C}/knock/{room}", json={})
    assert resp.status == 401
