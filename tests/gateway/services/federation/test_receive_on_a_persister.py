"""Received events written by the room's event persister (another process): the
receipt pipeline decides a batch here and ``EventPersisters.persist_received`` hands it
to the writer's endpoint (gateway/services/event_persisters.py). The writer is this same
server, reached as JSON through its replication endpoint, as in
tests/gateway/services/test_event_persisters.py; both database engines."""

from __future__ import annotations

import orjson
import pytest

from federation.net.client import FederationRequestError
from gateway.services.event_persisters import EventPersisters
from gateway.services.stream_writers import WriterUnreachable
from tests.gateway.federation_api.test_transactions import (  # noqa: F401 - fixtures
    alice,
    bodies,
    ca,
    gw,
    join_bob,
    public_room,
    remote,
)
from tests.gateway.services.test_event_persisters import ToTheWriter


class Unreachable(ToTheWriter):
    """A writer that cannot be reached for its first ``down`` calls."""

    def __init__(self, hs, down: int):
        super().__init__(hs)
        self.down = down

    async def call(self, stream: str, endpoint: str, body: dict, *, room_id: str | None = None):
        if self.down:
            self.down -= 1
            self.calls.append(f"{endpoint} (unreachable)")
            raise WriterUnreachable(stream, "persister1", "ClientConnectorError")
        return await super().call(stream, endpoint, body, room_id=room_id)


async def test_the_writer_writes_a_run_once_also_when_asked_twice(gw, remote, alice):
    room_id, view = await public_room(gw, alice, remote)
    writers = ToTheWriter(gw.hs, repeat=2)  # every answer "lost" once: the call is made again
    gw.hs.events.persisters = EventPersisters(writers)
    heard: list[int] = []
    gw.hs.events.add_new_events_listener(lambda room, positions: heard.extend(positions))
    before = await gw.hs.events.store.get_current_position()
    bob = await join_bob(gw, remote, view)
    msgs = [view.make("m.room.message", bob, {"msgtype": "m.text", "body": f"m{i}"}) for i in range(3)]
    ids = [view.event_id(m, view.rv) for m in msgs]
    assert await remote.send(gw.server_name, msgs) == {"pdus": {e: {} for e in ids}}
    # One call per room run (the join's transaction, then the three messages).
    assert writers.calls == ["events.persist_received"] * 2
    stored = await gw.hs.events.store.get_events(ids)
    positions = [stored[e].stream_ordering for e in ids]
    # Stored once, in order, right after the join: the repeat took no positions.
    assert positions == [before + 2, before + 3, before + 4] == sorted(set(heard))[-3:]
    assert await gw.hs.events.store.get_current_position() == before + 4
    assert bodies(await alice.messages(room_id)) == ["m0", "m1", "m2"]
    assert await gw.hs.events.store.get_forward_extremities(room_id) == [ids[-1]]
    member = await gw.hs.events.state.get_membership(room_id, bob)
    assert member is not None and member.membership == "join"
    # The room's state (and our next event) build on what the writer wrote.
    mine = await alice.send(room_id, "welcome")
    assert (await gw.hs.events.store.get_event(mine)).pdu.prev_event_ids == (ids[-1],)


async def test_forged_events_are_refused_before_the_writer_is_asked(gw, remote, alice):
    room_id, view = await public_room(gw, alice, remote)
    bob = await join_bob(gw, remote, view)
    writers = ToTheWriter(gw.hs)
    gw.hs.events.persisters = EventPersisters(writers)
    forged = view.make("m.room.message", bob, {"msgtype": "m.text", "body": "forged"}, advance=False)
    forged["content"]["body"] = "changed"
    forged["signatures"] = {}
    forged_id = view.event_id(forged, view.rv)
    answer = await remote.send(gw.server_name, [forged])
    assert "signature" in answer["pdus"][forged_id]["error"]
    assert writers.calls == []


async def test_an_unreachable_writer_means_a_503_and_the_retry_stores(gw, remote, alice):
    room_id, view = await public_room(gw, alice, remote)
    bob = await join_bob(gw, remote, view)
    writers = Unreachable(gw.hs, down=1)
    gw.hs.events.persisters = EventPersisters(writers)
    msg = view.make("m.room.message", bob, {"msgtype": "m.text", "body": "later"})
    msg_id = view.event_id(msg, view.rv)
    with pytest.raises(FederationRequestError) as e:
        await remote.send(gw.server_name, [msg], txn_id="t-down")
    assert e.value.status == 503 and e.value.body["errcode"] == "M_UNKNOWN"
    assert await gw.hs.events.store.get_event_meta([msg_id]) == {}
    # The answer was not kept: the same transaction again is processed, and stored.
    assert await remote.send(gw.server_name, [msg], txn_id="t-down") == {"pdus": {msg_id: {}}}
    assert writers.calls == ["events.persist_received (unreachable)", "events.persist_received"]
    assert bodies(await alice.messages(room_id)) == ["later"]


async def test_a_malformed_batch_is_a_400(gw, remote, alice):
    room_id, view = await public_room(gw, alice, remote)
    from gateway.http import MatrixError

    with pytest.raises(MatrixError) as e:
        await gw.hs.stream_writers.handle("events.persist_received", orjson.loads(orjson.dumps(
            {"room_id": room_id, "room_version": view.rv.identifier, "batch": {"events": [{"pdu": 1}]}})))
    assert e.value.status == 400
