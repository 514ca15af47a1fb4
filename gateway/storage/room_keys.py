"""Server-side key backup: backup versions and the (encrypted) room keys stored in them.

Spec: https://spec.matrix.org/latest/client-server-api/#server-side-key-backups
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .database import Connection, Database
from .e2e_keys import dumps


@dataclass(frozen=True)
class BackupVersion:
    version: int
    algorithm: str
    auth_data: Any
    etag: int


@dataclass(frozen=True)
class RoomKey:
    room_id: str
    session_id: str
    first_message_index: int
    forwarded_count: int
    is_verified: bool
    session_data: Any

    def to_json(self) -> dict[str, Any]:
        return {"first_message_index": self.first_message_index, "forwarded_count": self.forwarded_count,
                "is_verified": self.is_verified, "session_data": self.session_data}

    def better_than(self, old: "RoomKey") -> bool:
        """Which of two copies of a session key to keep: a verified one, then the one that
        decrypts from an earlier message, then the one forwarded fewer times."""
        if self.is_verified != old.is_verified:
            return self.is_verified
        if self.first_message_index != old.first_message_index:
            return self.first_message_index < old.first_message_index
        return self.forwarded_count < old.forwarded_count


class RoomKeyStore:
    def __init__(self, db: Database):
        self.db = db

    async def create_version(self, user_id: str, algorithm: str, auth_data: Any) -> int:
        async with self.db.transaction() as txn:
            last = await txn.fetchval("SELECT MAX(version) FROM e2e_room_keys_versions WHERE user_id = $1", user_id)
            version = int(last or 0) + 1
            await txn.execute(
                "INSERT INTO e2e_room_keys_versions (user_id, version, algorithm, auth_data, etag, deleted)"
                " VALUES ($1, $2, $3, $4, 0, FALSE)", user_id, version, algorithm, dumps(auth_data))
            return version

    async def get_version(self, user_id: str, version: int | None = None,
                          conn: Connection | None = None) -> BackupVersion | None:
        """A backup version (the current one, i.e. the newest, when ``version`` is None)."""
        conn = conn or self.db
        if version is None:
            row = await conn.fetchrow(
                "SELECT version, algorithm, auth_data, etag FROM e2e_room_keys_versions WHERE user_id = $1"
                " AND deleted = FALSE ORDER BY version DESC LIMIT 1", user_id)
        else:
            row = await conn.fetchrow(
                "SELECT version, algorithm, auth_data, etag FROM e2e_room_keys_versions WHERE user_id = $1"
                " AND version = $2 AND deleted = FALSE", user_id, version)
        return None if row is None else BackupVersion(int(row[0]), row[1], json.loads(row[2]), int(row[3]))

    async def update_version(self, user_id: str, version: int, auth_data: Any) -> bool:
        n = await self.db.execute(
            "UPDATE e2e_room_keys_versions SET auth_data = $3 WHERE user_id = $1 AND version = $2 AND deleted = FALSE",
            user_id, version, dumps(auth_data))
        return n > 0

    async def delete_version(self, user_id: str, version: int) -> bool:
        async with self.db.transaction() as txn:
            n = await txn.execute(
                "UPDATE e2e_room_keys_versions SET deleted = TRUE WHERE user_id = $1 AND version = $2"
                " AND deleted = FALSE", user_id, version)
            await txn.execute("DELETE FROM e2e_room_keys WHERE user_id = $1 AND version = $2", user_id, version)
        return n > 0

    async def count(self, user_id: str, version: int, conn: Connection | None = None) -> int:
        return int(await (conn or self.db).fetchval(
            "SELECT COUNT(*) FROM e2e_room_keys WHERE user_id = $1 AND version = $2", user_id, version) or 0)

    async def put_keys(self, user_id: str, version: int, keys: Sequence[RoomKey]) -> tuple[int, int] | None:
        """Store keys where they are better than what is there; (etag, count), or None if
        the version is not the current one."""
        async with self.db.transaction() as txn:
            current = await self.get_version(user_id, None, txn)
            if current is None or current.version != version:
                return None
            changed = False
            for k in keys:
                row = await txn.fetchrow(
                    "SELECT first_message_index, forwarded_count, is_verified, session_data FROM e2e_room_keys"
                    " WHERE user_id = $1 AND version = $2 AND room_id = $3 AND session_id = $4",
                    user_id, version, k.room_id, k.session_id)
                if row is not None and not k.better_than(
                        RoomKey(k.room_id, k.session_id, int(row[0]), int(row[1]), bool(row[2]), json.loads(row[3]))):
                    continue
                await txn.execute(
                    "INSERT INTO e2e_room_keys (user_id, version, room_id, session_id, first_message_index,"
                    " forwarded_count, is_verified, session_data) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
                    " ON CONFLICT (user_id, version, room_id, session_id) DO UPDATE SET"
                    " first_message_index = EXCLUDED.first_message_index, forwarded_count = EXCLUDED.forwarded_count,"
                    " is_verified = EXCLUDED.is_verified, session_data = EXCLUDED.session_data",
                    user_id, version, k.room_id, k.session_id, k.first_message_index, k.forwarded_count,
                    k.is_verified, dumps(k.session_data))
                changed = True
            etag = current.etag
            if changed:
                etag = int(await txn.fetchval(
                    "UPDATE e2e_room_keys_versions SET etag = etag + 1 WHERE user_id = $1 AND version = $2"
                    " RETURNING etag", user_id, version))
            return etag, await self.count(user_id, version, txn)

    async def get_keys(self, user_id: str, version: int, room_id: str | None = None,
                       session_id: str | None = None) -> list[RoomKey]:
        where, args = _key_filter(user_id, version, room_id, session_id)
        rows = await self.db.fetch(
            "SELECT room_id, session_id, first_message_index, forwarded_count, is_verified, session_data"
            f" FROM e2e_room_keys WHERE {where} ORDER BY room_id, session_id", *args)
        return [RoomKey(r[0], r[1], int(r[2]), int(r[3]), bool(r[4]), json.loads(r[5])) for r in rows]

    async def delete_keys(self, user_id: str, version: int, room_id: str | None = None,
                          session_id: str | None = None) -> tuple[int, int]:
        where, args = _key_filter(user_id, version, room_id, session_id)
        async with self.db.transaction() as txn:
            n = await txn.execute(f"DELETE FROM e2e_room_keys WHERE {where}", *args)
            if n:
                await txn.execute("UPDATE e2e_room_keys_versions SET etag = etag + 1 WHERE user_id = $1"
                                  " AND version = $2", user_id, version)
            etag = await txn.fetchval("SELECT etag FROM e2e_room_keys_versions WHERE user_id = $1 AND version = $2",
                                      user_id, version)
            return int(etag or 0), await self.count(user_id, version, txn)


def _key_filter(user_id: str, version: int, room_id: str | None, session_id: str | None) -> tuple[str, list[Any]]:
    """The WHERE clause (and its arguments) for a backup's keys: all of them, a room's,
    or one session's (``session_id`` only counts with a ``room_id``)."""
    args: list[Any] = [user_id, version]
    where = "user_id = $1 AND version = $2"
    if room_id is not None:
        args.append(room_id)
        where += " AND room_id = $3"
        if session_id is not None:
            args.append(session_id)
            where += " AND session_id = $4"
    return where, args
