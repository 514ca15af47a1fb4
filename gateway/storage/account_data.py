"""Account data, global and per room (room tags are per-room ``m.tag``), with positions
in the 'account_data' stream.

Spec: https://spec.matrix.org/latest/client-server-api/#client-config and
https://spec.matrix.org/latest/client-server-api/#room-tagging
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from .database import Database
from .state import _placeholders, next_position

#: ``room_id`` of global account data rows.
GLOBAL = ""


@dataclass(frozen=True)
class AccountDataRow:
    room_id: str  # '' for global
    type: str
    content: dict[str, Any]
    stream_id: int


class AccountDataStore:
    def __init__(self, db: Database):
        self.db = db

    async def get_current_position(self) -> int:
        value = await self.db.fetchval("SELECT position FROM stream_positions WHERE stream_name = 'account_data'")
        return int(value or 0)

    async def get(self, user_id: str, room_id: str, data_type: str) -> dict[str, Any] | None:
        raw = await self.db.fetchval(
            "SELECT content FROM account_data WHERE user_id = $1 AND room_id = $2 AND type = $3",
            user_id, room_id, data_type,
        )
        return None if raw is None else json.loads(raw)

    async def put(self, user_id: str, room_id: str, data_type: str, content: dict[str, Any]) -> int:
        """Set one entry; returns its new stream position (stored once this returns)."""
        return await self.update(user_id, room_id, data_type, lambda _old: content)

    async def update(
        self, user_id: str, room_id: str, data_type: str,
        change: Callable[[dict[str, Any] | None], dict[str, Any]],
    ) -> int:
        """Read-modify-write one entry in a transaction (room tags add or remove one tag)."""
        async with self.db.transaction() as txn:
            raw = await txn.fetchval(
                "SELECT content FROM account_data WHERE user_id = $1 AND room_id = $2 AND type = $3",
                user_id, room_id, data_type,
            )
            content = change(None if raw is None else json.loads(raw))
            pos = await next_position(txn, "account_data")
            await txn.execute(
                "INSERT INTO account_data (user_id, room_id, type, content, stream_id) VALUES ($1, $2, $3, $4, $5)"
                " ON CONFLICT (user_id, room_id, type) DO UPDATE SET content = excluded.content,"
                " stream_id = excluded.stream_id",
                user_id, room_id, data_type, json.dumps(content), pos,
            )
        return pos

    async def get_changes(
        self, user_id: str, *, since: int | None, upto: int, room_ids: Sequence[str] | None = None,
    ) -> list[AccountDataRow]:
        """The user's entries written in ``(since, upto]`` (all of them for ``since`` None).
        ``room_ids`` limits room entries to those rooms (global ones always come)."""
        sql = "SELECT room_id, type, content, stream_id FROM account_data WHERE user_id = $1 AND stream_id <= $2"
        args: list[Any] = [user_id, upto]
        if since is not None:
            sql += " AND stream_id > $3"
            args.append(since)
        rows = await self.db.fetch(sql + " ORDER BY stream_id", *args)
        wanted = None if room_ids is None else set(room_ids)
        out = []
        for r in rows:
            if r[0] != GLOBAL and wanted is not None and r[0] not in wanted:
                continue
            out.append(AccountDataRow(r[0], r[1], json.loads(r[2]), int(r[3])))
        return out

    async def get_for_rooms(self, user_id: str, room_ids: Sequence[str], data_type: str) -> dict[str, dict[str, Any]]:
        ids = list(room_ids)
        if not ids:
            return {}
        rows = await self.db.fetch(
            "SELECT room_id, content FROM account_data WHERE user_id = $1 AND type = $2"
            f" AND room_id IN ({_placeholders(len(ids), 3)})",
            user_id, data_type, *ids,
        )
        return {r[0]: json.loads(r[1]) for r in rows}
