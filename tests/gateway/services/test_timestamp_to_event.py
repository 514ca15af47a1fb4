"""/timestamp_to_event asking the room's other servers, on both engines, with a scripted
remote in the room: our latest event borders a possible gap, so the remote is asked; its
closer event (which never reached us) is fetched and received into our timeline; an
answer that is not closer, a malformed one or a 404 leave ours standing; a search with
no possible gap asks nobody."""

from __future__ import annotations

from urllib.parse import quote

import pytest
from aiohttp import web

from tests.gateway.federation_api.test_transactions import (  # noqa: F401
    alice,
    ca,
    gw,
    join_bob,
    public_room,
    sync_view,
)
from tests.support.fake_remote import FakeRemote


@pytest.fixture
async def remote(ca):  # noqa: F811
    """The scripted remote: answers timestamp_to_event with ``remote.ts_answer``
    ((status, body)) and records the queries."""
    fake = FakeRemote(ca)
    fake.ts_answer = (404, {"errcode": "M_NOT_FOUND", "error": "none"})
    fake.ts_asked = []

    async def timestamp_to_event(request: web.Request) -> web.Response:
        fake.ts_asked.append((request.match_info["room_id"], request.query["ts"], request.query["dir"]))
        status, body = fake.ts_answer
        return web.json_response(body, status=status)

    fake.extra_routes.append(("GET", "/_matrix/federation/v1/timestamp_to_event/{room_id}", timestamp_to_event))
    async with fake as r:
        yield r


async def lookup(alice, room_id, ts, direction, expect=200):
    url = f"{alice.gw.url}/_matrix/client/v1/rooms/{quote(room_id, safe='')}/timestamp_to_event"
    async with alice.session.get(url, params={"ts": str(ts), "dir": direction}, ssl=alice.gw.ssl,
                                 headers={"Authorization": f"Bearer {alice.token}"}) as r:
        body = await r.json()
        assert r.status == expect, body
        return body


async def test_asking_the_other_servers(gw, remote, alice):
    room_id, view = await public_room(gw, alice, remote, "10")
    bob = await join_bob(gw, remote, view)
    sent = [await alice.send(room_id, f"m{i}") for i in range(3)]
    await sync_view(gw, view)
    last = (await gw.hs.events.store.get_event(sent[-1])).pdu
    ts = last.origin_server_ts + 1000

    # Bob's message that never reached us, closer to ts than our last.
    missed = view.make("m.room.message", bob, {"msgtype": "m.text", "body": "missed"},
                       ts=last.origin_server_ts + 500)
    missed_id = view.event_id(missed, view.rv)
    remote.ts_answer = (200, {"event_id": missed_id, "origin_server_ts": missed["origin_server_ts"]})
    found = await lookup(alice, room_id, ts, "b")
    assert found == {"event_id": missed_id, "origin_server_ts": missed["origin_server_ts"]}
    assert remote.ts_asked == [(room_id, str(ts), "b")]
    stored = await gw.hs.events.store.get_event(missed_id)
    assert stored is not None and not stored.outlier and stored.pdu.content["body"] == "missed"

    # Now ours is the closest: the remote's older answer does not replace it.
    remote.ts_answer = (200, {"event_id": sent[0], "origin_server_ts": 1})
    assert (await lookup(alice, room_id, ts, "b"))["event_id"] == missed_id
    # Malformed answers and refusals leave ours standing.
    for answer in ((200, {"event_id": 5, "origin_server_ts": 1}), (200, {"event_id": "$x"}), (200, []),
                   (500, {"errcode": "M_UNKNOWN", "error": "down"})):
        remote.ts_answer = answer
        assert (await lookup(alice, room_id, ts, "b"))["event_id"] == missed_id
    # An answer on the wrong side of ts is not taken, even when it claims to be close.
    late = view.make("m.room.message", bob, {"msgtype": "m.text", "body": "late"}, ts=ts + 10_000)
    remote.ts_answer = (200, {"event_id": view.event_id(late, view.rv), "origin_server_ts": ts})
    assert (await lookup(alice, room_id, ts, "b"))["event_id"] == missed_id

    # Forwards past everything we hold: the remote is asked; it knows nothing either.
    asked = len(remote.ts_asked)
    remote.ts_answer = (404, {"errcode": "M_NOT_FOUND", "error": "none"})
    body = await lookup(alice, room_id, ts + 60_000, "f", expect=404)
    assert body["errcode"] == "M_NOT_FOUND" and remote.ts_asked[asked:] == [(room_id, str(ts + 60_000), "f")]
    # Forwards from an event whose past we hold: nobody is asked.
    first = (await gw.hs.events.store.get_event(sent[0])).pdu
    found = await lookup(alice, room_id, first.origin_server_ts, "f")
    assert found["origin_server_ts"] == first.origin_server_ts
    assert len(remote.ts_asked) == asked + 1
