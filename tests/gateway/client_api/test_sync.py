"""/sync over HTTP on both engines: initial and incremental syncs, long-polling, limited
timelines with prev_batch and the state at the timeline start, invites, leaves, filters,
lazy-loading, summaries, transaction IDs, tokens across a restart, and bad input."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from aiohttp.test_utils import TestClient, TestServer

from gateway.app import build_listener_app
from gateway.server import HomeServer

from .conftest import auth_header, register

C = "/_matrix/client/v3"


class User:
    def __init__(self, client, body):
        self.client = client
        self.user_id = body["user_id"]
        self.token = body["access_token"]
        self.device_id = body["device_id"]

    async def call(self, method, path, body=None, expect=200, **params):
        resp = await self.client.request(method, f"{C}{path}", json=body, params=params,
                                         headers=auth_header(self.token))
        data = await resp.json()
        assert resp.status == expect, (resp.status, data)
        return data

    async def sync(self, since=None, expect=200, **params):
        # Syncing makes a user online (unless told otherwise): these tests keep presence
        # out of it, but those about it.
        params.setdefault("set_presence", "offline")
        if since is not None:
            params["since"] = since
        if isinstance(params.get("filter"), dict):
            params["filter"] = json.dumps(params["filter"])
        return await self.call("GET", "/sync", expect=expect, **params)

    async def create_room(self, **body):
        return (await self.call("POST", "/createRoom", body))["room_id"]

    async def send(self, room_id, text, txn=None):
        txn = txn or f"t{time.monotonic_ns()}"
        return (await self.call("PUT", f"/rooms/{room_id}/send/m.room.message/{txn}",
                                {"msgtype": "m.text", "body": text}))["event_id"]

    async def state(self, room_id, event_type, content, state_key=""):
        return (await self.call("PUT", f"/rooms/{room_id}/state/{event_type}/{state_key}", content))["event_id"]


@pytest.fixture
async def alice(client):
    return User(client, await register(client, "alice"))


@pytest.fixture
async def bob(client):
    return User(client, await register(client, "bob"))


TOP_LEVEL = {"next_batch", "rooms", "account_data", "presence", "to_device", "device_lists",
             "device_one_time_keys_count"}


def bodies(section):
    return [e["content"].get("body") for e in section["timeline"]["events"] if e["type"] == "m.room.message"]


async def test_initial_sync_has_every_section(alice):
    room = await alice.create_room(name="Lounge", room_version="12")
    await alice.send(room, "hi")
    body = await alice.sync()
    assert TOP_LEVEL <= set(body)
    assert set(body["rooms"]) == {"join", "invite", "leave", "knock"}
    assert [e["type"] for e in body["account_data"]["events"]] == ["m.push_rules"]
    assert "underride" in body["account_data"]["events"][0]["content"]["global"]
    assert body["presence"] == {"events": []}
    assert body["to_device"] == {"events": []}
    section = body["rooms"]["join"][room]
    assert {"timeline", "state", "ephemeral", "account_data", "summary", "unread_notifications"} <= set(section)
    assert bodies(section) == ["hi"]
    types = [e["type"] for e in section["timeline"]["events"]]
    assert types[0] == "m.room.create" and section["timeline"]["limited"] is False
    assert section["summary"]["m.joined_member_count"] == 1
    assert section["summary"]["m.invited_member_count"] == 0
    assert section["unread_notifications"] == {"notification_count": 0, "highlight_count": 0}
    assert section["ephemeral"] == {"events": []}


async def test_incremental_sync_only_new_events_and_empty_when_nothing(alice, bob):
    room = await alice.create_room(preset="public_chat")
    first = await alice.sync()
    await alice.send(room, "one")
    body = await alice.sync(first["next_batch"])
    section = body["rooms"]["join"][room]
    assert bodies(section) == ["one"] and section["timeline"]["limited"] is False
    assert section["state"] == {"events": []}
    # Nothing new: no rooms, but every sub-object is there.
    again = await alice.sync(body["next_batch"])
    assert again["rooms"] == {"join": {}, "invite": {}, "leave": {}, "knock": {}}
    assert TOP_LEVEL <= set(again)
    # A state-only change (someone joined) brings the room back.
    await bob.call("POST", f"/join/{room}", {})
    joined = await alice.sync(again["next_batch"])
    events = joined["rooms"]["join"][room]["timeline"]["events"]
    assert [(e["type"], e["state_key"]) for e in events] == [("m.room.member", bob.user_id)]
    assert joined["rooms"]["join"][room]["summary"]["m.joined_member_count"] == 2


async def test_long_poll_wakes_on_message(alice, bob):
    room = await alice.create_room(preset="public_chat")
    await bob.call("POST", f"/join/{room}", {})
    since = (await alice.sync())["next_batch"]
    waiting = asyncio.create_task(alice.sync(since, timeout="30000"))
    await asyncio.sleep(0)  # let the request start waiting (the notifier would also catch a change before)
    await bob.send(room, "wake up")
    body = await asyncio.wait_for(waiting, 20)  # woken, well before the 30 s long-poll ends
    assert bodies(body["rooms"]["join"][room]) == ["wake up"]


async def test_long_poll_times_out_empty_and_wakes_on_invite(alice, bob):
    since = (await bob.sync())["next_batch"]
    body = await bob.sync(since, timeout="200")
    assert body["rooms"]["join"] == {} and body["rooms"]["invite"] == {}
    waiting = asyncio.create_task(bob.sync(body["next_batch"], timeout="30000"))
    room = await alice.create_room(name="Secret")
    await alice.call("POST", f"/rooms/{room}/invite", {"user_id": bob.user_id})
    woke = await asyncio.wait_for(waiting, 20)
    invite = woke["rooms"]["invite"][room]["invite_state"]["events"]
    kinds = {(e["type"], e["state_key"]) for e in invite}
    assert ("m.room.create", "") in kinds and ("m.room.name", "") in kinds
    own = [e for e in invite if e["type"] == "m.room.member" and e["state_key"] == bob.user_id]
    assert own and own[0]["content"]["membership"] == "invite" and own[0]["sender"] == alice.user_id


async def test_limited_timeline_prev_batch_and_state_at_start(alice, bob):
    room = await alice.create_room(preset="public_chat", name="Old name")
    await bob.call("POST", f"/join/{room}", {})
    since = (await bob.sync())["next_batch"]
    await alice.state(room, "m.room.topic", {"topic": "before the gap"})
    for i in range(5):
        await alice.send(room, f"m{i}")
    await alice.state(room, "m.room.name", {"name": "New name"})
    await alice.send(room, "last")
    flt = {"room": {"timeline": {"limit": 2}}}
    body = await bob.sync(since, filter=flt)
    section = body["rooms"]["join"][room]
    tl = section["timeline"]
    assert tl["limited"] is True
    assert [e["type"] for e in tl["events"]] == ["m.room.name", "m.room.message"]
    # State: what changed between the token and the start of the timeline (the topic),
    # not the name (it is in the timeline).
    state = {(e["type"], e["state_key"]): e["content"] for e in section["state"]["events"]}
    assert state == {("m.room.topic", ""): {"topic": "before the gap"}}
    # prev_batch works with /messages and continues right before the timeline.
    page = await bob.call("GET", f"/rooms/{room}/messages", dir="b", limit="3", **{"from": tl["prev_batch"]})
    assert [e["content"].get("body") for e in page["chunk"]] == ["m4", "m3", "m2"]

    # Initial sync with a limited timeline: full state at the start of the timeline.
    initial = await bob.sync(filter=flt)
    section = initial["rooms"]["join"][room]
    state = {(e["type"], e["state_key"]): e["content"] for e in section["state"]["events"]}
    assert state[("m.room.name", "")] == {"name": "Old name"}  # the change is in the timeline
    assert ("m.room.create", "") in state and ("m.room.member", bob.user_id) in state
    assert section["timeline"]["limited"] is True


def _state_map(events):
    return {(e["type"], e["state_key"]): e["content"] for e in events}


async def test_use_state_after_gives_the_state_at_the_timeline_end(alice, bob):
    """v1.16 ``use_state_after``: ``state_after`` (and no ``state``) holds the state up to
    the end of the timeline, timeline events included."""
    room = await alice.create_room(preset="public_chat", name="Old name")
    await bob.call("POST", f"/join/{room}", {})
    flt = {"room": {"timeline": {"limit": 2}}}
    initial = await bob.sync(filter=flt, use_state_after="true")
    section = initial["rooms"]["join"][room]
    assert "state" not in section
    state = _state_map(section["state_after"]["events"])
    # bob's join is in the timeline and in state_after too.
    assert state[("m.room.member", bob.user_id)]["membership"] == "join"
    assert state[("m.room.name", "")] == {"name": "Old name"} and ("m.room.create", "") in state
    since = initial["next_batch"]

    await alice.state(room, "m.room.topic", {"topic": "before the gap"})
    for i in range(3):
        await alice.send(room, f"m{i}")
    await alice.state(room, "m.room.name", {"name": "New name"})
    await alice.send(room, "last")
    after = (await bob.sync(since, filter=flt, use_state_after="true"))["rooms"]["join"][room]
    assert [e["type"] for e in after["timeline"]["events"]] == ["m.room.name", "m.room.message"]
    assert _state_map(after["state_after"]["events"]) == {("m.room.topic", ""): {"topic": "before the gap"},
                                                          ("m.room.name", ""): {"name": "New name"}}
    # The same token without the flag: the state at the timeline start, as before.
    before = (await bob.sync(since, filter=flt))["rooms"]["join"][room]
    assert "state_after" not in before
    assert _state_map(before["state"]["events"]) == {("m.room.topic", ""): {"topic": "before the gap"}}

    # Not limited: a state change in the timeline is in state_after; a message alone
    # brings an empty (but present) state_after.
    since = (await bob.sync(since, use_state_after="true"))["next_batch"]
    topic_id = await alice.state(room, "m.room.topic", {"topic": "in the timeline"})
    quiet = await bob.sync(since, use_state_after="true")
    assert [e["event_id"] for e in quiet["rooms"]["join"][room]["state_after"]["events"]] == [topic_id]
    await alice.send(room, "just talk")
    talk = await bob.sync(quiet["next_batch"], use_state_after="true")
    assert talk["rooms"]["join"][room]["state_after"] == {"events": []}

    # A room left: state_after is the state at the leave.
    await bob.call("POST", f"/rooms/{room}/leave", {})
    await alice.state(room, "m.room.name", {"name": "After bob left"})
    left = (await bob.sync(talk["next_batch"], use_state_after="true"))["rooms"]["leave"][room]
    state = _state_map(left["state_after"]["events"])
    assert state == {("m.room.member", bob.user_id): {"membership": "leave"}}

    # The unstable name (MSC4222) answers with the unstable section name.
    body = await bob.sync(**{"org.matrix.msc4222.use_state_after": "true", "filter": {"room": {"include_leave": True}}})
    assert "org.matrix.msc4222.state_after" in body["rooms"]["join"].get(room, body["rooms"]["leave"][room])
    await bob.sync(use_state_after="yes", expect=400)


async def _three_members_bob_spoke_last(alice, bob, client):
    """A public room of alice, bob and carol whose last message is bob's (for lazy-loading)."""
    carol = User(client, await register(client, "carol"))
    room = await alice.create_room(preset="public_chat")
    await bob.call("POST", f"/join/{room}", {})
    await carol.call("POST", f"/join/{room}", {})
    await bob.send(room, "from bob")
    return carol, room


async def test_use_state_after_with_lazy_loaded_members(alice, bob, client):
    carol, room = await _three_members_bob_spoke_last(alice, bob, client)
    lazy = {"room": {"state": {"lazy_load_members": True}, "timeline": {"limit": 1}}}
    body = await alice.sync(filter=lazy, use_state_after="true")
    members = {e["state_key"] for e in body["rooms"]["join"][room]["state_after"]["events"]
               if e["type"] == "m.room.member"}
    assert members == {alice.user_id, bob.user_id}  # carol sent nothing in the timeline
    await bob.send(room, "again")
    again = await alice.sync(body["next_batch"], filter=lazy, use_state_after="true")
    # bob's member event was sent already: not again.
    assert again["rooms"]["join"][room]["state_after"] == {"events": []}
    await carol.send(room, "hello")
    third = await alice.sync(again["next_batch"], filter=lazy, use_state_after="true")
    assert [e["state_key"] for e in third["rooms"]["join"][room]["state_after"]["events"]] == [carol.user_id]


async def test_transaction_id_only_for_sending_device(client, alice):
    room = await alice.create_room()
    login = await client.post(f"{C}/login", json={
        "type": "m.login.password", "identifier": {"type": "m.id.user", "user": "alice"},
        "password": "pw-" + "x" * 8})
    other = User(client, await login.json())
    assert other.device_id != alice.device_id
    await alice.send(room, "mine", txn="txn-42")
    for who, expected in ((alice, "txn-42"), (other, None)):
        events = (await who.sync())["rooms"]["join"][room]["timeline"]["events"]
        msg = [e for e in events if e["type"] == "m.room.message"][0]
        assert msg["unsigned"].get("transaction_id") == expected


async def test_leave_section_and_include_leave(alice, bob):
    room = await alice.create_room(preset="public_chat")
    await bob.call("POST", f"/join/{room}", {})
    since = (await bob.sync())["next_batch"]
    await alice.send(room, "before leave")
    await bob.call("POST", f"/rooms/{room}/leave", {})
    await alice.send(room, "after leave")
    body = await bob.sync(since)
    assert room not in body["rooms"]["join"]
    section = body["rooms"]["leave"][room]
    events = section["timeline"]["events"]
    assert bodies(section) == ["before leave"]
    assert (events[-1]["type"], events[-1]["content"]["membership"]) == ("m.room.member", "leave")
    assert {"timeline", "state", "account_data"} <= set(section)
    # Initial sync: left rooms only with include_leave.
    assert room not in (await bob.sync())["rooms"]["leave"]
    with_leave = await bob.sync(filter={"room": {"include_leave": True}})
    assert bodies(with_leave["rooms"]["leave"][room]) == ["before leave"]


async def test_filters_types_rooms_senders_and_stored_filter(alice, bob):
    r1 = await alice.create_room(preset="public_chat")
    r2 = await alice.create_room(preset="public_chat")
    await bob.call("POST", f"/join/{r1}", {})
    since = (await alice.sync())["next_batch"]
    await alice.send(r1, "from alice")
    await bob.send(r1, "from bob")
    await alice.send(r2, "in room two")
    await alice.call("PUT", f"/rooms/{r1}/state/m.room.topic/", {"topic": "t"})
    body = await alice.sync(since, filter={"room": {"rooms": [r1], "timeline": {"types": ["m.room.message"],
                                                                               "senders": [bob.user_id]}}})
    assert set(body["rooms"]["join"]) == {r1}
    section = body["rooms"]["join"][r1]
    assert bodies(section) == ["from bob"] and len(section["timeline"]["events"]) == 1
    # The topic change was filtered out of the timeline, so it comes in state.
    assert [(e["type"], e["content"]) for e in section["state"]["events"]] == [("m.room.topic", {"topic": "t"})]
    # Wildcards and not_types, through a stored filter ID.
    stored = await alice.call("POST", f"/user/{alice.user_id}/filter",
                              {"room": {"not_rooms": [r1], "timeline": {"not_types": ["m.room.*"]}}})
    await alice.call("PUT", f"/rooms/{r2}/send/org.example.ping/p1", {"n": 1})
    body = await alice.sync(since, filter=stored["filter_id"])
    assert set(body["rooms"]["join"]) == {r2}
    assert [e["type"] for e in body["rooms"]["join"][r2]["timeline"]["events"]] == ["org.example.ping"]


async def test_lazy_loading_members_and_heroes(alice, bob, client):
    carol = User(client, await register(client, "carol"))
    room = await alice.create_room(preset="public_chat")
    await bob.call("POST", f"/join/{room}", {})
    await carol.call("POST", f"/join/{room}", {})
    for i in range(3):
        await bob.send(room, f"b{i}")
    lazy = {"room": {"state": {"lazy_load_members": True}, "timeline": {"limit": 3}}}
    body = await alice.sync(filter=lazy)
    section = body["rooms"]["join"][room]
    members = {e["state_key"] for e in section["state"]["events"] if e["type"] == "m.room.member"}
    assert members == {bob.user_id, alice.user_id}  # carol sent nothing in the timeline
    full = await alice.sync(filter={"room": {"timeline": {"limit": 3}}})
    members = {e["state_key"] for e in full["rooms"]["join"][room]["state"]["events"] if e["type"] == "m.room.member"}
    assert members == {alice.user_id, bob.user_id, carol.user_id}
    summary = section["summary"]
    assert summary["m.heroes"] == [bob.user_id, carol.user_id]
    assert summary["m.joined_member_count"] == 3


async def test_named_rooms_have_no_heroes(alice, bob):
    """A room with a name (or a canonical alias) has only the member counts in its
    summary; naming it with an empty name brings the heroes back."""
    room = await alice.create_room(preset="public_chat", name="Tea")
    await bob.call("POST", f"/join/{room}", {})
    summary = (await alice.sync())["rooms"]["join"][room]["summary"]
    assert summary == {"m.joined_member_count": 2, "m.invited_member_count": 0}
    await alice.call("PUT", f"/rooms/{room}/state/m.room.name", {"name": ""})
    summary = (await alice.sync())["rooms"]["join"][room]["summary"]
    assert summary["m.heroes"] == [bob.user_id]


async def test_full_state(alice):
    room = await alice.create_room(name="Full")
    since = (await alice.sync())["next_batch"]
    await alice.send(room, "x")
    body = await alice.sync(since, full_state="true")
    state = {(e["type"], e["state_key"]) for e in body["rooms"]["join"][room]["state"]["events"]}
    assert ("m.room.create", "") in state and ("m.room.name", "") in state
    assert bodies(body["rooms"]["join"][room]) == ["x"]


async def test_bad_tokens_and_filters(alice):
    for token in ("garbage", "s1_2", "s1_2_3_4_zz", "x1_1_1_1_ab", "s-1_0_0_0_ab"):
        body = await alice.sync(token, expect=400)
        assert body["errcode"] == "M_INVALID_PARAM"
    for flt in ("{not json", "99999", "abc", json.dumps({"room": {"timeline": {"limit": "ten"}}}),
                json.dumps({"room": []})):
        body = await alice.call("GET", "/sync", expect=400, filter=flt)
        assert body["errcode"] == "M_INVALID_PARAM"
    body = await alice.call("GET", "/sync", expect=400, timeout="soon")
    assert body["errcode"] == "M_INVALID_PARAM"
    resp = await alice.client.get(f"{C}/sync")
    assert resp.status == 401 and (await resp.json())["errcode"] == "M_MISSING_TOKEN"


async def test_backfilled_and_outlier_events_are_never_new(hs, alice):
    room = await alice.create_room()
    since = (await alice.sync())["next_batch"]
    # Rows as federation would write them for events from the past.
    for pos, outlier in ((-1, False), (-2, True)):
        await hs.db.execute(
            "INSERT INTO events (event_id, stream_ordering, room_id, type, state_key, sender, depth,"
            " origin_server_ts, received_ts, json, outlier) VALUES ($1, $2, $3, 'm.room.message', NULL, $4, 1, 0, 0,"
            " $5, $6)",
            f"$old{pos}", pos, room, "@x:elsewhere", json.dumps({
                "type": "m.room.message", "room_id": room, "sender": "@x:elsewhere", "content": {"body": "old"},
                "depth": 1, "origin_server_ts": 0, "prev_events": [], "auth_events": [], "event_id": f"$old{pos}",
                "hashes": {"sha256": "x"}, "signatures": {}}), outlier)
    body = await alice.sync(since)
    assert room not in body["rooms"]["join"]


async def test_since_token_survives_restart(tmp_path, hs, alice):
    room = await alice.create_room()
    await alice.send(room, "before restart")
    since = (await alice.sync())["next_batch"]
    # A second server process on the same database (the first one's typing is gone).
    hs2 = await HomeServer.open(hs.config)
    try:
        async with TestClient(TestServer(build_listener_app(hs2, hs2.config.listeners[0]))) as c2:
            user = User(c2, {"user_id": alice.user_id, "access_token": alice.token, "device_id": alice.device_id})
            empty = await user.sync(since, timeout="0")
            assert empty["rooms"]["join"] == {}
            await user.send(room, "after restart")
            body = await user.sync(since)
            assert bodies(body["rooms"]["join"][room]) == ["after restart"]
            assert body["next_batch"] != since
    finally:
        await hs2.close()


# --- typing, receipts, read markers, account data, tags -------------------------------


async def test_typing_in_sync_and_rules(alice, bob, client):
    room = await alice.create_room(preset="public_chat")
    await bob.call("POST", f"/join/{room}", {})
    since = (await bob.sync())["next_batch"]
    waiting = asyncio.create_task(bob.sync(since, timeout="30000"))
    await alice.call("PUT", f"/rooms/{room}/typing/{alice.user_id}", {"typing": True, "timeout": 30000})
    body = await asyncio.wait_for(waiting, 20)
    assert body["rooms"]["join"][room]["ephemeral"]["events"] == [
        {"type": "m.typing", "content": {"user_ids": [alice.user_id]}}]
    # Stopping shows up as an empty list; nothing new after that.
    await alice.call("PUT", f"/rooms/{room}/typing/{alice.user_id}", {"typing": False})
    body = await bob.sync(body["next_batch"])
    assert body["rooms"]["join"][room]["ephemeral"]["events"] == [{"type": "m.typing", "content": {"user_ids": []}}]
    assert (await bob.sync(body["next_batch"]))["rooms"]["join"] == {}
    # Someone else's typing, a room one is not in, bad bodies.
    assert (await alice.call("PUT", f"/rooms/{room}/typing/{bob.user_id}", {"typing": True, "timeout": 1},
                             expect=403))["errcode"] == "M_FORBIDDEN"
    carol = User(client, await register(client, "carol"))
    assert (await carol.call("PUT", f"/rooms/{room}/typing/{carol.user_id}", {"typing": True, "timeout": 1},
                             expect=403))["errcode"] == "M_FORBIDDEN"
    assert (await alice.call("PUT", f"/rooms/{room}/typing/{alice.user_id}", {"typing": "yes"},
                             expect=400))["errcode"] == "M_BAD_JSON"
    assert (await alice.call("PUT", f"/rooms/{room}/typing/{alice.user_id}", {"typing": True, "timeout": "soon"},
                             expect=400))["errcode"] == "M_BAD_JSON"
    # Without a timeout (only 'typing' is required): typing, for the default time.
    since = (await bob.sync())["next_batch"]
    await alice.call("PUT", f"/rooms/{room}/typing/{alice.user_id}", {"typing": True})
    body = await bob.sync(since)
    assert body["rooms"]["join"][room]["ephemeral"]["events"] == [
        {"type": "m.typing", "content": {"user_ids": [alice.user_id]}}]


async def test_typing_expires(hs, alice):
    room = await alice.create_room()
    since = (await alice.sync())["next_batch"]
    # Long enough to be seen by the next sync on a loaded machine, short enough to wait for.
    await alice.call("PUT", f"/rooms/{room}/typing/{alice.user_id}", {"typing": True, "timeout": 2000})
    body = await alice.sync(since)
    assert body["rooms"]["join"][room]["ephemeral"]["events"][0]["content"]["user_ids"] == [alice.user_id]
    # The expiry wakes a waiting sync with an empty typing list.
    body = await asyncio.wait_for(alice.sync(body["next_batch"], timeout="30000"), 20)
    assert body["rooms"]["join"][room]["ephemeral"]["events"][0]["content"]["user_ids"] == []


async def test_receipts_and_read_markers(alice, bob):
    room = await alice.create_room(preset="public_chat")
    await bob.call("POST", f"/join/{room}", {})
    e1 = await alice.send(room, "one")
    e2 = await alice.send(room, "two")
    since_a = (await alice.sync())["next_batch"]
    since_b = (await bob.sync())["next_batch"]
    await bob.call("POST", f"/rooms/{room}/receipt/m.read/{e2}", {})
    await bob.call("POST", f"/rooms/{room}/receipt/m.read.private/{e2}", {"thread_id": "main"})
    body = await alice.sync(since_a)
    [receipt] = body["rooms"]["join"][room]["ephemeral"]["events"]
    assert receipt["type"] == "m.receipt"
    assert list(receipt["content"]) == [e2]
    assert set(receipt["content"][e2]) == {"m.read"}  # the private one is bob's own business
    assert isinstance(receipt["content"][e2]["m.read"][bob.user_id]["ts"], int)
    mine = await bob.sync(since_b)
    [own] = mine["rooms"]["join"][room]["ephemeral"]["events"]
    assert own["content"][e2]["m.read.private"][bob.user_id]["thread_id"] == "main"
    # An older receipt does not move the receipt back.
    await bob.call("POST", f"/rooms/{room}/receipt/m.read/{e1}", {})
    initial = await alice.sync()
    receipts = initial["rooms"]["join"][room]["ephemeral"]["events"][0]["content"]
    assert bob.user_id in receipts[e2]["m.read"] and e1 not in receipts
    # Read markers: m.fully_read becomes room account data.
    await bob.call("POST", f"/rooms/{room}/read_markers", {"m.fully_read": e1, "m.read": e2})
    body = await bob.sync(mine["next_batch"])
    assert {"type": "m.fully_read", "content": {"event_id": e1}} in body["rooms"]["join"][room]["account_data"]["events"]
    await bob.call("POST", f"/rooms/{room}/receipt/m.fully_read/{e2}", {})
    got = await bob.call("GET", f"/user/{bob.user_id}/rooms/{room}/account_data/m.fully_read")
    assert got == {"event_id": e2}
    # Errors.
    assert (await bob.call("POST", f"/rooms/{room}/receipt/m.read/$nope", {}, expect=404))["errcode"] == "M_NOT_FOUND"
    assert (await bob.call("POST", f"/rooms/{room}/receipt/m.bogus/{e1}", {}, expect=400))["errcode"] == "M_BAD_JSON"
    assert (await bob.call("POST", f"/rooms/{room}/receipt/m.read/{e1}", {"thread_id": ""},
                           expect=400))["errcode"] == "M_INVALID_PARAM"
    await bob.call("POST", f"/rooms/{room}/leave", {})
    assert (await bob.call("POST", f"/rooms/{room}/receipt/m.read/{e2}", {}, expect=403))["errcode"] == "M_FORBIDDEN"


async def test_account_data_and_tags(alice, bob):
    room = await alice.create_room()
    since = (await alice.sync())["next_batch"]
    await alice.call("PUT", f"/user/{alice.user_id}/account_data/org.example.settings", {"theme": "dark"})
    await alice.call("PUT", f"/user/{alice.user_id}/rooms/{room}/account_data/org.example.room", {"pinned": True})
    await alice.call("PUT", f"/user/{alice.user_id}/rooms/{room}/tags/m.favourite", {"order": 0.5})
    await alice.call("PUT", f"/user/{alice.user_id}/rooms/{room}/tags/u.work", {})
    assert await alice.call("GET", f"/user/{alice.user_id}/account_data/org.example.settings") == {"theme": "dark"}
    assert await alice.call("GET", f"/user/{alice.user_id}/rooms/{room}/tags") == {
        "tags": {"m.favourite": {"order": 0.5}, "u.work": {}}}
    body = await alice.sync(since)
    assert body["account_data"]["events"] == [{"type": "org.example.settings", "content": {"theme": "dark"}}]
    room_data = {e["type"]: e["content"] for e in body["rooms"]["join"][room]["account_data"]["events"]}
    assert room_data == {"org.example.room": {"pinned": True},
                         "m.tag": {"tags": {"m.favourite": {"order": 0.5}, "u.work": {}}}}
    await alice.call("DELETE", f"/user/{alice.user_id}/rooms/{room}/tags/u.work")
    after = await alice.sync(body["next_batch"])
    assert after["rooms"]["join"][room]["account_data"]["events"] == [
        {"type": "m.tag", "content": {"tags": {"m.favourite": {"order": 0.5}}}}]
    assert after["account_data"]["events"] == []
    # Filters on account data.
    filtered = await alice.sync(filter={"account_data": {"not_types": ["org.example.*", "m.push_rules"]},
                                        "room": {"account_data": {"types": ["m.tag"]}}})
    assert filtered["account_data"]["events"] == []
    assert [e["type"] for e in filtered["rooms"]["join"][room]["account_data"]["events"]] == ["m.tag"]
    # Server-managed types, other users, unknown types, rooms one is not in.
    for path in (f"/user/{alice.user_id}/account_data/m.push_rules",
                 f"/user/{alice.user_id}/rooms/{room}/account_data/m.fully_read"):
        assert (await alice.call("PUT", path, {"x": 1}, expect=405))["errcode"] == "M_BAD_JSON"
    assert (await bob.call("PUT", f"/user/{alice.user_id}/account_data/x", {}, expect=403))["errcode"] == "M_FORBIDDEN"
    assert (await alice.call("GET", f"/user/{alice.user_id}/account_data/none", expect=404))["errcode"] == "M_NOT_FOUND"
    assert (await bob.call("PUT", f"/user/{bob.user_id}/rooms/{room}/tags/u.x", {}, expect=403))["errcode"] == \
        "M_FORBIDDEN"
    assert (await alice.call("PUT", f"/user/{alice.user_id}/rooms/{room}/tags/u.x", {"order": "high"},
                             expect=400))["errcode"] == "M_BAD_JSON"


async def test_account_data_wakes_long_poll(alice):
    since = (await alice.sync())["next_batch"]
    waiting = asyncio.create_task(alice.sync(since, timeout="30000"))
    await asyncio.sleep(0)
    await alice.call("PUT", f"/user/{alice.user_id}/account_data/org.example.x", {"a": 1})
    body = await asyncio.wait_for(waiting, 20)
    assert body["account_data"]["events"] == [{"type": "org.example.x", "content": {"a": 1}}]


async def test_ignored_users_events_and_invites_are_left_out(client, alice, bob):
    """Spec "Ignoring Users": no events from an ignored user but state events (in /sync,
    /messages, /context), no invites from them; un-ignoring resumes."""
    carol = User(client, await register(client, "carol"))
    room = await alice.create_room(preset="public_chat")
    await bob.call("POST", f"/join/{room}", {})
    await carol.call("POST", f"/join/{room}", {})
    since = (await alice.sync())["next_batch"]
    await alice.call("PUT", f"/user/{alice.user_id}/account_data/m.ignored_user_list",
                     {"ignored_users": {bob.user_id: {}}})
    await bob.send(room, "from bob")
    await bob.state(room, "m.room.member", {"membership": "join", "displayname": "B"}, state_key=bob.user_id)
    await carol.send(room, "from carol")
    body = await alice.sync(since)
    timeline = body["rooms"]["join"][room]["timeline"]["events"]
    assert [(e["sender"], e["type"]) for e in timeline] == [(bob.user_id, "m.room.member"),
                                                            (carol.user_id, "m.room.message")]
    msgs = await alice.call("GET", f"/rooms/{room}/messages", dir="b", limit="5")
    assert all(e["sender"] != bob.user_id or "state_key" in e for e in msgs["chunk"])
    context = await alice.call("GET", f"/rooms/{room}/context/{timeline[1]['event_id']}", limit="10")
    assert all(e["sender"] != bob.user_id or "state_key" in e for e in context["events_before"])
    # Nothing but the ignored user's messages: the room has nothing new.
    await bob.send(room, "bob again")
    body = await alice.sync(body["next_batch"])
    assert body["rooms"]["join"] == {}
    # Invites from an ignored user are not shown.
    private = await bob.create_room()
    await bob.call("POST", f"/rooms/{private}/invite", {"user_id": alice.user_id})
    assert private not in (await alice.sync(body["next_batch"]))["rooms"]["invite"]
    assert private not in (await alice.sync())["rooms"]["invite"]
    # Un-ignoring: bob's new messages come again.
    await alice.call("PUT", f"/user/{alice.user_id}/account_data/m.ignored_user_list", {"ignored_users": {}})
    since = (await alice.sync())["next_batch"]
    await bob.send(room, "forgiven")
    body = await alice.sync(since)
    assert [e["content"].get("body") for e in body["rooms"]["join"][room]["timeline"]["events"]] == ["forgiven"]


async def test_quiet_sync_costs_a_few_queries(hs, alice):
    """A user in many rooms with nothing new: a handful of queries, not one per room."""
    rooms = [await alice.create_room() for _ in range(30)]
    since = (await alice.sync())["next_batch"]
    counted = []
    db = hs.db
    # fetchrow and fetchval go through fetch.
    originals = {name: getattr(db, name) for name in ("fetch", "execute", "executemany")}

    def counting(name):
        async def call(*args, **kwargs):
            counted.append(args[0])
            return await originals[name](*args, **kwargs)
        return call

    for name in originals:
        setattr(db, name, counting(name))
    try:
        body = await alice.sync(since)
        assert body["rooms"]["join"] == {}
        quiet = len(counted)
        counted.clear()
        await alice.send(rooms[3], "only here")
        await hs.push.flush()  # the push rules' evaluation of the message is not the sync's cost
        counted.clear()
        body = await alice.sync(since)
    finally:
        for name, fn in originals.items():
            setattr(db, name, fn)
    assert set(body["rooms"]["join"]) == {rooms[3]}
    assert quiet <= 3, counted  # token and user, stream positions and memberships, E2E key counts
    # + the timeline (with transaction IDs and redactions), member counts and heroes (then
    # cached per state group), unread counts
    assert len(counted) <= 7, counted


async def test_unread_notifications_follow_push_rules_and_receipts(hs, alice, bob):
    room = await alice.create_room(preset="public_chat")
    await bob.call("POST", f"/join/{room}", {})
    since = (await alice.sync())["next_batch"]
    await bob.send(room, "ping one")
    last = await bob.send(room, f"hello {alice.user_id}")  # mentions alice: highlight
    body = await alice.sync(since)
    assert body["rooms"]["join"][room]["unread_notifications"] == {"notification_count": 2, "highlight_count": 1}
    await alice.call("POST", f"/rooms/{room}/receipt/m.read/{last}", {})
    body = await alice.sync(body["next_batch"])
    assert body["rooms"]["join"][room]["unread_notifications"] == {"notification_count": 0, "highlight_count": 0}


async def test_unread_counts_wait_for_the_evaluations_of_the_events_read_not_of_later_ones(hs, alice, bob,
                                                                                           monkeypatch):
    """A sync's unread counts wait for the push evaluation of the events it read (taken
    when it read the stream position), not for events stored after that: a busy room
    would otherwise hold every sync for the wait's whole limit."""
    from gateway.services import sync as sync_service

    monkeypatch.setattr(sync_service, "UNREAD_WAIT_S", 3600)  # only the events' evaluations end a wait
    room = await alice.create_room(preset="public_chat")
    await bob.call("POST", f"/join/{room}", {})
    since = (await alice.sync())["next_batch"]
    await hs.push.flush()
    evaluate = hs.push.evaluate_events
    gates = [asyncio.Event(), asyncio.Event()]
    started: list[asyncio.Event] = [asyncio.Event(), asyncio.Event()]
    calls = 0

    async def gated(room_id, positions):
        nonlocal calls
        i, calls = min(calls, 1), calls + 1
        started[i].set()
        await gates[i].wait()
        await evaluate(room_id, positions)

    try:
        monkeypatch.setattr(hs.push, "evaluate_events", gated)
        await bob.send(room, "ping one")  # its evaluation waits for gates[0]
        await started[0].wait()
        read_timelines = hs.sync.store.get_timelines
        stored_later = asyncio.Event()

        async def store_another_first(*args, **kwargs):
            if not stored_later.is_set():
                stored_later.set()
                # After the sync read its position: this one's evaluation waits for gates[1].
                await bob.send(room, "ping two")
            return await read_timelines(*args, **kwargs)

        monkeypatch.setattr(hs.sync.store, "get_timelines", store_another_first)
        syncing = asyncio.create_task(alice.sync(since))
        await stored_later.wait()
        gates[0].set()
        body = await asyncio.wait_for(syncing, 60)  # not held by the second message's evaluation
        section = body["rooms"]["join"][room]
        assert [e["content"]["body"] for e in section["timeline"]["events"]] == ["ping one"]
        assert section["unread_notifications"] == {"notification_count": 1, "highlight_count": 0}
    finally:
        for gate in gates:
            gate.set()
    await hs.push.flush()
    monkeypatch.setattr(hs.sync.store, "get_timelines", read_timelines)
    body = await alice.sync(body["next_batch"])
    assert body["rooms"]["join"][room]["unread_notifications"] == {"notification_count": 2, "highlight_count": 0}


async def test_unread_thread_notifications_per_thread_and_threaded_receipts(alice, bob):
    room = await alice.create_room(preset="public_chat")
    await bob.call("POST", f"/join/{room}", {})
    root = await bob.send(room, "thread root")
    threaded = {"room": {"timeline": {"unread_thread_notifications": True}}}
    since = (await alice.sync(filter=threaded))["next_batch"]

    async def reply(text, txn):
        return (await bob.call("PUT", f"/rooms/{room}/send/m.room.message/{txn}", {
            "msgtype": "m.text", "body": text,
            "m.relates_to": {"rel_type": "m.thread", "event_id": root}}))["event_id"]

    await reply("in thread one", "r1")
    in_thread = await reply(f"in thread, {alice.user_id}", "r2")  # mentions alice: highlight
    main_msg = await bob.send(room, "main timeline")

    body = await alice.sync(since, filter=threaded)
    section = body["rooms"]["join"][room]
    # The root and "main timeline" are main-timeline notifications; the replies are the thread's.
    assert section["unread_notifications"] == {"notification_count": 2, "highlight_count": 0}
    assert section["unread_thread_notifications"] == {root: {"notification_count": 2, "highlight_count": 1}}
    # Without the filter flag: one count for the whole room.
    plain = (await alice.sync(since))["rooms"]["join"][room]
    assert plain["unread_notifications"] == {"notification_count": 4, "highlight_count": 1}
    assert plain["unread_thread_notifications"] == {}

    # A receipt in the thread reads the thread only; one for "main" reads the main timeline.
    await alice.call("POST", f"/rooms/{room}/receipt/m.read/{in_thread}", {"thread_id": root})
    section = (await alice.sync(body["next_batch"], filter=threaded))["rooms"]["join"][room]
    assert section["unread_notifications"] == {"notification_count": 2, "highlight_count": 0}
    assert section["unread_thread_notifications"] == {}
    plain = (await alice.sync(since))["rooms"]["join"][room]
    assert plain["unread_notifications"] == {"notification_count": 2, "highlight_count": 0}
    await alice.call("POST", f"/rooms/{room}/receipt/m.read/{main_msg}", {"thread_id": "main"})
    plain = (await alice.sync(since))["rooms"]["join"][room]
    assert plain["unread_notifications"] == {"notification_count": 0, "highlight_count": 0}
    # A new thread reply after the receipts counts again, in its thread.
    await reply("one more", "r3")
    section = (await alice.sync(since, filter=threaded))["rooms"]["join"][room]
    assert section["unread_notifications"] == {"notification_count": 0, "highlight_count": 0}
    assert section["unread_thread_notifications"] == {root: {"notification_count": 1, "highlight_count": 0}}


@pytest.mark.parametrize("config_overrides", [{"rc_presence": {"per_user": {"per_second": 1000, "burst_count": 1000}}}])
async def test_presence_of_room_members_in_sync(client, alice, bob):
    carol = User(client, await register(client, "carol"))  # shares no room with bob
    room = await alice.create_room(preset="public_chat")
    await bob.call("POST", f"/join/{room}", {})
    since = (await alice.sync())["next_batch"]
    carol_since = (await carol.sync())["next_batch"]
    # A long-polling sync wakes up for Bob's new presence.
    waiting = asyncio.create_task(alice.sync(since, timeout="20000"))
    await bob.call("PUT", f"/presence/{bob.user_id}/status", {"presence": "unavailable", "status_msg": "lunch"})
    body = await asyncio.wait_for(waiting, 20)
    assert [(e["type"], e["sender"], e["content"]["presence"], e["content"]["status_msg"])
            for e in body["presence"]["events"]] == [("m.presence", bob.user_id, "unavailable", "lunch")]
    # Nothing new on the next sync; an initial sync has it; Carol never sees it.
    assert (await alice.sync(body["next_batch"]))["presence"]["events"] == []
    assert [e["sender"] for e in (await alice.sync())["presence"]["events"]] == [bob.user_id]
    assert (await carol.sync(carol_since))["presence"]["events"] == []
    assert (await carol.sync())["presence"]["events"] == []
    # A filter that wants no presence gets none.
    none = {"presence": {"not_types": ["m.presence"]}}
    assert (await alice.sync(filter=none))["presence"]["events"] == []
    # Tokens of older versions (no presence position) and tokens from the future count from now.
    before = body["next_batch"]
    await bob.call("PUT", f"/presence/{bob.user_id}/status", {"presence": "online"})
    old = "_".join(before.split("_")[:7])
    assert (await alice.sync(old))["presence"]["events"] == []
    assert (await alice.sync(old + "_999999"))["presence"]["events"] == []
    assert [e["content"]["presence"] for e in (await alice.sync(before))["presence"]["events"]] == ["online"]


async def test_syncing_sets_presence(client, alice, bob):
    """A sync makes its user online (``set_presence`` online, the default) or takes an
    offline user to unavailable; ``offline`` changes nothing. Room members see it."""
    room = await alice.create_room(preset="public_chat")
    await bob.call("POST", f"/join/{room}", {})
    since = (await alice.sync())["next_batch"]
    await bob.sync()
    assert (await alice.sync(since))["presence"]["events"] == []
    assert (await bob.call("GET", f"/presence/{bob.user_id}/status"))["presence"] == "offline"
    await bob.sync(set_presence="unavailable")
    body = await alice.sync(since)
    assert [(e["sender"], e["content"]["presence"]) for e in body["presence"]["events"]] == \
        [(bob.user_id, "unavailable")]
    await bob.sync(set_presence="online")
    await bob.sync(set_presence="unavailable")  # an online user stays online
    body = await alice.sync(body["next_batch"])
    assert [(e["sender"], e["content"]["presence"]) for e in body["presence"]["events"]] == [(bob.user_id, "online")]
    assert (await bob.call("GET", f"/presence/{bob.user_id}/status"))["currently_active"] is True


async def test_newly_shared_rooms_bring_presence_and_history(client, alice, bob):
    """Joining a room brings, in the next incremental sync, the presence of its members
    (unchanged since the token) and the room's timeline marked limited; a member joining
    the user's room brings theirs."""
    room = await alice.create_room(preset="public_chat")
    await alice.sync(set_presence="online")
    await alice.send(room, "before bob")
    since = (await bob.sync(set_presence="online"))["next_batch"]
    alice_since = (await alice.sync())["next_batch"]
    await bob.call("POST", f"/join/{room}", {})
    body = await bob.sync(since)
    assert [e["sender"] for e in body["presence"]["events"] if e["sender"] != bob.user_id] == [alice.user_id]
    assert body["rooms"]["join"][room]["timeline"]["limited"] is True
    assert "before bob" in bodies(body["rooms"]["join"][room])
    assert [e["sender"] for e in (await alice.sync(alice_since))["presence"]["events"]] == [bob.user_id]
    # Once told, not again.
    assert (await bob.sync(body["next_batch"]))["presence"]["events"] == []


async def test_joining_and_leaving_in_one_batch_gives_the_full_state(client, alice, bob):
    """A room the user joined and left since the token comes under ``leave`` with its
    whole state (the client never had it); a rejected invite does not."""
    room = await alice.create_room(preset="public_chat")
    await alice.state(room, "org.example.thing", {"n": 1})
    other = await alice.create_room(preset="private_chat")
    await alice.call("POST", f"/rooms/{other}/invite", {"user_id": bob.user_id})
    flt = {"room": {"state": {"types": ["org.example.thing", "m.room.name"]}, "include_leave": True}}
    since = (await bob.sync(filter=flt))["next_batch"]
    await bob.call("POST", f"/join/{room}", {})
    await bob.call("POST", f"/rooms/{room}/leave", {})
    await bob.call("POST", f"/rooms/{other}/leave", {})
    body = await bob.sync(since, filter=flt)
    state = body["rooms"]["leave"][room]["state"]["events"]
    assert [(e["type"], e["content"]) for e in state] == [("org.example.thing", {"n": 1})]
    assert body["rooms"]["leave"][other]["state"]["events"] == []


async def test_current_state_from_an_unseen_period_is_in_the_timeline(client, alice, bob):
    """Under ``joined`` history visibility, a member who left and came back sees, in its
    timeline, the state events of its absence that are the room's current state."""
    carol = User(client, await register(client, "carol"))
    room = await alice.create_room(preset="public_chat")
    await bob.call("POST", f"/join/{room}", {})
    await alice.state(room, "m.room.history_visibility", {"history_visibility": "joined"})
    since = (await bob.sync())["next_batch"]
    await bob.call("POST", f"/rooms/{room}/leave", {})
    await alice.send(room, "while bob was away")
    await carol.call("POST", f"/join/{room}", {})
    await bob.call("POST", f"/join/{room}", {})
    events = (await bob.sync(since))["rooms"]["join"][room]["timeline"]["events"]
    assert any(e["type"] == "m.room.member" and e["state_key"] == carol.user_id for e in events)
    assert "while bob was away" not in [e["content"].get("body") for e in events]


async def test_hidden_history_does_not_crowd_visible_events_out_of_the_timeline(client, alice, bob):
    """The same with many messages after the join that bob may not see: older events are
    read until the page has what bob may see (as Synapse), so carol's join is there."""
    carol = User(client, await register(client, "carol"))
    room = await alice.create_room(preset="public_chat")
    await bob.call("POST", f"/join/{room}", {})
    await alice.state(room, "m.room.history_visibility", {"history_visibility": "joined"})
    since = (await bob.sync())["next_batch"]
    await bob.call("POST", f"/rooms/{room}/leave", {})
    await carol.call("POST", f"/join/{room}", {})
    for i in range(25):  # five times the page below
        await alice.send(room, f"hidden {i}")
    await bob.call("POST", f"/join/{room}", {})
    section = (await bob.sync(since, filter={"room": {"timeline": {"limit": 5}}}))["rooms"]["join"][room]
    events = section["timeline"]["events"]
    # Everything since the token that bob may see: not limited, the rest is not his.
    assert [(e["state_key"], e["content"]["membership"]) for e in events] == [
        (bob.user_id, "leave"), (carol.user_id, "join"), (bob.user_id, "join")]
    assert section["timeline"]["limited"] is False


async def test_server_shutdown_answers_waiting_syncs(hs, client, alice):
    since = (await alice.sync())["next_batch"]
    waiting = asyncio.create_task(alice.sync(since, timeout="600000"))
    while not any(w.rooms is not None for w in hs.notifier._by_user.get(alice.user_id, ())):
        await asyncio.sleep(0.01)  # until the request waits on the notifier
    await client.server.app.shutdown()  # what the runner does first when the server stops
    body = await asyncio.wait_for(waiting, 20)
    assert body["rooms"]["join"] == {} and body["next_batch"]


async def test_new_display_name_is_not_a_new_room(alice, bob):
    room = await alice.create_room(preset="public_chat")
    await bob.call("POST", f"/join/{room}", {})
    since = (await bob.sync())["next_batch"]
    await bob.state(room, "m.room.member", {"membership": "join", "displayname": "Bobby"}, bob.user_id)
    body = await bob.sync(since)
    section = body["rooms"]["join"][room]
    # Only the change: not the room's whole history and state again.
    assert [(e["type"], e["content"].get("displayname")) for e in section["timeline"]["events"]] == [
        ("m.room.member", "Bobby")]
    assert section["state"]["events"] == []
    # Whereas leaving and coming back after the token is a new room for the client.
    await bob.call("POST", f"/rooms/{room}/leave", {})
    since = (await bob.sync(body["next_batch"]))["next_batch"]
    await bob.call("POST", f"/join/{room}", {})
    rejoined = (await bob.sync(since))["rooms"]["join"][room]
    seen = {(e["type"], e["state_key"]) for e in rejoined["state"]["events"] + rejoined["timeline"]["events"]}
    assert {("m.room.create", ""), ("m.room.power_levels", "")} <= seen


async def test_lazy_loading_incremental_sends_each_member_once(alice, bob, client):
    carol, room = await _three_members_bob_spoke_last(alice, bob, client)
    lazy = {"room": {"state": {"lazy_load_members": True}, "timeline": {"limit": 1}}}
    initial = (await alice.sync(filter=lazy))["rooms"]["join"][room]
    assert {e["state_key"] for e in initial["state"]["events"] if e["type"] == "m.room.member"} == {
        alice.user_id, bob.user_id}
    since = (await alice.sync(filter=lazy))["next_batch"]
    await carol.send(room, "from carol")
    body = await alice.sync(since, filter=lazy)
    section = body["rooms"]["join"][room]
    assert bodies(section) == ["from carol"]
    assert [(e["type"], e["state_key"]) for e in section["state"]["events"]] == [("m.room.member", carol.user_id)]
    await carol.send(room, "again")
    body = await alice.sync(body["next_batch"], filter=lazy)
    assert body["rooms"]["join"][room]["state"]["events"] == []  # this device has carol's member event
    redundant = {"room": {"state": {"lazy_load_members": True, "include_redundant_members": True},
                          "timeline": {"limit": 1}}}
    await carol.send(room, "once more")
    body = await alice.sync(body["next_batch"], filter=redundant)
    # Redundant members are the timeline's senders again (not the user's own, which only a
    # full or gapped state brings).
    assert {e["state_key"] for e in body["rooms"]["join"][room]["state"]["events"]} == {carol.user_id}
    await carol.send(room, "one")
    await carol.send(room, "two")
    gapped = (await alice.sync(body["next_batch"], filter=redundant))["rooms"]["join"][room]
    assert gapped["timeline"]["limited"] is True
    assert {e["state_key"] for e in gapped["state"]["events"]} == {carol.user_id, alice.user_id}


async def test_event_fields_and_event_format(alice):
    room = await alice.create_room(preset="public_chat", name="Fields")
    await alice.call("PUT", f"/rooms/{room}/send/m.room.message/f1",
                     {"msgtype": "m.text", "body": "hi", "m.relates_to": {"rel_type": "x.y", "event_id": "$z"}})
    fields = {"event_fields": ["type", "content.body", "content.m\\.relates_to.rel_type", "content.name", "nope.x"]}
    body = await alice.sync(filter=fields)
    section = body["rooms"]["join"][room]
    message = [e for e in section["timeline"]["events"] if e["type"] == "m.room.message"][-1]
    assert message == {"type": "m.room.message", "content": {"body": "hi", "m.relates_to": {"rel_type": "x.y"}}}
    named = [e for e in section["timeline"]["events"] + section["state"]["events"] if e["type"] == "m.room.name"]
    assert named and all(e == {"type": "m.room.name", "content": {"name": "Fields"}} for e in named)
    # The federation format: the PDU as other servers see it (hashes, signatures, depth...).
    body = await alice.sync(filter={"event_format": "federation", "room": {"timeline": {"limit": 1}}})
    (event,) = body["rooms"]["join"][room]["timeline"]["events"]
    assert {"hashes", "signatures", "depth", "prev_events", "auth_events", "event_id"} <= set(event)
    assert event["content"]["body"] == "hi"
    # Bad values are refused with the key named.
    err = await alice.sync(filter={"event_format": "xml"}, expect=400)
    assert err["errcode"] == "M_INVALID_PARAM" and "event_format" in err["error"]
    err = await alice.sync(filter={"event_fields": "type"}, expect=400)
    assert "event_fields" in err["error"]
