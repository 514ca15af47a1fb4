"""Presence as users set it (PUT /presence/{userId}/status)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .database import Database
from .state import _placeholders, next_position


@dataclass(frozen=True)
class PresenceRow:
    user_id: str
    presence: str
    status_msg: str | None
    last_active_ts: int
    updated_ts: int


class PresenceStore:
    def __init__(self, db: Database):
        self.db = db

    async def set_presence(self, user_id: str, presence: str, status_msg: str | None, now_ms: int) -> int:
        """Store the user's presence at a new position of the ``presence`` stream (returned)."""
        async with self.db.transaction() as txn:
            pos = await next_position(txn, "presence")
            await txn.execute(
                "INSERT INTO presence (user_id, presence, status_msg, last_active_ts, updated_ts, stream_id)"
                " VALUES ($1, $2, $3, $4, $4, $5)"
                " ON CONFLICT (user_id) DO UPDATE SET presence = excluded.presence, status_msg = excluded.status_msg,"
                " last_active_ts = excluded.last_active_ts, updated_ts = excluded.updated_ts,"
                " stream_id = excluded.stream_id",
                user_id, presence, status_msg, now_ms, pos,
            )
        return pos

    async def touch(self, user_id: str, now_ms: int) -> None:
        """Move the user's last activity to now, without a new stream position (nobody is
        told: ``last_active_ago`` is read at the time it is sent)."""
        await self.db.execute("UPDATE presence SET last_active_ts = $2 WHERE user_id = $1", user_id, now_ms)

    async def get_visible_changes(self, user_id: str, *, since: int | None, upto: int) -> list[PresenceRow]:
        """Presence of the user and of everyone joined to a room the user is joined to,
        changed in ``(since, upto]`` (every row up to ``upto`` when ``since`` is None)."""
        rows = await self.db.fetch(
            "SELECT p.user_id, p.presence, p.status_msg, p.last_active_ts, p.updated_ts FROM presence p"
            " WHERE p.stream_id > $2 AND p.stream_id <= $3 AND (p.user_id = $1 OR p.user_id IN ("
            "  SELECT o.user_id FROM room_memberships o JOIN room_memberships m ON m.room_id = o.room_id"
            "  WHERE m.user_id = $1 AND m.membership = 'join' AND o.membership = 'join'))"
            " ORDER BY p.stream_id",
            user_id, -1 if since is None else since, upto,
        )
        return [PresenceRow(r[0], r[1], r[2], int(r[3]), int(r[4])) for r in rows]

    async def get_present_members(self, room_id: str, server_name: str) -> list[PresenceRow]:
        """The presence of the room's joined members of ``server_name`` who are not
        offline (one query; offline members, the usual bulk of a big room, stay out)."""
        escaped = server_name.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        rows = await self.db.fetch(
            "SELECT p.user_id, p.presence, p.status_msg, p.last_active_ts, p.updated_ts FROM presence p"
            " JOIN room_memberships m ON m.user_id = p.user_id"
            " WHERE m.room_id = $1 AND m.membership = 'join' AND p.presence <> 'offline'"
            " AND m.user_id LIKE $2 ESCAPE '\\' ORDER BY p.user_id",
            room_id, "%:" + escaped,
        )
        return [PresenceRow(r[0], r[1], r[2], int(r[3]), int(r[4])) for r in rows]

    async def get_newly_shared(self, user_id: str, *, since_events: int) -> list[str]:
        """Users the user started sharing a joined room with after the events stream
        position: those who joined one of the user's rooms, and everyone in a room the
        user joined (a display name change counts as a join here: harmless)."""
        rows = await self.db.fetch(
            "SELECT DISTINCT o.user_id FROM room_memberships o JOIN room_memberships m ON m.room_id = o.room_id"
            " WHERE m.user_id = $1 AND m.membership = 'join' AND o.membership = 'join' AND o.user_id <> $1"
            " AND (o.stream_ordering > $2 OR m.stream_ordering > $2)",
            user_id, since_events,
        )
        return sorted(r[0] for r in rows)

    async def get_room_changes(self, room_id: str, *, since: int, upto: int) -> list[PresenceRow]:
        """Presence of the users joined to one room, changed in ``(since, upto]`` (what
        someone peeking at the room sees)."""
        rows = await self.db.fetch(
            "SELECT p.user_id, p.presence, p.status_msg, p.last_active_ts, p.updated_ts FROM presence p"
            " JOIN room_memberships m ON m.user_id = p.user_id AND m.room_id = $1 AND m.membership = 'join'"
            " WHERE p.stream_id > $2 AND p.stream_id <= $3 ORDER BY p.stream_id",
            room_id, since, upto,
        )
        return [PresenceRow(r[0], r[1], r[2], int(r[3]), int(r[4])) for r in rows]

    async def get_presence(self, user_ids: Sequence[str]) -> dict[str, PresenceRow]:
        ids = list(dict.fromkeys(user_ids))
        out: dict[str, PresenceRow] = {}
        for i in range(0, len(ids), 500):
            chunk = ids[i:i + 500]
            rows = await self.db.fetch(
                "SELECT user_id, presence, status_msg, last_active_ts, updated_ts FROM presence"
                f" WHERE user_id IN ({_placeholders(len(chunk))})",
                *chunk,
            )
            for r in rows:
                out[r[0]] = PresenceRow(r[0], r[1], r[2], int(r[3]), int(r[4]))
        return out

    async def share_a_room(self, user_a: str, user_b: str) -> bool:
        row = await self.db.fetchrow(
            "SELECT 1 FROM room_memberships a JOIN room_memberships b ON b.room_id = a.room_id"
            " WHERE a.user_id = $1 AND a.membership = 'join' AND b.user_id = $2 AND b.membership = 'join' LIMIT 1",
            user_a, user_b,
        )
        return row is not None
