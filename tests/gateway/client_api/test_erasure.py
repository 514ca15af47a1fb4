"""Deactivating with ``erase: true``: the user's events are then served redacted to those
who were not joined when they were sent (who joined later), in /sync, /messages and /event;
the members of the time keep seeing them. Both engines. Over federation:
tests/gateway/federation_api/test_room_data.py."""

from __future__ import annotations

import urllib.parse

import pytest

from .conftest import auth_header, register

C = "/_matrix/client/v3"
PASSWORD = "pw-" + "x" * 8


def q(value: str) -> str:
    return urllib.parse.quote(value, safe="")


async def call(client, method: str, path: str, token: str, body: dict | None = None):
    resp = await client.request(method, C + path, headers=auth_header(token), json=body)
    return resp.status, await resp.json()


async def deactivate(client, user: dict, name: str, **extra):
    return await call(client, "POST", "/account/deactivate", user["access_token"], {
        "auth": {"type": "m.login.password", "password": PASSWORD, "identifier": {"type": "m.id.user", "user": name}},
        **extra})


async def seen_by(client, user: dict, room_id: str, event_id: str) -> list[dict]:
    """The event's content as ``user`` gets it from /sync, /messages and /event."""
    token = user["access_token"]
    _, synced = await call(client, "GET", "/sync", token)
    timeline = synced["rooms"]["join"][room_id]["timeline"]["events"]
    _, page = await call(client, "GET", f"/rooms/{q(room_id)}/messages?dir=b&limit=50", token)
    status, single = await call(client, "GET", f"/rooms/{q(room_id)}/event/{q(event_id)}", token)
    assert status == 200
    return [next(e for e in events if e["event_id"] == event_id)["content"]
            for events in (timeline, page["chunk"])] + [single["content"]]


@pytest.fixture
async def room(client):
    """Alice's shared-history room: bob joined before her message, carol after it."""
    alice, bob, carol = [await register(client, n, PASSWORD) for n in ("alice", "bob", "carol")]
    _, body = await call(client, "POST", "/createRoom", alice["access_token"], {"preset": "public_chat"})
    room_id = body["room_id"]
    assert (await call(client, "POST", f"/join/{q(room_id)}", bob["access_token"], {}))[0] == 200
    _, sent = await call(client, "PUT", f"/rooms/{q(room_id)}/send/m.room.message/t1", alice["access_token"],
                         {"msgtype": "m.text", "body": "body1"})
    assert (await call(client, "POST", f"/join/{q(room_id)}", carol["access_token"], {}))[0] == 200
    return alice, bob, carol, room_id, sent["event_id"]


async def test_only_the_members_of_the_time_see_an_erased_users_events(client, room):
    alice, bob, carol, room_id, event_id = room
    original = {"msgtype": "m.text", "body": "body1"}
    assert await seen_by(client, carol, room_id, event_id) == [original] * 3
    assert (await deactivate(client, alice, "alice", erase=True))[0] == 200
    assert await seen_by(client, bob, room_id, event_id) == [original] * 3
    assert await seen_by(client, carol, room_id, event_id) == [{}] * 3


async def test_deactivation_without_erase_leaves_the_events_alone(client, room):
    alice, _, carol, room_id, event_id = room
    assert (await deactivate(client, alice, "alice", erase=False))[0] == 200
    assert await seen_by(client, carol, room_id, event_id) == [{"msgtype": "m.text", "body": "body1"}] * 3


async def test_erase_must_be_a_boolean(client, room):
    alice = room[0]
    status, body = await deactivate(client, alice, "alice", erase="yes")
    assert status == 400 and body["errcode"] == "M_INVALID_PARAM"
    _, me = await call(client, "GET", "/account/whoami", alice["access_token"])
    assert me["user_id"] == "@alice:hs.test"  # still active
