"""Local accounts: users and their profiles."""

from __future__ import annotations

from dataclasses import dataclass

from .database import Database, IntegrityError


class UserExistsError(Exception):
    pass


@dataclass(frozen=True)
class UserRow:
    user_id: str
    password_hash: str | None
    admin: bool
    deactivated: bool
    user_type: str | None
    created_ts: int


class UserStore:
    def __init__(self, db: Database):
        self.db = db

    async def create_user(
        self,
        user_id: str,
        *,
        password_hash: str | None,
        created_ts: int,
        admin: bool = False,
        user_type: str | None = None,
        displayname: str | None = None,
    ) -> None:
        """Insert a new user and its profile; UserExistsError if the ID is taken."""
        try:
            async with self.db.transaction() as txn:
                await txn.execute(
                    "INSERT INTO users (user_id, password_hash, admin, user_type, created_ts)"
                    " VALUES ($1, $2, $3, $4, $5)",
                    user_id, password_hash, admin, user_type, created_ts,
                )
                await txn.execute(
                    "INSERT INTO profiles (user_id, displayname) VALUES ($1, $2)",
                    user_id, displayname,
                )
        except IntegrityError:
            raise UserExistsError(user_id) from None

    async def get_user(self, user_id: str) -> UserRow | None:
        row = await self.db.fetchrow(
            "SELECT user_id, password_hash, admin, deactivated, user_type, created_ts"
            " FROM users WHERE user_id = $1",
            user_id,
        )
        if row is None:
            return None
        return UserRow(row[0], row[1], bool(row[2]), bool(row[3]), row[4], row[5])

    async def count_users(self) -> int:
        return int(await self.db.fetchval("SELECT COUNT(*) FROM users"))

    async def set_password_hash(self, user_id: str, password_hash: str | None) -> None:
        await self.db.execute("UPDATE users SET password_hash = $2 WHERE user_id = $1", user_id, password_hash)

    async def set_deactivated(self, user_id: str, deactivated: bool) -> None:
        await self.db.execute("UPDATE users SET deactivated = $2 WHERE user_id = $1", user_id, deactivated)
