"""Reporting events, rooms and users over HTTP (both engines): what is accepted, what
the reporter may learn (unknown rooms, events and users look alike where the spec says
so), validation and the rc_reports rate limit. The admin side: admin_api/test_reports.py."""

from __future__ import annotations

from urllib.parse import quote

import pytest

from .conftest import auth_header, register
from .test_rooms import create, post, send

C = "/_matrix/client/v3"


async def report(client, token, path, body) -> tuple[int, dict]:
    resp = await client.post(f"{C}{path}", json=body, headers=auth_header(token))
    return resp.status, await resp.json()


async def stored(hs, table: str) -> list:
    return await hs.db.fetch(f"SELECT * FROM {table} ORDER BY id")


@pytest.fixture
async def alice(client):
    return (await register(client, "alice"))["access_token"]


@pytest.fixture
async def bob(client):
    return (await register(client, "bob"))["access_token"]


async def test_event_reports(client, hs, alice, bob):
    room = await create(client, alice, preset="public_chat")
    event = (await send(client, alice, room, "rude"))["event_id"]
    path = f"/rooms/{room}/report/{quote(event)}"
    assert await report(client, bob, path, {"reason": "x"}) == (404, {
        "errcode": "M_NOT_FOUND", "error": "The event was not found or you are not joined to the room"})
    assert (await post(client, bob, f"/rooms/{room}/join"))[0] == 200
    assert await report(client, bob, path, {"reason": "rude", "score": -100}) == (200, {})
    assert await report(client, bob, path, {}) == (200, {})  # reason and score are optional
    rows = await stored(hs, "event_reports")
    assert [(r["room_id"], r["event_id"], r["user_id"], r["reason"], r["score"]) for r in rows] == [
        (room, event, "@bob:hs.test", "rude", -100), (room, event, "@bob:hs.test", None, None)]
    # An unknown event, an event of another room, an unknown room, a redacted event:
    # the same answer as for a room the reporter is not in.
    other = await create(client, bob)
    other_event = (await send(client, bob, other, "mine"))["event_id"]
    resp = await client.put(f"{C}/rooms/{room}/redact/{quote(event)}/r1", json={}, headers=auth_header(alice))
    assert resp.status == 200
    for bad in (f"/rooms/{room}/report/$nope", f"/rooms/{room}/report/{quote(other_event)}",
                f"/rooms/!unknown:hs.test/report/{quote(event)}", f"/rooms/not-a-room/report/{quote(event)}", path):
        status, body = await report(client, bob, bad, {"reason": "x"})
        assert status == 404 and body["error"] == "The event was not found or you are not joined to the room", bad
    # Bad input.
    event2 = (await send(client, alice, room, "again", txn="t2"))["event_id"]
    path2 = f"/rooms/{room}/report/{quote(event2)}"
    for body in ({"reason": 5}, {"score": "bad"}, {"score": -101}, {"score": 1}, {"score": True},
                 {"reason": "x" * 1001}):
        status, answer = await report(client, bob, path2, body)
        assert status == 400 and answer["errcode"] == "M_BAD_JSON", body
    resp = await client.post(f"{C}{path2}", data=b"[1]", headers=auth_header(bob))
    assert resp.status == 400 and (await resp.json())["errcode"] == "M_BAD_JSON"
    assert len(await stored(hs, "event_reports")) == 2
    # The r0 path too.
    resp = await client.post(f"/_matrix/client/r0{path2}", json={"reason": "r0"}, headers=auth_header(bob))
    assert resp.status == 200


async def test_room_reports(client, hs, alice, bob):
    room = await create(client, alice, preset="private_chat")
    # Not joined: allowed (the spec says servers must not require it).
    assert await report(client, bob, f"/rooms/{room}/report", {"reason": "nasty name"}) == (200, {})
    assert await report(client, bob, f"/rooms/{room}/report", {"reason": ""}) == (200, {})
    status, body = await report(client, bob, "/rooms/!unknown:hs.test/report", {"reason": "x"})
    assert status == 404 and body["errcode"] == "M_NOT_FOUND"
    for bad, errcode in (({}, "M_MISSING_PARAM"), ({"reason": None}, "M_MISSING_PARAM"),
                         ({"reason": ["x"]}, "M_BAD_JSON"), ({"reason": "x" * 1001}, "M_BAD_JSON")):
        status, body = await report(client, bob, f"/rooms/{room}/report", bad)
        assert status == 400 and body["errcode"] == errcode, bad
    rows = await stored(hs, "room_reports")
    assert [(r["room_id"], r["user_id"], r["reason"]) for r in rows] == [
        (room, "@bob:hs.test", "nasty name"), (room, "@bob:hs.test", "")]


async def test_user_reports(client, hs, alice, bob):
    assert await report(client, bob, "/users/@alice:hs.test/report", {"reason": "spam"}) == (200, {})
    # Unknown local users look the same to the reporter, and are not stored; other
    # servers' users are.
    assert await report(client, bob, "/users/@ghost:hs.test/report", {"reason": "boo"}) == (200, {})
    assert await report(client, bob, f"/users/{quote('@far:remote.test')}/report", {"reason": "far"}) == (200, {})
    rows = await stored(hs, "user_reports")
    assert [(r["target_user_id"], r["user_id"], r["reason"]) for r in rows] == [
        ("@alice:hs.test", "@bob:hs.test", "spam"), ("@far:remote.test", "@bob:hs.test", "far")]
    status, body = await report(client, bob, "/users/not-a-user/report", {"reason": "x"})
    assert status == 400 and body["errcode"] == "M_INVALID_PARAM"
    status, body = await report(client, bob, "/users/@alice:hs.test/report", {})
    assert status == 400 and body["errcode"] == "M_MISSING_PARAM"
    resp = await client.post(f"{C}/users/@alice:hs.test/report", json={"reason": "x"})
    assert resp.status == 401


@pytest.mark.parametrize("config_overrides", [{"rc_reports": {"per_second": 0.001, "burst_count": 3}}])
async def test_reports_are_rate_limited(client, hs, alice, bob):
    room = await create(client, alice, preset="public_chat")
    answers = [await report(client, bob, f"/rooms/{room}/report", {"reason": str(i)}) for i in range(3)]
    assert answers == [(200, {})] * 3
    # All three kinds share the reporter's budget; nothing more is stored.
    for path in (f"/rooms/{room}/report", "/users/@alice:hs.test/report"):
        status, body = await report(client, bob, path, {"reason": "more"})
        assert status == 429 and body["errcode"] == "M_LIMIT_EXCEEDED" and body["retry_after_ms"] > 0
    assert len(await stored(hs, "room_reports")) == 3 and await stored(hs, "user_reports") == []
    # Another reporter has their own.
    assert (await report(client, alice, f"/rooms/{room}/report", {"reason": "mine"}))[0] == 200
