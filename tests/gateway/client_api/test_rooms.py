"""Room endpoints over HTTP, on both engines: createRoom, send, state, memberships,
messages, members, redactions, and the errors clients rely on."""

from __future__ import annotations

import json

import pytest

from .conftest import auth_header, register

C = "/_matrix/client/v3"


async def create(client, token, **body) -> str:
    resp = await client.post(f"{C}/createRoom", json=body, headers=auth_header(token))
    data = await resp.json()
    assert resp.status == 200, data
    return data["room_id"]


async def send(client, token, room_id, body="hello", txn="t1", type="m.room.message") -> dict:
    resp = await client.put(f"{C}/rooms/{room_id}/send/{type}/{txn}", json={"msgtype": "m.text", "body": body},
                            headers=auth_header(token))
    return {"status": resp.status, **(await resp.json())}


async def get(client, token, path, **params):
    resp = await client.get(f"{C}{path}", headers=auth_header(token), params=params)
    return resp.status, await resp.json()


async def post(client, token, path, body=None):
    resp = await client.post(f"{C}{path}", json=body or {}, headers=auth_header(token))
    return resp.status, await resp.json()


@pytest.fixture
async def alice(client):
    return (await register(client, "alice"))["access_token"]


@pytest.fixture
async def bob(client):
    return (await register(client, "bob"))["access_token"]


async def test_the_same_v12_room_asked_for_twice_in_one_millisecond(hs, client, alice, monkeypatch):
    # A v12 room ID is its create event's hash: the same request in the same millisecond
    # would name the room that exists. The second is built again a millisecond later.
    events = hs.events
    frozen = iter([1_700_000_000_000] * 40)  # the first builds all see one millisecond
    monkeypatch.setattr(events, "clock_ms", lambda: next(frozen, 1_700_000_000_001))
    first = await create(client, alice, room_version="12", name="Twice")
    frozen = iter([1_700_000_000_000] * 3)  # the second's first build too, then time moves on
    second = await create(client, alice, room_version="12", name="Twice")
    assert first != second
    for room_id in (first, second):
        status, state = await get(client, alice, f"/rooms/{room_id}/state/m.room.name")
        assert (status, state) == (200, {"name": "Twice"})


@pytest.mark.parametrize("version", ["12", "11", "10", "1"])
async def test_create_room_state_and_send(client, alice, version):
    room_id = await create(client, alice, room_version=version, name="Garden", topic="Roses", preset="private_chat")
    if version == "12":
        assert ":" not in room_id  # v12 room IDs are the create event's hash
    else:
        assert room_id.endswith(":hs.test")
    status, state = await get(client, alice, f"/rooms/{room_id}/state")
    assert status == 200
    by_key = {(e["type"], e["state_key"]): e for e in state}
    create_ev = by_key[("m.room.create", "")]
    assert create_ev["content"]["room_version"] == version
    assert ("creator" in create_ev["content"]) == (version in ("1", "10"))
    assert by_key[("m.room.name", "")]["content"] == {"name": "Garden"}
    assert by_key[("m.room.topic", "")]["content"] == {"topic": "Roses"}
    assert by_key[("m.room.join_rules", "")]["content"] == {"join_rule": "invite"}
    assert by_key[("m.room.guest_access", "")]["content"] == {"guest_access": "can_join"}
    assert by_key[("m.room.member", "@alice:hs.test")]["content"]["membership"] == "join"
    pl = by_key[("m.room.power_levels", "")]["content"]
    if version == "12":
        assert "@alice:hs.test" not in pl["users"]
        assert pl["events"]["m.room.tombstone"] > pl["state_default"]
    else:
        assert pl["users"]["@alice:hs.test"] == 100

    sent = await send(client, alice, room_id, "first")
    assert sent["status"] == 200 and sent["event_id"].startswith("$")
    status, got = await get(client, alice, f"/rooms/{room_id}/event/{sent['event_id']}")
    assert status == 200 and got["content"]["body"] == "first" and got["room_id"] == room_id
    assert got["unsigned"]["transaction_id"] == "t1"
    assert (await get(client, alice, "/joined_rooms"))[1] == {"joined_rooms": [room_id]}


async def test_send_is_idempotent_per_device(client, alice):
    room_id = await create(client, alice)
    first = await send(client, alice, room_id, "once", txn="abc")
    again = await send(client, alice, room_id, "once", txn="abc")
    assert first["event_id"] == again["event_id"]
    other_device = (await (await client.post(f"{C}/login", json={
        "type": "m.login.password", "identifier": {"type": "m.id.user", "user": "alice"},
        "password": "pw-" + "x" * 8})).json())["access_token"]
    third = await send(client, other_device, room_id, "once", txn="abc")
    assert third["event_id"] != first["event_id"]
    status, msgs = await get(client, alice, f"/rooms/{room_id}/messages", dir="b", limit="50")
    bodies = [e["content"].get("body") for e in msgs["chunk"] if e["type"] == "m.room.message"]
    assert bodies == ["once", "once"]


async def test_invite_join_leave_kick_ban_unban(client, alice, bob):
    room_id = await create(client, alice, room_version="12", preset="private_chat")
    status, err = await post(client, bob, f"/rooms/{room_id}/join")
    assert status == 403 and err["errcode"] == "M_FORBIDDEN" and "join" in err["error"]
    assert (await post(client, alice, f"/rooms/{room_id}/invite", {"user_id": "@bob:hs.test"}))[0] == 200
    status, body = await post(client, bob, f"/join/{room_id}")
    assert (status, body) == (200, {"room_id": room_id})
    status, joined = await get(client, alice, f"/rooms/{room_id}/joined_members")
    assert joined["joined"] == {"@alice:hs.test": {"display_name": "alice", "avatar_url": None},
                                "@bob:hs.test": {"display_name": "bob", "avatar_url": None}}
    sent = await send(client, bob, room_id, "hi from bob")
    assert sent["status"] == 200

    status, err = await post(client, bob, f"/rooms/{room_id}/kick", {"user_id": "@alice:hs.test"})
    assert status == 403 and err["errcode"] == "M_FORBIDDEN"
    assert (await post(client, alice, f"/rooms/{room_id}/kick", {"user_id": "@bob:hs.test", "reason": "x"}))[0] == 200
    status, members = await get(client, alice, f"/rooms/{room_id}/members")
    by_user = {e["state_key"]: e["content"] for e in members["chunk"]}
    assert by_user["@bob:hs.test"] == {"membership": "leave", "reason": "x"}
    assert (await get(client, alice, f"/rooms/{room_id}/members", membership="join"))[1]["chunk"][0][
        "state_key"] == "@alice:hs.test"

    # Bob left: he still sees the state as it was when he left, and nothing after.
    status, state = await get(client, bob, f"/rooms/{room_id}/state")
    assert status == 200
    await send(client, alice, room_id, "after bob left", txn="late")
    status, msgs = await get(client, bob, f"/rooms/{room_id}/messages", dir="b")
    assert status == 200 and "after bob left" not in [e["content"].get("body") for e in msgs["chunk"]]
    assert "hi from bob" in [e["content"].get("body") for e in msgs["chunk"]]

    assert (await post(client, alice, f"/rooms/{room_id}/ban", {"user_id": "@bob:hs.test"}))[0] == 200
    # Banned: cut off from the room's state (as on Synapse), unlike a member who left.
    status, err = await get(client, bob, f"/rooms/{room_id}/state/m.room.member/@bob:hs.test")
    assert status == 403 and err["errcode"] == "M_FORBIDDEN"
    assert (await get(client, bob, f"/rooms/{room_id}/state"))[0] == 403
    assert (await post(client, alice, f"/rooms/{room_id}/invite", {"user_id": "@bob:hs.test"}))[0] == 403
    assert (await post(client, alice, f"/rooms/{room_id}/unban", {"user_id": "@bob:hs.test"}))[0] == 200
    assert (await post(client, alice, f"/rooms/{room_id}/invite", {"user_id": "@bob:hs.test"}))[0] == 200
    assert (await post(client, bob, f"/rooms/{room_id}/join"))[0] == 200
    assert (await post(client, bob, f"/rooms/{room_id}/leave"))[0] == 200
    assert (await get(client, bob, "/joined_rooms"))[1] == {"joined_rooms": []}


async def test_public_room_join_and_trusted_private_chat_v12(client, alice, bob):
    public = await create(client, alice, preset="public_chat")
    assert (await post(client, bob, f"/rooms/{public}/join"))[0] == 200
    trusted = await create(client, alice, room_version="12", preset="trusted_private_chat",
                           invite=["@bob:hs.test"], is_direct=True)
    status, state = await get(client, alice, f"/rooms/{trusted}/state")
    by_key = {(e["type"], e["state_key"]): e for e in state}
    assert by_key[("m.room.create", "")]["content"]["additional_creators"] == ["@bob:hs.test"]
    assert by_key[("m.room.power_levels", "")]["content"]["users"] == {}
    invite = by_key[("m.room.member", "@bob:hs.test")]
    assert invite["content"] == {"membership": "invite", "is_direct": True, "displayname": "bob"}
    stripped = invite["unsigned"]["invite_room_state"]
    assert stripped[0]["type"] == "m.room.create"
    # A v11 trusted room gives invitees the creator's level instead.
    v11 = await create(client, alice, room_version="11", preset="trusted_private_chat", invite=["@bob:hs.test"])
    status, pl = await get(client, alice, f"/rooms/{v11}/state/m.room.power_levels")
    assert pl["users"] == {"@alice:hs.test": 100, "@bob:hs.test": 100}
    # public_chat forbids guests by having no m.room.guest_access (absent means forbidden).
    status, state = await get(client, alice, f"/rooms/{public}/state")
    assert "m.room.guest_access" not in {e["type"] for e in state}


async def test_state_put_get_and_power_level_override(client, alice, bob):
    room_id = await create(client, alice, preset="public_chat", power_level_content_override={"state_default": 10},
                           initial_state=[{"type": "m.room.history_visibility",
                                           "content": {"history_visibility": "joined"}}])
    status, hv = await get(client, alice, f"/rooms/{room_id}/state/m.room.history_visibility/")
    assert (status, hv) == (200, {"history_visibility": "joined"})
    resp = await client.put(f"{C}/rooms/{room_id}/state/org.example.custom/key1", json={"v": 1},
                            headers=auth_header(alice))
    assert resp.status == 200
    status, got = await get(client, alice, f"/rooms/{room_id}/state/org.example.custom/key1")
    assert (status, got) == (200, {"v": 1})
    status, err = await get(client, alice, f"/rooms/{room_id}/state/org.example.custom/nope")
    assert status == 404 and err["errcode"] == "M_NOT_FOUND"
    resp = await client.put(f"{C}/rooms/{room_id}/state/org.example.custom/key1", json={"v": 2},
                            headers=auth_header(alice))
    event_id = (await resp.json())["event_id"]
    status, full = await get(client, alice, f"/rooms/{room_id}/event/{event_id}")
    assert full["unsigned"]["prev_content"] == {"v": 1}
    # v1.16 ``format``: the whole client event, or the content (the default).
    status, whole = await get(client, alice, f"/rooms/{room_id}/state/org.example.custom/key1", format="event")
    assert status == 200 and whole["event_id"] == event_id and whole["content"] == {"v": 2}
    assert whole["state_key"] == "key1" and whole["sender"].startswith("@alice:") and "origin_server_ts" in whole
    assert whole["unsigned"]["prev_content"] == {"v": 1}
    assert await get(client, alice, f"/rooms/{room_id}/state/org.example.custom/key1", format="content") \
        == (200, {"v": 2})
    status, err = await get(client, alice, f"/rooms/{room_id}/state/org.example.custom/key1", format="pdu")
    assert status == 400 and err["errcode"] == "M_INVALID_PARAM"
    # Bob (joined, power 0) is below state_default 10.
    assert (await post(client, bob, f"/rooms/{room_id}/join"))[0] == 200
    resp = await client.put(f"{C}/rooms/{room_id}/state/m.room.topic", json={"topic": "no"},
                            headers=auth_header(bob))
    err = await resp.json()
    assert resp.status == 403 and err["errcode"] == "M_FORBIDDEN" and "power level" in err["error"]
    # "joined" history: bob sees nothing sent before his join.
    status, msgs = await get(client, bob, f"/rooms/{room_id}/messages", dir="b", limit="100")
    assert all(e["type"] != "org.example.custom" for e in msgs["chunk"])


async def test_repeating_state_or_a_join_makes_no_new_event(client, alice, bob):
    """The same state from the same sender, or joining again with the same content, is
    answered with the event already there (a retry does not fill the timeline); other
    content, or another sender, makes a new event."""
    room_id = await create(client, alice, preset="public_chat")

    async def put_state(token, body):
        resp = await client.put(f"{C}/rooms/{room_id}/state/m.room.topic", json=body, headers=auth_header(token))
        assert resp.status == 200
        return (await resp.json())["event_id"]

    first = await put_state(alice, {"topic": "tea"})
    assert await put_state(alice, {"topic": "tea"}) == first
    head = (await get(client, alice, f"/rooms/{room_id}/messages", dir="b", limit="1"))[1]["chunk"][0]
    assert head["event_id"] == first
    assert await put_state(alice, {"topic": "coffee"}) != first
    # Joining twice: one join event.
    assert (await post(client, bob, f"/rooms/{room_id}/join"))[0] == 200
    join1 = (await get(client, bob, f"/rooms/{room_id}/messages", dir="b", limit="1"))[1]["chunk"][0]
    assert (await post(client, bob, f"/join/{room_id}"))[0] == 200
    join2 = (await get(client, bob, f"/rooms/{room_id}/messages", dir="b", limit="1"))[1]["chunk"][0]
    assert join1["type"] == "m.room.member" and join2["event_id"] == join1["event_id"]


async def test_join_content_from_the_request(client, alice, bob):
    """The join body's reason and the client's own keys land in the join event; the
    membership and the profile are the server's."""
    room_id = await create(client, alice, preset="public_chat")
    status, _ = await post(client, bob, f"/join/{room_id}", {"reason": "curious", "foo": "bar",
                                                              "membership": "leave", "displayname": "Not Bob"})
    assert status == 200
    status, member = await get(client, bob, f"/rooms/{room_id}/state/m.room.member/@bob:hs.test")
    assert member == {"membership": "join", "reason": "curious", "foo": "bar", "displayname": "bob"}
    status, err = await post(client, bob, f"/rooms/{room_id}/join", {"reason": 5})
    assert (status, err["errcode"]) == (400, "M_BAD_JSON")


async def test_messages_pagination_both_directions(client, alice):
    room_id = await create(client, alice)
    for i in range(7):
        assert (await send(client, alice, room_id, f"m{i}", txn=f"t{i}"))["status"] == 200
    filt = json.dumps({"types": ["m.room.message"]})
    status, page1 = await get(client, alice, f"/rooms/{room_id}/messages", dir="b", limit="3", filter=filt)
    assert [e["content"]["body"] for e in page1["chunk"]] == ["m6", "m5", "m4"]
    status, page2 = await get(client, alice, f"/rooms/{room_id}/messages", dir="b", limit="3", filter=filt,
                              **{"from": page1["end"]})
    assert [e["content"]["body"] for e in page2["chunk"]] == ["m3", "m2", "m1"]
    status, fwd = await get(client, alice, f"/rooms/{room_id}/messages", dir="f", limit="2", filter=filt,
                            **{"from": page2["end"]})
    assert [e["content"]["body"] for e in fwd["chunk"]] == ["m1", "m2"]
    status, fwd2 = await get(client, alice, f"/rooms/{room_id}/messages", dir="f", limit="50", filter=filt,
                             **{"from": fwd["end"]})
    assert [e["content"]["body"] for e in fwd2["chunk"]] == ["m3", "m4", "m5", "m6"]
    # Forwards, the live end is no end: a later message comes from the token given.
    assert (await send(client, alice, room_id, "m7", txn="t7"))["status"] == 200
    status, fwd3 = await get(client, alice, f"/rooms/{room_id}/messages", dir="f", filter=filt,
                             **{"from": fwd2["end"]})
    assert [e["content"]["body"] for e in fwd3["chunk"]] == ["m7"]
    status, fwd4 = await get(client, alice, f"/rooms/{room_id}/messages", dir="f", **{"from": fwd3["end"]})
    assert fwd4["chunk"] == [] and "end" not in fwd4
    # Backwards, reaching the start of the room leaves 'end' out (spec).
    status, first = await get(client, alice, f"/rooms/{room_id}/messages", dir="b", limit="100")
    assert first["chunk"][-1]["type"] == "m.room.create" and "end" not in first
    status, everything = await get(client, alice, f"/rooms/{room_id}/messages", dir="f", limit="100")
    assert everything["chunk"][0]["type"] == "m.room.create"
    status, err = await get(client, alice, f"/rooms/{room_id}/messages", dir="x")
    assert status == 400


async def test_redaction(client, alice, bob):
    room_id = await create(client, alice, preset="public_chat")
    assert (await post(client, bob, f"/rooms/{room_id}/join"))[0] == 200
    mine = await send(client, alice, room_id, "secret", txn="s")
    resp = await client.put(f"{C}/rooms/{room_id}/redact/{mine['event_id']}/r1", json={"reason": "bob tries"},
                            headers=auth_header(bob))
    err = await resp.json()
    assert resp.status == 403 and err["errcode"] == "M_FORBIDDEN"
    resp = await client.put(f"{C}/rooms/{room_id}/redact/{mine['event_id']}/r1", json={"reason": "oops"},
                            headers=auth_header(alice))
    assert resp.status == 200
    redaction_id = (await resp.json())["event_id"]
    status, got = await get(client, bob, f"/rooms/{room_id}/event/{mine['event_id']}")
    assert status == 200 and got["content"] == {}
    assert got["unsigned"]["redacted_because"]["event_id"] == redaction_id
    status, red = await get(client, bob, f"/rooms/{room_id}/event/{redaction_id}")
    assert red["redacts"] == mine["event_id"] and red["content"]["reason"] == "oops"
    # An event of another room cannot be redacted from this one (even by its admin).
    other = await create(client, bob)
    theirs = await send(client, alice, room_id, "in the first room", txn="t2")
    resp = await client.put(f"{C}/rooms/{other}/redact/{theirs['event_id']}/r2", json={}, headers=auth_header(bob))
    assert resp.status == 400 and (await resp.json())["errcode"] == "M_INVALID_PARAM"
    status, still = await get(client, bob, f"/rooms/{room_id}/event/{theirs['event_id']}")
    assert still["content"]["body"] == "in the first room"


async def test_post_send_and_redact_without_transaction_id(client, alice, bob):
    """Synapse's older POST forms: each POST is a new event; errors as for PUT."""
    room_id = await create(client, alice, preset="public_chat")
    first = await post(client, alice, f"/rooms/{room_id}/send/m.room.message", {"msgtype": "m.text", "body": "a"})
    second = await post(client, alice, f"/rooms/{room_id}/send/m.room.message", {"msgtype": "m.text", "body": "a"})
    assert first[0] == second[0] == 200 and first[1]["event_id"] != second[1]["event_id"]
    status, got = await get(client, alice, f"/rooms/{room_id}/event/{first[1]['event_id']}")
    assert got["content"]["body"] == "a" and "transaction_id" not in got["unsigned"]
    status, err = await post(client, bob, f"/rooms/{room_id}/send/m.room.message", {"body": "not joined"})
    assert (status, err["errcode"]) == (403, "M_FORBIDDEN")
    resp = await client.post(f"{C}/rooms/{room_id}/send/m.room.message", json={"body": "x" * 70000},
                             headers=auth_header(alice))
    assert (resp.status, (await resp.json())["errcode"]) == (413, "M_TOO_LARGE")
    resp = await client.post(f"{C}/rooms/{room_id}/send/m.room.message", json={"n": 1.5},
                             headers=auth_header(alice))
    assert (resp.status, (await resp.json())["errcode"]) == (400, "M_BAD_JSON")
    status, red = await post(client, alice, f"/rooms/{room_id}/redact/{first[1]['event_id']}", {"reason": "dup"})
    assert status == 200
    status, got = await get(client, alice, f"/rooms/{room_id}/event/{first[1]['event_id']}")
    assert got["content"] == {} and got["unsigned"]["redacted_because"]["event_id"] == red["event_id"]
    assert got["unsigned"]["redacted_by"] == red["event_id"]
    assert (await post(client, bob, f"/rooms/{room_id}/join"))[0] == 200
    status, err = await post(client, bob, f"/rooms/{room_id}/redact/{second[1]['event_id']}")
    assert (status, err["errcode"]) == (403, "M_FORBIDDEN")


async def test_errors(client, alice, bob):
    status, err = await post(client, alice, "/createRoom", {"room_version": "99"})
    assert (status, err["errcode"]) == (400, "M_UNSUPPORTED_ROOM_VERSION")
    status, err = await post(client, alice, "/createRoom", {"room_version": 10})  # not a string
    assert (status, err["errcode"]) == (400, "M_BAD_JSON")
    status, err = await post(client, alice, "/createRoom", {"preset": "party"})
    assert (status, err["errcode"]) == (400, "M_BAD_JSON")
    assert (await send(client, alice, "!nowhere:hs.test"))["errcode"] == "M_NOT_FOUND"
    assert (await post(client, alice, "/rooms/!nowhere:hs.test/join"))[1]["errcode"] == "M_NOT_FOUND"
    room_id = await create(client, alice)
    resp = await client.put(f"{C}/rooms/{room_id}/send/m.room.message/x", data=b"{not json",
                            headers=auth_header(alice))
    assert (resp.status, (await resp.json())["errcode"]) == (400, "M_NOT_JSON")
    resp = await client.put(f"{C}/rooms/{room_id}/send/m.room.message/y", json=[1],
                            headers=auth_header(alice))
    assert (resp.status, (await resp.json())["errcode"]) == (400, "M_BAD_JSON")
    resp = await client.put(f"{C}/rooms/{room_id}/send/m.room.message/z", json={"body": "x" * 70000},
                            headers=auth_header(alice))
    assert (resp.status, (await resp.json())["errcode"]) == (413, "M_TOO_LARGE")
    resp = await client.put(f"{C}/rooms/{room_id}/send/m.room.message/big", json={"n": 2**60},
                            headers=auth_header(alice))
    assert (resp.status, (await resp.json())["errcode"]) == (400, "M_BAD_JSON")
    assert (await send(client, bob, room_id))["errcode"] == "M_FORBIDDEN"
    status, err = await get(client, bob, f"/rooms/{room_id}/messages")
    assert (status, err["errcode"]) == (403, "M_FORBIDDEN")
    status, err = await get(client, bob, f"/rooms/{room_id}/state")
    assert (status, err["errcode"]) == (403, "M_FORBIDDEN")
    resp = await client.get(f"{C}/rooms/{room_id}/state")
    assert (resp.status, (await resp.json())["errcode"]) == (401, "M_MISSING_TOKEN")
    status, err = await post(client, alice, f"/rooms/{room_id}/invite", {"user_id": "@ghost:hs.test"})
    assert (status, err["errcode"]) == (404, "M_NOT_FOUND")


@pytest.mark.parametrize("version", ["12", "11"])
async def test_nio_create_send_and_read_messages(client, version):
    """A real client library (matrix-nio): create a room, send, read it back with /messages."""
    import nio

    url = str(client.make_url("/")).rstrip("/")
    alice = nio.AsyncClient(url, "alice")
    try:
        assert isinstance(await alice.register("alice", "wonderland-pass"), nio.RegisterResponse)
        created = await alice.room_create(name="nio room", room_version=version, preset=nio.RoomPreset.private_chat)
        assert isinstance(created, nio.RoomCreateResponse), created
        if version == "12":
            assert ":" not in created.room_id
        sent = await alice.room_send(created.room_id, "m.room.message", {"msgtype": "m.text", "body": "hello nio"})
        assert isinstance(sent, nio.RoomSendResponse), sent
        history = await alice.room_messages(created.room_id, start="", limit=20)
        assert isinstance(history, nio.RoomMessagesResponse), history
        texts = [e for e in history.chunk if isinstance(e, nio.RoomMessageText)]
        assert [(e.body, e.event_id, e.sender) for e in texts] == [("hello nio", sent.event_id, "@alice:hs.test")]
        assert any(isinstance(e, nio.RoomNameEvent) and e.name == "nio room" for e in history.chunk)
    finally:
        await alice.close()


async def test_history_visibility_changes_are_seen_at_their_boundaries(client, alice, bob):
    """A history visibility event is visible when the visibility before or after it
    allows (spec: Room History Visibility, server behaviour)."""
    room_id = await create(client, alice, preset="public_chat")

    async def visibility(value):
        resp = await client.put(f"{C}/rooms/{room_id}/state/m.room.history_visibility/",
                                json={"history_visibility": value}, headers=auth_header(alice))
        return (await resp.json())["event_id"]

    to_joined = await visibility("joined")
    one = (await send(client, alice, room_id, "1", txn="1"))["event_id"]
    to_invited = await visibility("invited")
    two = (await send(client, alice, room_id, "2", txn="2"))["event_id"]
    to_shared = await visibility("shared")
    three = (await send(client, alice, room_id, "3", txn="3"))["event_id"]
    assert (await post(client, bob, f"/rooms/{room_id}/join"))[0] == 200
    status, msgs = await get(client, bob, f"/rooms/{room_id}/messages", dir="b", limit="50")
    ids = [e["event_id"] for e in reversed(msgs["chunk"])]
    assert ids[-4:-1] == [to_joined, to_shared, three]
    assert not {one, two, to_invited} & set(ids)

    # From world_readable to joined: a stranger sees the change, not what follows it.
    room_id = await create(client, alice, preset="private_chat")
    await visibility("world_readable")
    before = (await send(client, alice, room_id, "open", txn="4"))["event_id"]
    closing = await visibility("joined")
    after = (await send(client, alice, room_id, "closed", txn="5"))["event_id"]
    assert (await get(client, bob, f"/events/{before}"))[0] == 200
    assert (await get(client, bob, f"/events/{closing}"))[0] == 200
    assert (await get(client, bob, f"/events/{after}"))[0] == 404
