"""Rooms and events: the PDU table, the DAG (prev and auth edges, forward extremities),
stream positions, redactions and client transaction IDs.

Every new event is written by ``persist_batch``: a batch of one room's events
(``gateway.storage.event_batch``, everything computed in memory first) in one
transaction with their state; once it returns, the events are stored.
``persist_events`` and ``create_room_and_persist`` build such a batch from a chain of
local events. The events stream only grows; events from the past take negative
positions (see the migration).
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from federation.canonical_json import encode_canonical_json
from federation.events import PDU, compute_event_id
from federation.relations import THREAD, relation_of
from federation.room_versions import EventFormat, RoomVersion, get_room_version

from .database import Connection, Database, IntegrityError
from .search import index_events, unindex_events
from .event_batch import EventBatch, PersistEvent
from .state import (
    EMPTY_STATE,
    StateKey,
    StateSnapshot,
    StateStore,
    _placeholders,
    apply_current_state_steps,
    next_position,
    write_state_groups,
)


class StaleHeadError(Exception):
    """The room moved on since the caller read it (another writer): build again."""


class RoomExistsError(Exception):
    pass


@dataclass(frozen=True)
class RoomRow:
    room_id: str
    room_version: RoomVersion
    creator: str | None
    is_public: bool
    created_ts: int
    current_state_group: int | None
    head_stream_ordering: int


@dataclass(frozen=True)
class StoredEvent:
    """An event as stored, with what the server knows about it."""

    pdu: PDU
    stream_ordering: int
    received_ts: int
    rejected_reason: str | None
    outlier: bool
    soft_failed: bool
    state_group: int | None
    replaces_state: str | None

    @property
    def event_id(self) -> str:
        return self.pdu.event_id


@dataclass
class EventWrite:
    """One local event to persist as a new (timeline) event.

    ``state_delta`` is what the event changes in the room state ({(type, state_key):
    event_id}, empty for a message or a rejected event); the store reads the same from
    the event itself.
    """

    pdu: PDU
    state_delta: Mapping[StateKey, str] = field(default_factory=dict)
    rejected_reason: str | None = None
    #: (user_id, device_id, txn_id) of the client request that created it.
    txn: tuple[str, str, str] | None = None
    #: The event this redaction applies to (checked by the caller).
    redaction_applies_to: str | None = None


@dataclass(frozen=True)
class EventMeta:
    """What the store knows about an event, without its JSON."""

    event_id: str
    room_id: str
    depth: int
    outlier: bool
    rejected_reason: str | None
    soft_failed: bool
    #: The state after the event (None for outliers).
    state_group: int | None
    stream_ordering: int


@dataclass(frozen=True)
class PersistResult:
    stream_orderings: list[int]
    state_after: StateSnapshot


#: Rows written per statement by the bulk paths (bounds the memory of a big join).
_WRITE_CHUNK = 2000
_OUTLIER_COLUMNS = ("event_id", "stream_ordering", "room_id", "type", "state_key", "sender", "depth",
                    "origin_server_ts", "received_ts", "json", "rejected_reason", "outlier")

#: The columns ``EventStore._row_to_event`` reads (queries join ``events e`` and ``rooms r``).
_EVENT_COLUMNS = ("json, stream_ordering, received_ts, rejected_reason, outlier, soft_failed, state_group,"
                  " replaces_state, e.room_id, r.room_version, e.event_id")
#: Events kept parsed by ``EventStore`` (the least recently read dropped first). An
#: initial sync of 200 rooms reads about 2,200; a parsed message event takes 2-3 KB.
PARSED_EVENTS = 4_000


def stream_range(backwards: bool, from_pos: int | None, to_pos: int | None, arg: Callable[[Any], str],
                 column: str = "stream_ordering") -> list[str]:
    """Conditions on a position column by the pagination token rules: backwards
    ``<= from_pos`` and ``> to_pos``, forwards ``> from_pos`` and ``<= to_pos``
    (``arg(value)`` adds a query argument and returns its placeholder)."""
    low, high = (to_pos, from_pos) if backwards else (from_pos, to_pos)
    out = []
    if low is not None:
        out.append(f"{column} > {arg(low)}")
    if high is not None:
        out.append(f"{column} <= {arg(high)}")
    return out


def _timeline_where(room_id: str) -> tuple[list[str], list[Any], Callable[[Any], str]]:
    """Conditions selecting a room's timeline events (no outliers, rejected or
    soft-failed events), their arguments, and ``arg`` to add one more (it returns its
    placeholder)."""
    args: list[Any] = [room_id]

    def arg(value: Any) -> str:
        args.append(value)
        return f"${len(args)}"

    return ["e.room_id = $1", "outlier = FALSE", "rejected_reason IS NULL", "soft_failed = FALSE"], args, arg


def _event_conditions(where: list[str], arg: Callable[[Any], str], types: Sequence[str] | None,
                      not_types: Sequence[str], senders: Sequence[str] | None,
                      not_senders: Sequence[str]) -> bool:
    """A RoomEventFilter's types and senders as conditions; False when nothing can match."""
    if types is not None:
        if not types:
            return False
        where.append(f"type IN ({', '.join(arg(t) for t in types)})")
    if not_types:
        where.append(f"type NOT IN ({', '.join(arg(t) for t in not_types)})")
    if senders is not None:
        if not senders:
            return False
        where.append(f"sender IN ({', '.join(arg(s) for s in senders)})")
    if not_senders:
        where.append(f"sender NOT IN ({', '.join(arg(s) for s in not_senders)})")
    return True


def _load_event_json(text: str, strict: bool) -> dict[str, Any]:
    """A stored event's JSON. orjson is several times faster (a sync reads hundreds) and
    reads the same where numbers are integers in the safe range, as the format check
    demands in rooms with ``strict`` canonical JSON; the standard library reads older
    rooms' events (orjson would turn an integer beyond 64 bits into a float) and what
    orjson refuses (a lone surrogate)."""
    if strict:
        try:
            return orjson.loads(text)
        except orjson.JSONDecodeError:
            pass
    return json.loads(text)


class EventStore:
    def __init__(self, db: Database, state: StateStore, *, parsed_events: int = PARSED_EVENTS):
        self.db = db
        self.state = state
        #: event ID -> (hash and length of its stored JSON, room version, the PDU parsed
        #: from it), at most ``parsed_events``: every read of events (/sync's timelines,
        #: /messages, relations, lookups by ID) parses an event's JSON once while it stays
        #: the same, and concurrent readers (16 /syncs woken by one message) share one PDU
        #: (docs/performance.md, "Memory"). A changed row (a redaction, an expired
        #: message's pruned content) has another JSON, so it is parsed again.
        self._parsed: OrderedDict[str, tuple[int, int, str, PDU]] = OrderedDict()
        self.parsed_events = parsed_events

    # --- rooms -------------------------------------------------------------------

    async def get_room(self, room_id: str, conn: Connection | None = None) -> RoomRow | None:
        row = await (conn or self.db).fetchrow(
            "SELECT room_id, room_version, creator, is_public, created_ts, current_state_group,"
            " head_stream_ordering FROM rooms WHERE room_id = $1",
            room_id,
        )
        if row is None:
            return None
        return RoomRow(row[0], get_room_version(row[1]), row[2], bool(row[3]), int(row[4]),
                       None if row[5] is None else int(row[5]), int(row[6]))

    async def get_rooms(self, room_ids: Sequence[str]) -> dict[str, RoomRow]:
        """Many rooms in one query (unknown IDs are left out)."""
        ids = list(dict.fromkeys(room_ids))
        if not ids:
            return {}
        rows = await self.db.fetch(
            "SELECT room_id, room_version, creator, is_public, created_ts, current_state_group,"
            f" head_stream_ordering FROM rooms WHERE room_id IN ({_placeholders(len(ids))})", *ids)
        return {r[0]: RoomRow(r[0], get_room_version(r[1]), r[2], bool(r[3]), int(r[4]),
                              None if r[5] is None else int(r[5]), int(r[6])) for r in rows}

    # --- positions ---------------------------------------------------------------

    async def get_current_position(self) -> int:
        """The highest events-stream position of a committed event (0 if none)."""
        value = await self.db.fetchval("SELECT position FROM stream_positions WHERE stream_name = 'events'")
        return int(value or 0)

    # --- reading events --------------------------------------------------------------

    def _row_to_event(self, row: Any) -> StoredEvent:
        """A row of ``_EVENT_COLUMNS``, its PDU from the parsed events when its JSON is the one parsed."""
        text, version, event_id = row[0], row[9], row[10]
        digest, size = hash(text), len(text)
        hit = self._parsed.get(event_id)
        if hit is not None and hit[0] == digest and hit[1] == size and hit[2] == version:
            self._parsed.move_to_end(event_id)
            pdu = hit[3]
        else:
            rv = get_room_version(version)
            pdu = decode_pdu_json(_load_event_json(text, rv.strict_canonicaljson), rv)
            self._keep_parsed(event_id, text, version, pdu)
        return StoredEvent(pdu, int(row[1]), int(row[2]), row[3], bool(row[4]), bool(row[5]),
                           None if row[6] is None else int(row[6]), row[7])

    def _keep_parsed(self, event_id: str, text: str, version: str, pdu: PDU) -> None:
        """Keep ``pdu`` as the parsed form of its stored JSON ``text`` (room ``version``)."""
        self._parsed[event_id] = (hash(text), len(text), version, pdu)
        self._parsed.move_to_end(event_id)
        while len(self._parsed) > self.parsed_events:
            self._parsed.popitem(last=False)

    async def get_event(self, event_id: str) -> StoredEvent | None:
        found = await self.get_events([event_id])
        return found.get(event_id)

    async def get_events(self, event_ids: Iterable[str]) -> dict[str, StoredEvent]:
        ids = list(dict.fromkeys(event_ids))
        out: dict[str, StoredEvent] = {}
        for i in range(0, len(ids), 500):
            chunk = ids[i:i + 500]
            rows = await self.db.fetch(
                f"SELECT {_EVENT_COLUMNS} FROM events e JOIN rooms r ON r.room_id = e.room_id"
                f" WHERE event_id IN ({_placeholders(len(chunk))})",
                *chunk,
            )
            for row in rows:
                out[row[10]] = self._row_to_event(row)
        return out

    async def get_room_events(
        self,
        room_id: str,
        *,
        from_pos: int | None,
        backwards: bool,
        limit: int,
        to_pos: int | None = None,
        types: Sequence[str] | None = None,
        not_types: Sequence[str] = (),
        senders: Sequence[str] | None = None,
        not_senders: Sequence[str] = (),
    ) -> list[StoredEvent]:
        """Timeline events of a room in stream order (outliers and rejected and
        soft-failed events excluded).

        Backwards: positions ``<= from_pos`` (and ``> to_pos``), newest first. Forwards:
        positions ``> from_pos`` (and ``<= to_pos``), oldest first.
        """
        where, args, arg = _timeline_where(room_id)
        where += stream_range(backwards, from_pos, to_pos, arg)
        if not _event_conditions(where, arg, types, not_types, senders, not_senders):
            return []
        order = "DESC" if backwards else "ASC"
        rows = await self.db.fetch(
            f"SELECT {_EVENT_COLUMNS} FROM events e JOIN rooms r ON r.room_id = e.room_id"
            f" WHERE {' AND '.join(where)} ORDER BY stream_ordering {order} LIMIT {arg(int(limit))}",
            *args,
        )
        return [self._row_to_event(r) for r in rows]

    async def get_room_events_topological(
        self,
        room_id: str,
        *,
        from_key: tuple[int, int] | None,
        backwards: bool,
        limit: int,
        to_key: tuple[int, int] | None = None,
        types: Sequence[str] | None = None,
        not_types: Sequence[str] = (),
        senders: Sequence[str] | None = None,
        not_senders: Sequence[str] = (),
    ) -> list[StoredEvent]:
        """Timeline events of a room in topological order: by (depth, stream position),
        the keys compared as pairs (the conditions and exclusions of ``get_room_events``).

        Backwards: keys ``<= from_key`` (and ``> to_key``), latest first. Forwards: keys
        ``> from_key`` (and ``<= to_key``), earliest first.
        """
        where, args, arg = _timeline_where(room_id)
        low, high = (to_key, from_key) if backwards else (from_key, to_key)
        if low is not None:
            where.append(f"(depth, stream_ordering) > ({arg(int(low[0]))}, {arg(int(low[1]))})")
        if high is not None:
            where.append(f"(depth, stream_ordering) <= ({arg(int(high[0]))}, {arg(int(high[1]))})")
        if not _event_conditions(where, arg, types, not_types, senders, not_senders):
            return []
        order = "DESC" if backwards else "ASC"
        rows = await self.db.fetch(
            f"SELECT {_EVENT_COLUMNS} FROM events e JOIN rooms r ON r.room_id = e.room_id"
            f" WHERE {' AND '.join(where)} ORDER BY depth {order}, stream_ordering {order}"
            f" LIMIT {arg(int(limit))}",
            *args,
        )
        return [self._row_to_event(r) for r in rows]

    async def get_topological_key(self, room_id: str, stream_pos: int) -> tuple[int, int]:
        """The topological key of a stream token ``s<stream_pos>`` in a room: the point
        before every timeline event after ``stream_pos`` (its depth is the lowest among
        them; without such events, the highest depth up to ``stream_pos``), so that
        paging back from it never returns an event a client saw after the token."""
        timeline = "room_id = $1 AND outlier = FALSE AND rejected_reason IS NULL AND soft_failed = FALSE"
        depth = await self.db.fetchval(
            f"SELECT MIN(depth) FROM events WHERE {timeline} AND stream_ordering > $2", room_id, stream_pos)
        if depth is None:
            depth = await self.db.fetchval(
                f"SELECT MAX(depth) FROM events WHERE {timeline} AND stream_ordering <= $2", room_id, stream_pos)
        return (int(depth or 0), int(stream_pos))

    async def get_backward_extremities(self, room_id: str, *, max_depth: int | None = None,
                                       min_depth: int | None = None, oldest: bool = False,
                                       scan: int = 1000) -> list[str]:
        """The room's *backward extremities* near a place in its history: prev events,
        not in the room's timeline, of the timeline events with depths in
        ``[min_depth, max_depth]``, scanning at most ``scan`` events down from
        ``max_depth`` (``oldest``: up from the room's oldest). A prev event we hold in
        another room is none: it can never join this room's timeline (a remote linking
        rooms must not let pagination cross into another room), nor one we rejected
        (known, and never to be shown)."""
        where, args, arg = _timeline_where(room_id)
        if max_depth is not None:
            where.append(f"depth <= {arg(int(max_depth))}")
        if min_depth is not None:
            where.append(f"depth >= {arg(int(min_depth))}")
        order = "ASC" if oldest else "DESC"
        rows = await self.db.fetch(
            "SELECT DISTINCT ed.prev_event_id FROM (SELECT event_id FROM events e"
            f"  WHERE {' AND '.join(where)} ORDER BY depth {order}, stream_ordering {order}"
            f"  LIMIT {arg(int(scan))}) o"
            " JOIN event_edges ed ON ed.event_id = o.event_id"
            " WHERE NOT EXISTS (SELECT 1 FROM events p WHERE p.event_id = ed.prev_event_id"
            "  AND (p.outlier = FALSE OR p.room_id <> $1 OR p.rejected_reason IS NOT NULL))",
            *args,
        )
        return sorted(r[0] for r in rows)

    async def get_events_at_positions(self, positions: Iterable[int]) -> list[StoredEvent]:
        """Events by events-stream position, in position order."""
        pos = sorted(set(positions))
        if not pos:
            return []
        rows = await self.db.fetch(
            f"SELECT {_EVENT_COLUMNS} FROM events e JOIN rooms r ON r.room_id = e.room_id"
            f" WHERE stream_ordering IN ({_placeholders(len(pos))}) ORDER BY stream_ordering",
            *pos,
        )
        return [self._row_to_event(r) for r in rows]

    async def get_event_near_ts(self, room_id: str, ts: int, *, forwards: bool) -> StoredEvent | None:
        """The first timeline event at or after ``ts`` (forwards) or the last at or
        before it (backwards), by ``origin_server_ts`` (for /timestamp_to_event)."""
        op, order = (">=", "ASC") if forwards else ("<=", "DESC")
        row = await self.db.fetchrow(
            f"SELECT {_EVENT_COLUMNS} FROM events e JOIN rooms r ON r.room_id = e.room_id"
            f" WHERE e.room_id = $1 AND origin_server_ts {op} $2 AND outlier = FALSE"
            " AND rejected_reason IS NULL AND soft_failed = FALSE"
            f" ORDER BY origin_server_ts {order}, stream_ordering {order} LIMIT 1",
            room_id, ts,
        )
        return None if row is None else self._row_to_event(row)

    async def get_forward_extremities(self, room_id: str, conn: Connection | None = None) -> list[str]:
        rows = await (conn or self.db).fetch(
            "SELECT event_id FROM event_forward_extremities WHERE room_id = $1 ORDER BY event_id", room_id
        )
        return [r[0] for r in rows]

    async def get_depths(self, event_ids: Iterable[str]) -> dict[str, int]:
        ids = list(event_ids)
        if not ids:
            return {}
        rows = await self.db.fetch(
            f"SELECT event_id, depth FROM events WHERE event_id IN ({_placeholders(len(ids))})", *ids
        )
        return {r[0]: int(r[1]) for r in rows}

    async def get_prev_event_ids(self, event_id: str) -> list[str]:
        rows = await self.db.fetch("SELECT prev_event_id FROM event_edges WHERE event_id = $1", event_id)
        return [r[0] for r in rows]

    async def get_auth_event_ids(self, event_id: str) -> list[str]:
        rows = await self.db.fetch("SELECT auth_event_id FROM event_auth_edges WHERE event_id = $1", event_id)
        return [r[0] for r in rows]

    async def get_redactions_for(self, event_ids: Iterable[str]) -> dict[str, str]:
        """Redacted event ID -> the (first applied) redaction's event ID."""
        ids = list(event_ids)
        if not ids:
            return {}
        rows = await self.db.fetch(
            f"SELECT redacts, event_id FROM redactions WHERE redacts IN ({_placeholders(len(ids))})"
            " ORDER BY event_id",
            *ids,
        )
        out: dict[str, str] = {}
        for r in rows:
            out.setdefault(r[0], r[1])
        return out

    async def get_txn_event_id(self, user_id: str, device_id: str, txn_id: str) -> str | None:
        return await self.db.fetchval(
            "SELECT event_id FROM event_txn_ids WHERE user_id = $1 AND device_id = $2 AND txn_id = $3",
            user_id, device_id, txn_id,
        )

    async def get_txn_ids_for_events(self, event_ids: Iterable[str]) -> dict[str, tuple[str, str, str]]:
        """Event ID -> (user_id, device_id, txn_id) for events sent with a transaction ID
        (so /sync can give ``unsigned.transaction_id`` to the sending device)."""
        ids = list(event_ids)
        if not ids:
            return {}
        rows = await self.db.fetch(
            f"SELECT event_id, user_id, device_id, txn_id FROM event_txn_ids"
            f" WHERE event_id IN ({_placeholders(len(ids))})",
            *ids,
        )
        return {r[0]: (r[1], r[2], r[3]) for r in rows}

    # --- writing -----------------------------------------------------------------

    async def create_room_and_persist(
        self,
        *,
        room_id: str,
        room_version: RoomVersion,
        creator: str,
        created_ts: int,
        is_public: bool,
        writes: Sequence[EventWrite],
    ) -> PersistResult:
        """Insert the room row and its first events (a linear chain from the create
        event) in one transaction."""
        batch = await self._local_batch(room_id, writes, state_before=EMPTY_STATE, expected_head=0)
        room = (room_id, room_version.identifier, creator, is_public, created_ts)
        positions = await self.persist_batch(batch, received_ts=created_ts, new_room=room)
        return PersistResult(positions, batch.current)

    async def persist_events(
        self,
        room_id: str,
        writes: Sequence[EventWrite],
        *,
        state_before: StateSnapshot,
        expected_head: int,
        received_ts: int,
    ) -> PersistResult:
        """Persist new local events of a room with their state, in one transaction.

        ``writes`` is a linear chain (each event follows the one before) and
        ``state_before`` is the room's current state (group ``current_state_group``) before
        the first one. ``StaleHeadError`` (and nothing written) if the room's head is no
        longer ``expected_head``.
        """
        batch = await self._local_batch(room_id, writes, state_before=state_before, expected_head=expected_head)
        positions = await self.persist_batch(batch, received_ts=received_ts)
        return PersistResult(positions, batch.current)

    async def _local_batch(self, room_id: str, writes: Sequence[EventWrite], *, state_before: StateSnapshot,
                           expected_head: int) -> EventBatch:
        if not writes:
            raise ValueError("nothing to persist")
        batch = EventBatch(self.state, room_id, head=expected_head, current=state_before)
        for w in writes:  # a linear chain: each event's state before is the one before's after
            await batch.add(w.pdu, before=batch.current, rejected_reason=w.rejected_reason, txn=w.txn,
                            redaction_applies_to=w.redaction_applies_to)
        return batch

    async def persist_batch(self, batch: EventBatch, *, received_ts: int,
                            new_room: tuple[str, str, str | None, bool, int] | None = None,
                            cache_groups: bool = True) -> list[int]:
        """Write a batch of one room's events (``gateway.storage.event_batch``) in one
        transaction, and return their positions: timeline events take the next 'events'
        positions (in order), rejected and soft-failed ones 'backfill' positions (never
        new). With the events: their state groups, DAG edges, transaction IDs,
        redactions, relationships, the forward extremities, the current state with its
        deltas at each event's position and the membership table, and the room's head.
        ``StaleHeadError`` (nothing written) if the room's head is no longer
        ``batch.head``. ``new_room`` (room ID, version, creator, public, created_ts): the
        room row is inserted too (``RoomExistsError`` if it exists). ``cache_groups``: False
        when the batch's snapshots lack their full maps (a batch another process built)."""
        events = batch.events
        if not events:
            return []
        room_id = batch.room_id
        timeline = [e for e in events if e.timeline]
        texts = [encode_pdu_json(e.pdu) for e in events]
        async with self.db.transaction() as txn:
            if new_room is not None:
                try:
                    await txn.execute(
                        "INSERT INTO rooms (room_id, room_version, creator, is_public, created_ts)"
                        " VALUES ($1, $2, $3, $4, $5)", *new_room)
                except IntegrityError:
                    raise RoomExistsError(room_id) from None
            await write_state_groups(txn, batch.groups)
            outliers = [e.pdu.event_id for e in events if e.may_be_outlier]
            if outliers:
                await txn.execute(
                    f"DELETE FROM events WHERE outlier = TRUE AND event_id IN ({_placeholders(len(outliers))})",
                    *outliers)
            edge_rows, auth_rows, txn_rows, redaction_rows = [], [], [], []
            for e in events:
                pdu = e.pdu
                edge_rows += [(pdu.event_id, p, room_id) for p in dict.fromkeys(pdu.prev_event_ids)]
                auth_rows += [(pdu.event_id, a, room_id) for a in dict.fromkeys(pdu.auth_event_ids)]
                if e.txn is not None:
                    txn_rows.append((*e.txn, room_id, pdu.event_id, received_ts))
                if e.redaction_applies_to is not None and e.rejected_reason is None:
                    redaction_rows.append((pdu.event_id, e.redaction_applies_to, room_id))
            if txn.engine == "postgres" and not batch.replace_extremities:
                # One statement (one round trip) for the DAG's edges and the extremities.
                await self._write_links_postgres(txn, batch, timeline, edge_rows, auth_rows)
            else:
                if edge_rows:
                    await txn.executemany(
                        "INSERT INTO event_edges (event_id, prev_event_id, room_id) VALUES ($1, $2, $3)"
                        " ON CONFLICT (event_id, prev_event_id) DO NOTHING", edge_rows)
                if auth_rows:
                    await txn.executemany(
                        "INSERT INTO event_auth_edges (event_id, auth_event_id, room_id) VALUES ($1, $2, $3)"
                        " ON CONFLICT (event_id, auth_event_id) DO NOTHING", auth_rows)
                if timeline:
                    await self._write_extremities(txn, batch, timeline)
            if txn_rows:
                await txn.executemany(
                    "INSERT INTO event_txn_ids (user_id, device_id, txn_id, room_id, event_id, inserted_ts)"
                    " VALUES ($1, $2, $3, $4, $5, $6)", txn_rows)
            if redaction_rows:
                await txn.executemany(
                    "INSERT INTO redactions (event_id, redacts, room_id) VALUES ($1, $2, $3)"
                    " ON CONFLICT (event_id) DO NOTHING", redaction_rows)

            # Positions last: the counter's row lock is held until commit.
            positions: dict[str, int] = {}
            if timeline:
                last = await next_position(txn, "events", len(timeline))
                positions.update((e.pdu.event_id, p) for e, p in zip(timeline, range(last - len(timeline) + 1,
                                                                                        last + 1)))
            others = [e for e in events if not e.timeline]
            if others:
                low = await next_position(txn, "backfill", -len(others))
                positions.update((e.pdu.event_id, low + len(others) - 1 - i) for i, e in enumerate(others))
            await txn.executemany(
                "INSERT INTO events (event_id, stream_ordering, room_id, type, state_key, sender, depth,"
                " origin_server_ts, received_ts, json, rejected_reason, soft_failed, state_group, replaces_state)"
                " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
                [(e.pdu.event_id, positions[e.pdu.event_id], room_id, e.pdu.type, e.pdu.state_key, e.pdu.sender,
                  e.pdu.depth, e.pdu.origin_server_ts, received_ts, text, e.rejected_reason,
                  e.soft_failed, e.state_after.group, e.replaces_state) for e, text in zip(events, texts)],
            )
            # What is derived from timeline events beside the events table (relationships,
            # threads, the search index) and from the redactions that apply.
            await write_relations(txn, [e.pdu for e in timeline])
            await note_timeline_events(txn, [(e.pdu, positions[e.pdu.event_id]) for e in timeline])
            await note_redactions(txn, [r[1] for r in redaction_rows])
            if timeline:
                steps = [(positions[e.pdu.event_id], e.current_state_changes) for e in timeline
                         if e.current_state_changes]
                if steps:
                    known: dict[str, Any] = {**batch.state_events, **batch.pdus(e.pdu.event_id for e in timeline)}
                    await _read_member_events(txn, steps, known)
                    await apply_current_state_steps(txn, room_id=room_id, steps=steps,
                                                    previous=batch.current_before.state, events=known)
                changed = await txn.execute(
                    "UPDATE rooms SET head_stream_ordering = $3, current_state_group = $4"
                    " WHERE room_id = $1 AND head_stream_ordering = $2",
                    room_id, batch.head, positions[timeline[-1].pdu.event_id], batch.current.group,
                )
                if changed != 1:
                    raise StaleHeadError(room_id)
        for g in batch.groups if cache_groups else ():
            self.state.cache_snapshot(g.snapshot)
        # The PDUs just written are what reading their rows would parse (rooms with strict
        # canonical JSON: no float that would read back as an integer): readers (the /syncs
        # the write wakes) share them rather than parse a copy each.
        for e, text in zip(events, texts):
            if e.pdu.room_version.strict_canonicaljson:
                self._keep_parsed(e.pdu.event_id, text, e.pdu.room_version.identifier, e.pdu)
        return [positions[e.pdu.event_id] for e in events]

    @staticmethod
    def _extremity_changes(batch: EventBatch, timeline: Sequence[PersistEvent]) -> tuple[list[str], list[str]]:
        """The stored forward extremities the batch's timeline events replace (their
        prev events), and those of its events the batch leaves as extremities. The
        batch's own events are not stored yet, so none of them is a stored extremity:
        of a linear run, only the first event's prev events are deleted."""
        batch_ids = {e.pdu.event_id for e in batch.events}
        prevs = list({p for e in timeline for p in e.pdu.prev_event_ids} - batch.extremities - batch_ids)
        return prevs, [e.pdu.event_id for e in timeline if e.pdu.event_id in batch.extremities]

    @classmethod
    async def _write_links_postgres(cls, txn: Connection, batch: EventBatch, timeline: Sequence[PersistEvent],
                                    edge_rows: list[tuple], auth_rows: list[tuple]) -> None:
        """PostgreSQL: prev and auth edges and the forward extremities' changes in one
        statement (data-modifying WITH clauses over arrays): one round trip where four
        took one each. The parts touch different rows (the extremities added are new
        events, those deleted stored ones), so seeing one snapshot is right."""
        args: list[Any] = []

        def arrays(*columns: Sequence[Any]) -> str:
            first = len(args) + 1
            args.extend(list(c) for c in columns)
            return ", ".join(f"${first + i}::text[]" for i in range(len(columns)))

        parts = []
        if edge_rows:
            parts.append("INSERT INTO event_edges (event_id, prev_event_id, room_id) SELECT * FROM unnest("
                         f"{arrays(*zip(*edge_rows))}) ON CONFLICT (event_id, prev_event_id) DO NOTHING")
        if auth_rows:
            parts.append("INSERT INTO event_auth_edges (event_id, auth_event_id, room_id) SELECT * FROM unnest("
                         f"{arrays(*zip(*auth_rows))}) ON CONFLICT (event_id, auth_event_id) DO NOTHING")
        if timeline:
            prevs, added = cls._extremity_changes(batch, timeline)
            if prevs:
                args.append(batch.room_id)
                room = f"${len(args)}"
                parts.append(f"DELETE FROM event_forward_extremities WHERE room_id = {room}"
                             f" AND event_id = ANY({arrays(prevs)})")
            if added:
                parts.append("INSERT INTO event_forward_extremities (room_id, event_id) SELECT * FROM unnest("
                             f"{arrays([batch.room_id] * len(added), added)})"
                             " ON CONFLICT (room_id, event_id) DO NOTHING")
        if not parts:
            return
        sql = parts[-1] if len(parts) == 1 else (
            "WITH " + ", ".join(f"w{i} AS ({p})" for i, p in enumerate(parts[:-1])) + " " + parts[-1])
        await txn.execute(sql, *args)

    @classmethod
    async def _write_extremities(cls, txn: Connection, batch: EventBatch, timeline: Sequence[PersistEvent]) -> None:
        """The batch's timeline events replace their prev events among the forward
        extremities; those of them the batch left as extremities are added."""
        room_id = batch.room_id
        if batch.replace_extremities:
            await txn.execute("DELETE FROM event_forward_extremities WHERE room_id = $1", room_id)
        prevs, added_ids = cls._extremity_changes(batch, timeline)
        if prevs:  # executemany: on SQLite it goes with the next statement's trip
            await txn.executemany(
                "DELETE FROM event_forward_extremities WHERE room_id = $1 AND event_id = $2",
                [(room_id, p) for p in prevs])
        added = [(room_id, e) for e in added_ids]
        if added:
            await txn.executemany(
                "INSERT INTO event_forward_extremities (room_id, event_id) VALUES ($1, $2)"
                " ON CONFLICT (room_id, event_id) DO NOTHING", added)

    # --- events received over federation -------------------------------------------
    # Used by gateway.services.federation.receive (the PDU receipt pipeline); see there.

    async def ensure_room(self, room_id: str, room_version: RoomVersion, *, creator: str | None,
                          created_ts: int) -> bool:
        """Insert the room row if missing (a room first seen over federation). True if new."""
        changed = await self.db.execute(
            "INSERT INTO rooms (room_id, room_version, creator, is_public, created_ts) VALUES ($1, $2, $3, FALSE, $4)"
            " ON CONFLICT (room_id) DO NOTHING",
            room_id, room_version.identifier, creator, created_ts,
        )
        return changed == 1

    async def get_event_meta(self, event_ids: Iterable[str]) -> dict[str, EventMeta]:
        """What we know about events without parsing them (one query per 500 IDs)."""
        ids = list(dict.fromkeys(event_ids))
        out: dict[str, EventMeta] = {}
        for i in range(0, len(ids), 500):
            chunk = ids[i:i + 500]
            rows = await self.db.fetch(
                "SELECT event_id, room_id, depth, outlier, rejected_reason, soft_failed, state_group, stream_ordering"
                f" FROM events WHERE event_id IN ({_placeholders(len(chunk))})",
                *chunk,
            )
            for r in rows:
                out[r[0]] = EventMeta(r[0], r[1], int(r[2]), bool(r[3]), r[4], bool(r[5]),
                                      None if r[6] is None else int(r[6]), int(r[7]))
        return out

    async def persist_outliers(
        self, room_id: str, events: Sequence[tuple[PDU, str | None]], *, received_ts: int
    ) -> list[str]:
        """Store events whose state we do not know (an auth chain, the state of a join)
        as outliers, in one transaction: backfill-stream positions (never new), no
        forward extremity, no state group. ``events`` are (pdu, rejected_reason) pairs;
        ones already stored are left alone. Returns the IDs of those that were not
        stored when we looked (stored now, by us or by a concurrent writer).

        Bulk: rows go in with ``COPY`` on PostgreSQL (if another writer stored one of
        the events meanwhile, the batch is written again skipping duplicates)."""
        if not events:
            return []
        ids = [p.event_id for p, _ in events]
        known = set((await self.get_event_meta(ids)).keys())
        todo = [(p, r) for p, r in dict((p.event_id, (p, r)) for p, r in events).values() if p.event_id not in known]
        if not todo:
            return []
        if self.db.engine == "postgres":
            try:
                await self._write_outliers(room_id, todo, received_ts, copy=True)
                return [p.event_id for p, _ in todo]
            except IntegrityError:
                pass  # stored meanwhile by another writer: skip those
        await self._write_outliers(room_id, todo, received_ts, copy=False)
        return [p.event_id for p, _ in todo]

    async def _write_outliers(self, room_id: str, todo: Sequence[tuple[PDU, str | None]], received_ts: int, *,
                              copy: bool) -> None:
        async with self.db.transaction() as txn:
            last = await next_position(txn, "backfill", -len(todo))
            positions = range(last + len(todo) - 1, last - 1, -1)
            for i in range(0, len(todo), _WRITE_CHUNK):
                rows, auth_rows = [], []
                for (pdu, rejected), pos in zip(todo[i:i + _WRITE_CHUNK], positions[i:i + _WRITE_CHUNK]):
                    rows.append((
                        pdu.event_id, pos, room_id, pdu.type, pdu.state_key, pdu.sender, pdu.depth,
                        pdu.origin_server_ts, received_ts, encode_pdu_json(pdu), rejected, True,
                    ))
                    auth_rows += [(pdu.event_id, a, room_id) for a in dict.fromkeys(pdu.auth_event_ids)]
                # Outliers may join the timeline later (backfill): their relationships count then.
                await write_relations(txn, [pdu for pdu, rejected in todo[i:i + _WRITE_CHUNK] if rejected is None])
                if copy:
                    await txn.copy_rows("events", _OUTLIER_COLUMNS, rows)
                    await txn.copy_rows("event_auth_edges", ("event_id", "auth_event_id", "room_id"), auth_rows)
                    continue
                await txn.executemany(
                    f"INSERT INTO events ({', '.join(_OUTLIER_COLUMNS)})"
                    " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) ON CONFLICT (event_id) DO NOTHING",
                    rows,
                )
                if auth_rows:
                    await txn.executemany(
                        "INSERT INTO event_auth_edges (event_id, auth_event_id, room_id) VALUES ($1, $2, $3)"
                        " ON CONFLICT (event_id, auth_event_id) DO NOTHING",
                        auth_rows,
                    )

    async def get_timeline_children(self, event_ids: Iterable[str]) -> set[str]:
        """Those of ``event_ids`` that a stored timeline event names as a prev event (an
        event that arrives after its children is not a forward extremity)."""
        ids = list(dict.fromkeys(event_ids))
        children: dict[str, set[str]] = {}
        for i in range(0, len(ids), 500):  # mostly none: one index lookup each
            chunk = ids[i:i + 500]
            rows = await self.db.fetch(
                f"SELECT prev_event_id, event_id FROM event_edges WHERE prev_event_id IN ({_placeholders(len(chunk))})",
                *chunk,
            )
            for r in rows:
                children.setdefault(r[1], set()).add(r[0])
        if not children:
            return set()
        metas = await self.get_event_meta(children)
        return {p for child, m in metas.items() if not m.outlier and m.rejected_reason is None and not m.soft_failed
                for p in children[child]}

    async def get_auth_chain_ids(self, event_ids: Iterable[str]) -> set[str]:
        """The auth chain of events (their auth events, recursively; not themselves)."""
        ids = list(dict.fromkeys(event_ids))
        out: set[str] = set()
        for i in range(0, len(ids), 500):
            chunk = [e for e in ids[i:i + 500] if e not in out]
            if not chunk:
                continue
            rows = await self.db.fetch(
                "WITH RECURSIVE chain(event_id) AS ("
                f" SELECT auth_event_id FROM event_auth_edges WHERE event_id IN ({_placeholders(len(chunk))})"
                " UNION SELECT a.auth_event_id FROM event_auth_edges a JOIN chain c ON a.event_id = c.event_id"
                ") SELECT event_id FROM chain",
                *chunk,
            )
            out.update(r[0] for r in rows)
        return out

    async def get_prev_edges(self, event_ids: Iterable[str]) -> dict[str, list[tuple[str, int]]]:
        """event ID -> [(prev event ID, its depth)] for the prev events we have stored."""
        ids = list(dict.fromkeys(event_ids))
        out: dict[str, list[tuple[str, int]]] = {}
        for i in range(0, len(ids), 500):
            chunk = ids[i:i + 500]
            rows = await self.db.fetch(
                "SELECT ed.event_id, ed.prev_event_id, e.depth FROM event_edges ed"
                " JOIN events e ON e.event_id = ed.prev_event_id"
                f" WHERE ed.event_id IN ({_placeholders(len(chunk))})",
                *chunk,
            )
            for r in rows:
                out.setdefault(r[0], []).append((r[1], int(r[2])))
        return out

@dataclass(frozen=True)
class _MemberEvent:
    sender: str
    content: Mapping[str, Any]


async def _read_member_events(txn: Connection, steps: Sequence[tuple[int, Mapping[StateKey, str | None]]],
                              known: dict[str, Any]) -> None:
    """Add to ``known`` the member events the steps put in the current state that the
    caller did not hold (read from the database, inside the transaction)."""
    wanted = list({e for _, changes in steps for k, e in changes.items()
                   if k[0] == "m.room.member" and e is not None and e not in known})
    for i in range(0, len(wanted), 500):
        chunk = wanted[i:i + 500]
        rows = await txn.fetch(
            f"SELECT event_id, json FROM events WHERE event_id IN ({_placeholders(len(chunk))})", *chunk)
        for r in rows:
            body = json.loads(r[1])
            known[r[0]] = _MemberEvent(body.get("sender", ""), body.get("content") or {})


_INSERT_RELATION = (
    "INSERT INTO event_relations (event_id, relates_to_id, rel_type, room_id, type, sender, aggregation_key)"
    " VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (event_id) DO NOTHING")


_NOTE_THREAD = (
    "INSERT INTO threads (room_id, root_id, latest_position) VALUES ($1, $2, $3)"
    " ON CONFLICT (room_id, root_id) DO UPDATE SET latest_position = CASE"
    " WHEN excluded.latest_position > threads.latest_position THEN excluded.latest_position"
    " ELSE threads.latest_position END")
#: A thread's newest counted reply (the rules of ``storage.relations``).
_THREAD_LATEST = (
    "SELECT MAX(e.stream_ordering) FROM event_relations r JOIN events e ON e.event_id = r.event_id"
    " WHERE r.relates_to_id = threads.root_id AND r.room_id = threads.room_id AND r.rel_type = 'm.thread'"
    " AND e.outlier = FALSE AND e.rejected_reason IS NULL AND e.soft_failed = FALSE"
    " AND NOT EXISTS (SELECT 1 FROM redactions rd WHERE rd.redacts = r.event_id)")


async def write_relations(conn: Connection, pdus: Iterable[PDU]) -> None:
    """Record the relationships (``m.relates_to``) of newly stored events, inside the
    caller's transaction (read by ``storage.relations``)."""
    rows = []
    for pdu in pdus:
        rel = relation_of(pdu.content)
        if rel is not None:
            rows.append((pdu.event_id, rel.event_id, rel.rel_type, pdu.room_id, pdu.type, pdu.sender, rel.key))
    if rows:
        await conn.executemany(_INSERT_RELATION, rows)


async def note_thread_replies(conn: Connection, events: Iterable[tuple[PDU, int]]) -> None:
    """Events (with their positions) that joined a room's timeline: thread replies move
    their thread's latest activity (the ``threads`` table behind /threads)."""
    rows = []
    for pdu, position in events:
        rel = relation_of(pdu.content)
        if rel is not None and rel.rel_type == THREAD:
            rows.append((pdu.room_id, rel.event_id, position))
    if rows:
        await conn.executemany(_NOTE_THREAD, rows)


async def note_timeline_events(conn: Connection, events: Sequence[tuple[PDU, int]]) -> None:
    """Events (with their positions) that joined a room's timeline: what is derived from
    them beside the events table follows (thread activity, the search index)."""
    await note_thread_replies(conn, events)
    await index_events(conn, events)


async def note_redactions(conn: Connection, redacted_ids: Sequence[str]) -> None:
    """Redactions that apply: the redacted events leave the search index, and a thread
    reply's relationship breaks: its thread's latest activity is read again from the
    replies that still count (the thread goes when none does)."""
    if not redacted_ids:
        return
    await unindex_events(conn, redacted_ids)
    roots = ("SELECT relates_to_id FROM event_relations WHERE rel_type = 'm.thread'"
             f" AND event_id IN ({_placeholders(len(redacted_ids))})")
    await conn.execute(f"DELETE FROM threads WHERE root_id IN ({roots}) AND ({_THREAD_LATEST}) IS NULL", *redacted_ids)
    await conn.execute(f"UPDATE threads SET latest_position = ({_THREAD_LATEST}) WHERE root_id IN ({roots})",
                       *redacted_ids)


def decode_pdu_json(pdu_json: dict[str, Any], rv: RoomVersion) -> PDU:
    """A PDU from its stored form (``encode_pdu_json``, parsed)."""
    if rv.event_format is EventFormat.V1:
        event_id = pdu_json["event_id"]
    else:
        event_id = pdu_json.pop("event_id", None) or compute_event_id(pdu_json, rv)
    return PDU(pdu_json, rv, event_id)


def encode_pdu_json(pdu: PDU) -> str:
    """The stored form: canonical JSON of the wire form, plus ``event_id`` for rooms
    whose events do not carry it (so reading never recomputes a hash)."""
    body = pdu.get_pdu_json()
    body.setdefault("event_id", pdu.event_id)
    # Rooms 6+: the format check refused floats, so the float walk would only cost time.
    return encode_canonical_json(body, assume_no_floats=pdu.room_version.strict_canonicaljson).decode("utf-8")

