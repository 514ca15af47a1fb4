"""GET /_matrix/client/v1/mutual_rooms (and Synapse's unstable MSC2666 path): rooms both
users are joined to, paginated with tokens that cannot reveal other rooms."""

from __future__ import annotations

import pytest

from gateway.client_api import mutual_rooms

from .conftest import auth_header, register

C = "/_matrix/client/v3"


async def room(client, token, **body) -> str:
    resp = await client.post(f"{C}/createRoom", headers=auth_header(token), json={"preset": "public_chat", **body})
    assert resp.status == 200
    return (await resp.json())["room_id"]


async def join(client, token, room_id):
    assert (await client.post(f"{C}/join/{room_id}", headers=auth_header(token), json={})).status == 200


async def test_mutual_rooms_and_pages(client, monkeypatch):
    alice = (await register(client, "alice"))["access_token"]
    bob = (await register(client, "bob"))["access_token"]
    shared = sorted([await room(client, alice) for _ in range(5)])
    for r in shared:
        await join(client, bob, r)
    await room(client, alice)  # alice alone
    left = await room(client, alice)
    await join(client, bob, left)
    await client.post(f"{C}/rooms/{left}/leave", headers=auth_header(bob), json={})
    invited = await room(client, alice, preset="private_chat")
    await client.post(f"{C}/rooms/{invited}/invite", headers=auth_header(alice), json={"user_id": "@bob:hs.test"})

    for path in ("/_matrix/client/v1/mutual_rooms", "/_matrix/client/unstable/uk.half-shot.msc2666/user/mutual_rooms"):
        resp = await client.get(path, params={"user_id": "@bob:hs.test"}, headers=auth_header(alice))
        assert await resp.json() == {"joined": shared, "count": 5}

    monkeypatch.setattr(mutual_rooms, "PAGE_SIZE", 2)
    seen, token = [], None
    for _ in range(5):
        params = {"user_id": "@alice:hs.test", **({"from": token} if token else {})}
        page = await (await client.get("/_matrix/client/v1/mutual_rooms", params=params,
                                       headers=auth_header(bob))).json()
        assert page["count"] == 5 and len(page["joined"]) <= 2
        seen += page["joined"]
        token = page.get("next_batch")
        if token is None:
            break
    assert seen == shared

    # The unstable path pages as matrix-js-sdk does (batch_token / next_batch_token).
    unstable = "/_matrix/client/unstable/uk.half-shot.msc2666/user/mutual_rooms"
    first = await (await client.get(unstable, params={"user_id": "@alice:hs.test"}, headers=auth_header(bob))).json()
    second = await (await client.get(unstable, params={"user_id": "@alice:hs.test",
                                                        "batch_token": first["next_batch_token"]},
                                     headers=auth_header(bob))).json()
    assert first["joined"] + second["joined"] == shared[:4]

    # A made-up token only moves the start: alice's own room is never shown.
    made_up = mutual_rooms.encode_token("!")
    page = await (await client.get("/_matrix/client/v1/mutual_rooms", params={"user_id": "@alice:hs.test",
                                                                               "from": made_up},
                                   headers=auth_header(bob))).json()
    assert page["joined"] == shared[:2]


@pytest.mark.parametrize("params, errcode", [
    ({}, "M_MISSING_PARAM"),
    ({"user_id": "alice"}, "M_INVALID_PARAM"),
    ({"user_id": "@alice:hs.test"}, "M_INVALID_PARAM"),  # oneself
    ({"user_id": "@bob:hs.test", "from": "garbage"}, "M_INVALID_PARAM"),
    ({"user_id": "@bob:hs.test", "from": "r!!!"}, "M_INVALID_PARAM"),
    ({"user_id": "@bob:hs.test", "from": mutual_rooms.encode_token("not a room")}, "M_INVALID_PARAM"),
])
async def test_bad_requests(client, params, errcode):
    alice = (await register(client, "alice"))["access_token"]
    resp = await client.get("/_matrix/client/v1/mutual_rooms", params=params, headers=auth_header(alice))
    assert resp.status == 400 and (await resp.json())["errcode"] == errcode


async def test_unknown_user_shares_nothing_and_token_needed(client):
    alice = (await register(client, "alice"))["access_token"]
    resp = await client.get("/_matrix/client/v1/mutual_rooms", params={"user_id": "@ghost:elsewhere.test"},
                            headers=auth_header(alice))
    assert resp.status == 200 and await resp.json() == {"joined": [], "count": 0}
    resp = await client.get("/_matrix/client/v1/mutual_rooms", params={"user_id": "@ghost:elsewhere.test"})
    assert resp.status == 401
