"""Rooms joined with partial state and the writes of their resync.

A ``partial_state_rooms`` row says "the state of this room lacks most member events";
``partial_state_room_servers`` lists where the full state can be fetched. The resync
(``gateway/services/federation/partial_state.py``) rewrites the state of the join event and of every
event after it (``rewrite_event_state``, one small transaction per event), then gives
the room its full current state and drops the row in one transaction (``finish``).
Rewriting is idempotent: a resync cut short by a restart simply runs again.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .database import Database
from .search import unindex_events
from .state import StateKey, StateSnapshot, StateStore, _placeholders, apply_current_state_changes, next_position


@dataclass(frozen=True)
class PartialStateRoom:
    room_id: str
    join_event_id: str
    joined_via: str
    started_ts: int
    #: Where to fetch the full state from, in order (the server we joined through first).
    servers: tuple[str, ...]


@dataclass(frozen=True)
class LaterEvent:
    """An event at or after the join (in the DAG), as the resync needs it."""

    event_id: str
    depth: int
    stream_ordering: int
    state_group: int | None
    rejected_reason: str | None
    soft_failed: bool
    prev_event_ids: tuple[str, ...]


@dataclass(frozen=True)
class StateEventRow:
    """A stored event's place in a state, read without its JSON."""

    event_id: str
    type: str
    state_key: str | None
    rejected_reason: str | None


def _delta(base: Mapping[StateKey, str], state: Mapping[StateKey, str]) -> dict[StateKey, str | None]:
    out: dict[StateKey, str | None] = {k: v for k, v in state.items() if base.get(k) != v}
    out.update({k: None for k in base if k not in state})
    return out


class PartialStateStore:
    def __init__(self, db: Database, state: StateStore):
        self.db = db
        self.state = state

    # --- the marker --------------------------------------------------------------

    async def mark(self, room_id: str, join_event_id: str, joined_via: str, servers: Sequence[str],
                   started_ts: int) -> None:
        """Record (or replace) the room's partial join."""
        async with self.db.transaction() as txn:
            await txn.execute("DELETE FROM partial_state_room_servers WHERE room_id = $1", room_id)
            await txn.execute("DELETE FROM partial_state_rooms WHERE room_id = $1", room_id)
            await txn.execute(
                "INSERT INTO partial_state_rooms (room_id, join_event_id, joined_via, started_ts)"
                " VALUES ($1, $2, $3, $4)",
                room_id, join_event_id, joined_via, started_ts,
            )
            rows = [(room_id, s, i) for i, s in enumerate(dict.fromkeys(servers))]
            if rows:
                await txn.executemany(
                    "INSERT INTO partial_state_room_servers (room_id, server_name, ordinal) VALUES ($1, $2, $3)",
                    rows,
                )

    async def unmark(self, room_id: str, join_event_id: str | None = None) -> bool:
        """Drop the room's marker (only if it is still for ``join_event_id``, if given)."""
        async with self.db.transaction() as txn:
            if join_event_id is None:
                changed = await txn.execute("DELETE FROM partial_state_rooms WHERE room_id = $1", room_id)
            else:
                changed = await txn.execute(
                    "DELETE FROM partial_state_rooms WHERE room_id = $1 AND join_event_id = $2",
                    room_id, join_event_id,
                )
            if changed:
                await txn.execute("DELETE FROM partial_state_room_servers WHERE room_id = $1", room_id)
        return changed == 1

    async def get_all(self) -> dict[str, PartialStateRoom]:
        rows = await self.db.fetch(
            "SELECT room_id, join_event_id, joined_via, started_ts FROM partial_state_rooms ORDER BY started_ts")
        servers: dict[str, list[str]] = {}
        for r in await self.db.fetch(
                "SELECT room_id, server_name FROM partial_state_room_servers ORDER BY room_id, ordinal"):
            servers.setdefault(r[0], []).append(r[1])
        return {r[0]: PartialStateRoom(r[0], r[1], r[2], int(r[3]), tuple(servers.get(r[0], ())))
                for r in rows}

    # --- reads for the resync ------------------------------------------------------

    async def get_events_after(self, room_id: str, event_id: str) -> dict[str, LaterEvent]:
        """``event_id`` and every stored (non-outlier) event after it in the room's DAG,
        with their prev events."""
        rows = await self.db.fetch(
            "WITH RECURSIVE later(event_id) AS ("
            " SELECT event_id FROM events WHERE event_id = $2"
            " UNION SELECT ed.event_id FROM event_edges ed JOIN later l ON ed.prev_event_id = l.event_id"
            ") SELECT e.event_id, e.depth, e.stream_ordering, e.state_group, e.rejected_reason, e.soft_failed"
            " FROM later l JOIN events e ON e.event_id = l.event_id WHERE e.room_id = $1 AND e.outlier = FALSE",
            room_id, event_id,
        )
        prevs = await self._prev_ids([r[0] for r in rows])
        return {r[0]: LaterEvent(r[0], int(r[1]), int(r[2]), None if r[3] is None else int(r[3]), r[4], bool(r[5]),
                                 tuple(prevs.get(r[0], ()))) for r in rows}

    async def get_state_rows(self, event_ids: Sequence[str]) -> dict[str, StateEventRow]:
        """Type, state key and rejection of stored events (one query per 500 IDs)."""
        out: dict[str, StateEventRow] = {}
        ids = list(dict.fromkeys(event_ids))
        for i in range(0, len(ids), 500):
            chunk = ids[i:i + 500]
            for r in await self.db.fetch(
                    "SELECT event_id, type, state_key, rejected_reason FROM events"
                    f" WHERE event_id IN ({_placeholders(len(chunk))})", *chunk):
                out[r[0]] = StateEventRow(r[0], r[1], r[2], r[3])
        return out

    async def _prev_ids(self, event_ids: Sequence[str]) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for i in range(0, len(event_ids), 500):
            chunk = event_ids[i:i + 500]
            for r in await self.db.fetch(
                    "SELECT event_id, prev_event_id FROM event_edges"
                    f" WHERE event_id IN ({_placeholders(len(chunk))}) ORDER BY event_id, prev_event_id", *chunk):
                out.setdefault(r[0], []).append(r[1])
        return out

    # --- writes of the resync --------------------------------------------------------

    async def rewrite_event_state(self, room_id: str, event_id: str, *, base: StateSnapshot,
                                  state: Mapping[StateKey, str], replaces: str | None,
                                  rejected_reason: str | None) -> StateSnapshot:
        """Give a stored event a new state after it (``state``, written as a delta
        against ``base``, or ``base`` itself when equal), the entry it replaces, and
        (if newly refused) its rejection. Returns the event's new state group."""
        delta = _delta(base.state, state)
        async with self.db.transaction() as txn:
            if delta or base.group is None:
                snap = await self.state.store_state_group(txn, room_id=room_id, event_id=event_id, prev=base,
                                                          state=state, delta=delta)
            else:
                snap = base
            await txn.execute(
                "UPDATE events SET state_group = $2, replaces_state = $3,"
                " rejected_reason = COALESCE(rejected_reason, $4) WHERE event_id = $1",
                event_id, snap.group, replaces, rejected_reason,
            )
            if rejected_reason is not None:
                await unindex_events(txn, [event_id])
        self.state.cache_snapshot(snap)
        return snap

    async def finish(self, room_id: str, join_event_id: str, *, current: StateSnapshot,
                     new_current: Mapping[StateKey, str], same_as: StateSnapshot | None,
                     state_events: Mapping[str, Any], extremities_removed: Iterable[str],
                     extremities_added: Iterable[str]) -> tuple[int, StateSnapshot]:
        """In one transaction: the new forward extremities, the room's full current
        state (``new_current``; ``same_as`` is a stored group equal to it, if any) with
        its deltas and memberships at a new events position, the room's head and
        ``full_state_stream_ordering`` at that position, and the marker dropped.
        ``state_events``: the PDUs of the events newly in the current state.
        Returns (the position, the current state group)."""
        changes = _delta(current.state, new_current)
        created: StateSnapshot | None = None
        async with self.db.transaction() as txn:
            for e in extremities_removed:
                await txn.execute("DELETE FROM event_forward_extremities WHERE room_id = $1 AND event_id = $2",
                                  room_id, e)
            for e in extremities_added:
                await txn.execute(
                    "INSERT INTO event_forward_extremities (room_id, event_id) VALUES ($1, $2)"
                    " ON CONFLICT (room_id, event_id) DO NOTHING", room_id, e)
            position = await next_position(txn, "events", 1)
            group = current
            if changes:
                if same_as is not None:
                    group = same_as
                else:
                    group = created = await self.state.store_state_group(
                        txn, room_id=room_id, event_id=None, prev=current, state=new_current, delta=changes)
                await apply_current_state_changes(txn, room_id=room_id, changes=changes, previous=current.state,
                                                  stream_ordering=position, events=state_events)
            await txn.execute(
                "UPDATE rooms SET head_stream_ordering = $2, current_state_group = $3,"
                " full_state_stream_ordering = $2 WHERE room_id = $1",
                room_id, position, group.group,
            )
            await txn.execute("DELETE FROM partial_state_room_servers WHERE room_id = $1", room_id)
            await txn.execute("DELETE FROM partial_state_rooms WHERE room_id = $1 AND join_event_id = $2",
                              room_id, join_event_id)
        if created is not None:
            self.state.cache_snapshot(created)
        return position, group
