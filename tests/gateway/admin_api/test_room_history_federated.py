"""Purging the history of a room shared with another server (a scripted remote, over real
signed federation), both engines: by default the remote users' messages go and the local
users' stay out of the timeline, a redaction stays while what it redacts does, the room's
state stays, the remote's next events are accepted on top of what is left, and paging back
backfills the purged history from the remote."""

from __future__ import annotations

from urllib.parse import quote

from tests.gateway.federation_api.test_transactions import (  # noqa: F401  (fixtures)
    alice, bodies, ca, gw, join_bob, public_room, remote, sync_view)

A = "/_synapse/admin/v1"


async def _admin_call(gw, alice, token, method, path, body=None):
    async with alice.session.request(method, gw.url + A + path, json=body, ssl=gw.ssl,
                                     headers={"Authorization": f"Bearer {token}"}) as r:
        return r.status, await r.json()


async def _purge(gw, alice, token, room_id, event_id, body):
    status, answer = await _admin_call(gw, alice, token, "POST", f"/purge_history/{quote(room_id)}/{quote(event_id)}",
                                       body)
    assert status == 200, answer
    for task in list(gw.hs.purge_history._running.values()):
        await task
    return (await _admin_call(gw, alice, token, "GET", f"/purge_history_status/{answer['purge_id']}"))[1]


async def _state(alice, room_id):
    return sorted((e["type"], e["state_key"], e["event_id"])
                  for e in await alice.call("GET", f"/rooms/{quote(room_id)}/state"))


async def _timeline(alice, room_id):
    """The room's timeline in a fresh /sync (no pagination, so no backfill)."""
    body = await alice.call("GET", "/sync?filter=" + quote('{"room": {"timeline": {"limit": 50}}}'))
    return body["rooms"]["join"][room_id]["timeline"]["events"]


async def _exists(gw, event_ids):
    return {e for e in event_ids if await gw.hs.events.store.get_event(e) is not None}


async def test_purge_keeps_local_messages_and_redactions_of_kept_events(gw, remote, alice):
    hs = gw.hs
    await hs.auth.users.create_user(f"@root:{gw.server_name}", password_hash=None, created_ts=1, admin=True)
    token = (await hs.auth.login_session(f"@root:{gw.server_name}"))["access_token"]
    room_id, view = await public_room(gw, alice, remote)
    bob = await join_bob(gw, remote, view)

    async def remote_message(text):
        pdu = view.make("m.room.message", bob, {"msgtype": "m.text", "body": text})
        event_id = view.event_id(pdu, view.rv)
        assert (await remote.send(gw.server_name, [pdu]))["pdus"] == {event_id: {}}
        return event_id

    async def local(text):
        event_id = await alice.send(room_id, text)
        await sync_view(gw, view)
        return event_id

    a1 = await local("alice 1")
    b1 = await remote_message("bob 1")
    levels = await alice.call("GET", f"/rooms/{quote(room_id)}/state/m.room.power_levels")
    await alice.call("PUT", f"/rooms/{quote(room_id)}/state/m.room.power_levels",
                     {**levels, "users": {**levels.get("users", {}), bob: 50}})
    await sync_view(gw, view)
    redaction = view.make("m.room.redaction", bob, {"redacts": a1})
    redaction_id = view.event_id(redaction, view.rv)
    assert (await remote.send(gw.server_name, [redaction]))["pdus"] == {redaction_id: {}}
    a2 = await local("alice 2")
    b2 = await remote_message("bob 2")
    point = await local("the purge point")
    b3 = await remote_message("bob 3")
    state_before = await _state(alice, room_id)

    assert await _purge(gw, alice, token, room_id, point, {}) == {"status": "complete"}
    assert await _exists(gw, [b1, b2]) == set()
    assert await _exists(gw, [a1, a2, redaction_id, point, b3]) == {a1, a2, redaction_id, point, b3}
    stored = {e: await gw.hs.events.store.get_event(e) for e in (a1, a2, redaction_id, point, b3)}
    assert {e for e, s in stored.items() if s.outlier} == {a1, a2, redaction_id}  # kept, out of the timeline
    assert await _state(alice, room_id) == state_before
    assert bodies(await _timeline(alice, room_id)) == ["the purge point", "bob 3"]

    # The remote goes on from where it is; its new event joins the timeline.
    b4 = await remote_message("bob 4")
    assert bodies(await _timeline(alice, room_id)) == ["the purge point", "bob 3", "bob 4"]
    assert await _exists(gw, [b4]) == {b4}

    # Paging back fetches the purged history from the remote (the kept events join the
    # timeline again): alice 1 still redacted, as the remote redaction stayed with it.
    history = [None, "bob 1", "alice 2", "bob 2", "the purge point", "bob 3", "bob 4"]  # None: redacted
    assert bodies(await alice.messages(room_id)) == history
    assert not any([(await gw.hs.events.store.get_event(e)).outlier for e in (a1, b1, redaction_id)])

    # With delete_local_events the local messages go too, and the redaction with its target.
    assert await _purge(gw, alice, token, room_id, point, {"delete_local_events": True}) == {"status": "complete"}
    assert await _exists(gw, [a1, a2, b1, b2, redaction_id]) == set()
    assert bodies(await _timeline(alice, room_id)) == ["the purge point", "bob 3", "bob 4"]
    assert await _state(alice, room_id) == state_before
