"""Typing and receipt EDUs from another server reach local users' /sync, on both engines;
EDUs for users of other servers, for users not in the room, or for unknown rooms are
ignored."""

from __future__ import annotations

from urllib.parse import quote

from .test_transactions import alice, ca, gw, join_bob, public_room, remote  # noqa: F401 (fixtures)


async def _sync(alice, since=None):
    path = "/sync?timeout=0&set_presence=offline" + (f"&since={quote(since)}" if since else "")
    return await alice.call("GET", path)


async def test_remote_typing_and_receipts_reach_sync(gw, remote, alice):
    room_id, view = await public_room(gw, alice, remote)
    bob = await join_bob(gw, remote, view)
    mine = await alice.send(room_id, "hello bob")
    since = (await _sync(alice))["next_batch"]
    outsider = f"@carol:{remote.server_name}"  # of the remote server, but not in the room
    await remote.send(gw.server_name, [], edus=[
        {"edu_type": "m.typing", "content": {"room_id": room_id, "user_id": bob, "typing": True}},
        {"edu_type": "m.typing", "content": {"room_id": room_id, "user_id": alice.user_id, "typing": True}},
        {"edu_type": "m.typing", "content": {"room_id": room_id, "user_id": outsider, "typing": True}},
        {"edu_type": "m.typing", "content": {"room_id": "!nowhere:elsewhere.test", "user_id": bob, "typing": True}},
        {"edu_type": "m.receipt", "content": {room_id: {"m.read": {
            bob: {"event_ids": [mine], "data": {"ts": 1234}},
            alice.user_id: {"event_ids": [mine], "data": {"ts": 1}},
        }}}},
    ])
    body = await _sync(alice, since)
    ephemeral = {e["type"]: e["content"] for e in body["rooms"]["join"][room_id]["ephemeral"]["events"]}
    assert ephemeral["m.typing"] == {"user_ids": [bob]}
    assert ephemeral["m.receipt"] == {mine: {"m.read": {bob: {"ts": 1234}}}}

    await remote.send(gw.server_name, [], edus=[
        {"edu_type": "m.typing", "content": {"room_id": room_id, "user_id": bob, "typing": False}}])
    body = await _sync(alice, body["next_batch"])
    ephemeral = {e["type"]: e["content"] for e in body["rooms"]["join"][room_id]["ephemeral"]["events"]}
    assert ephemeral == {"m.typing": {"user_ids": []}}


async def test_remote_presence_is_kept_and_shown_to_room_mates(gw, remote, alice):
    room_id, view = await public_room(gw, alice, remote)
    bob = await join_bob(gw, remote, view)
    stranger = f"@dave:{remote.server_name}"  # in no room with us
    since = (await _sync(alice))["next_batch"]
    await remote.send(gw.server_name, [], edus=[{"edu_type": "m.presence", "content": {"push": [
        {"user_id": bob, "presence": "online", "last_active_ago": 5000, "currently_active": True,
         "status_msg": "hacking"},
        {"user_id": stranger, "presence": "online", "last_active_ago": 0},
        {"user_id": alice.user_id, "presence": "offline", "last_active_ago": 0},  # not theirs to say
        {"user_id": bob, "presence": "dancing"},  # not a presence state: ignored
        "garbage",
    ]}}])
    status = await alice.call("GET", f"/presence/{quote(bob)}/status")
    assert status["presence"] == "online" and status["status_msg"] == "hacking"
    assert status["last_active_ago"] >= 5000
    rows = await gw.hs.user_directory.get_presence([stranger, alice.user_id])
    assert alice.user_id not in rows
    # A user sharing no room with ours yet is kept (a join may be under way) but not shown.
    assert rows[stranger].presence == "online"
    async with alice.session.get(alice.gw.url + f"/_matrix/client/v3/presence/{quote(stranger)}/status",
                                 headers={"Authorization": f"Bearer {alice.token}"}, ssl=alice.gw.ssl) as r:
        assert r.status == 403 and (await r.json())["errcode"] == "M_FORBIDDEN"
    # Alice's /sync has Bob's new presence.
    events = (await _sync(alice, since))["presence"]["events"]
    assert [(e["type"], e["sender"], e["content"]["presence"], e["content"].get("status_msg")) for e in events] \
        == [("m.presence", bob, "online", "hacking")]
