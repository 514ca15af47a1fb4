"""Event persisters: local events built on one process, stored by the room's writer.

With ``stream_writers.events`` naming workers, each room's events are written by one of
them (``gateway.roles.writer_of``: a hash of the room ID). Any process builds, authorises
and signs a local event as before (``EventsService``: its group commit, the hooks that
run before storing such as a remote server co-signing an invite); when it is not the
room's writer it hands the built events to the writer, which stores them (with their
state, against the room head they were built on) and runs what follows a write: push
rules, the notifier and its Redis publication, application services, modules. A head that
moved meanwhile comes back as ``StaleHeadError`` and the events are built again on the
new head, as for two writers in one process.

Retrying is safe: events the writer already stored (an answer lost with its connection)
are answered with their positions.

Model: Synapse's "event persister" and its replication endpoint for sending events.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

import orjson

from federation.room_versions import RoomVersion, get_room_version

from ..http import MatrixError
from ..storage.database import IntegrityError
from ..storage.events import EventWrite, PersistResult, RoomExistsError, StaleHeadError, decode_pdu_json, \
    encode_pdu_json
from ..storage.state import EMPTY_STATE

if TYPE_CHECKING:
    from .events import EventsService
    from .stream_writers import StreamWriters

STREAM = "events"
#: Errcodes of the writer's answers that stand for the store's exceptions.
STALE_HEAD = "GATEWAY_STALE_HEAD"
DUPLICATE = "GATEWAY_DUPLICATE"
ROOM_EXISTS = "GATEWAY_ROOM_EXISTS"


def writes_to_json(writes: Sequence[EventWrite]) -> list[dict[str, Any]]:
    return [{"pdu": orjson.loads(encode_pdu_json(w.pdu)), "rejected_reason": w.rejected_reason,
             "txn": list(w.txn) if w.txn is not None else None, "redacts": w.redaction_applies_to}
            for w in writes]


def writes_from_json(items: Any, rv: RoomVersion) -> list[EventWrite]:
    if not isinstance(items, list) or not items:
        raise MatrixError.bad_json("'events' is a non-empty list")
    out = []
    for item in items:
        txn = item.get("txn")
        out.append(EventWrite(pdu=decode_pdu_json(dict(item["pdu"]), rv), rejected_reason=item.get("rejected_reason"),
                              txn=tuple(txn) if txn is not None else None,
                              redaction_applies_to=item.get("redacts")))
    return out


class EventPersisters:
    """The caller's side: is this process a room's writer, and storing on the writer."""

    def __init__(self, writers: "StreamWriters"):
        self.writers = writers

    def is_local(self, room_id: str) -> bool:
        return self.writers.is_mine(STREAM, room_id)

    async def persist_events(self, room_id: str, rv: RoomVersion, writes: Sequence[EventWrite], *,
                             state_before_group: int | None, expected_head: int,
                             load_state) -> PersistResult:
        answer = await self._call("events.persist", room_id, {
            "room_id": room_id, "room_version": rv.identifier, "events": writes_to_json(writes),
            "state_before": state_before_group, "expected_head": expected_head})
        return PersistResult(list(answer["positions"]), await load_state(answer["state_group"]))

    async def create_room(self, room_id: str, rv: RoomVersion, writes: Sequence[EventWrite], *, creator: str,
                          created_ts: int, is_public: bool) -> list[int]:
        answer = await self._call("events.create_room", room_id, {
            "room_id": room_id, "room_version": rv.identifier, "events": writes_to_json(writes),
            "creator": creator, "created_ts": created_ts, "is_public": is_public})
        return list(answer["positions"])

    async def _call(self, endpoint: str, room_id: str, body: dict[str, Any]) -> dict[str, Any]:
        try:
            return await self.writers.call(STREAM, endpoint, body, room_id=room_id)
        except MatrixError as e:
            if e.errcode == STALE_HEAD:
                raise StaleHeadError(room_id) from None
            if e.errcode == DUPLICATE:
                raise IntegrityError(e.error) from None
            if e.errcode == ROOM_EXISTS:
                raise RoomExistsError(room_id) from None
            raise


def register_endpoints(writers: "StreamWriters", events: "EventsService") -> None:
    """The writer's side: store what other processes built (``events.persist``) and the
    first events of the rooms they create (``events.create_room``)."""

    def parse(body: dict[str, Any]) -> tuple[str, RoomVersion, list[EventWrite]]:
        room_id, version = body.get("room_id"), body.get("room_version")
        if not isinstance(room_id, str) or not isinstance(version, str):
            raise MatrixError.bad_json("'room_id' and 'room_version' are strings")
        if not writers.is_mine(STREAM, room_id):  # the processes disagree on stream_writers
            raise MatrixError(503, "M_UNKNOWN", f"{writers.instance_name} does not write the events of {room_id}; "
                                                "do all processes share one stream_writers?")
        try:
            rv = get_room_version(version)
            return room_id, rv, writes_from_json(body.get("events"), rv)
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise MatrixError.bad_json(f"malformed events ({e})") from None

    async def already_stored(room_id: str, writes: Sequence[EventWrite]) -> dict[str, Any] | None:
        """The answer of a call made again: every event is stored (one transaction).
        What follows a write (push rules, wake-ups, application services) runs again: the
        first call's writer may have died before it did (the push rules' results are kept
        once; a push may go out twice)."""
        stored = await events.store.get_events([w.pdu.event_id for w in writes])
        if len(stored) != len(writes) or any(s.outlier for s in stored.values()):
            return None
        positions = [stored[w.pdu.event_id].stream_ordering for w in writes]
        events.announce_stored(room_id, positions)
        return {"positions": positions, "state_group": stored[writes[-1].pdu.event_id].state_group}

    async def persist(body: dict[str, Any]) -> dict[str, Any]:
        room_id, rv, writes = parse(body)
        group = body.get("state_before")
        state_before = EMPTY_STATE if group is None else await events.state.get_state(int(group))
        try:
            result = await events.store_built(room_id, writes, state_before=state_before,
                                              expected_head=int(body["expected_head"]))
        except StaleHeadError:
            if (done := await already_stored(room_id, writes)) is not None:
                return done
            raise MatrixError(409, STALE_HEAD, f"{room_id} moved on; build again") from None
        except IntegrityError as e:
            if (done := await already_stored(room_id, writes)) is not None:
                return done
            raise MatrixError(409, DUPLICATE, str(e)) from None
        return {"positions": result.stream_orderings, "state_group": result.state_after.group}

    async def create_room(body: dict[str, Any]) -> dict[str, Any]:
        room_id, rv, writes = parse(body)
        try:
            sent = await events.store_new_room(room_id, rv, writes, creator=str(body["creator"]),
                                                    created_ts=int(body["created_ts"]),
                                                    is_public=bool(body["is_public"]))
        except RoomExistsError:
            if (done := await already_stored(room_id, writes)) is not None:
                return done
            raise MatrixError(409, ROOM_EXISTS, f"{room_id} exists") from None
        return {"positions": [e.stream_ordering for e in sent]}

    writers.register("events.persist", persist)
    writers.register("events.create_room", create_room)
