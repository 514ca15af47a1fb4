"""Self-destructing messages (MSC2228, ``enable_ephemeral_messages``): once the time in
``org.matrix.self_destruct_after`` has passed, the message's content is pruned as by a
redaction (no redaction event), in /messages, /event and search. Both engines."""

from __future__ import annotations

import urllib.parse

import pytest

from gateway.services.self_destruct import SELF_DESTRUCT_AFTER

from .conftest import auth_header, register

C = "/_matrix/client/v3"


def q(value: str) -> str:
    return urllib.parse.quote(value, safe="")


async def call(client, method: str, path: str, token: str, body: dict | None = None):
    resp = await client.request(method, C + path, headers=auth_header(token), json=body)
    return resp.status, await resp.json()


async def room_with_messages(hs, client, *contents: dict) -> tuple[str, str, list[str]]:
    alice = await register(client, "alice")
    token = alice["access_token"]
    _, body = await call(client, "POST", "/createRoom", token, {})
    room_id = body["room_id"]
    ids = []
    for i, content in enumerate(contents):
        status, sent = await call(client, "PUT", f"/rooms/{q(room_id)}/send/m.room.message/t{i}", token, content)
        assert status == 200, sent
        ids.append(sent["event_id"])
    if hs.self_destruct is not None:
        await hs.self_destruct.flush()
    return token, room_id, ids


async def contents(client, token: str, room_id: str, ids: list[str]) -> list[dict]:
    _, page = await call(client, "GET", f"/rooms/{q(room_id)}/messages?dir=b&limit=50", token)
    by_id = {e["event_id"]: e["content"] for e in page["chunk"]}
    singles = [(await call(client, "GET", f"/rooms/{q(room_id)}/event/{q(e)}", token))[1]["content"] for e in ids]
    assert [by_id[e] for e in ids] == singles
    return singles


def move_clock(hs, by_ms: int) -> None:
    now = hs.clock_ms()
    hs.clock_ms = lambda: now + by_ms


@pytest.mark.parametrize("config_overrides", [{"enable_ephemeral_messages": True}])
async def test_a_message_self_destructs_when_its_time_has_come(hs, client):
    at = hs.clock_ms() + 600_000  # ten minutes: whatever the machine's speed
    doomed = {"msgtype": "m.text", "body": "gone soon", SELF_DESTRUCT_AFTER: at}
    kept = [{"msgtype": "m.text", "body": "stays"},
            {"msgtype": "m.text", "body": "stays too", SELF_DESTRUCT_AFTER: str(at)}]  # not an integer
    token, room_id, ids = await room_with_messages(hs, client, doomed, *kept)
    assert await hs.self_destruct.expire_due() == 0  # not yet
    assert await contents(client, token, room_id, ids) == [doomed, *kept]
    move_clock(hs, 1_200_000)
    assert await hs.self_destruct.expire_due() == 1
    assert await contents(client, token, room_id, ids) == [{}, *kept]
    status, found = await call(client, "POST", "/search", token,
                               {"search_categories": {"room_events": {"search_term": "gone"}}})
    assert status == 200 and found["search_categories"]["room_events"]["results"] == []
    assert await hs.self_destruct.store.next_expiry() is None  # done once


async def test_off_unless_enabled(hs, client):
    assert hs.self_destruct is None
    doomed = {"msgtype": "m.text", "body": "stays", SELF_DESTRUCT_AFTER: hs.clock_ms() - 1}
    token, room_id, ids = await room_with_messages(hs, client, doomed)
    assert await contents(client, token, room_id, ids) == [doomed]
