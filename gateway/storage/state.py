"""Room state: state groups (snapshots stored as bounded delta chains), current state,
and the membership table derived from it.

A state group is an immutable map ``(type, state_key) -> event_id``. It is stored either
in full (a snapshot) or as the entries that differ from a previous group (a delta);
every ``MAX_DELTA_CHAIN`` deltas a full snapshot is written again, so reading a group
costs at most that many small reads, in one recursive query. Groups never change, so
they are cached by ID in this process (safe with several processes).

Background: "How do State Groups work?" in Synapse's documentation (the idea, not code).
Spec for state itself: https://spec.matrix.org/latest/client-server-api/#room-events
"""

from __future__ import annotations

import asyncio
import json
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from .database import Connection, Database

StateKey = tuple[str, str]
StateMap = Mapping[StateKey, str]

#: After this many deltas in a row, the next group is written as a full snapshot.
MAX_DELTA_CHAIN = 100

_EMPTY: StateMap = MappingProxyType({})

#: State events mirrored into ``room_stats_state`` (for the room and user directories):
#: event type -> (column, content key).
ROOM_STATS_FIELDS: dict[str, tuple[str, str]] = {
    "m.room.name": ("name", "name"),
    "m.room.topic": ("topic", "topic"),
    "m.room.avatar": ("avatar", "url"),
    "m.room.canonical_alias": ("canonical_alias", "alias"),
    "m.room.join_rules": ("join_rules", "join_rule"),
    "m.room.history_visibility": ("history_visibility", "history_visibility"),
    "m.room.guest_access": ("guest_access", "guest_access"),
    "m.room.encryption": ("encryption", "algorithm"),
    "m.room.create": ("room_type", "type"),
}


@dataclass(frozen=True)
class StateSnapshot:
    """The state of a room at some point: its group ID (None for the empty state before
    a room's create event), the group's delta depth, and the full map (read-only)."""

    group: int | None
    delta_depth: int
    state: StateMap


EMPTY_STATE = StateSnapshot(None, 0, _EMPTY)


@dataclass(frozen=True)
class MemberRow:
    room_id: str
    user_id: str
    membership: str
    event_id: str
    sender: str
    stream_ordering: int
    displayname: str | None
    avatar_url: str | None


async def next_position(conn: Connection, stream_name: str, step: int = 1) -> int:
    """Advance a named counter (inside a transaction) and return its new value.

    ``step`` may be negative (the backfill stream goes down). The row stays locked
    until the transaction ends, so writers of one counter commit in counter order.
    """
    value = await conn.fetchval(
        "UPDATE stream_positions SET position = position + $2 WHERE stream_name = $1 RETURNING position",
        stream_name, step,
    )
    if value is None:
        raise RuntimeError(f"unknown stream {stream_name!r}")
    return int(value)


async def upsert_membership(conn: Connection, *, room_id: str, user_id: str, event_id: str, sender: str,
                            stream_ordering: int, content: Mapping[str, Any]) -> None:
    """Inside a transaction: point the user's ``room_memberships`` row at a member event
    (its membership, display name and avatar; "leave" if the membership is not a string)."""
    membership = content.get("membership")
    displayname = content.get("displayname")
    avatar_url = content.get("avatar_url")
    await conn.execute(
        "INSERT INTO room_memberships"
        " (room_id, user_id, membership, event_id, sender, stream_ordering, displayname, avatar_url)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
        " ON CONFLICT (room_id, user_id) DO UPDATE SET membership = excluded.membership,"
        " event_id = excluded.event_id, sender = excluded.sender,"
        " stream_ordering = excluded.stream_ordering, displayname = excluded.displayname,"
        " avatar_url = excluded.avatar_url, forgotten = FALSE",
        room_id, user_id, membership if isinstance(membership, str) else "leave", event_id, sender,
        stream_ordering, displayname if isinstance(displayname, str) else None,
        avatar_url if isinstance(avatar_url, str) else None,
    )


@dataclass(frozen=True)
class NewStateGroup:
    """A state group built in memory (``StateStore.plan_state_group``), written with a
    batch of events (``write_state_groups``): its snapshot, and the rows to write (the
    full map for a snapshot, the changes against ``prev_group`` for a delta)."""

    snapshot: StateSnapshot
    room_id: str
    event_id: str | None
    prev_group: int | None
    entries: tuple[tuple[StateKey, str | None], ...]


def _new_group(group: int, room_id: str, event_id: str | None, prev: StateSnapshot, state: StateMap,
               delta: Mapping[StateKey, str | None]) -> NewStateGroup:
    """Group ``group`` with the full map ``state``, as a delta against ``prev`` unless the
    chain would exceed ``MAX_DELTA_CHAIN`` (or there is no prev)."""
    if prev.group is None or prev.delta_depth + 1 >= MAX_DELTA_CHAIN:
        prev_group, depth = None, 0
        entries: Iterable[tuple[StateKey, str | None]] = state.items()
    else:
        prev_group, depth = prev.group, prev.delta_depth + 1
        entries = delta.items()
    return NewStateGroup(StateSnapshot(group, depth, MappingProxyType(dict(state))), room_id, event_id,
                         prev_group, tuple(entries))


async def write_state_groups(conn: Connection, groups: Sequence[NewStateGroup]) -> None:
    """Inside the caller's transaction: insert new groups (a group's rows never exist before)."""
    if not groups:
        return
    await conn.executemany(
        "INSERT INTO state_groups (state_group, room_id, event_id, prev_state_group, delta_depth)"
        " VALUES ($1, $2, $3, $4, $5)",
        [(g.snapshot.group, g.room_id, g.event_id, g.prev_group, g.snapshot.delta_depth) for g in groups],
    )
    rows = [(g.snapshot.group, t, sk, eid) for g in groups for (t, sk), eid in g.entries]
    if rows:
        await conn.copy_rows("state_group_entries", ("state_group", "type", "state_key", "event_id"), rows)


#: State group IDs a process reserves at a time for groups built in memory.
_GROUP_ID_BLOCK = 100


class StateStore:
    def __init__(self, db: Database, *, cache_size: int = 2000):
        self.db = db
        self._cache: OrderedDict[int, StateSnapshot] = OrderedDict()
        self._cache_size = cache_size
        self._next_group = self._group_block_end = 0
        self._reserve_lock = asyncio.Lock()

    # --- state groups ------------------------------------------------------------

    def _cached(self, group: int) -> StateSnapshot | None:
        snap = self._cache.get(group)
        if snap is not None:
            self._cache.move_to_end(group)
        return snap

    def cache_snapshot(self, snapshot: StateSnapshot) -> None:
        """Remember a group's full map (groups are immutable, so this never goes stale)."""
        if snapshot.group is None:
            return
        self._cache[snapshot.group] = snapshot
        self._cache.move_to_end(snapshot.group)
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)

    async def get_state(self, group: int | None, conn: Connection | None = None) -> StateSnapshot:
        """The full state of a group (``EMPTY_STATE`` for None).

        Pass ``conn`` when called inside a transaction (SQLite has one connection).
        """
        if group is None:
            return EMPTY_STATE
        hit = self._cached(group)
        if hit is not None:
            return hit
        conn = conn or self.db
        chain = await conn.fetch(
            "WITH RECURSIVE chain(state_group, prev_state_group, delta_depth) AS ("
            " SELECT state_group, prev_state_group, delta_depth FROM state_groups WHERE state_group = $1"
            " UNION ALL"
            " SELECT g.state_group, g.prev_state_group, g.delta_depth FROM state_groups g"
            " JOIN chain c ON g.state_group = c.prev_state_group"
            ") SELECT state_group, prev_state_group, delta_depth FROM chain",
            group,
        )
        if not chain:
            raise KeyError(f"unknown state group {group}")
        # chain[0] is the group asked for; walk down until a cached ancestor or a snapshot.
        needed: list[int] = []
        base: dict[StateKey, str] = {}
        for row in chain:
            cached = self._cached(int(row[0]))
            if cached is not None:
                base = dict(cached.state)
                break
            needed.append(int(row[0]))
        if needed:
            rows = await conn.fetch(
                "SELECT state_group, type, state_key, event_id FROM state_group_entries"
                f" WHERE state_group IN ({_placeholders(len(needed))})",
                *needed,
            )
            by_group: dict[int, list[Any]] = {}
            for r in rows:
                by_group.setdefault(int(r[0]), []).append(r)
            for g in reversed(needed):  # oldest first
                for r in by_group.get(g, ()):
                    if r[3] is None:
                        base.pop((r[1], r[2]), None)
                    else:
                        base[(r[1], r[2])] = r[3]
        snap = StateSnapshot(group, int(chain[0][2]), MappingProxyType(base))
        self.cache_snapshot(snap)
        return snap

    async def store_state_group(
        self,
        conn: Connection,
        *,
        room_id: str,
        event_id: str | None,
        prev: StateSnapshot,
        state: StateMap,
        delta: Mapping[StateKey, str | None],
    ) -> StateSnapshot:
        """Write a new group (inside the caller's transaction) whose full map is
        ``state``, which differs from ``prev`` by ``delta``. Written as a delta against
        ``prev`` unless the chain would exceed ``MAX_DELTA_CHAIN`` (or there is no prev)."""
        group = await next_position(conn, "state_groups")
        new = _new_group(group, room_id, event_id, prev, state, delta)
        await write_state_groups(conn, [new])
        return new.snapshot

    async def plan_state_group(
        self,
        *,
        room_id: str,
        event_id: str | None,
        prev: StateSnapshot,
        state: StateMap,
        delta: Mapping[StateKey, str | None],
    ) -> "NewStateGroup":
        """A new group as ``store_state_group`` would write it, built in memory with a
        reserved ID, for a batch to write later (``write_state_groups``). Call it
        outside any transaction (the reservation may write)."""
        return _new_group(await self._reserve_group_id(), room_id, event_id, prev, state, delta)

    async def _reserve_group_id(self) -> int:
        """A state group ID no one else will take: this process reserves them
        ``_GROUP_ID_BLOCK`` at a time (one statement a block; IDs of a process that
        stops are never used, which is harmless)."""
        if self._next_group >= self._group_block_end:
            async with self._reserve_lock:
                if self._next_group >= self._group_block_end:
                    last = await next_position(self.db, "state_groups", _GROUP_ID_BLOCK)
                    self._next_group, self._group_block_end = last - _GROUP_ID_BLOCK + 1, last + 1
        group = self._next_group
        self._next_group += 1
        return group

    # --- current state -------------------------------------------------------------

    async def get_current_state_ids(self, room_id: str) -> dict[StateKey, str]:
        rows = await self.db.fetch(
            "SELECT type, state_key, event_id FROM current_state WHERE room_id = $1", room_id
        )
        return {(r[0], r[1]): r[2] for r in rows}

    async def get_current_state_event_id(self, room_id: str, event_type: str, state_key: str) -> str | None:
        return await self.db.fetchval(
            "SELECT event_id FROM current_state WHERE room_id = $1 AND type = $2 AND state_key = $3",
            room_id, event_type, state_key,
        )

    async def get_current_state_of_rooms(self, room_ids: Sequence[str],
                                         types: Sequence[str]) -> dict[str, dict[StateKey, str]]:
        """room -> (type, state key) -> event ID of the rooms' current state events of
        these types, in one query per 500 rooms."""
        ids = list(dict.fromkeys(room_ids))
        out: dict[str, dict[StateKey, str]] = {r: {} for r in ids}
        if not types:
            return out
        for i in range(0, len(ids), 500):
            chunk = ids[i:i + 500]
            rows = await self.db.fetch(
                "SELECT room_id, type, state_key, event_id FROM current_state"
                f" WHERE type IN ({_placeholders(len(types))})"
                f" AND room_id IN ({_placeholders(len(chunk), len(types) + 1)})",
                *types, *chunk,
            )
            for r in rows:
                out[r[0]][(r[1], r[2])] = r[3]
        return out

    # --- memberships -----------------------------------------------------------------

    async def get_rooms_for_user(self, user_id: str, membership: str = "join") -> list[str]:
        rows = await self.db.fetch(
            "SELECT room_id FROM room_memberships WHERE user_id = $1 AND membership = $2 ORDER BY room_id",
            user_id, membership,
        )
        return [r[0] for r in rows]

    async def get_membership(self, room_id: str, user_id: str) -> MemberRow | None:
        row = await self.db.fetchrow(
            "SELECT room_id, user_id, membership, event_id, sender, stream_ordering, displayname, avatar_url"
            " FROM room_memberships WHERE room_id = $1 AND user_id = $2",
            room_id, user_id,
        )
        return None if row is None else MemberRow(*row)

    async def get_user_memberships(self, user_id: str, room_ids: Sequence[str]) -> dict[str, MemberRow]:
        """``get_membership`` of one user in many rooms, in one query (rooms where the
        user has no membership are left out)."""
        ids = list(dict.fromkeys(room_ids))
        out: dict[str, MemberRow] = {}
        for i in range(0, len(ids), 500):
            chunk = ids[i:i + 500]
            rows = await self.db.fetch(
                "SELECT room_id, user_id, membership, event_id, sender, stream_ordering, displayname, avatar_url"
                f" FROM room_memberships WHERE user_id = $1 AND room_id IN ({_placeholders(len(chunk), 2)})",
                user_id, *chunk,
            )
            out.update((r[0], MemberRow(*r)) for r in rows)
        return out

    async def get_members(self, room_id: str, membership: str | None = None) -> list[MemberRow]:
        sql = ("SELECT room_id, user_id, membership, event_id, sender, stream_ordering, displayname, avatar_url"
               " FROM room_memberships WHERE room_id = $1")
        args: list[Any] = [room_id]
        if membership is not None:
            sql += " AND membership = $2"
            args.append(membership)
        rows = await self.db.fetch(sql + " ORDER BY user_id", *args)
        return [MemberRow(*r) for r in rows]


    async def get_mutual_rooms(self, user_id: str, other: str, *, after: str | None,
                               limit: int) -> tuple[list[str], int]:
        """Rooms both users are joined to, by room ID from after ``after``: up to
        ``limit`` of them, and how many there are in all."""
        shared = ("FROM room_memberships a JOIN room_memberships b ON b.room_id = a.room_id"
                  " WHERE a.user_id = $1 AND a.membership = 'join' AND b.user_id = $2 AND b.membership = 'join'")
        count = await self.db.fetchval(f"SELECT COUNT(*) {shared}", user_id, other)
        rows = await self.db.fetch(f"SELECT a.room_id {shared} AND a.room_id > $3 ORDER BY a.room_id LIMIT $4",
                                   user_id, other, after or "", limit)
        return [r[0] for r in rows], int(count or 0)

    async def has_joined_member_of(self, room_id: str, server_name: str) -> bool:
        """Whether a user of ``server_name`` is joined to the room (one indexed lookup,
        not the whole member list)."""
        escaped = server_name.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        row = await self.db.fetchrow(
            "SELECT 1 FROM room_memberships WHERE room_id = $1 AND membership = 'join'"
            " AND user_id LIKE $2 ESCAPE '\\' LIMIT 1", room_id, "%:" + escaped)
        return row is not None

    async def forget_room(self, room_id: str, user_id: str) -> bool:
        """Mark a left (or banned) user's membership as forgotten (POST /forget): /sync then
        leaves the room out of its ``leave`` section. A later membership change clears it."""
        changed = await self.db.execute(
            "UPDATE room_memberships SET forgotten = TRUE"
            " WHERE room_id = $1 AND user_id = $2 AND membership IN ('leave', 'ban')",
            room_id, user_id,
        )
        return changed == 1

    async def get_forgotten_rooms(self, user_id: str) -> set[str]:
        """The rooms ``user_id`` has forgotten (and not rejoined since)."""
        rows = await self.db.fetch(
            "SELECT room_id FROM room_memberships WHERE user_id = $1 AND forgotten = TRUE", user_id
        )
        return {r[0] for r in rows}


def _placeholders(n: int, start: int = 1) -> str:
    return ", ".join(f"${i}" for i in range(start, start + n))


async def apply_current_state_changes(
    conn: Connection,
    *,
    room_id: str,
    changes: Mapping[StateKey, str | None],
    previous: Mapping[StateKey, str],
    stream_ordering: int,
    events: Mapping[str, Any],
) -> None:
    """Inside the caller's transaction: apply many current-state changes at once
    (``None`` removes a key), record them in ``current_state_deltas`` at
    ``stream_ordering`` and keep ``room_memberships`` in step. ``events`` maps the new
    event IDs to their PDUs (``sender``, ``content``). Batched: a join of a big room
    costs a handful of statements, not three per member."""
    await apply_current_state_steps(conn, room_id=room_id, steps=[(stream_ordering, changes)], previous=previous,
                                    events=events)


async def apply_current_state_steps(
    conn: Connection,
    *,
    room_id: str,
    steps: Sequence[tuple[int, Mapping[StateKey, str | None]]],
    previous: Mapping[StateKey, str],
    events: Mapping[str, Any],
) -> None:
    """``apply_current_state_changes`` for several events' changes in order (a batch of
    events): each change is recorded in ``current_state_deltas`` at its own position
    (with what it replaced), and ``current_state``, ``room_memberships`` and the room's
    stats end as each key's last change says, in one statement per table."""
    delta_rows = []
    final: dict[StateKey, tuple[str | None, int]] = {}
    for position, changes in steps:
        for key, event_id in changes.items():
            before = final[key][0] if key in final else previous.get(key)
            delta_rows.append((position, room_id, key[0], key[1], event_id, before))
            final[key] = (event_id, position)
    if not final:
        return
    upserts = [(room_id, k[0], k[1], e) for k, (e, _) in final.items() if e is not None]
    removals = [(room_id, k[0], k[1]) for k, (e, _) in final.items() if e is None]
    if upserts:
        await conn.executemany(
            "INSERT INTO current_state (room_id, type, state_key, event_id) VALUES ($1, $2, $3, $4)"
            " ON CONFLICT (room_id, type, state_key) DO UPDATE SET event_id = excluded.event_id",
            upserts,
        )
    if removals:
        await conn.executemany(
            "DELETE FROM current_state WHERE room_id = $1 AND type = $2 AND state_key = $3", removals
        )
    await conn.copy_rows(
        "current_state_deltas", ("stream_ordering", "room_id", "type", "state_key", "event_id", "prev_event_id"),
        delta_rows)
    member_rows = []
    member_removals = []
    for (etype, state_key), (event_id, position) in final.items():
        if etype != "m.room.member":
            continue
        if event_id is None:
            member_removals.append((room_id, state_key))
            continue
        ev = events[event_id]  # the caller passes every new member event
        content = ev.content
        membership = content.get("membership")
        displayname = content.get("displayname")
        avatar_url = content.get("avatar_url")
        member_rows.append((
            room_id, state_key, membership if isinstance(membership, str) else "leave", event_id, ev.sender,
            position, displayname if isinstance(displayname, str) else None,
            avatar_url if isinstance(avatar_url, str) else None,
        ))
    if member_rows:
        await conn.executemany(
            "INSERT INTO room_memberships"
            " (room_id, user_id, membership, event_id, sender, stream_ordering, displayname, avatar_url)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
            " ON CONFLICT (room_id, user_id) DO UPDATE SET membership = excluded.membership,"
            " event_id = excluded.event_id, sender = excluded.sender,"
            " stream_ordering = excluded.stream_ordering, displayname = excluded.displayname,"
            " avatar_url = excluded.avatar_url, forgotten = FALSE",
            member_rows,
        )
    if member_removals:
        await conn.executemany("DELETE FROM room_memberships WHERE room_id = $1 AND user_id = $2", member_removals)
    await _apply_room_stats_changes(conn, room_id, {k: e for k, (e, _) in final.items()}, events)


async def _apply_room_stats_changes(
    conn: Connection, room_id: str, changes: Mapping[StateKey, str | None], events: Mapping[str, Any],
) -> None:
    """Keep ``room_stats_state`` in step with a batch of current-state changes."""
    stats = {k: e for k, e in changes.items() if k[1] == "" and k[0] in ROOM_STATS_FIELDS}
    if not stats:
        return
    missing = [e for e in stats.values() if e is not None and e not in events]
    contents: dict[str, Any] = {e: events[e].content for e in stats.values() if e is not None and e in events}
    if missing:
        rows = await conn.fetch(
            f"SELECT event_id, json FROM events WHERE event_id IN ({_placeholders(len(missing))})", *missing
        )
        contents.update({r[0]: json.loads(r[1]).get("content", {}) for r in rows})
    for (etype, _), event_id in stats.items():
        column, content_key = ROOM_STATS_FIELDS[etype]
        content = contents.get(event_id) if event_id is not None else None
        value = content.get(content_key) if isinstance(content, Mapping) else None
        await conn.execute(
            f"INSERT INTO room_stats_state (room_id, {column}) VALUES ($1, $2)"
            f" ON CONFLICT (room_id) DO UPDATE SET {column} = excluded.{column}",
            room_id, value if isinstance(value, str) else None,
        )
