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

Events received from other servers go the same way (``persist_received``): the process
that received them runs the whole receipt pipeline (format, signatures and hashes, auth,
state, soft failure: the checks stay where the request arrived) into an ``EventBatch``,
under the room's lock, and the room's writer writes that batch as it is, in one
transaction, and runs what follows it. One call per room run, as the pipeline batches.

Retrying is safe: events the writer already stored (an answer lost with its connection)
are answered with their positions.

Model: Synapse's "event persister" and its replication endpoint for sending events.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Sequence

import orjson

from federation.room_versions import RoomVersion, get_room_version

from ..http import MatrixError
from ..storage.database import IntegrityError
from ..storage.event_batch import EventBatch, PersistEvent
from ..storage.events import EventWrite, PersistResult, RoomExistsError, StaleHeadError, decode_pdu_json, \
    encode_pdu_json
from ..storage.state import EMPTY_STATE, NewStateGroup, StateKey, StateSnapshot, StateStore

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


def _keyed(mapping: Mapping[StateKey, str | None]) -> list[list[Any]]:
    return [[k[0], k[1], v] for k, v in mapping.items()]


def _unkeyed(rows: Any) -> dict[StateKey, str | None]:
    return {(str(t), str(sk)): (None if e is None else str(e)) for t, sk, e in rows}


def batch_to_json(batch: EventBatch) -> dict[str, Any]:
    """The wire form of a batch the receipt pipeline decided (``EventBatch``): what
    ``EventStore.persist_batch`` writes, without the full state maps the batch keeps in
    memory (the writer needs the groups' rows, not their maps), and, of the room's
    current state before the batch, only the keys the batch changes."""
    changed = {k for e in batch.events for k in e.current_state_changes}
    before = batch.current_before
    return {
        "head": batch.head, "current": batch.current.group, "current_before": before.group,
        "previous": _keyed({k: before.state[k] for k in changed if k in before.state}),
        "extremities": sorted(batch.extremities), "replace_extremities": batch.replace_extremities,
        "groups": [{"group": g.snapshot.group, "depth": g.snapshot.delta_depth, "event_id": g.event_id,
                    "prev": g.prev_group, "entries": _keyed(dict(g.entries))} for g in batch.groups],
        "events": [{"pdu": orjson.loads(encode_pdu_json(e.pdu)), "state_after": e.state_after.group,
                    "replaces_state": e.replaces_state, "rejected_reason": e.rejected_reason,
                    "soft_failed": e.soft_failed, "redacts": e.redaction_applies_to,
                    "txn": list(e.txn) if e.txn is not None else None, "may_be_outlier": e.may_be_outlier,
                    "changes": _keyed(e.current_state_changes)} for e in batch.events],
        "state_events": [orjson.loads(encode_pdu_json(p)) for p in batch.state_events.values()],
    }


def batch_from_json(state: StateStore, room_id: str, rv: RoomVersion, body: Any) -> EventBatch:
    """The writer's copy of a batch (``batch_to_json``), good for ``persist_batch`` with
    ``cache_groups=False`` only: its snapshots carry group IDs, not full maps."""
    def snap(group: Any, depth: int = 0, state_map: Mapping[StateKey, str] | None = None) -> StateSnapshot:
        return EMPTY_STATE if group is None else StateSnapshot(int(group), depth, MappingProxyType(dict(state_map or {})))

    try:
        if not isinstance(body, dict) or not isinstance(body.get("events"), list) or not body["events"]:
            raise ValueError("'batch.events' is a non-empty list")
        previous = {k: v for k, v in _unkeyed(body["previous"]).items() if v is not None}
        groups = [NewStateGroup(snap(g["group"], int(g["depth"])), room_id, g["event_id"], g["prev"],
                                tuple(_unkeyed(g["entries"]).items())) for g in body["groups"]]
        events = []
        for e in body["events"]:
            txn = e.get("txn")
            events.append(PersistEvent(
                pdu=decode_pdu_json(dict(e["pdu"]), rv), state_after=snap(e["state_after"]),
                replaces_state=e.get("replaces_state"), rejected_reason=e.get("rejected_reason"),
                soft_failed=bool(e.get("soft_failed")), redaction_applies_to=e.get("redacts"),
                txn=tuple(txn) if txn is not None else None, may_be_outlier=bool(e.get("may_be_outlier")),
                current_state_changes=_unkeyed(e.get("changes") or [])))
        if any(e.pdu.room_id != room_id for e in events):
            raise ValueError("an event of another room")
        state_events = [decode_pdu_json(dict(p), rv) for p in body.get("state_events") or []]
        return EventBatch.prepared(
            state, room_id, head=int(body["head"]), current_before=snap(body["current_before"], 0, previous),
            current=snap(body["current"]), extremities=body["extremities"],
            replace_extremities=bool(body["replace_extremities"]), events=events, groups=groups,
            state_events={p.event_id: p for p in state_events})
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise MatrixError.bad_json(f"malformed batch ({e})") from None


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

    async def persist_received(self, batch: EventBatch, rv: RoomVersion, *, received_ts: int) -> list[int]:
        """Have the room's writer write a batch of received events the receipt pipeline
        decided here (under the room's lock, which the caller holds): their positions.
        ``StaleHeadError`` if the room moved on, ``IntegrityError`` if the write failed on
        a duplicate."""
        answer = await self._call("events.persist_received", batch.room_id, {
            "room_id": batch.room_id, "room_version": rv.identifier, "received_ts": received_ts,
            "batch": batch_to_json(batch)})
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

    def parse_room(body: dict[str, Any]) -> tuple[str, RoomVersion]:
        room_id, version = body.get("room_id"), body.get("room_version")
        if not isinstance(room_id, str) or not isinstance(version, str):
            raise MatrixError.bad_json("'room_id' and 'room_version' are strings")
        if not writers.is_mine(STREAM, room_id):  # the processes disagree on stream_writers
            raise MatrixError(503, "M_UNKNOWN", f"{writers.instance_name} does not write the events of {room_id}; "
                                                "do all processes share one stream_writers?")
        try:
            return room_id, get_room_version(version)
        except (KeyError, ValueError) as e:
            raise MatrixError.bad_json(f"unknown room version ({e})") from None

    def parse(body: dict[str, Any]) -> tuple[str, RoomVersion, list[EventWrite]]:
        room_id, rv = parse_room(body)
        try:
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

    def announce_received(room_id: str, batch: EventBatch, positions: Sequence[int]) -> None:
        """What follows writing received events, as the receiving process would run it
        if it wrote them: caches, listeners and modules for the timeline ones."""
        for e in batch.events:
            events.remember(e.pdu)
        events.forget_head(room_id)
        timeline = [(e.pdu, p) for e, p in zip(batch.events, positions) if e.timeline]
        if timeline:
            events.announce_stored(room_id, [p for _, p in timeline], received=[pdu for pdu, _ in timeline])

    async def persist_received(body: dict[str, Any]) -> dict[str, Any]:
        room_id, rv = parse_room(body)
        batch = batch_from_json(events.state, room_id, rv, body.get("batch"))
        received_ts = body.get("received_ts")
        received_ts = received_ts if isinstance(received_ts, int) else events.clock_ms()
        try:
            positions = await events.store.persist_batch(batch, received_ts=received_ts, cache_groups=False)
        except (StaleHeadError, IntegrityError) as e:
            # Made again after an answer was lost: the events are there (one transaction).
            stored = await events.store.get_events([ev.pdu.event_id for ev in batch.events])
            if len(stored) != len(batch.events) or any(s.outlier for s in stored.values()):
                if isinstance(e, StaleHeadError):
                    raise MatrixError(409, STALE_HEAD, f"{room_id} moved on; check again") from None
                raise MatrixError(409, DUPLICATE, str(e)) from None
            positions = [stored[ev.pdu.event_id].stream_ordering for ev in batch.events]
        announce_received(room_id, batch, positions)
        return {"positions": positions}

    writers.register("events.persist", persist)
    writers.register("events.persist_received", persist_received)
    writers.register("events.create_room", create_room)
