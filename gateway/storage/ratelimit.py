"""Per-user rate limit overrides (``ratelimit_override``)."""

from __future__ import annotations

from .database import Database


class RateLimitOverrideStore:
    def __init__(self, db: Database):
        self.db = db

    async def get(self, user_id: str) -> tuple[int, int] | None:
        row = await self.db.fetchrow(
            "SELECT messages_per_second, burst_count FROM ratelimit_override WHERE user_id = $1", user_id)
        return None if row is None else (int(row[0]), int(row[1]))

    async def set(self, user_id: str, messages_per_second: int, burst_count: int) -> None:
        await self.db.execute(
            "INSERT INTO ratelimit_override (user_id, messages_per_second, burst_count) VALUES ($1, $2, $3)"
            " ON CONFLICT (user_id) DO UPDATE SET messages_per_second = excluded.messages_per_second,"
            " burst_count = excluded.burst_count",
            user_id, messages_per_second, burst_count,
        )

    async def delete(self, user_id: str) -> None:
        await self.db.execute("DELETE FROM ratelimit_override WHERE user_id = $1", user_id)
