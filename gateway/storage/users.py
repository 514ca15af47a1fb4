"""Local accounts: users and their profiles."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from .database import Database, IntegrityError
from .state import _placeholders


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
    is_guest: bool = False
    shadow_banned: bool = False
    locked: bool = False
    suspended: bool = False


#: The account moderation flags an admin sets (``users`` columns).
MODERATION_FLAGS = ("shadow_banned", "locked", "suspended")


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
        is_guest: bool = False,
    ) -> None:
        """Insert a new user and its profile; UserExistsError if the ID is taken."""
        try:
            async with self.db.transaction() as txn:
                await txn.execute(
                    "INSERT INTO users (user_id, password_hash, admin, user_type, created_ts, is_guest)"
                    " VALUES ($1, $2, $3, $4, $5, $6)",
                    user_id, password_hash, admin, user_type, created_ts, is_guest,
                )
                await txn.execute(
                    "INSERT INTO profiles (user_id, displayname) VALUES ($1, $2)",
                    user_id, displayname,
                )
        except IntegrityError:
            raise UserExistsError(user_id) from None

    async def get_user(self, user_id: str) -> UserRow | None:
        row = await self.db.fetchrow(
            "SELECT user_id, password_hash, admin, deactivated, user_type, created_ts, is_guest, shadow_banned,"
            " locked, suspended FROM users WHERE user_id = $1",
            user_id,
        )
        if row is None:
            return None
        return UserRow(row[0], row[1], bool(row[2]), bool(row[3]), row[4], row[5], *(bool(v) for v in row[6:]))

    async def upgrade_guest(self, user_id: str, password_hash: str | None) -> bool:
        """Make a guest account a full one (with this password); False if it is not a guest."""
        row = await self.db.fetchrow(
            "UPDATE users SET is_guest = FALSE, password_hash = $2 WHERE user_id = $1 AND is_guest = TRUE"
            " RETURNING user_id",
            user_id, password_hash,
        )
        return row is not None

    async def get_joined_guests(self, room_id: str) -> list[str]:
        """The guest accounts of this server joined to a room."""
        rows = await self.db.fetch(
            "SELECT m.user_id FROM room_memberships m JOIN users u ON u.user_id = m.user_id"
            " WHERE m.room_id = $1 AND m.membership = 'join' AND u.is_guest = TRUE ORDER BY m.user_id",
            room_id,
        )
        return [r[0] for r in rows]

    async def count_users(self) -> int:
        return int(await self.db.fetchval("SELECT COUNT(*) FROM users"))

    async def set_password_hash(self, user_id: str, password_hash: str | None) -> None:
        await self.db.execute("UPDATE users SET password_hash = $2 WHERE user_id = $1", user_id, password_hash)

    async def set_consent_version(self, user_id: str, version: str, now_ms: int) -> None:
        """Record that the user accepted this version of the privacy policy."""
        await self.db.execute("UPDATE users SET consent_version = $2, consent_ts = $3 WHERE user_id = $1",
                              user_id, version, now_ms)

    async def get_consent_version(self, user_id: str) -> str | None:
        return await self.db.fetchval("SELECT consent_version FROM users WHERE user_id = $1", user_id)

    async def set_deactivated(self, user_id: str, deactivated: bool) -> None:
        await self.db.execute("UPDATE users SET deactivated = $2 WHERE user_id = $1", user_id, deactivated)

    async def set_erased(self, user_id: str, erased: bool) -> None:
        """Mark (or, on reactivation, unmark) a user whose content is to be erased."""
        if erased:
            await self.db.execute("INSERT INTO erased_users (user_id) VALUES ($1) ON CONFLICT DO NOTHING", user_id)
        else:
            await self.db.execute("DELETE FROM erased_users WHERE user_id = $1", user_id)

    async def erased_among(self, user_ids: Iterable[str]) -> set[str]:
        """Those of ``user_ids`` who asked for their content to be erased."""
        ids = sorted(set(user_ids))
        out: set[str] = set()
        for i in range(0, len(ids), 500):
            chunk = ids[i:i + 500]
            rows = await self.db.fetch(
                f"SELECT user_id FROM erased_users WHERE user_id IN ({_placeholders(len(chunk))})", *chunk)
            out.update(r[0] for r in rows)
        return out

    async def set_admin(self, user_id: str, admin: bool) -> None:
        await self.db.execute("UPDATE users SET admin = $2 WHERE user_id = $1", user_id, admin)

    async def set_user_type(self, user_id: str, user_type: str | None) -> None:
        await self.db.execute("UPDATE users SET user_type = $2 WHERE user_id = $1", user_id, user_type)

    async def set_flag(self, user_id: str, flag: str, value: bool) -> None:
        """Set one of ``MODERATION_FLAGS``."""
        if flag not in MODERATION_FLAGS:
            raise ValueError(f"not a moderation flag: {flag}")
        await self.db.execute(f"UPDATE users SET {flag} = $2 WHERE user_id = $1", user_id, value)

    # --- third-party IDs -----------------------------------------------------------

    async def get_threepids(self, user_id: str) -> list[dict]:
        rows = await self.db.fetch(
            "SELECT medium, address, added_at, validated_at FROM user_threepids WHERE user_id = $1"
            " ORDER BY medium, address", user_id)
        return [{"medium": r[0], "address": r[1], "added_at": int(r[2]), "validated_at": int(r[3])} for r in rows]

    async def get_user_by_threepid(self, medium: str, address: str) -> str | None:
        return await self.db.fetchval(
            "SELECT user_id FROM user_threepids WHERE medium = $1 AND address = $2", medium, address)

    async def replace_threepids(self, user_id: str, threepids: list[tuple[str, str]], now_ms: int) -> None:
        """Make ``threepids`` the user's (those of another user raise IntegrityError)."""
        async with self.db.transaction() as txn:
            kept = {(r[0], r[1]) for r in await txn.fetch(
                "SELECT medium, address FROM user_threepids WHERE user_id = $1", user_id)}
            for medium, address in kept - set(threepids):
                await txn.execute("DELETE FROM user_threepids WHERE medium = $1 AND address = $2", medium, address)
            for medium, address in dict.fromkeys(threepids):
                if (medium, address) not in kept:
                    await txn.execute(
                        "INSERT INTO user_threepids (medium, address, user_id, validated_at, added_at)"
                        " VALUES ($1, $2, $3, $4, $4)", medium, address, user_id, now_ms)

    async def delete_threepids(self, user_id: str) -> None:
        await self.db.execute("DELETE FROM user_threepids WHERE user_id = $1", user_id)

    async def list_users(
        self, *, offset: int, limit: int, name: str | None, include_deactivated: bool, admins: bool | None,
        order_by: str, descending: bool,
    ) -> tuple[list[dict], int]:
        """A page of users with their profile, and the total matching (admin API)."""
        where, args = ["1 = 1"], []
        if name:
            args.append(f"%{name.lower()}%")
            where.append(f"(LOWER(u.user_id) LIKE ${len(args)} OR LOWER(COALESCE(p.displayname, '')) LIKE ${len(args)})")
        if not include_deactivated:
            where.append("u.deactivated = FALSE")
        if admins is not None:
            args.append(admins)
            where.append(f"u.admin = ${len(args)}")
        columns = {"name": "u.user_id", "admin": "u.admin", "deactivated": "u.deactivated",
                   "creation_ts": "u.created_ts", "displayname": "p.displayname", "user_type": "u.user_type"}
        order = columns.get(order_by, "u.user_id")
        sql_where = " AND ".join(where)
        total = await self.db.fetchval(
            f"SELECT COUNT(*) FROM users u LEFT JOIN profiles p ON p.user_id = u.user_id WHERE {sql_where}", *args
        )
        rows = await self.db.fetch(
            "SELECT u.user_id, u.admin, u.deactivated, u.user_type, u.created_ts, p.displayname, p.avatar_url,"
            " u.is_guest, u.shadow_banned, u.locked, u.suspended,"
            " EXISTS (SELECT 1 FROM erased_users e WHERE e.user_id = u.user_id)"
            f" FROM users u LEFT JOIN profiles p ON p.user_id = u.user_id WHERE {sql_where}"
            f" ORDER BY {order} {'DESC' if descending else 'ASC'}, u.user_id LIMIT {int(limit)} OFFSET {int(offset)}",
            *args,
        )
        users = [
            {"name": r[0], "admin": bool(r[1]), "deactivated": bool(r[2]), "user_type": r[3], "creation_ts": r[4],
             "displayname": r[5], "avatar_url": r[6], "is_guest": bool(r[7]),
             "shadow_banned": bool(r[8]), "locked": bool(r[9]), "suspended": bool(r[10]), "erased": bool(r[11])}
            for r in rows
        ]
        return users, int(total)
