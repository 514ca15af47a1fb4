"""Synapse's ``rc_*`` limits on what clients do: messages (with per-user overrides set
through the admin API), room creation, joins (per user and per room) and invites; over
the limit is 429 ``M_LIMIT_EXCEEDED`` with ``retry_after_ms``, and a retried transaction
is free."""

from __future__ import annotations

import pytest

from .conftest import auth_header, register
from .test_rooms import C, create, post, send

SLOW = {"per_second": 0.001, "burst_count": 2}
FAST = {"per_second": 1000, "burst_count": 1000}


def limited(answer: dict) -> bool:
    return answer["status"] == 429 and answer["errcode"] == "M_LIMIT_EXCEEDED" and answer["retry_after_ms"] > 0


@pytest.mark.parametrize("config_overrides", [{"rc_message": SLOW}])
async def test_messages_are_limited_retries_are_free_and_admins_may_override(hs, client):
    alice = (await register(client, "alice"))["access_token"]
    room = await create(client, alice)
    first = await send(client, alice, room, txn="1")
    assert first["status"] == 200 and (await send(client, alice, room, txn="2"))["status"] == 200
    assert limited(await send(client, alice, room, txn="3"))
    # A retry of a transaction that went through answers the same event, limit or not.
    assert (await send(client, alice, room, txn="1")) == first
    # State events count too.
    resp = await client.put(f"{C}/rooms/{room}/state/m.room.topic", json={"topic": "x"}, headers=auth_header(alice))
    assert resp.status == 429

    # An admin lifts the limit for alice (0 and 0: none), then takes the override away.
    await hs.auth.users.create_user("@root:hs.test", password_hash=None, created_ts=1, admin=True)
    root = auth_header((await hs.auth.login_session("@root:hs.test"))["access_token"])
    path = "/_synapse/admin/v1/users/@alice:hs.test/override_ratelimit"
    assert await (await client.get(path, headers=root)).json() == {}
    resp = await client.post(path, json={"messages_per_second": 0, "burst_count": 0}, headers=root)
    assert resp.status == 200 and await resp.json() == {"messages_per_second": 0, "burst_count": 0}
    assert await (await client.get(path, headers=root)).json() == {"messages_per_second": 0, "burst_count": 0}
    for i in range(5):
        assert (await send(client, alice, room, txn=f"free{i}"))["status"] == 200
    assert (await client.delete(path, headers=root)).status == 200
    assert limited(await send(client, alice, room, txn="again"))
    # Bad requests.
    resp = await client.post(path, json={"messages_per_second": -1}, headers=root)
    assert resp.status == 400 and (await resp.json())["errcode"] == "M_INVALID_PARAM"
    resp = await client.post(path, json={"burst_count": "lots"}, headers=root)
    assert resp.status == 400
    resp = await client.get("/_synapse/admin/v1/users/@nobody:hs.test/override_ratelimit", headers=root)
    assert resp.status == 404
    resp = await client.get("/_synapse/admin/v1/users/@alice:elsewhere.test/override_ratelimit", headers=root)
    assert resp.status == 400
    resp = await client.get(path, headers=auth_header(alice))
    assert resp.status == 403


@pytest.mark.parametrize("config_overrides", [{"rc_room_creation": {"per_second": 0.001, "burst_count": 1}}])
async def test_room_creation_is_limited(client):
    alice = (await register(client, "alice"))["access_token"]
    await create(client, alice)
    resp = await client.post(f"{C}/createRoom", json={}, headers=auth_header(alice))
    body = await resp.json()
    assert resp.status == 429 and body["errcode"] == "M_LIMIT_EXCEEDED"


@pytest.mark.parametrize("config_overrides", [{
    "rc_joins": {"local": {"per_second": 0.001, "burst_count": 1}, "remote": FAST},
    "rc_joins_per_room": {"per_second": 0.001, "burst_count": 2}}])
async def test_joins_are_limited_per_user_and_per_room(client):
    owner = (await register(client, "owner"))["access_token"]
    users = [(await register(client, f"u{i}"))["access_token"] for i in range(3)]
    rooms = [await create(client, owner, preset="public_chat") for _ in range(2)]
    assert (await post(client, users[0], f"/join/{rooms[0]}"))[0] == 200
    # Joining again (e.g. a new display name) is not a new join.
    assert (await post(client, users[0], f"/join/{rooms[0]}"))[0] == 200
    status, body = await post(client, users[0], f"/join/{rooms[1]}")  # the user's second join
    assert status == 429 and body["errcode"] == "M_LIMIT_EXCEEDED"
    assert (await post(client, users[1], f"/join/{rooms[0]}"))[0] == 200
    status, body = await post(client, users[2], f"/join/{rooms[0]}")  # the room's third join
    assert status == 429 and body["errcode"] == "M_LIMIT_EXCEEDED"
    # The refused join did not use up the user's own allowance.
    assert (await post(client, users[2], f"/join/{rooms[1]}"))[0] == 200


@pytest.mark.parametrize("config_overrides", [{"rc_invites": {
    "per_issuer": {"per_second": 0.001, "burst_count": 1}, "per_room": FAST, "per_user": FAST}}])
async def test_invites_are_limited_per_inviter(client):
    alice = (await register(client, "alice"))["access_token"]
    for name in ("bob", "carol"):
        await register(client, name)
    room = await create(client, alice)
    assert (await post(client, alice, f"/rooms/{room}/invite", {"user_id": "@bob:hs.test"}))[0] == 200
    status, body = await post(client, alice, f"/rooms/{room}/invite", {"user_id": "@carol:hs.test"})
    assert status == 429 and body["errcode"] == "M_LIMIT_EXCEEDED"
