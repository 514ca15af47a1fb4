"""User profiles (display name, avatar) and client filters."""

from __future__ import annotations

import json
from typing import Any

from .database import Database


class ProfileStore:
    def __init__(self, db: Database):
        self.db = db

    async def get_profile(self, user_id: str) -> dict[str, Any] | None:
        row = await self.db.fetchrow("SELECT displayname, avatar_url FROM profiles WHERE user_id = $1", user_id)
        if row is None:
            return None
        return {k: v for k, v in (("displayname", row[0]), ("avatar_url", row[1])) if v is not None}

    async def set_field(self, user_id: str, field: str, value: str | None) -> None:
        if field not in ("displayname", "avatar_url"):
            raise ValueError(field)
        await self.db.execute(f"UPDATE profiles SET {field} = $2 WHERE user_id = $1", user_id, value)


class FilterStore:
    def __init__(self, db: Database):
        self.db = db

    async def add_filter(self, user_id: str, filter_json: dict[str, Any]) -> int:
        async with self.db.transaction() as txn:
            current = await txn.fetchval("SELECT MAX(filter_id) FROM user_filters WHERE user_id = $1", user_id)
            filter_id = 0 if current is None else current + 1
            await txn.execute(
                "INSERT INTO user_filters (user_id, filter_id, filter_json) VALUES ($1, $2, $3)",
                user_id, filter_id, json.dumps(filter_json),
            )
        return filter_id

    async def get_filter(self, user_id: str, filter_id: int) -> dict[str, Any] | None:
        raw = await self.db.fetchval(
            "SELECT filter_json FROM user_filters WHERE user_id = $1 AND filter_id = $2", user_id, filter_id
        )
        return None if raw is None else json.loads(raw)
