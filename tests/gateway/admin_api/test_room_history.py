"""A room's history through the admin API (Synapse's paths) on both engines: reading every
message, an event's context, the event nearest a time, deleting forward extremities, and
purging old history: the right events and their rows go, the state and the rest stay, and
the room keeps working (new messages, /sync, /messages, /context)."""

from __future__ import annotations

import asyncio
import json

from gateway.http import MatrixError
from tests.gateway.client_api.conftest import auth_header
from tests.gateway.client_api.test_sync import alice, bob  # noqa: F401  (fixtures: User objects)

A = "/_synapse/admin/v1"
T0 = 1_700_000_000_000


async def _admin(client, admin, method, path, body=None, **params):
    resp = await client.request(method, A + path, headers=admin, json=body, params=params)
    return resp.status, await resp.json()


def _bodies(chunk):
    return [e["content"].get("body") for e in chunk if e["type"] == "m.room.message"]


async def _purge(client, hs, admin, path, body):
    """Start a purge and wait for it; its final status."""
    status, answer = await _admin(client, admin, "POST", path, body)
    assert status == 200, answer
    purge_id = answer["purge_id"]
    for task in list(hs.purge_history._running.values()):
        await task
    return (await _admin(client, admin, "GET", f"/purge_history_status/{purge_id}"))[1]


async def test_non_admins_are_refused(client, alice):
    room = await alice.create_room()
    event = await alice.send(room, "x")
    h = auth_header(alice.token)
    for method, path in (("GET", f"/rooms/{room}/messages"), ("GET", f"/rooms/{room}/timestamp_to_event?ts=1"),
                         ("GET", f"/rooms/{room}/context/{event}"), ("POST", f"/purge_history/{room}/{event}"),
                         ("GET", "/purge_history_status/abc"), ("DELETE", f"/rooms/{room}/forward_extremities")):
        resp = await client.request(method, A + path, headers=h, json={})
        assert (resp.status, (await resp.json())["errcode"]) == (403, "M_FORBIDDEN"), path


async def test_messages_context_and_timestamp_see_everything(client, hs, admin, alice, bob):
    # A private room whose history bob may only see from his join: the admin sees it all.
    hs.clock_ms = lambda: T0
    room = await alice.create_room(initial_state=[{"type": "m.room.history_visibility",
                                                   "content": {"history_visibility": "joined"}}])
    early = [await alice.send(room, f"early {i}") for i in range(3)]
    await alice.call("POST", f"/rooms/{room}/invite", {"user_id": bob.user_id})
    await bob.call("POST", f"/join/{room}", {})
    hs.clock_ms = lambda: T0 + 1000
    late = await bob.send(room, "late")
    assert _bodies((await bob.call("GET", f"/rooms/{room}/messages", dir="b"))["chunk"]) == ["late"]

    status, body = await _admin(client, admin, "GET", f"/rooms/{room}/messages", limit="100")
    assert status == 200 and _bodies(body["chunk"]) == ["early 0", "early 1", "early 2", "late"]  # oldest first
    assert body["chunk"][0]["type"] == "m.room.create"
    status, body = await _admin(client, admin, "GET", f"/rooms/{room}/messages")
    assert len(body["chunk"]) == 10 and body["chunk"][0]["type"] == "m.room.create" and "end" in body
    status, page = await _admin(client, admin, "GET", f"/rooms/{room}/messages", dir="b", limit="2")
    assert _bodies(page["chunk"]) == ["late"] and "end" in page
    status, more = await _admin(client, admin, "GET", f"/rooms/{room}/messages", dir="b", limit="3",
                                **{"from": page["end"]})
    assert "early 2" in _bodies(more["chunk"])
    status, only = await _admin(client, admin, "GET", f"/rooms/{room}/messages", limit="100",
                                filter=json.dumps({"types": ["m.room.message"], "senders": [alice.user_id]}))
    assert _bodies(only["chunk"]) == ["early 0", "early 1", "early 2"] and len(only["chunk"]) == 3
    for params in ({"dir": "up"}, {"limit": "many"}, {"from": "garbage"}, {"filter": "{not json"}):
        assert (await _admin(client, admin, "GET", f"/rooms/{room}/messages", **params))[0] == 400, params
    assert (await _admin(client, admin, "GET", "/rooms/!unknown:hs.test/messages"))[0] == 404

    status, ctx = await _admin(client, admin, "GET", f"/rooms/{room}/context/{early[1]}", limit="2")
    assert status == 200 and ctx["event"]["event_id"] == early[1]
    assert [e["event_id"] for e in ctx["events_before"]] == [early[0]]
    assert [e["event_id"] for e in ctx["events_after"]] == [early[2]]
    assert any(e["type"] == "m.room.create" for e in ctx["state"]) and ctx["start"] and ctx["end"]
    assert (await bob.call("GET", f"/rooms/{room}/context/{early[1]}", expect=404))["errcode"] == "M_NOT_FOUND"
    assert (await _admin(client, admin, "GET", f"/rooms/{room}/context/$nope"))[0] == 404
    other = await alice.create_room()
    assert (await _admin(client, admin, "GET", f"/rooms/{other}/context/{early[1]}"))[0] == 404

    status, found = await _admin(client, admin, "GET", f"/rooms/{room}/timestamp_to_event", ts=str(T0 + 500))
    assert (status, found["event_id"]) == (200, late) and found["origin_server_ts"] == T0 + 1000  # dir f by default
    status, found = await _admin(client, admin, "GET", f"/rooms/{room}/timestamp_to_event", ts=str(T0 + 500),
                                 dir="b")
    assert status == 200 and found["origin_server_ts"] == T0
    status, err = await _admin(client, admin, "GET", f"/rooms/{room}/timestamp_to_event", ts=str(T0 + 5000))
    assert (status, err["errcode"]) == (404, "M_NOT_FOUND")
    for params in ({}, {"ts": "yesterday"}, {"ts": "1", "dir": "sideways"}):
        assert (await _admin(client, admin, "GET", f"/rooms/{room}/timestamp_to_event", **params))[0] == 400


async def test_delete_forward_extremities(client, hs, admin, alice):
    room = await alice.create_room()
    first = await alice.send(room, "one")
    head = await alice.send(room, "two")
    # "one" an extremity again beside "two": what a fork (events from two servers at once) leaves.
    await hs.db.execute("INSERT INTO event_forward_extremities (room_id, event_id) VALUES ($1, $2)", room, first)
    hs.events.forget_room(room)
    status, body = await _admin(client, admin, "GET", f"/rooms/{room}/forward_extremities")
    assert body["count"] == 2 and {r["event_id"] for r in body["results"]} == {first, head}
    assert await _admin(client, admin, "DELETE", f"/rooms/{room}/forward_extremities") == (200, {"deleted": 1})
    status, body = await _admin(client, admin, "GET", f"/rooms/{room}/forward_extremities")
    assert [r["event_id"] for r in body["results"]] == [head]  # the newest stays
    assert await _admin(client, admin, "DELETE", f"/rooms/{room}/forward_extremities") == (200, {"deleted": 0})
    new = await alice.send(room, "three")
    assert (await hs.events.store.get_prev_event_ids(new)) == [head]
    assert (await _admin(client, admin, "DELETE", "/rooms/!nope:hs.test/forward_extremities"))[0] == 404


async def _rows(hs, table, column, ids):
    placeholders = ", ".join(f"${i + 1}" for i in range(len(ids)))
    return await hs.db.fetchval(f"SELECT COUNT(*) FROM {table} WHERE {column} IN ({placeholders})", *ids)


async def test_purge_history_up_to_an_event(client, hs, admin, alice, bob):
    room = await alice.create_room(preset="public_chat", name="Purged")
    await bob.call("POST", f"/join/{room}", {})
    root = await alice.send(room, "thread root")
    reply = (await alice.call("PUT", f"/rooms/{room}/send/m.room.message/reply", {
        "msgtype": "m.text", "body": "in the thread", "m.relates_to": {"rel_type": "m.thread", "event_id": root}}))
    old = [await alice.send(room, f"old {i}") for i in range(3)]
    topic = await alice.state(room, "m.room.topic", {"topic": "kept"})
    point = await alice.send(room, "the purge point")
    after = await bob.send(room, "after")
    state_before = sorted((e["type"], e["state_key"], e["event_id"])
                          for e in await alice.call("GET", f"/rooms/{room}/state"))
    count_state = "SELECT COUNT(*) FROM events WHERE room_id = $1 AND state_key IS NOT NULL"
    state_events = await hs.db.fetchval(count_state, room)
    since = (await bob.sync())["next_batch"]

    async def found_by_search(term):
        answer = await bob.call("POST", "/search", {"search_categories": {"room_events": {"search_term": term}}})
        return {r["result"]["event_id"] for r in answer["search_categories"]["room_events"]["results"]}

    assert await found_by_search("old") == set(old)
    unread = (await bob.sync())["rooms"]["join"][room]["unread_notifications"]["notification_count"]
    assert unread == 6  # alice's root, reply, three old messages and the purge point
    # By default local users' events stay, out of the timeline (outliers, as Synapse
    # keeps them): the history before the point is gone for clients all the same.
    assert await _purge(client, hs, admin, f"/purge_history/{room}/{point}", {}) == {"status": "complete"}
    assert await _rows(hs, "events", "event_id", old) == 3
    assert all([(await hs.events.store.get_event(e)).outlier for e in old])
    assert await found_by_search("old") == set() and await found_by_search("purge point") == {point}
    status, history = await _admin(client, admin, "GET", f"/rooms/{room}/messages", limit="100")
    assert [e["event_id"] for e in history["chunk"]] == [point, after]
    fresh = (await bob.sync(filter={"room": {"timeline": {"limit": 50}}}))["rooms"]["join"][room]
    assert [e["event_id"] for e in fresh["timeline"]["events"]] == [point, after]
    # The state comes with it (the state events left the timeline, not the room).
    assert {e["type"] for e in fresh["state"]["events"]} >= {
        "m.room.create", "m.room.member", "m.room.power_levels", "m.room.name", "m.room.topic"}
    # What nobody can read any more is no longer unread.
    assert fresh["unread_notifications"]["notification_count"] == 1
    assert (await bob.call("GET", f"/rooms/{room}/event/{old[0]}", expect=404))["errcode"] == "M_NOT_FOUND"
    threads = await client.get(f"/_matrix/client/v1/rooms/{room}/threads", headers=auth_header(bob.token))
    assert threads.status == 200 and (await threads.json())["chunk"] == []

    # With delete_local_events they go for good, with their rows.
    result = await _purge(client, hs, admin, f"/purge_history/{room}",
                          {"purge_up_to_event_id": point, "delete_local_events": True})
    assert result == {"status": "complete"}
    gone = [root, reply["event_id"], *old]
    for table, column in (("events", "event_id"), ("event_edges", "event_id"), ("event_auth_edges", "event_id"),
                          ("event_txn_ids", "event_id"), ("event_push_actions", "event_id"),
                          ("event_relations", "event_id"), ("threads", "root_id")):
        assert await _rows(hs, table, column, gone) == 0, table
    kept = [topic, point, after]
    assert await _rows(hs, "events", "event_id", kept) == 3
    # Every state event stays, the state is what it was.
    state_after = sorted((e["type"], e["state_key"], e["event_id"])
                         for e in await alice.call("GET", f"/rooms/{room}/state"))
    assert state_after == state_before and await hs.db.fetchval(count_state, room) == state_events
    status, history = await _admin(client, admin, "GET", f"/rooms/{room}/messages", limit="100")
    assert status == 200 and [e["event_id"] for e in history["chunk"]] == [point, after]

    # The room works: clients page to the end without error, new messages flow, context works.
    page = await bob.call("GET", f"/rooms/{room}/messages", dir="b", limit="3")
    seen = _bodies(page["chunk"])
    while "end" in page:
        page = await bob.call("GET", f"/rooms/{room}/messages", dir="b", limit="3", **{"from": page["end"]})
        seen += _bodies(page["chunk"])
    assert seen == ["after", "the purge point"]
    new = await alice.send(room, "new after the purge")
    synced = await bob.sync(since)
    assert "new after the purge" in [e["content"].get("body") for e in
                                     synced["rooms"]["join"][room]["timeline"]["events"]]
    ctx = await bob.call("GET", f"/rooms/{room}/context/{point}")
    assert ctx["event"]["event_id"] == point and [e["event_id"] for e in ctx["events_after"]][:2] == [after, new]
    # A transaction ID of a purged event is free again (no answer naming a missing event).
    again = await alice.call("PUT", f"/rooms/{room}/send/m.room.message/reply", {"msgtype": "m.text", "body": "re"})
    assert again["event_id"] not in gone


async def test_purge_history_up_to_a_time(client, hs, admin, alice):
    room = await alice.create_room()
    hs.clock_ms = lambda: T0
    first = await alice.send(room, "first")
    second = await alice.send(room, "second")
    hs.clock_ms = lambda: T0 + 10_000
    third = await alice.send(room, "third")
    result = await _purge(client, hs, admin, f"/purge_history/{room}",
                          {"purge_up_to_ts": T0 + 5_000, "delete_local_events": True})
    assert result == {"status": "complete"}
    # What was received before the time goes; the first event received after it is the
    # purge point (as Synapse).
    assert await _rows(hs, "events", "event_id", [first, second]) == 0
    assert await _rows(hs, "events", "event_id", [third]) == 1
    status, err = await _admin(client, admin, "POST", f"/purge_history/{room}", {"purge_up_to_ts": 1})
    assert (status, err["errcode"]) == (404, "M_NOT_FOUND")  # nothing that old
    # A time after every event: all but the latest events go.
    fourth = await alice.send(room, "fourth")
    result = await _purge(client, hs, admin, f"/purge_history/{room}",
                          {"purge_up_to_ts": T0 + 20_000, "delete_local_events": True})
    assert result == {"status": "complete"}
    assert await _rows(hs, "events", "event_id", [third, fourth]) == 1


async def test_purge_history_errors_and_status(client, hs, admin, alice):
    room = await alice.create_room()
    other = await alice.create_room()
    event = await alice.send(room, "x")
    cases = [
        ("/purge_history/!nope:hs.test", {"purge_up_to_ts": T0}, 404, "M_NOT_FOUND"),
        (f"/purge_history/{other}/{event}", {}, 400, "M_INVALID_PARAM"),
        (f"/purge_history/{room}/$unknown", {}, 404, "M_NOT_FOUND"),
        (f"/purge_history/{room}", {}, 400, "M_MISSING_PARAM"),
        (f"/purge_history/{room}", {"purge_up_to_ts": "yesterday"}, 400, "M_INVALID_PARAM"),
        (f"/purge_history/{room}", {"purge_up_to_event_id": 5}, 400, "M_INVALID_PARAM"),
        (f"/purge_history/{room}/{event}", {"delete_local_events": "yes"}, 400, "M_INVALID_PARAM"),
        ("/purge_history/not-a-room", {"purge_up_to_ts": T0}, 400, "M_INVALID_PARAM"),
    ]
    for path, body, status, errcode in cases:
        got_status, got = await _admin(client, admin, "POST", path, body)
        assert (got_status, got["errcode"]) == (status, errcode), (path, body)
    assert (await _admin(client, admin, "GET", "/purge_history_status/unknown"))[0] == 404
    # One purge per room at a time: of two asked at once, the second is refused.
    results = await asyncio.gather(*(hs.purge_history.start(room, event_id=event, before_ts=None,
                                                            delete_local_events=True) for _ in range(2)),
                                   return_exceptions=True)
    refused = [r for r in results if isinstance(r, MatrixError)]
    assert len(refused) == 1 and "already in progress" in refused[0].error
    for task in list(hs.purge_history._running.values()):
        await task
    # A purge the server was running when it stopped reports that it failed.
    await hs.purge_history.store.add_task("interrupted", room, hs.clock_ms())
    status, body = await _admin(client, admin, "GET", "/purge_history_status/interrupted")
    assert status == 200 and body["status"] == "failed" and "restarted" in body["error"]


async def test_a_failing_purge_reports_failed(client, hs, admin, alice, monkeypatch):
    room = await alice.create_room()
    point = await alice.send(room, "x")

    async def broken(*_args, **_kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(hs.purge_history.store, "delete_events", broken)
    result = await _purge(client, hs, admin, f"/purge_history/{room}/{point}", {"delete_local_events": True})
    assert result["status"] == "failed" and "disk on fire" in result["error"]

