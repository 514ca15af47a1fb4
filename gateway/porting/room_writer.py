"""Writing a room's whole history into our storage in one transaction, from another
server's view of it (``gateway import-synapse``): events as they are, state snapshots,
current state and memberships, and what our storage derives from the timeline (relations,
threads, the search index, applied redactions, room stats).

Positions: a timeline event keeps the position the other server gave it (our counters
are moved past them first); outliers, rejected and soft-failed events take positions of
our backfill stream, below every timeline event, as our own writers do.

State: each of the other server's state groups becomes one of ours (a delta against the
group its own was a delta of, within our delta-chain bound); an event's group is the
state after it. Current state and its deltas follow the timeline's state events, each at
its position, and end at the other server's current state.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from federation.auth_rules import redaction_allowed
from federation.events import PDU
from federation.room_versions import RoomVersion

from ..storage.database import Connection, Database
from ..storage.events import encode_pdu_json, note_redactions, note_timeline_events, write_relations
from ..storage.state import (
    EMPTY_STATE,
    StateKey,
    StateSnapshot,
    StateStore,
    apply_current_state_changes,
    next_position,
)

_EVENT_COLUMNS = ("event_id", "stream_ordering", "room_id", "type", "state_key", "sender", "depth",
                  "origin_server_ts", "received_ts", "json", "rejected_reason", "outlier", "soft_failed",
                  "state_group", "replaces_state")


@dataclass
class ImportedEvent:
    pdu: PDU
    position: int
    outlier: bool
    rejected_reason: str | None
    soft_failed: bool
    #: The other server's state group for the state after the event (None for outliers).
    synapse_group: int | None
    received_ts: int
    #: (user_id, device_id, txn_id, inserted_ts) of the client request that sent it.
    txn: tuple[str, str, str, int] | None = None

    @property
    def in_timeline(self) -> bool:
        return not self.outlier and self.rejected_reason is None and not self.soft_failed


@dataclass
class SourceStateGroup:
    """One of the other server's state groups: a full snapshot (no ``prev``) or a delta
    against ``prev``, made for ``event_id``."""

    prev: int | None
    event_id: str | None
    delta: dict[StateKey, str] = field(default_factory=dict)


@dataclass
class RoomHistory:
    room_id: str
    room_version: RoomVersion
    is_public: bool
    events: Sequence[ImportedEvent]  # in the other server's position order
    groups: Mapping[int, SourceStateGroup]
    current_state: Mapping[StateKey, str]
    forward_extremities: Sequence[str]
    #: Users who forgot the room (after leaving it).
    forgotten: set[str] = field(default_factory=set)


async def write_room(db: Database, room: RoomHistory) -> None:
    """The whole room in one transaction (nothing of it is written if it fails)."""
    states = StateStore(db)
    async with db.transaction() as txn:
        writer = _RoomWriter(txn, states, room)
        await writer.write()


class _RoomWriter:
    def __init__(self, txn: Connection, states: StateStore, room: RoomHistory):
        self.txn, self.states, self.room = txn, states, room
        self.ours: dict[int, int | None] = {}  # the other server's group -> ours
        self.events = {e.pdu.event_id: e for e in room.events}
        self.pdus = {e.pdu.event_id: e.pdu for e in room.events}

    async def snapshot(self, group: int | None) -> StateSnapshot | None:
        """Our snapshot of one of the other server's groups (None if it has none); read
        through the state store's cache, so that big rooms do not hold every map."""
        if group is None or group not in self.ours:
            return None
        return await self.states.get_state(self.ours[group], conn=self.txn)

    async def write(self) -> None:
        room, txn = self.room, self.txn
        timeline = [e for e in room.events if e.in_timeline]
        others = [e for e in room.events if not e.in_timeline]
        positions = {e.pdu.event_id: e.position for e in timeline}
        if others:
            last = await next_position(txn, "backfill", -len(others))
            for e, pos in zip(others, range(last + len(others) - 1, last - 1, -1)):
                positions[e.pdu.event_id] = pos
        for group in sorted(room.groups):
            await self._group(group)

        rows, edges, auth_edges, txn_ids = [], [], [], []
        for e in room.events:
            pdu = e.pdu
            group = None if e.outlier else self.ours.get(e.synapse_group)
            replaces = await self._replaced(e) if pdu.state_key is not None and group is not None else None
            rows.append((pdu.event_id, positions[pdu.event_id], room.room_id, pdu.type, pdu.state_key, pdu.sender,
                         pdu.depth, pdu.origin_server_ts, e.received_ts, encode_pdu_json(pdu), e.rejected_reason,
                         e.outlier, e.soft_failed, group, replaces))
            if not e.outlier:
                edges += [(pdu.event_id, p, room.room_id) for p in dict.fromkeys(pdu.prev_event_ids)]
            auth_edges += [(pdu.event_id, a, room.room_id) for a in dict.fromkeys(pdu.auth_event_ids)]
            if e.txn is not None and not e.outlier:
                txn_ids.append((e.txn[0], e.txn[1], e.txn[2], room.room_id, pdu.event_id, e.txn[3]))
        await txn.copy_rows("events", _EVENT_COLUMNS, rows)
        await txn.copy_rows("event_edges", ("event_id", "prev_event_id", "room_id"), edges)
        await txn.copy_rows("event_auth_edges", ("event_id", "auth_event_id", "room_id"), auth_edges)
        if txn_ids:
            await txn.executemany(
                "INSERT INTO event_txn_ids (user_id, device_id, txn_id, room_id, event_id, inserted_ts)"
                " VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING", txn_ids)
        await txn.copy_rows("event_forward_extremities", ("room_id", "event_id"),
                            [(room.room_id, x) for x in dict.fromkeys(room.forward_extremities) if x in self.pdus])

        # What our storage derives from timeline events, as its own writers do.
        await write_relations(txn, [e.pdu for e in room.events if not e.outlier and e.rejected_reason is None])
        await note_timeline_events(txn, [(e.pdu, e.position) for e in timeline])
        redacted = await self._redactions([e for e in room.events if not e.outlier and e.rejected_reason is None])
        await note_redactions(txn, redacted)

        head, current_group = await self._current_state(timeline)
        create = next((e.pdu for e in room.events if e.pdu.type == "m.room.create" and e.pdu.state_key == ""), None)
        await txn.execute(
            "INSERT INTO rooms (room_id, room_version, creator, is_public, created_ts, current_state_group,"
            " head_stream_ordering) VALUES ($1, $2, $3, $4, $5, $6, $7)",
            room.room_id, room.room_version.identifier, None if create is None else create.sender, room.is_public,
            0 if create is None else create.origin_server_ts, current_group, head)
        if room.forgotten:
            await txn.executemany(
                "UPDATE room_memberships SET forgotten = TRUE WHERE room_id = $1 AND user_id = $2"
                " AND membership IN ('leave', 'ban')", [(room.room_id, u) for u in sorted(room.forgotten)])

    async def _group(self, group: int) -> StateSnapshot:
        """Our group for one of the other server's (its prev made first)."""
        if group in self.ours:
            return await self.snapshot(group)
        source = self.room.groups[group]
        prev = await self._group(source.prev) if source.prev in self.room.groups else EMPTY_STATE
        state = dict(prev.state)
        state.update(source.delta)
        delta = {k: v for k, v in source.delta.items() if prev.state.get(k) != v}
        made = await self.states.store_state_group(self.txn, room_id=self.room.room_id, event_id=source.event_id,
                                                   prev=prev, state=state, delta=delta)
        self.states.cache_snapshot(made)
        self.ours[group] = made.group
        return made

    async def _replaced(self, e: ImportedEvent) -> str | None:
        """The state event ``e`` replaced: the entry of the group its own group was made
        from (the state before it), else of its first prev event's group."""
        key = (e.pdu.type, e.pdu.state_key)
        source = self.room.groups.get(e.synapse_group)
        before = None
        if source is not None and source.event_id == e.pdu.event_id:
            before = await self.snapshot(source.prev)
        if before is None and e.pdu.prev_event_ids:
            prev = self.events.get(e.pdu.prev_event_ids[0])
            before = None if prev is None else await self.snapshot(prev.synapse_group)
        return None if before is None else before.state.get(key)

    async def _redactions(self, events: Sequence[ImportedEvent]) -> list[str]:
        """Redactions that apply (our rules: the target is in the room, and for rooms 3+
        its sender's server or the redact power level at the redaction)."""
        rows = []
        for e in events:
            pdu = e.pdu
            if pdu.type != "m.room.redaction" or pdu.redacts is None:
                continue
            target = self.pdus.get(pdu.redacts)
            state = await self.snapshot(e.synapse_group)
            auth = {} if state is None else {k: self.pdus[v] for k in (("m.room.create", ""),
                                                                        ("m.room.power_levels", ""))
                                             if (v := state.state.get(k)) in self.pdus}
            if target is not None and redaction_allowed(self.room.room_version, pdu, target, auth):
                rows.append((pdu.event_id, target.event_id, self.room.room_id))
        if rows:
            await self.txn.executemany("INSERT INTO redactions (event_id, redacts, room_id) VALUES ($1, $2, $3)"
                                       " ON CONFLICT (event_id) DO NOTHING", rows)
        return [r[1] for r in rows]

    async def _current_state(self, timeline: Sequence[ImportedEvent]) -> tuple[int, int | None]:
        """Current state, its deltas and the memberships, through the timeline's state
        events and then to the other server's current state. Returns the room's head
        position and its current state group."""
        room = self.room
        current: StateSnapshot = EMPTY_STATE
        current_source: int | None = None  # the other server's group that ``current`` is
        head = 0
        for e in timeline:
            if e.position <= 0:
                continue  # history from before the server joined: the present came later
            head = e.position
            if e.pdu.state_key is None or e.synapse_group not in self.ours:
                continue
            source = room.groups[e.synapse_group]
            new = await self.snapshot(e.synapse_group)
            if source.prev is not None and source.prev == current_source:  # the usual case: one step on
                changes = {k: v for k, v in source.delta.items() if current.state.get(k) != v}
            else:
                changes = _diff(current.state, new.state)
            await self._apply(changes, current.state, e.position)
            current, current_source = new, e.synapse_group
        final = dict(room.current_state)
        changes = _diff(current.state, final)
        if changes:
            await self._apply(changes, current.state, head)
            current = await self.states.store_state_group(self.txn, room_id=room.room_id, event_id=None,
                                                          prev=current, state=final, delta=changes)
        return head, current.group

    async def _apply(self, changes: Mapping[StateKey, str | None], previous: Mapping[StateKey, str],
                     position: int) -> None:
        if changes:
            await apply_current_state_changes(self.txn, room_id=self.room.room_id, changes=changes,
                                              previous=previous, stream_ordering=position, events=self.pdus)


def _diff(old: Mapping[StateKey, str], new: Mapping[StateKey, str]) -> dict[StateKey, str | None]:
    changes: dict[StateKey, str | None] = {k: v for k, v in new.items() if old.get(k) != v}
    changes.update({k: None for k in old if k not in new})
    return changes
