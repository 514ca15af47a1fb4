"""The v1 event stream (GET /events), the initial syncs (GET /initialSync, GET
/rooms/{roomId}/initialSync) and GET /events/{eventId}, on both engines: what each stream
brings (room events, own memberships, presence, typing, receipts, account data), tokens
and pagination, long-polling, the v1 event format, archived rooms and bad input."""

from __future__ import annotations

import asyncio

from .conftest import register
from .test_sync import User, alice, bob  # noqa: F401 - fixtures


async def stream(user, since=None, timeout="0", **params):
    if since is not None:
        params["from"] = since
    body = await user.call("GET", "/events", timeout=timeout, **params)
    assert set(body) == {"chunk", "start", "end"}
    return body


def of_type(chunk, event_type):
    return [e for e in chunk if e["type"] == event_type]


async def test_events_stream_brings_room_events_in_order_with_pagination(alice, bob):
    room = await alice.create_room(preset="public_chat")
    first = await stream(alice)
    assert first["chunk"] == []
    ids = [await alice.send(room, f"m{i}") for i in range(3)]
    body = await stream(alice, first["end"])
    messages = of_type(body["chunk"], "m.room.message")
    assert [e["event_id"] for e in messages] == ids
    # The v1 format: user_id and age at the top level, beside the ClientEvent fields.
    assert messages[0]["user_id"] == alice.user_id == messages[0]["sender"]
    assert messages[0]["room_id"] == room and isinstance(messages[0]["age"], int)
    # Nothing new from the end token.
    assert (await stream(alice, body["end"]))["chunk"] == []
    # limit: the token stops after the last event given.
    page1 = await stream(alice, first["end"], limit="2")
    assert [e["event_id"] for e in page1["chunk"]] == ids[:2]
    page2 = await stream(alice, page1["end"], limit="2")
    assert [e["event_id"] for e in of_type(page2["chunk"], "m.room.message")] == ids[2:]
    # A room Bob is not in is not in his stream; joining brings his join and what follows.
    bob_start = (await stream(bob))["end"]
    await bob.call("POST", f"/join/{room}", {})
    later = await alice.send(room, "after bob")
    chunk = (await stream(bob, bob_start))["chunk"]
    assert [e["event_id"] for e in of_type(chunk, "m.room.message")][-1] == later
    assert any(e["type"] == "m.room.member" and e["state_key"] == bob.user_id for e in chunk)


async def test_events_stream_own_invite_and_leave(alice, bob):
    room = await alice.create_room()
    since = (await stream(bob))["end"]
    await alice.call("POST", f"/rooms/{room}/invite", {"user_id": bob.user_id})
    await alice.send(room, "while bob is invited")
    chunk = (await stream(bob, since))["chunk"]
    assert [(e["type"], e["content"].get("membership")) for e in chunk] == [("m.room.member", "invite")]
    await bob.call("POST", f"/rooms/{room}/join", {})
    since = (await stream(bob))["end"]
    await bob.call("POST", f"/rooms/{room}/leave", {})
    await alice.send(room, "after bob left")
    chunk = (await stream(bob, since))["chunk"]
    assert [e["content"].get("membership") for e in chunk if e["type"] == "m.room.member"] == ["leave"]
    assert of_type(chunk, "m.room.message") == []


async def test_events_stream_long_polls(alice):
    room = await alice.create_room()
    since = (await stream(alice))["end"]
    waiting = asyncio.create_task(stream(alice, since, timeout="20000"))
    event_id = await alice.send(room, "wake up")
    body = await asyncio.wait_for(waiting, 20)
    assert [e["event_id"] for e in body["chunk"]] == [event_id]
    # Nothing arrives: the timeout ends the wait with an empty chunk and the same position.
    quiet = await stream(alice, body["end"], timeout="50")
    assert quiet["chunk"] == [] and quiet["end"] == body["end"]


async def test_events_stream_presence_typing_receipts_account_data(client, alice, bob):
    carol = User(client, await register(client, "carol"))  # shares no room with alice
    room = await alice.create_room(preset="public_chat")
    await bob.call("POST", f"/join/{room}", {})
    event_id = await bob.send(room, "hi")
    since = (await stream(alice))["end"]
    await bob.call("PUT", f"/presence/{bob.user_id}/status", {"presence": "online", "status_msg": "here"})
    await carol.call("PUT", f"/presence/{carol.user_id}/status", {"presence": "online"})
    await bob.call("PUT", f"/rooms/{room}/typing/{bob.user_id}", {"typing": True, "timeout": 30000})
    await bob.call("POST", f"/rooms/{room}/receipt/m.read/{event_id}", {})
    await alice.call("PUT", f"/user/{alice.user_id}/account_data/my.type", {"cats": 1})
    await alice.call("PUT", f"/user/{alice.user_id}/rooms/{room}/account_data/my.type", {"rats": 2})
    await alice.call("PUT", f"/user/{alice.user_id}/rooms/{room}/tags/work", {"order": 1})
    chunk = (await stream(alice, since))["chunk"]
    [presence] = of_type(chunk, "m.presence")
    assert presence["content"]["user_id"] == presence["sender"] == bob.user_id
    assert presence["content"]["status_msg"] == "here"
    assert of_type(chunk, "m.typing") == [{"type": "m.typing", "room_id": room,
                                            "content": {"user_ids": [bob.user_id]}}]
    [receipt] = of_type(chunk, "m.receipt")
    assert receipt["room_id"] == room and bob.user_id in receipt["content"][event_id]["m.read"]
    assert {"type": "my.type", "content": {"cats": 1}} in chunk
    assert {"type": "my.type", "content": {"rats": 2}, "room_id": room} in chunk
    assert {"type": "m.tag", "content": {"tags": {"work": {"order": 1}}}, "room_id": room} in chunk


async def test_events_stream_join_brings_members_presence(alice, bob):
    await alice.call("PUT", f"/presence/{alice.user_id}/status", {"presence": "unavailable"})
    room = await alice.create_room(preset="public_chat")
    since = (await stream(bob))["end"]
    await bob.call("POST", f"/join/{room}", {})
    chunk = (await stream(bob, since))["chunk"]
    by_user = {e["content"]["user_id"]: e["content"]["presence"] for e in of_type(chunk, "m.presence")}
    assert by_user == {alice.user_id: "unavailable", bob.user_id: "online"}  # following /events: online


async def test_following_the_events_stream_is_being_online(alice):
    """GET /events marks its user online, as a /sync does by default (and Synapse's
    /events): a client of the v1 API is seen online by the others."""
    status = await alice.call("GET", f"/presence/{alice.user_id}/status")
    assert status["presence"] == "offline"
    await stream(alice)
    status = await alice.call("GET", f"/presence/{alice.user_id}/status")
    assert status["presence"] == "online" and status["currently_active"] is True


async def test_events_stream_bad_input(alice):
    assert (await alice.call("GET", "/events", expect=400, limit="hello"))["errcode"] == "M_INVALID_PARAM"
    assert (await alice.call("GET", "/events", expect=400, limit="-2"))["errcode"] == "M_INVALID_PARAM"
    assert (await alice.call("GET", "/events", expect=400, timeout="-1"))["errcode"] == "M_INVALID_PARAM"
    assert (await alice.call("GET", "/events", expect=400, timeout="soon"))["errcode"] == "M_INVALID_PARAM"
    assert (await alice.call("GET", "/events", expect=400, **{"from": "nonsense"}))["errcode"] == "M_INVALID_PARAM"
    assert (await alice.call("GET", "/events", expect=404, room_id="!nowhere:hs.test"))["errcode"] == "M_NOT_FOUND"


async def test_get_single_event_by_id(alice, bob):
    room = await alice.create_room()
    event_id = await alice.send(room, "secret")
    body = await alice.call("GET", f"/events/{event_id}")
    assert body["event_id"] == event_id and body["user_id"] == alice.user_id
    assert (await bob.call("GET", f"/events/{event_id}", expect=404))["errcode"] == "M_NOT_FOUND"
    assert (await alice.call("GET", "/events/$nothing", expect=404))["errcode"] == "M_NOT_FOUND"


async def test_initial_sync(alice, bob):
    await alice.call("PUT", f"/presence/{alice.user_id}/status", {"presence": "online", "status_msg": "hi"})
    public = await alice.create_room(preset="public_chat", visibility="public", name="Lobby")
    await bob.call("POST", f"/join/{public}", {})
    ids = [await bob.send(public, f"m{i}") for i in range(3)]
    await alice.call("POST", f"/rooms/{public}/receipt/m.read/{ids[-1]}", {})
    await alice.call("PUT", f"/user/{alice.user_id}/rooms/{public}/tags/work", {"order": 1})
    await alice.call("PUT", f"/user/{alice.user_id}/account_data/my.type", {"cats": 1})
    invited = await bob.create_room()
    await bob.call("POST", f"/rooms/{invited}/invite", {"user_id": alice.user_id})

    body = await alice.call("GET", "/initialSync", limit="2")
    assert {"end", "rooms", "presence", "account_data", "receipts"} <= set(body)
    rooms = {r["room_id"]: r for r in body["rooms"]}
    assert set(rooms) == {public, invited}
    joined = rooms[public]
    assert joined["membership"] == "join" and joined["visibility"] == "public"
    assert [e["event_id"] for e in joined["messages"]["chunk"]] == ids[1:]
    names = [e for e in joined["state"] if e["type"] == "m.room.name"]
    assert names[0]["content"] == {"name": "Lobby"}
    members = {e["state_key"]: e for e in joined["state"] if e["type"] == "m.room.member"}
    assert members[bob.user_id]["user_id"] == bob.user_id  # v1 format
    assert joined["account_data"] == [{"type": "m.tag", "content": {"tags": {"work": {"order": 1}}}}]
    assert rooms[invited]["membership"] == "invite" and rooms[invited]["inviter"] == bob.user_id
    assert rooms[invited]["invite"]["state_key"] == alice.user_id
    presence = {e["content"]["user_id"]: e["content"] for e in body["presence"]}
    assert presence[alice.user_id]["presence"] == "online" and presence[alice.user_id]["status_msg"] == "hi"
    assert {"type": "my.type", "content": {"cats": 1}} in body["account_data"]
    [receipt] = [r for r in body["receipts"] if r["room_id"] == public]
    assert alice.user_id in receipt["content"][ids[-1]]["m.read"]
    # messages.start pages backwards with /messages; end continues with /events.
    earlier = await alice.call("GET", f"/rooms/{public}/messages", dir="b", **{"from": joined["messages"]["start"]})
    assert ids[0] in [e["event_id"] for e in earlier["chunk"]]
    latest = await bob.send(public, "news")
    assert [e["event_id"] for e in (await stream(alice, body["end"]))["chunk"]] == [latest]

    assert all(r["messages"]["chunk"] == [] for r in (await alice.call("GET", "/initialSync", limit="0"))["rooms"]
               if r["membership"] == "join")
    assert (await alice.call("GET", "/initialSync", expect=400, limit="hello"))["errcode"] == "M_INVALID_PARAM"
    assert (await alice.call("GET", "/initialSync", expect=400, archived="maybe"))["errcode"] == "M_INVALID_PARAM"


async def test_initial_syncs_of_a_departed_room(alice, bob):
    room = await alice.create_room(preset="public_chat")
    await bob.call("POST", f"/join/{room}", {})
    await alice.state(room, "madeup.state", {"v": "before"})
    before = await alice.send(room, "before bob left")
    await bob.call("POST", f"/rooms/{room}/leave", {})
    await alice.send(room, "after bob left")
    await alice.state(room, "madeup.state", {"v": "after"})

    assert room not in [r["room_id"] for r in (await bob.call("GET", "/initialSync"))["rooms"]]
    archived = await bob.call("GET", "/initialSync", archived="true", limit="2")
    [left] = [r for r in archived["rooms"] if r["room_id"] == room]
    one = await bob.call("GET", f"/rooms/{room}/initialSync", limit="2")
    for body in (left, one):
        assert body["membership"] == "leave"
        assert [e["event_id"] for e in body["messages"]["chunk"]][0] == before
        assert body["messages"]["chunk"][-1]["content"]["membership"] == "leave"
        [state] = [e for e in body["state"] if e["type"] == "madeup.state"]
        assert state["content"] == {"v": "before"}
    assert one["presence"] == [] and one["receipts"] == []


async def test_room_initial_sync_member_peeker_and_stranger(alice, bob):
    room = await alice.create_room(preset="public_chat")
    await alice.send(room, "private")
    body = await alice.call("GET", f"/rooms/{room}/initialSync")
    assert body["room_id"] == room and body["membership"] == "join"
    assert {"chunk", "start", "end"} <= set(body["messages"])
    assert [e["content"]["user_id"] for e in body["presence"]] == [alice.user_id]
    # Bob is not in the room: 403 until it is world readable, then only what was sent
    # while it was.
    assert (await bob.call("GET", f"/rooms/{room}/initialSync", expect=403))["errcode"] == "M_FORBIDDEN"
    await alice.state(room, "m.room.history_visibility", {"history_visibility": "world_readable"})
    public = await alice.send(room, "public")
    peek = await bob.call("GET", f"/rooms/{room}/initialSync")
    assert "membership" not in peek
    assert [(e["type"], e["content"].get("body")) for e in peek["messages"]["chunk"]] == [
        ("m.room.history_visibility", None), ("m.room.message", "public")]
    assert peek["messages"]["chunk"][-1]["event_id"] == public
    assert {e["type"] for e in peek["state"]} >= {"m.room.create", "m.room.history_visibility"}
    assert (await bob.call("GET", "/rooms/!nowhere:hs.test/initialSync", expect=404))["errcode"] == "M_NOT_FOUND"


async def test_peeking_at_a_world_readable_room(alice, bob):
    room = await alice.create_room(preset="public_chat")
    hidden = await alice.send(room, "before it was world readable")
    # Not world readable: a stranger reads nothing.
    for path in (f"/rooms/{room}/messages", f"/rooms/{room}/state", f"/rooms/{room}/state/m.room.create/",
                 f"/rooms/{room}/members", f"/rooms/{room}/context/{hidden}"):
        assert (await bob.call("GET", path, expect=403))["errcode"] == "M_FORBIDDEN", path
    assert (await bob.call("GET", "/events", expect=403, room_id=room))["errcode"] == "M_FORBIDDEN"

    await alice.state(room, "m.room.history_visibility", {"history_visibility": "world_readable"})
    shown = await alice.send(room, "world readable")
    messages = await bob.call("GET", f"/rooms/{room}/messages", dir="b", limit="20")
    ids = [e["event_id"] for e in messages["chunk"]]
    assert shown in ids and hidden not in ids
    state = await bob.call("GET", f"/rooms/{room}/state")
    assert ("m.room.member", alice.user_id) in {(e["type"], e.get("state_key")) for e in state}
    assert (await bob.call("GET", f"/rooms/{room}/state/m.room.member/{alice.user_id}"))["membership"] == "join"
    assert (await bob.call("GET", f"/rooms/{room}/context/{shown}"))["event"]["event_id"] == shown
    assert (await bob.call("GET", f"/rooms/{room}/context/{hidden}", expect=404))["errcode"] == "M_NOT_FOUND"
    # The room's own stream: its events, its members' presence, typing and receipts,
    # but not the presence of strangers to the room, and no account data.
    since = (await bob.call("GET", f"/rooms/{room}/initialSync"))["messages"]["end"]
    assert (await stream(bob, since, room_id=room))["chunk"] == []
    later = await alice.send(room, "live")
    await alice.call("PUT", f"/presence/{alice.user_id}/status", {"presence": "online"})
    await bob.call("PUT", f"/presence/{bob.user_id}/status", {"presence": "online"})
    await alice.call("PUT", f"/rooms/{room}/typing/{alice.user_id}", {"typing": True, "timeout": 30000})
    await alice.call("POST", f"/rooms/{room}/receipt/m.read/{later}", {})
    await bob.call("PUT", f"/user/{bob.user_id}/account_data/my.type", {"x": 1})
    chunk = (await stream(bob, since, room_id=room))["chunk"]
    assert [e["event_id"] for e in of_type(chunk, "m.room.message")] == [later]
    assert [e["content"]["user_id"] for e in of_type(chunk, "m.presence")] == [alice.user_id]
    assert [e["room_id"] for e in of_type(chunk, "m.typing") + of_type(chunk, "m.receipt")] == [room, room]
    assert of_type(chunk, "my.type") == []
