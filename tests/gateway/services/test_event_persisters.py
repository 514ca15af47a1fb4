"""Events built on one process and stored by the room's writer
(gateway/services/event_persisters.py): a second ``EventsService`` on the same database
plays the worker, and its calls reach this server's replication endpoints as JSON."""

from __future__ import annotations

import orjson

from gateway.services.event_persisters import EventPersisters
from gateway.services.events import EventSpec, EventsService

from .conftest import make_user


class ToTheWriter:
    """The worker's view of the writers: none of the rooms is its own, and a call goes to
    ``hs``'s endpoint (as JSON), ``repeat`` times, as when an answer is lost and the call
    is made again."""

    def __init__(self, hs, repeat: int = 1):
        self.hs, self.repeat, self.calls = hs, repeat, []

    def is_mine(self, stream: str, room_id: str | None = None) -> bool:
        return False

    async def call(self, stream: str, endpoint: str, body: dict, *, room_id: str | None = None):
        self.calls.append(endpoint)
        for _ in range(self.repeat):
            answer = await self.hs.stream_writers.handle(endpoint, orjson.loads(orjson.dumps(body)))
        return orjson.loads(orjson.dumps(answer))


def worker_events(hs, writers: ToTheWriter) -> EventsService:
    return EventsService(db=hs.db, server_name=hs.server_name, signing_key=hs.signing_key,
                         modules=hs.modules.callbacks, clock_ms=hs.clock_ms, persisters=EventPersisters(writers))


def message(sender: str, body: str) -> EventSpec:
    return EventSpec("m.room.message", sender, {"msgtype": "m.text", "body": body})


async def test_the_writer_stores_what_the_worker_built_and_tells_its_listeners(hs):
    alice = await make_user(hs, "alice")
    room_id = await hs.rooms.create_room(alice, {"preset": "public_chat"})
    heard: list[int] = []
    hs.events.add_new_events_listener(lambda room, positions: heard.extend(positions))
    writers = ToTheWriter(hs)
    worker = worker_events(hs, writers)
    sent = await worker.send_event(room_id, message(alice, "built on the worker"), txn=(alice, "D", "t1"))
    stored = await hs.events.store.get_event(sent.pdu.event_id)
    assert stored is not None and stored.stream_ordering == sent.stream_ordering
    assert stored.pdu.content["body"] == "built on the worker"
    assert heard == [sent.stream_ordering] and writers.calls == ["events.persist"]
    # The transaction ID was stored with it: the same request again is the same event.
    again = await worker.send_event(room_id, message(alice, "built on the worker"), txn=(alice, "D", "t1"))
    assert again.pdu.event_id == sent.pdu.event_id and writers.calls == ["events.persist"]


async def test_a_call_made_again_is_answered_with_the_stored_positions(hs):
    alice = await make_user(hs, "alice")
    room_id = await hs.rooms.create_room(alice, {"preset": "public_chat"})
    heard: list[int] = []
    hs.events.add_new_events_listener(lambda room, positions: heard.extend(positions))
    before = await hs.events.store.get_current_position()
    worker = worker_events(hs, ToTheWriter(hs, repeat=2))
    sent = await worker.send_event(room_id, message(alice, "once"))
    assert sent.stream_ordering == before + 1 == await hs.events.store.get_current_position()
    # Stored once; what follows a write ran again for the repeat (its first writer may have died).
    assert heard == [sent.stream_ordering, sent.stream_ordering]


async def test_a_head_that_moved_on_the_writer_means_building_again(hs):
    alice = await make_user(hs, "alice")
    room_id = await hs.rooms.create_room(alice, {"preset": "public_chat"})
    worker = worker_events(hs, ToTheWriter(hs))
    first = await worker.send_event(room_id, message(alice, "one"))  # the worker now caches the head
    other = await hs.events.send_event(room_id, message(alice, "two, on the writer"))
    third = await worker.send_event(room_id, message(alice, "three"))
    assert other.pdu.prev_event_ids == (first.pdu.event_id,)
    assert third.pdu.prev_event_ids == (other.pdu.event_id,)  # built again on the new head
    assert first.stream_ordering < other.stream_ordering < third.stream_ordering
