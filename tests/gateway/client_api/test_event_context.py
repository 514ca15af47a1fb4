"""/context, /forget and /timestamp_to_event over HTTP, on both engines."""

from __future__ import annotations

import json

import pytest

from .conftest import auth_header, register
from .test_rooms import create, get, post, send


@pytest.fixture
async def alice(client):
    return (await register(client, "alice"))["access_token"]


@pytest.fixture
async def bob(client):
    return (await register(client, "bob"))["access_token"]


async def test_context_around_an_event_and_its_tokens(client, alice, bob):
    room_id = await create(client, alice, preset="public_chat", name="Ctx")
    ids = [(await send(client, alice, room_id, f"m{i}", txn=f"t{i}"))["event_id"] for i in range(7)]
    status, body = await get(client, alice, f"/rooms/{room_id}/context/{ids[3]}", limit="4")
    assert status == 200
    assert body["event"]["event_id"] == ids[3] and body["event"]["unsigned"]["transaction_id"] == "t3"
    assert [e["event_id"] for e in body["events_before"]] == [ids[2], ids[1]]  # newest first
    assert [e["event_id"] for e in body["events_after"]] == [ids[4], ids[5]]
    state_types = {e["type"] for e in body["state"]}
    assert {"m.room.create", "m.room.name", "m.room.member"} <= state_types
    # The tokens continue with /messages.
    status, older = await get(client, alice, f"/rooms/{room_id}/messages", dir="b", limit="1", **{"from": body["start"]})
    assert [e["event_id"] for e in older["chunk"]] == [ids[0]]
    status, newer = await get(client, alice, f"/rooms/{room_id}/messages", dir="f", limit="5", **{"from": body["end"]})
    assert [e["event_id"] for e in newer["chunk"]] == [ids[6]]
    # A filter's limit and types.
    flt = json.dumps({"limit": 2, "types": ["m.room.message"], "lazy_load_members": True})
    status, body = await get(client, alice, f"/rooms/{room_id}/context/{ids[0]}", filter=flt)
    assert [e["event_id"] for e in body["events_before"]] == []  # only state events before the first message
    assert [e["event_id"] for e in body["events_after"]] == [ids[1]]
    assert [e["state_key"] for e in body["state"] if e["type"] == "m.room.member"] == ["@alice:hs.test"]
    # Outsiders (shared history, not joined) are refused, as Synapse does (the spec has no
    # error for it); unknown events are 404.
    status, err = await get(client, bob, f"/rooms/{room_id}/context/{ids[3]}")
    assert status == 403 and err["errcode"] == "M_FORBIDDEN"
    status, err = await get(client, alice, f"/rooms/{room_id}/context/$nope")
    assert status == 404 and err["errcode"] == "M_NOT_FOUND"
    status, err = await get(client, alice, f"/rooms/{room_id}/context/{ids[3]}", limit="x")
    assert status == 400 and err["errcode"] == "M_INVALID_PARAM"


async def test_forget_only_after_leaving(client, hs, alice, bob):
    room_id = await create(client, alice, preset="public_chat")
    assert (await post(client, bob, f"/rooms/{room_id}/join"))[0] == 200
    status, err = await post(client, bob, f"/rooms/{room_id}/forget")
    assert status == 400 and err["errcode"] == "M_UNKNOWN"
    assert (await post(client, bob, f"/rooms/{room_id}/leave"))[0] == 200
    assert await post(client, bob, f"/rooms/{room_id}/forget") == (200, {})
    assert await hs.events.state.get_forgotten_rooms("@bob:hs.test") == {room_id}
    # Joining again clears it.
    assert (await post(client, bob, f"/rooms/{room_id}/join"))[0] == 200
    assert await hs.events.state.get_forgotten_rooms("@bob:hs.test") == set()
    status, err = await post(client, bob, "/rooms/!unknown:hs.test/forget")
    assert status == 404 and err["errcode"] == "M_NOT_FOUND"


async def test_timestamp_to_event(client, hs, alice, bob):
    clock = [1_700_000_000_000]
    hs.clock_ms = lambda: clock[0]
    room_id = await create(client, alice, preset="public_chat")
    ids = []
    for i in range(3):
        clock[0] += 1000
        ids.append((await send(client, alice, room_id, f"m{i}", txn=f"t{i}"))["event_id"])
    base = "/_matrix/client/v1/rooms/" + room_id + "/timestamp_to_event"

    async def ask(token, **params):
        resp = await client.get(base, params=params, headers=auth_header(token))
        return resp.status, await resp.json()

    assert await ask(alice, ts=str(1_700_000_001_500), dir="f") == (200, {"event_id": ids[1],
                                                                          "origin_server_ts": 1_700_000_002_000})
    assert (await ask(alice, ts=str(1_700_000_001_500), dir="b"))[1]["event_id"] == ids[0]
    status, err = await ask(alice, ts=str(1_800_000_000_000), dir="f")
    assert status == 404 and err["errcode"] == "M_NOT_FOUND"
    status, err = await ask(alice, ts="x", dir="f")
    assert status == 400 and err["errcode"] == "M_INVALID_PARAM"
    status, err = await ask(alice, ts="1", dir="sideways")
    assert status == 400 and err["errcode"] == "M_INVALID_PARAM"
    status, err = await ask(bob, ts="1", dir="f")
    assert status == 403 and err["errcode"] == "M_FORBIDDEN"
