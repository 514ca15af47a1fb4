"""Federation destinations: retry state per remote server, what each has been sent per
room, and the sender's position in the events stream (migration 0008).

Also the reads the federation sender makes of the event tables (new events, joined
members, membership changes), each one query for a whole batch.
Background: Synapse's ``destinations`` / ``destination_rooms`` tables, whose columns its
admin API exposes (https://element-hq.github.io/synapse/latest/usage/administration/admin_api/federation.html).
"""

from __future__ import annotations

import json

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from .database import Connection, Database
from .state import _placeholders

#: Admin API ``order_by`` values (Synapse's) -> column.
DESTINATION_ORDER_COLUMNS = ("destination", "retry_last_ts", "retry_interval", "failure_ts",
                             "last_successful_stream_ordering")

_DEST_COLUMNS = "destination, retry_last_ts, retry_interval, failure_ts, last_successful_stream_ordering"
_CHUNK = 500


@dataclass(frozen=True)
class DestinationRow:
    destination: str
    retry_last_ts: int
    retry_interval: int
    failure_ts: int | None
    last_successful_stream_ordering: int | None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _row(r: Any) -> DestinationRow:
    return DestinationRow(r[0], int(r[1]), int(r[2]), None if r[3] is None else int(r[3]),
                          None if r[4] is None else int(r[4]))


@dataclass(frozen=True)
class NewEventRow:
    event_id: str
    room_id: str
    type: str
    state_key: str | None
    sender: str
    stream_ordering: int


@dataclass(frozen=True)
class MemberDelta:
    """A change of one user's membership in current state, at a stream position."""

    room_id: str
    user_id: str
    event_id: str | None
    prev_event_id: str | None
    stream_ordering: int


def _chunks(items: Sequence[Any], size: int = _CHUNK) -> Iterable[Sequence[Any]]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


class DestinationStore:
    def __init__(self, db: Database):
        self.db = db

    # --- retry state -------------------------------------------------------------

    async def get_destination(self, destination: str) -> DestinationRow | None:
        row = await self.db.fetchrow(f"SELECT {_DEST_COLUMNS} FROM destinations WHERE destination = $1",
                                     destination)
        return None if row is None else _row(row)

    async def get_destinations(self, destinations: Iterable[str]) -> dict[str, DestinationRow]:
        names = sorted(set(destinations))
        out: dict[str, DestinationRow] = {}
        for chunk in _chunks(names):
            rows = await self.db.fetch(
                f"SELECT {_DEST_COLUMNS} FROM destinations WHERE destination IN ({_placeholders(len(chunk))})",
                *chunk,
            )
            for r in rows:
                out[r[0]] = _row(r)
        return out

    async def set_retry_timings(self, destination: str, *, retry_last_ts: int, retry_interval: int,
                                failure_ts: int | None) -> None:
        await self.db.execute(
            "INSERT INTO destinations (destination, retry_last_ts, retry_interval, failure_ts)"
            " VALUES ($1, $2, $3, $4) ON CONFLICT (destination) DO UPDATE SET"
            " retry_last_ts = excluded.retry_last_ts, retry_interval = excluded.retry_interval,"
            " failure_ts = excluded.failure_ts",
            destination, retry_last_ts, retry_interval, failure_ts,
        )

    async def reset_retry_timings(self, destination: str) -> bool:
        """Forget a destination's failures; True if it was backing off."""
        changed = await self.db.execute(
            "UPDATE destinations SET retry_last_ts = 0, retry_interval = 0, failure_ts = NULL"
            " WHERE destination = $1 AND (retry_interval > 0 OR retry_last_ts > 0 OR failure_ts IS NOT NULL)",
            destination,
        )
        return changed > 0

    async def get_backing_off(self) -> list[DestinationRow]:
        rows = await self.db.fetch(f"SELECT {_DEST_COLUMNS} FROM destinations WHERE retry_interval > 0")
        return [_row(r) for r in rows]

    async def set_last_successful(self, destination: str, stream_ordering: int) -> None:
        """Everything for ``destination`` up to ``stream_ordering`` has been sent (never
        moves backwards)."""
        await self.db.execute(
            "INSERT INTO destinations (destination, last_successful_stream_ordering) VALUES ($1, $2)"
            " ON CONFLICT (destination) DO UPDATE SET last_successful_stream_ordering = $2"
            " WHERE destinations.last_successful_stream_ordering IS NULL"
            " OR destinations.last_successful_stream_ordering < $2",
            destination, stream_ordering,
        )

    # --- the sender's position and what each destination must receive ------------

    async def get_sender_position(self, instance: str | None = None) -> int:
        """The sender's position; ``instance``: one of several senders (sharded), which
        starts, the first time, where the slowest of the others is (else where the single
        sender was): nothing its destinations were owed is skipped."""
        if instance is not None:
            row = await self.db.fetchrow(
                "SELECT stream_ordering FROM federation_sender_instance_positions WHERE instance_name = $1", instance)
            if row is not None:
                return int(row[0])
            low = await self.db.fetchval("SELECT MIN(stream_ordering) FROM federation_sender_instance_positions")
            if low is not None:
                return int(low)
        return int(await self.db.fetchval("SELECT stream_ordering FROM federation_sender_position") or 0)

    async def get_instance_positions(self) -> dict[str, int]:
        """Each of several senders' position (``federation_sender_instances``)."""
        rows = await self.db.fetch("SELECT instance_name, stream_ordering FROM federation_sender_instance_positions")
        return {r[0]: int(r[1]) for r in rows}

    async def delete_instance_positions(self, instances: Sequence[str]) -> None:
        """Forget the positions of senders no longer in ``federation_sender_instances``."""
        await self.db.executemany("DELETE FROM federation_sender_instance_positions WHERE instance_name = $1",
                                  [(i,) for i in instances])

    async def save_batch(self, position: int, destination_rooms: Mapping[tuple[str, str], int],
                         instance: str | None = None) -> None:
        """In one transaction: the newest position per (destination, room) from a batch of
        new events, the destinations' rows, and the sender's (``instance``'s) new position."""
        async with self.db.transaction() as txn:
            if destination_rooms:
                await txn.executemany(
                    "INSERT INTO destination_rooms (destination, room_id, stream_ordering) VALUES ($1, $2, $3)"
                    " ON CONFLICT (destination, room_id) DO UPDATE SET stream_ordering = excluded.stream_ordering"
                    " WHERE destination_rooms.stream_ordering < excluded.stream_ordering",
                    [(d, r, p) for (d, r), p in sorted(destination_rooms.items())],
                )
                await txn.executemany(
                    "INSERT INTO destinations (destination) VALUES ($1) ON CONFLICT (destination) DO NOTHING",
                    [(d,) for d in sorted({d for d, _ in destination_rooms})],
                )
            if instance is not None:
                await txn.execute(
                    "INSERT INTO federation_sender_instance_positions (instance_name, stream_ordering) VALUES ($1, $2)"
                    " ON CONFLICT (instance_name) DO UPDATE SET stream_ordering = excluded.stream_ordering"
                    " WHERE federation_sender_instance_positions.stream_ordering < excluded.stream_ordering",
                    instance, position)
                return
            await txn.execute(
                "UPDATE federation_sender_position SET stream_ordering = $1 WHERE stream_ordering < $1", position
            )

    async def get_destinations_with_backlog(self) -> list[str]:
        """Destinations with an event in some room newer than what they last received."""
        rows = await self.db.fetch(
            "SELECT DISTINCT dr.destination FROM destination_rooms dr"
            " LEFT JOIN destinations d ON d.destination = dr.destination"
            " WHERE dr.stream_ordering > COALESCE(d.last_successful_stream_ordering, 0)"
            " ORDER BY dr.destination"
        )
        return [r[0] for r in rows]

    async def get_catch_up_rooms(self, destination: str, after: int, limit: int) -> list[tuple[str, int]]:
        """(room_id, stream_ordering) of rooms with events for ``destination`` newer than
        ``after``, oldest first."""
        rows = await self.db.fetch(
            "SELECT room_id, stream_ordering FROM destination_rooms WHERE destination = $1 AND stream_ordering > $2"
            " ORDER BY stream_ordering LIMIT $3",
            destination, after, limit,
        )
        return [(r[0], int(r[1])) for r in rows]

    # --- reads of the event tables ------------------------------------------------

    async def get_new_events(self, after: int, limit: int, conn: Connection | None = None) -> list[NewEventRow]:
        """Timeline events with positions above ``after`` (oldest first)."""
        rows = await (conn or self.db).fetch(
            "SELECT event_id, room_id, type, state_key, sender, stream_ordering FROM events"
            " WHERE stream_ordering > $1 AND outlier = FALSE AND rejected_reason IS NULL AND soft_failed = FALSE"
            " ORDER BY stream_ordering LIMIT $2",
            after, limit,
        )
        return [NewEventRow(r[0], r[1], r[2], r[3], r[4], int(r[5])) for r in rows]

    async def get_room_events_between(self, room_ids: Sequence[str], after: int, upto: int,
                                      limit: int) -> list[NewEventRow]:
        """Timeline events of ``room_ids`` with ``after < position <= upto``, oldest first."""
        if not room_ids:
            return []
        rows = await self.db.fetch(
            "SELECT event_id, room_id, type, state_key, sender, stream_ordering FROM events"
            f" WHERE room_id IN ({_placeholders(len(room_ids), 4)}) AND stream_ordering > $1"
            " AND stream_ordering <= $2 AND outlier = FALSE AND rejected_reason IS NULL AND soft_failed = FALSE"
            " ORDER BY stream_ordering LIMIT $3",
            after, upto, limit, *room_ids,
        )
        return [NewEventRow(r[0], r[1], r[2], r[3], r[4], int(r[5])) for r in rows]

    async def get_event_ids_at(self, positions: Iterable[int]) -> dict[int, str]:
        wanted = sorted(set(positions))
        out: dict[int, str] = {}
        for chunk in _chunks(wanted):
            rows = await self.db.fetch(
                f"SELECT stream_ordering, event_id FROM events WHERE stream_ordering IN ({_placeholders(len(chunk))})",
                *chunk,
            )
            out.update({int(r[0]): r[1] for r in rows})
        return out

    async def get_joined_members(self, room_ids: Iterable[str]) -> dict[str, dict[str, int]]:
        """room -> {joined user: position of their membership event}."""
        rooms = sorted(set(room_ids))
        out: dict[str, dict[str, int]] = {r: {} for r in rooms}
        for chunk in _chunks(rooms):
            rows = await self.db.fetch(
                "SELECT room_id, user_id, stream_ordering FROM room_memberships"
                f" WHERE membership = 'join' AND room_id IN ({_placeholders(len(chunk))})",
                *chunk,
            )
            for r in rows:
                out[r[0]][r[1]] = int(r[2])
        return out

    async def get_joined_servers(self, room_id: str) -> set[str]:
        """Servers with a joined member in the room (the database does the grouping)."""
        colon = "instr(user_id, ':')" if self.db.engine == "sqlite" else "strpos(user_id, ':')"
        rows = await self.db.fetch(
            f"SELECT DISTINCT substr(user_id, {colon} + 1) FROM room_memberships"
            " WHERE room_id = $1 AND membership = 'join'",
            room_id,
        )
        return {r[0] for r in rows}

    async def get_member_deltas_after(self, room_ids: Iterable[str], after: int) -> list[MemberDelta]:
        """Membership changes in current state after ``after``, newest first."""
        rooms = sorted(set(room_ids))
        out: list[MemberDelta] = []
        for chunk in _chunks(rooms):
            rows = await self.db.fetch(
                "SELECT room_id, state_key, event_id, prev_event_id, stream_ordering FROM current_state_deltas"
                f" WHERE type = 'm.room.member' AND stream_ordering > $1 AND room_id IN ({_placeholders(len(chunk), 2)})",
                after, *chunk,
            )
            out += [MemberDelta(r[0], r[1], r[2], r[3], int(r[4])) for r in rows]
        out.sort(key=lambda d: -d.stream_ordering)
        return out

    # --- admin API ----------------------------------------------------------------

    async def list_destinations(self, *, offset: int, limit: int, order_by: str = "destination",
                                backwards: bool = False, search: str | None = None) -> tuple[list[DestinationRow], int]:
        if order_by not in DESTINATION_ORDER_COLUMNS:
            raise ValueError(order_by)
        direction = "DESC" if backwards else "ASC"
        key = order_by if order_by != "failure_ts" and order_by != "last_successful_stream_ordering" \
            else f"COALESCE({order_by}, -1)"
        where, args = "", []
        if search:
            where, args = " WHERE LOWER(destination) LIKE $3 ESCAPE '\\'", [f"%{_escape_like(search.lower())}%"]
        rows = await self.db.fetch(
            f"SELECT {_DEST_COLUMNS} FROM destinations{where}"
            f" ORDER BY {key} {direction}, destination {direction} LIMIT $1 OFFSET $2",
            limit, offset, *args,
        )
        total = await self.db.fetchval(
            f"SELECT COUNT(*) FROM destinations{where.replace('$3', '$1')}", *args
        )
        return [_row(r) for r in rows], int(total)

    async def list_destination_rooms(self, destination: str, *, offset: int, limit: int,
                                     backwards: bool = False) -> tuple[list[tuple[str, int]], int]:
        direction = "DESC" if backwards else "ASC"
        rows = await self.db.fetch(
            "SELECT room_id, stream_ordering FROM destination_rooms WHERE destination = $1"
            f" ORDER BY room_id {direction} LIMIT $2 OFFSET $3",
            destination, limit, offset,
        )
        total = await self.db.fetchval("SELECT COUNT(*) FROM destination_rooms WHERE destination = $1",
                                       destination)
        return [(r[0], int(r[1])) for r in rows], int(total)


class KeptEduStore:
    """EDUs kept for a destination until it took them (``device_federation_outbox``, shared
    with to-device messages and device lists: gateway/services/e2e_keys.py). A kept EDU
    with the same key replaces the older one (a user's newest receipt in a room)."""

    def __init__(self, db: Database):
        self.db = db

    async def keep(self, edus: Sequence[tuple[str, str, str, Mapping[str, Any]]], now_ms: int) -> None:
        """(destination, key, edu_type, content), each replacing what is kept under its key."""
        if edus:
            await self.db.executemany(
                "INSERT INTO device_federation_outbox (destination, message_id, edu_type, content, created_ts)"
                " VALUES ($1, $2, $3, $4, $5) ON CONFLICT (destination, message_id) DO UPDATE SET"
                " edu_type = excluded.edu_type, content = excluded.content, created_ts = excluded.created_ts",
                [(d, k, t, kept_json(c), now_ms) for d, k, t, c in edus])

    async def forget(self, destination: str, sent: Sequence[tuple[str, Mapping[str, Any]]]) -> None:
        """The destination took these (key, content): forget them, unless a newer EDU
        replaced one meanwhile."""
        if sent:
            await self.db.executemany(
                "DELETE FROM device_federation_outbox WHERE destination = $1 AND message_id = $2 AND content = $3",
                [(destination, k, kept_json(c)) for k, c in sent])


    async def get(self, destination: str, edu_type: str) -> list[tuple[str, dict[str, Any]]]:
        """The (key, content) of the EDUs of this type kept for the destination, oldest first."""
        rows = await self.db.fetch(
            "SELECT message_id, content FROM device_federation_outbox WHERE destination = $1 AND edu_type = $2"
            " ORDER BY created_ts, message_id", destination, edu_type)
        return [(r[0], json.loads(r[1])) for r in rows]


def presence_key(user_id: str) -> str:
    """The key of a user's presence kept for a server: a newer one replaces it."""
    return json.dumps(["m.presence", user_id], separators=(",", ":"))


def receipt_key(room_id: str, receipt_type: str, user_id: str, thread_id: Any) -> str:
    """The key of a user's receipt kept for a server: a newer one replaces it."""
    return json.dumps(["m.receipt", room_id, receipt_type, user_id, thread_id], separators=(",", ":"))


def kept_json(content: Mapping[str, Any]) -> str:
    """A kept EDU's content as stored (the same text for the same content, key order kept)."""
    return json.dumps(content, separators=(",", ":"), ensure_ascii=False)


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
