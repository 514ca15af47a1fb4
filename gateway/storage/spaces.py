"""What spaces read besides room summaries (gateway/storage/directory.py): a room's
``m.space.child`` state, which servers and users have members where, and the
pagination sessions of ``GET /hierarchy`` (``space_hierarchy_sessions``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from .database import Database


@dataclass(frozen=True)
class HierarchySession:
    user_id: str
    room_id: str
    suggested_only: bool
    max_depth: int
    walk: Any


def _like_server(server_name: str) -> str:
    return "%:" + server_name.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


class SpacesStore:
    def __init__(self, db: Database):
        self.db = db

    async def get_child_event_ids(self, room_id: str) -> list[str]:
        """The event IDs of the room's current ``m.space.child`` state."""
        rows = await self.db.fetch(
            "SELECT event_id FROM current_state WHERE room_id = $1 AND type = 'm.space.child'", room_id)
        return [r[0] for r in rows]

    async def server_has_member(self, room_id: str, server_name: str, memberships: tuple[str, ...]) -> bool:
        """Whether a user of ``server_name`` has one of ``memberships`` in the room."""
        marks = ", ".join(f"${i + 3}" for i in range(len(memberships)))
        row = await self.db.fetchrow(
            f"SELECT 1 FROM room_memberships WHERE room_id = $1 AND user_id LIKE $2 ESCAPE '\\'"
            f" AND membership IN ({marks}) LIMIT 1",
            room_id, _like_server(server_name), *memberships,
        )
        return row is not None

    async def user_joined_any(self, user_id: str, room_ids: list[str]) -> bool:
        if not room_ids:
            return False
        marks = ", ".join(f"${i + 2}" for i in range(len(room_ids)))
        row = await self.db.fetchrow(
            f"SELECT 1 FROM room_memberships WHERE user_id = $1 AND membership = 'join' AND room_id IN ({marks})"
            " LIMIT 1", user_id, *room_ids)
        return row is not None

    # --- pagination sessions ----------------------------------------------------------

    async def create_session(self, token: str, session: HierarchySession, *, now_ms: int, expires_ts: int) -> None:
        """Store a walk under ``token`` (and drop the sessions that expired)."""
        async with self.db.transaction() as txn:
            await txn.execute("DELETE FROM space_hierarchy_sessions WHERE expires_ts < $1", now_ms)
            await txn.execute(
                "INSERT INTO space_hierarchy_sessions"
                " (token, user_id, room_id, suggested_only, max_depth, walk, expires_ts)"
                " VALUES ($1, $2, $3, $4, $5, $6, $7)",
                token, session.user_id, session.room_id, session.suggested_only, session.max_depth,
                json.dumps(session.walk), expires_ts,
            )

    async def get_session(self, token: str, *, now_ms: int) -> HierarchySession | None:
        row = await self.db.fetchrow(
            "SELECT user_id, room_id, suggested_only, max_depth, walk FROM space_hierarchy_sessions"
            " WHERE token = $1 AND expires_ts >= $2",
            token, now_ms,
        )
        if row is None:
            return None
        return HierarchySession(row[0], row[1], bool(row[2]), int(row[3]), json.loads(row[4]))
