"""User directory search (who is visible, limits, config) and presence, over HTTP on both engines."""

from __future__ import annotations

import pytest

from gateway.services.stream_writers import WriterUnreachable

from .conftest import auth_header, register
from .test_rooms import create, get, post

C = "/_matrix/client/v3"


async def search(client, token, term, limit=None):
    body = {"search_term": term, **({"limit": limit} if limit is not None else {})}
    return await post(client, token, "/user_directory/search", body)


async def set_name(client, token, user_id, name):
    resp = await client.put(f"{C}/profile/{user_id}/displayname", json={"displayname": name},
                            headers=auth_header(token))
    assert resp.status == 200


@pytest.fixture
async def people(client):
    tokens = {}
    for name in ("alice", "bob", "carol", "dave", "erin"):
        tokens[name] = (await register(client, name))["access_token"]
    await set_name(client, tokens["bob"], "@bob:hs.test", "Bobby Tables")
    await set_name(client, tokens["carol"], "@carol:hs.test", "Carol 100%_sure")
    # alice and bob share a private room; carol is in a public room; dave is in a private room alone.
    private = await create(client, tokens["alice"], preset="private_chat")
    assert (await post(client, tokens["alice"], f"/rooms/{private}/invite", {"user_id": "@bob:hs.test"}))[0] == 200
    assert (await post(client, tokens["bob"], f"/rooms/{private}/join"))[0] == 200
    await create(client, tokens["carol"], preset="public_chat")
    await create(client, tokens["dave"], preset="private_chat")
    return tokens


async def test_search_sees_room_mates_and_public_rooms(client, people):
    alice, erin = people["alice"], people["erin"]
    status, body = await search(client, alice, "bob")
    assert status == 200 and body == {"results": [{"user_id": "@bob:hs.test", "display_name": "Bobby Tables"}],
                                      "limited": False}
    assert (await search(client, alice, "TABLES"))[1]["results"][0]["user_id"] == "@bob:hs.test"
    assert [r["user_id"] for r in (await search(client, alice, "carol"))[1]["results"]] == ["@carol:hs.test"]
    assert (await search(client, alice, "dave"))[1]["results"] == []  # shares nothing with alice
    assert (await search(client, erin, "bob"))[1]["results"] == []  # erin shares no room with bob
    # One's own entry only through a public room (sharing a room with oneself does not count).
    assert (await search(client, alice, "alice"))[1]["results"] == []
    assert [r["user_id"] for r in (await search(client, people["carol"], "carol"))[1]["results"]] == \
        ["@carol:hs.test"]


async def test_membership_and_room_changes_move_users_in_and_out(client, people):
    """Joining and leaving a public room, and a room's join rules or history visibility
    going public and back, show and hide its members."""
    alice, dave, erin = people["alice"], people["dave"], people["erin"]

    async def finds_dave():
        return [r["user_id"] for r in (await search(client, erin, "dave"))[1]["results"]] == ["@dave:hs.test"]

    public = await create(client, alice, preset="public_chat")
    assert not await finds_dave()
    assert (await post(client, dave, f"/rooms/{public}/join"))[0] == 200
    assert await finds_dave()
    assert (await post(client, dave, f"/rooms/{public}/leave"))[0] == 200
    assert not await finds_dave()
    private = await create(client, alice, preset="private_chat", invite=["@dave:hs.test"])
    assert (await post(client, dave, f"/rooms/{private}/join"))[0] == 200
    assert not await finds_dave()
    for event_type, public_content, private_content in [
            ("m.room.join_rules", {"join_rule": "public"}, {"join_rule": "invite"}),
            ("m.room.history_visibility", {"history_visibility": "world_readable"},
             {"history_visibility": "shared"})]:
        for content, found in ((public_content, True), (private_content, False)):
            resp = await client.put(f"{C}/rooms/{private}/state/{event_type}", json=content,
                                    headers=auth_header(alice))
            assert resp.status == 200
            assert await finds_dave() is found, (event_type, content)
    # LIKE wildcards are literal.
    assert [r["user_id"] for r in (await search(client, alice, "100%_"))[1]["results"]] == ["@carol:hs.test"]
    assert (await search(client, alice, "b%s"))[1]["results"] == []  # not Bobby Tables
    # Limits.
    status, body = await search(client, alice, "hs.test", limit=1)
    assert len(body["results"]) == 1 and body["limited"] is True
    status, err = await post(client, alice, "/user_directory/search", {"limit": 3})
    assert status == 400 and err["errcode"] == "M_BAD_JSON"


@pytest.mark.parametrize("config_overrides", [{"user_directory": {"search_all_users": True}}])
async def test_search_all_users(client, people):
    assert [r["user_id"] for r in (await search(client, people["erin"], "dave"))[1]["results"]] == ["@dave:hs.test"]


@pytest.mark.parametrize("config_overrides", [{"user_directory": {"enabled": False}}])
async def test_directory_disabled(client, people):
    assert (await search(client, people["alice"], "bob"))[1] == {"results": [], "limited": False}


@pytest.mark.parametrize("config_overrides", [{"rc_presence": {"per_user": {"per_second": 1000, "burst_count": 1000}}}])
async def test_presence(client, people):
    alice, bob, erin = people["alice"], people["bob"], people["erin"]
    assert await get(client, bob, "/presence/@alice:hs.test/status") == (200, {"presence": "offline"})
    resp = await client.put(f"{C}/presence/@alice:hs.test/status", json={"presence": "online", "status_msg": "tea"},
                            headers=auth_header(alice))
    assert resp.status == 200
    status, body = await get(client, bob, "/presence/@alice:hs.test/status")
    assert status == 200 and body["presence"] == "online" and body["status_msg"] == "tea"
    assert body["currently_active"] is True and body["last_active_ago"] >= 0
    status, err = await get(client, erin, "/presence/@alice:hs.test/status")
    assert status == 403 and err["errcode"] == "M_FORBIDDEN"
    resp = await client.put(f"{C}/presence/@alice:hs.test/status", json={"presence": "online"},
                            headers=auth_header(bob))
    assert resp.status == 403 and (await resp.json())["errcode"] == "M_FORBIDDEN"
    resp = await client.put(f"{C}/presence/@alice:hs.test/status", json={"presence": "asleep"},
                            headers=auth_header(alice))
    assert resp.status == 400 and (await resp.json())["errcode"] == "M_INVALID_PARAM"
    resp = await client.put(f"{C}/presence/@alice:hs.test/status", json={}, headers=auth_header(alice))
    assert resp.status == 400 and (await resp.json())["errcode"] == "M_MISSING_PARAM"
    resp = await client.put(f"{C}/presence/@alice:hs.test/status", json={"presence": "unavailable"},
                            headers=auth_header(alice))
    assert resp.status == 200
    status, body = await get(client, alice, "/presence/@alice:hs.test/status")
    assert body["presence"] == "unavailable" and "status_msg" not in body and body["currently_active"] is False
    status, err = await get(client, alice, "/presence/not-a-user/status")
    assert status == 400 and err["errcode"] == "M_INVALID_PARAM"


async def test_presence_updates_are_rate_limited(client, people):
    alice = people["alice"]
    resp = await client.put(f"{C}/presence/@alice:hs.test/status", json={"presence": "online"},
                            headers=auth_header(alice))
    assert resp.status == 200
    resp = await client.put(f"{C}/presence/@alice:hs.test/status", json={"presence": "unavailable"},
                            headers=auth_header(alice))
    body = await resp.json()
    assert resp.status == 429 and body["errcode"] == "M_LIMIT_EXCEEDED" and body["retry_after_ms"] > 0
    assert (await get(client, alice, "/presence/@alice:hs.test/status"))[1]["presence"] == "online"


async def test_other_servers_users_by_their_latest_join(client, hs, people):
    """Another server's users are found by the name of their latest join event (a
    profile change they send into a room), under the same visibility rules."""
    alice, erin = people["alice"], people["erin"]
    shared = await create(client, alice, preset="private_chat")
    # (dave is in !elsewhere too: only rooms this server is in count)
    rows = [(shared, "@zed:remote.test", 10, "Zed Old"), ("!elsewhere:remote.test", "@zed:remote.test", 20, "Zed New"),
            ("!hidden:remote.test", "@yan:remote.test", 30, "Yan"), ("!elsewhere:remote.test", "@dave:hs.test", 5, None)]
    for room_id, user_id, position, name in rows:
        await hs.db.execute(
            "INSERT INTO room_memberships (room_id, user_id, membership, event_id, sender, stream_ordering,"
            " displayname) VALUES ($1, $2, 'join', $3, $2, $4, $5)", room_id, user_id, f"$e{position}", position, name)
    assert (await search(client, alice, "zed"))[1]["results"] == [{"user_id": "@zed:remote.test",
                                                                   "display_name": "Zed New"}]
    assert (await search(client, alice, "old"))[1]["results"] == []  # the name they left behind
    assert (await search(client, alice, "yan"))[1]["results"] == []  # shares no room with alice
    assert (await search(client, erin, "zed"))[1]["results"] == []


async def test_other_servers_users_of_a_room_we_left_are_not_found(client, hs, people):
    """A public room of another server that this server left: what we hold of its
    members is stale, so its remote members are no longer found through it."""
    alice = people["alice"]
    room = "!public:remote.test"
    await hs.db.execute("INSERT INTO room_stats_state (room_id, join_rules) VALUES ($1, 'public')", room)
    for user_id, position, name in (("@xan:remote.test", 1, "Xan"), ("@dave:hs.test", 2, None)):
        await hs.db.execute(
            "INSERT INTO room_memberships (room_id, user_id, membership, event_id, sender, stream_ordering,"
            " displayname) VALUES ($1, $2, 'join', $3, $2, $4, $5)", room, user_id, f"$p{position}", position, name)
    assert [r["user_id"] for r in (await search(client, alice, "xan"))[1]["results"]] == ["@xan:remote.test"]
    await hs.db.execute("UPDATE room_memberships SET membership = 'leave' WHERE room_id = $1 AND user_id = $2",
                        room, "@dave:hs.test")
    assert (await search(client, alice, "xan"))[1]["results"] == []


async def test_a_sync_answers_while_the_presence_writer_is_unreachable(client, people, hs):
    """With workers, the presence change a /sync makes is the presence writer's: while it
    is unreachable the sync answers without it, and a later sync makes it."""
    alice, bob = people["alice"], people["bob"]
    writer_mark_syncing = hs.user_directory.mark_syncing

    async def unreachable(user_id: str, set_presence: str) -> None:
        raise WriterUnreachable("presence", "main", "Connection refused")

    hs.user_directory.mark_syncing = unreachable
    status, body = await get(client, alice, "/sync", timeout="0")
    assert status == 200 and body["next_batch"]
    assert (await get(client, bob, "/presence/@alice:hs.test/status"))[1]["presence"] == "offline"
    hs.user_directory.mark_syncing = writer_mark_syncing  # the writer is back
    assert (await get(client, alice, "/sync", timeout="0"))[0] == 200
    assert (await get(client, bob, "/presence/@alice:hs.test/status"))[1]["presence"] == "online"
