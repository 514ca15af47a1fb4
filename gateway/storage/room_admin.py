"""What the room admin API needs from the database: room statistics in bulk, blocked rooms,
deletion tasks, and purging every trace of a room.

Synapse's admin API: https://element-hq.github.io/synapse/latest/admin_api/rooms.html
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from .database import Database
from .state import _placeholders

#: Tables whose rows about a room survive a purge (they are about the deletion itself).
_KEPT_ON_PURGE = frozenset({"blocked_rooms", "room_delete_tasks", "purge_history_tasks"})


@dataclass(frozen=True)
class RoomCounts:
    joined_members: int
    joined_local_members: int
    state_events: int


@dataclass(frozen=True)
class DeleteTask:
    delete_id: str
    room_id: str
    status: str
    error: str | None
    result: dict[str, Any]


class RoomAdminStore:
    def __init__(self, db: Database):
        self.db = db

    async def list_room_ids(self) -> list[str]:
        return [r[0] for r in await self.db.fetch("SELECT room_id FROM rooms ORDER BY room_id")]

    async def get_counts(self, room_ids: Iterable[str], server_name: str) -> dict[str, RoomCounts]:
        """Member and state counts for many rooms in three queries."""
        ids = list(room_ids)
        if not ids:
            return {}
        ph = _placeholders(len(ids), 2)
        members = await self.db.fetch(
            "SELECT room_id, COUNT(*), SUM(CASE WHEN user_id LIKE $1 ESCAPE '\\' THEN 1 ELSE 0 END) FROM room_memberships"
            f" WHERE membership = 'join' AND room_id IN ({ph}) GROUP BY room_id",
            "%:" + _like_escape(server_name), *ids,
        )
        states = await self.db.fetch(
            f"SELECT room_id, COUNT(*) FROM current_state WHERE room_id IN ({_placeholders(len(ids))})"
            " GROUP BY room_id", *ids,
        )
        joined = {r[0]: (int(r[1]), int(r[2] or 0)) for r in members}
        state_counts = {r[0]: int(r[1]) for r in states}
        return {rid: RoomCounts(*joined.get(rid, (0, 0)), state_counts.get(rid, 0)) for rid in ids}

    async def get_state_ids(self, room_ids: Iterable[str], keys: Iterable[tuple[str, str]]) -> dict[str, dict]:
        """{room_id: {(type, state_key): event_id}} for the given state keys of many rooms."""
        ids, wanted = list(room_ids), set(keys)
        if not ids or not wanted:
            return {}
        types = sorted({t for t, _ in wanted})
        rows = await self.db.fetch(
            f"SELECT room_id, type, state_key, event_id FROM current_state"
            f" WHERE room_id IN ({_placeholders(len(ids))})"
            f" AND type IN ({_placeholders(len(types), len(ids) + 1)})",
            *ids, *types,
        )
        out: dict[str, dict] = {rid: {} for rid in ids}
        for room_id, etype, state_key, event_id in rows:
            if (etype, state_key) in wanted:
                out[room_id][(etype, state_key)] = event_id
        return out

    async def count_local_devices_in_room(self, room_id: str, server_name: str) -> int:
        value = await self.db.fetchval(
            "SELECT COUNT(*) FROM devices d JOIN room_memberships m ON m.user_id = d.user_id"
            " WHERE m.room_id = $1 AND m.membership = 'join' AND m.user_id LIKE $2 ESCAPE '\\'",
            room_id, "%:" + _like_escape(server_name),
        )
        return int(value or 0)

    # --- blocking ------------------------------------------------------------------

    async def block_room(self, room_id: str, user_id: str, now_ms: int) -> None:
        async with self.db.transaction() as conn:
            if await conn.fetchval("SELECT 1 FROM blocked_rooms WHERE room_id = $1", room_id) is None:
                await conn.execute("INSERT INTO blocked_rooms (room_id, user_id, blocked_ts) VALUES ($1, $2, $3)",
                                   room_id, user_id, now_ms)

    async def unblock_room(self, room_id: str) -> None:
        await self.db.execute("DELETE FROM blocked_rooms WHERE room_id = $1", room_id)

    async def get_room_blocker(self, room_id: str) -> str | None:
        """The admin who blocked the room, or None if it is not blocked."""
        return await self.db.fetchval("SELECT user_id FROM blocked_rooms WHERE room_id = $1", room_id)

    # --- deletion tasks ------------------------------------------------------------

    async def add_delete_task(self, delete_id: str, room_id: str, status: str, now_ms: int) -> None:
        await self.db.execute(
            "INSERT INTO room_delete_tasks (delete_id, room_id, status, error, result, created_ts, updated_ts)"
            " VALUES ($1, $2, $3, NULL, $4, $5, $5)",
            delete_id, room_id, status, json.dumps(_empty_result()), now_ms,
        )

    async def update_delete_task(self, delete_id: str, *, status: str, now_ms: int,
                                 result: dict[str, Any] | None = None, error: str | None = None) -> None:
        if result is None:
            await self.db.execute(
                "UPDATE room_delete_tasks SET status = $2, error = $3, updated_ts = $4 WHERE delete_id = $1",
                delete_id, status, error, now_ms)
        else:
            await self.db.execute(
                "UPDATE room_delete_tasks SET status = $2, error = $3, updated_ts = $4, result = $5"
                " WHERE delete_id = $1", delete_id, status, error, now_ms, json.dumps(result))

    async def get_delete_tasks(self, *, room_id: str | None = None, delete_id: str | None = None,
                               since_ms: int = 0) -> list[DeleteTask]:
        if delete_id is not None:
            rows = await self.db.fetch(
                "SELECT delete_id, room_id, status, error, result FROM room_delete_tasks WHERE delete_id = $1",
                delete_id)
        else:
            rows = await self.db.fetch(
                "SELECT delete_id, room_id, status, error, result FROM room_delete_tasks"
                " WHERE room_id = $1 AND (updated_ts >= $2 OR status IN ('shutting_down', 'purging'))"
                " ORDER BY created_ts", room_id, since_ms)
        return [DeleteTask(r[0], r[1], r[2], r[3], json.loads(r[4])) for r in rows]

    # --- forward extremities ---------------------------------------------------------

    async def delete_forward_extremities(self, room_id: str) -> int:
        """Keep only the room's newest forward extremity (by position); how many went."""
        async with self.db.transaction() as conn:
            rows = await conn.fetch(
                "SELECT f.event_id FROM event_forward_extremities f JOIN events e ON e.event_id = f.event_id"
                " WHERE f.room_id = $1 ORDER BY e.stream_ordering DESC", room_id)
            for row in rows[1:]:
                await conn.execute("DELETE FROM event_forward_extremities WHERE room_id = $1 AND event_id = $2",
                                   room_id, row[0])
        return max(0, len(rows) - 1)

    # --- purging -------------------------------------------------------------------

    async def _room_tables(self, conn) -> list[str]:
        """Every table with a ``room_id`` column (features add tables; a purge must reach them all)."""
        if self.db.engine == "sqlite":
            rows = await conn.fetch(
                "SELECT m.name FROM sqlite_master m JOIN pragma_table_info(m.name) p"
                " WHERE m.type = 'table' AND p.name = 'room_id'")
        else:
            rows = await conn.fetch(
                "SELECT table_name FROM information_schema.columns WHERE column_name = 'room_id'"
                " AND table_schema = current_schema()")
        return sorted({r[0] for r in rows} - _KEPT_ON_PURGE)

    async def purge_room(self, room_id: str) -> None:
        """Remove every row about the room, in one transaction."""
        async with self.db.transaction() as conn:
            await conn.execute(
                "DELETE FROM state_group_entries WHERE state_group IN"
                " (SELECT state_group FROM state_groups WHERE room_id = $1)", room_id)
            for table in await self._room_tables(conn):
                await conn.execute(f"DELETE FROM {table} WHERE room_id = $1", room_id)


def _empty_result() -> dict[str, Any]:
    return {"kicked_users": [], "failed_to_kick_users": [], "local_aliases": [], "new_room_id": None}


def _like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
