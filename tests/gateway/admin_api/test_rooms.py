"""Room admin API (Synapse paths): listing, details, members, state, blocking, deleting and
purging rooms, make_room_admin, joining users; non-admins refused. Both engines."""

from __future__ import annotations

import pytest

from tests.gateway.client_api.conftest import auth_header, register
from tests.gateway.client_api.test_rooms import C, create, get, post, send

A = "/_synapse/admin"


@pytest.fixture
async def alice(client):
    return (await register(client, "alice"))["access_token"]


@pytest.fixture
async def bob(client):
    return (await register(client, "bob"))["access_token"]


async def admin_get(client, admin, path, **params):
    resp = await client.get(A + path, headers=admin, params=params)
    return resp.status, await resp.json()


async def test_non_admins_are_refused(client, alice):
    room_id = await create(client, alice)
    for method, path in (("GET", "/v1/rooms"), ("GET", f"/v1/rooms/{room_id}"), ("DELETE", f"/v1/rooms/{room_id}"),
                         ("PUT", f"/v1/rooms/{room_id}/block"), ("DELETE", f"/v2/rooms/{room_id}")):
        resp = await client.request(method, A + path, headers=auth_header(alice), json={})
        assert resp.status == 403, path
        assert (await resp.json())["errcode"] == "M_FORBIDDEN"


@pytest.mark.parametrize("version", ["12", "10"])
async def test_list_and_describe_rooms(client, admin, alice, bob, version):
    garden = await create(client, alice, name="Garden", topic="Roses", room_version=version, visibility="public",
                          preset="public_chat")
    assert (await post(client, bob, f"/rooms/{garden}/join"))[0] == 200
    cellar = await create(client, bob, name="Cellar", room_version=version,
                          initial_state=[{"type": "m.room.encryption", "content": {"algorithm": "m.megolm.v1.aes-sha2"}}])
    status, body = await admin_get(client, admin, "/v1/rooms")
    assert status == 200 and body["total_rooms"] == 2 and body["offset"] == 0
    assert [r["name"] for r in body["rooms"]] == ["Cellar", "Garden"]  # by name by default
    g = next(r for r in body["rooms"] if r["room_id"] == garden)
    assert g["joined_members"] == 2 and g["joined_local_members"] == 2 and g["public"] is True
    assert g["version"] == version and g["creator"] == "@alice:hs.test" and g["join_rules"] == "public"
    assert g["encryption"] is None and g["federatable"] is True and g["room_type"] is None
    assert g["history_visibility"] == "shared" and g["state_events"] >= 6
    c = next(r for r in body["rooms"] if r["room_id"] == cellar)
    assert c["encryption"] == "m.megolm.v1.aes-sha2" and c["public"] is False and c["join_rules"] == "invite"

    status, by_size = await admin_get(client, admin, "/v1/rooms", order_by="joined_members")
    assert [r["room_id"] for r in by_size["rooms"]] == [garden, cellar]
    status, reverse = await admin_get(client, admin, "/v1/rooms", order_by="joined_members", dir="b")
    assert [r["room_id"] for r in reverse["rooms"]] == [cellar, garden]
    status, page = await admin_get(client, admin, "/v1/rooms", limit="1")
    assert len(page["rooms"]) == 1 and page["next_batch"] == 1 and "prev_batch" not in page
    status, page2 = await admin_get(client, admin, "/v1/rooms", limit="1", **{"from": "1"})
    assert page2["rooms"][0]["name"] == "Garden" and page2["prev_batch"] == 0 and "next_batch" not in page2
    status, found = await admin_get(client, admin, "/v1/rooms", search_term="gard")
    assert [r["room_id"] for r in found["rooms"]] == [garden] and found["total_rooms"] == 1
    status, found = await admin_get(client, admin, "/v1/rooms", search_term=cellar)
    assert [r["room_id"] for r in found["rooms"]] == [cellar]

    status, details = await admin_get(client, admin, f"/v1/rooms/{garden}")
    assert status == 200 and details["topic"] == "Roses" and details["joined_local_devices"] == 2
    assert details["forgotten"] is False
    status, members = await admin_get(client, admin, f"/v1/rooms/{garden}/members")
    assert members == {"members": ["@alice:hs.test", "@bob:hs.test"], "total": 2}
    status, state = await admin_get(client, admin, f"/v1/rooms/{garden}/state")
    assert {(e["type"], e["state_key"]) for e in state["state"]} >= {("m.room.create", ""), ("m.room.topic", "")}
    status, extremities = await admin_get(client, admin, f"/v1/rooms/{garden}/forward_extremities")
    assert status == 200 and extremities["count"] == 1
    status, joined = await admin_get(client, admin, "/v1/users/@bob:hs.test/joined_rooms")
    assert sorted(joined["joined_rooms"]) == sorted([garden, cellar]) and joined["total"] == 2


async def test_bad_parameters(client, admin, alice):
    assert (await admin_get(client, admin, "/v1/rooms", order_by="colour"))[1]["errcode"] == "M_INVALID_PARAM"
    assert (await admin_get(client, admin, "/v1/rooms", dir="sideways"))[0] == 400
    assert (await admin_get(client, admin, "/v1/rooms", limit="-1"))[0] == 400
    status, body = await admin_get(client, admin, "/v1/rooms/!nowhere:hs.test")
    assert status == 404 and body["errcode"] == "M_NOT_FOUND"
    assert (await admin_get(client, admin, "/v1/rooms/not-a-room"))[0] == 400
    room_id = await create(client, alice)
    resp = await client.put(f"{A}/v1/rooms/{room_id}/block", headers=admin, json={"block": "yes"})
    assert resp.status == 400 and (await resp.json())["errcode"] == "M_BAD_JSON"
    resp = await client.delete(f"{A}/v2/rooms/{room_id}", headers=admin, json={"purge": "please"})
    assert resp.status == 400
    resp = await client.delete(f"{A}/v2/rooms/{room_id}", headers=admin, json={"new_room_user_id": "@x:elsewhere"})
    assert resp.status == 400
    resp = await client.delete(f"{A}/v1/rooms/!unknown:hs.test", headers=admin, json={})
    assert resp.status == 400


async def test_block_room_stops_joins_and_invites(client, admin, alice, bob):
    room_id = await create(client, alice, preset="public_chat")
    resp = await client.put(f"{A}/v1/rooms/{room_id}/block", headers=admin, json={"block": True})
    assert resp.status == 200 and await resp.json() == {"block": True}
    assert (await admin_get(client, admin, f"/v1/rooms/{room_id}/block"))[1] == {"block": True,
                                                                                 "user_id": "@root:hs.test"}
    status, body = await post(client, bob, f"/rooms/{room_id}/join")
    assert status == 403 and body["errcode"] == "M_FORBIDDEN"
    status, body = await post(client, alice, f"/rooms/{room_id}/invite", {"user_id": "@bob:hs.test"})
    assert status == 403
    # Unblocking lets people in again; rooms unknown to us can be blocked ahead of time.
    await client.put(f"{A}/v1/rooms/{room_id}/block", headers=admin, json={"block": False})
    assert (await admin_get(client, admin, f"/v1/rooms/{room_id}/block"))[1] == {"block": False}
    assert (await post(client, bob, f"/rooms/{room_id}/join"))[0] == 200
    resp = await client.put(f"{A}/v1/rooms/!future:elsewhere.test/block", headers=admin, json={"block": True})
    assert resp.status == 200


async def test_delete_v1_moves_users_blocks_and_purges(hs, client, admin, alice, bob):
    room_id = await create(client, alice, preset="public_chat", name="Bad room", room_alias_name="bad",
                           visibility="public")
    resp = await client.put(f"{C}/directory/room/%23evil:hs.test", headers=auth_header(alice),
                            json={"room_id": room_id})
    assert resp.status == 200
    assert (await post(client, bob, f"/rooms/{room_id}/join"))[0] == 200
    assert (await send(client, alice, room_id, "something bad"))["status"] == 200
    resp = await client.delete(f"{A}/v1/rooms/{room_id}", headers=admin, json={
        "new_room_user_id": "@moderator:hs.test", "room_name": "Notice", "message": "Gone", "block": True})
    body = await resp.json()
    assert resp.status == 200, body
    assert sorted(body["kicked_users"]) == ["@alice:hs.test", "@bob:hs.test"] and body["failed_to_kick_users"] == []
    assert sorted(body["local_aliases"]) == ["#bad:hs.test", "#evil:hs.test"]
    new_room = body["new_room_id"]
    status, joined = await get(client, bob, "/joined_rooms")
    assert joined["joined_rooms"] == [new_room]
    status, messages = await get(client, bob, f"/rooms/{new_room}/messages", dir="b", limit="20")
    notice = [e for e in messages["chunk"] if e["type"] == "m.room.message"]
    assert [(e["sender"], e["content"]["body"]) for e in notice] == [("@moderator:hs.test", "Gone")]
    status, name = await get(client, bob, f"/rooms/{new_room}/state/m.room.name")
    assert name == {"name": "Notice"}
    # The aliases lead to the new room; the old room left the public list.
    for alias in ("%23bad:hs.test", "%23evil:hs.test"):
        status, found = await get(client, bob, f"/directory/room/{alias}")
        assert (status, found["room_id"]) == (200, new_room)
    status, listed = await get(client, bob, "/publicRooms")
    assert room_id not in [r["room_id"] for r in listed["chunk"]]
    # Moved users may not speak in the notice room.
    assert (await send(client, bob, new_room, "hi"))["status"] == 403
    # Every trace of the old room is gone; it stays blocked.
    assert await hs.db.fetchval("SELECT COUNT(*) FROM events WHERE room_id = $1", room_id) == 0
    assert await hs.db.fetchval("SELECT COUNT(*) FROM state_groups WHERE room_id = $1", room_id) == 0
    assert await hs.db.fetchval("SELECT COUNT(*) FROM room_memberships WHERE room_id = $1", room_id) == 0
    assert (await admin_get(client, admin, f"/v1/rooms/{room_id}"))[0] == 404
    assert (await post(client, bob, f"/rooms/{room_id}/join"))[0] == 403
    # A room with the old room's ID can't come back to life through the caches either.
    status, body = await send(client, alice, room_id, "again"), None
    assert status["status"] in (403, 404)


async def test_delete_v2_in_background_with_status(hs, client, admin, alice):
    room_id = await create(client, alice)
    resp = await client.delete(f"{A}/v2/rooms/{room_id}", headers=admin, json={})
    assert resp.status == 200
    delete_id = (await resp.json())["delete_id"]
    task = hs.room_admin._running.get(room_id)
    if task is not None:
        await task
    status, by_id = await admin_get(client, admin, f"/v2/rooms/delete_status/{delete_id}")
    assert status == 200 and by_id["status"] == "complete", by_id
    assert by_id["shutdown_room"]["kicked_users"] == ["@alice:hs.test"] and "delete_id" not in by_id
    status, by_room = await admin_get(client, admin, f"/v2/rooms/{room_id}/delete_status")
    assert [r["delete_id"] for r in by_room["results"]] == [delete_id]
    assert await hs.db.fetchval("SELECT COUNT(*) FROM events WHERE room_id = $1", room_id) == 0
    assert (await admin_get(client, admin, "/v2/rooms/delete_status/nope"))[0] == 404
    # Unknown rooms can't be deleted in the background.
    resp = await client.delete(f"{A}/v2/rooms/!unknown:hs.test", headers=admin, json={})
    assert resp.status == 404


async def test_purge_refused_while_local_users_stay_unless_forced(hs, client, admin, alice):
    room_id = await create(client, alice, room_alias_name="quiet")
    # Without purge the room is kept, users leave; without a new room its aliases go.
    resp = await client.delete(f"{A}/v1/rooms/{room_id}", headers=admin, json={"purge": False})
    body = await resp.json()
    assert resp.status == 200 and body["kicked_users"] == ["@alice:hs.test"]
    assert body["local_aliases"] == ["#quiet:hs.test"] and body["new_room_id"] is None
    assert (await get(client, alice, "/directory/room/%23quiet:hs.test"))[0] == 404
    assert await hs.db.fetchval("SELECT COUNT(*) FROM events WHERE room_id = $1", room_id) > 0
    membership = await hs.events.state.get_membership(room_id, "@alice:hs.test")
    assert membership.membership == "leave"
    # As in Synapse, the users moved out forget the room (their clients stop showing it).
    assert (await admin_get(client, admin, f"/v1/rooms/{room_id}"))[1]["forgotten"] is True
    assert (await post(client, alice, f"/rooms/{room_id}/forget"))[0] == 200


async def test_make_room_admin_and_admin_join(client, admin, alice, bob):
    room_id = await create(client, alice, preset="private_chat", room_version="10")
    # Bob is not in an invite-only room: the room admin (alice) invites him, then he is made admin.
    resp = await client.post(f"{A}/v1/rooms/{room_id}/make_room_admin", headers=admin,
                             json={"user_id": "@bob:hs.test"})
    assert resp.status == 200, await resp.json()
    status, pl = await get(client, alice, f"/rooms/{room_id}/state/m.room.power_levels")
    assert pl["users"]["@bob:hs.test"] == 100
    member = await get(client, alice, f"/rooms/{room_id}/state/m.room.member/@bob:hs.test")
    assert member[1]["membership"] == "invite"
    # The admin join API joins a local user who was invited.
    resp = await client.post(f"{A}/v1/join/{room_id}", headers=admin, json={"user_id": "@bob:hs.test"})
    assert resp.status == 200 and (await resp.json()) == {"room_id": room_id}
    status, joined = await get(client, bob, "/joined_rooms")
    assert joined["joined_rooms"] == [room_id]
    # Joining someone to an invite-only room the admin is not in is refused with the auth reason.
    other = await create(client, alice, preset="private_chat")
    await register(client, "carol")
    resp = await client.post(f"{A}/v1/join/{other}", headers=admin, json={"user_id": "@carol:hs.test"})
    assert resp.status == 403 and (await resp.json())["errcode"] == "M_FORBIDDEN"
    resp = await client.post(f"{A}/v1/join/{other}", headers=admin, json={"user_id": "@ghost:hs.test"})
    assert resp.status == 404


async def test_deletion_interrupted_by_a_restart_reports_failure(hs, client, admin):
    # A task row left "purging" by a process that is gone (no task runs for it here).
    await hs.room_admin.store.add_delete_task("old", "!gone:hs.test", "purging", hs.clock_ms())
    status, body = await admin_get(client, admin, "/v2/rooms/delete_status/old")
    assert status == 200 and body["status"] == "failed" and "restarted" in body["error"]
