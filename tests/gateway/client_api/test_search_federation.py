"""Search finds events from other servers, on both engines: live events received over
federation (PUT /send from a scripted remote server, signed and served over TLS),
backfilled history of a room joined over federation, and not what the receipt pipeline
rejected or what a remote redaction removed."""

from __future__ import annotations

from urllib.parse import quote

from federation.events import compute_event_id
from tests.gateway.federation_api.test_transactions import alice, ca, gw, join_bob, public_room, remote  # noqa: F401
from tests.gateway.services.federation.test_receive import our_join, remote_room


async def search(alice, term, **criteria):
    body = await alice.call("POST", "/search", {"search_categories": {"room_events": {
        "search_term": term, "order_by": "recent", **criteria}}})
    found = body["search_categories"]["room_events"]
    return [(r["result"]["sender"], r["result"]["content"].get("body")) for r in found["results"]]


async def test_remote_messages_are_found_until_redacted(gw, remote, alice):
    room_id, view = await public_room(gw, alice, remote)
    bob = await join_bob(gw, remote, view)
    msg = view.make("m.room.message", bob, {"msgtype": "m.text", "body": "Greetings from a distant server"})
    other = view.make("m.room.message", bob, {"msgtype": "m.text", "body": "more greetings"})
    # Someone who never joined: the event is rejected, and not searchable.
    mallory = f"@mallory:{remote.server_name}"
    intruder = view.make("m.room.message", mallory, {"msgtype": "m.text", "body": "greetings, I am not here"},
                         advance=False)
    answer = await remote.send(gw.server_name, [msg, other, intruder])
    assert answer["pdus"][view.event_id(msg, view.rv)] == {}
    await alice.send(room_id, "greetings back")
    assert await search(alice, "greeting") == [
        (alice.user_id, "greetings back"), (bob, "more greetings"), (bob, "Greetings from a distant server")]
    assert await search(alice, "distant", filter={"senders": [bob]}) == [(bob, "Greetings from a distant server")]

    # The remote redacts its message (room v12: ``redacts`` in the content): gone from the results.
    redaction = view.make("m.room.redaction", bob, {"redacts": view.event_id(msg, view.rv)})
    assert await remote.send(gw.server_name, [redaction]) == {"pdus": {view.event_id(redaction, view.rv): {}}}
    assert await search(alice, "greeting") == [(alice.user_id, "greetings back"), (bob, "more greetings")]


async def test_backfilled_history_of_a_remote_room_is_found(gw, remote, alice):
    hs = gw.hs
    view, carol = remote_room(remote)
    view.make("m.room.message", carol, {"msgtype": "m.text", "body": "ancient scrolls"})
    room_id, rv = view.room_id, view.rv
    state_pdus = [view.state[k].get_pdu_json() for k in sorted(view.state)]
    await hs.events.store.ensure_room(room_id, rv, creator=carol, created_ts=0)
    await hs.federation_events.persist_outliers(remote.server_name, room_id, rv, state_pdus)
    join = our_join(hs, view, alice.user_id)
    state = {k: p.event_id for k, p in view.state.items()}
    outcome = await hs.federation_events.persist_event_with_state(None, room_id, join, state)
    assert outcome.error is None and outcome.rejected is None
    # Nothing from before the join yet; /messages backfills it from the remote.
    assert await search(alice, "scrolls") == []
    chunk = await alice.call("GET", f"/rooms/{quote(room_id)}/messages?dir=b&limit=20")
    assert "ancient scrolls" in [e["content"].get("body") for e in chunk["chunk"]]
    meta = (await hs.events.store.get_event_meta(
        [e["event_id"] for e in chunk["chunk"] if e["content"].get("body") == "ancient scrolls"])).popitem()[1]
    assert meta.stream_ordering < 0  # a backfilled position
    assert await search(alice, "scroll") == [(carol, "ancient scrolls")]
    # Live traffic on top is found too, newest first.
    view.learn([(await hs.events.store.get_event(compute_event_id(join, rv))).pdu])
    live = view.make("m.room.message", carol, {"msgtype": "m.text", "body": "new scrolls arrived"})
    (out,) = await hs.federation_events.receive_pdus(remote.server_name, room_id, [live])
    assert out.error is None and not out.soft_failed
    assert await search(alice, "scrolls") == [(carol, "new scrolls arrived"), (carol, "ancient scrolls")]
