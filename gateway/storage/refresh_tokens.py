"""Refresh tokens of the legacy API and the access tokens issued with them (hashes only).

Spec: https://spec.matrix.org/latest/client-server-api/#refreshing-access-tokens. A pair
(access token, refresh token) replaces its predecessor when the client refreshes; the
predecessor stays usable until the new pair is used, then it is deleted.
"""

from __future__ import annotations

from dataclasses import dataclass

from .database import Connection, Database

_COLUMNS = "token_hash, user_id, device_id, access_token_hash, created_ts, expiry_ts, session_expiry_ts, next_token_hash"


@dataclass(frozen=True)
class RefreshTokenRow:
    token_hash: str
    user_id: str
    device_id: str
    access_token_hash: str
    created_ts: int
    expiry_ts: int | None
    session_expiry_ts: int | None
    #: The refresh token issued in exchange for this one (not used yet: a used one deletes this row).
    next_token_hash: str | None


@dataclass(frozen=True)
class NewPair:
    """A pair to store: hashes and when each expires (None: never)."""

    access_hash: str
    refresh_hash: str
    access_valid_until_ts: int | None
    refresh_expiry_ts: int | None
    session_expiry_ts: int | None


class RefreshTokenStore:
    def __init__(self, db: Database):
        self.db = db

    async def add_pair(self, user_id: str, device_id: str, pair: NewPair, now_ms: int) -> None:
        """The tokens of a login that asked for a refresh token."""
        async with self.db.transaction() as txn:
            await self._insert(txn, user_id, device_id, pair, now_ms)

    async def get(self, refresh_hash: str) -> RefreshTokenRow | None:
        row = await self.db.fetchrow(f"SELECT {_COLUMNS} FROM refresh_tokens WHERE token_hash = $1", refresh_hash)
        return RefreshTokenRow(*row) if row else None

    async def replace(self, old: RefreshTokenRow, pair: NewPair, now_ms: int) -> bool:
        """Exchange ``old`` for a new pair, unless another request exchanged it meanwhile
        (False). A successor that was never used (its answer was lost) is dropped."""
        async with self.db.transaction() as txn:
            if old.next_token_hash is None:
                n = await txn.execute("UPDATE refresh_tokens SET next_token_hash = $2 WHERE token_hash = $1"
                                      " AND next_token_hash IS NULL", old.token_hash, pair.refresh_hash)
            else:
                n = await txn.execute("UPDATE refresh_tokens SET next_token_hash = $2 WHERE token_hash = $1"
                                      " AND next_token_hash = $3", old.token_hash, pair.refresh_hash,
                                      old.next_token_hash)
            if not n:
                return False
            if old.next_token_hash is not None:
                await self._delete_pairs(txn, "token_hash = $1", old.next_token_hash)
            # Using a refresh token is using the pair it came with: its predecessor goes.
            await self._delete_pairs(txn, "next_token_hash = $1", old.token_hash)
            await self._insert(txn, old.user_id, old.device_id, pair, now_ms)
        return True

    async def first_use(self, access_hash: str, refresh_hash: str, now_ms: int) -> None:
        """The first request with an access token: the pair it replaced is revoked."""
        async with self.db.transaction() as txn:
            n = await txn.execute("UPDATE access_tokens SET first_used_ts = $2 WHERE token_hash = $1"
                                  " AND first_used_ts IS NULL", access_hash, now_ms)
            if n:
                await self._delete_pairs(txn, "next_token_hash = $1", refresh_hash)

    @staticmethod
    async def _insert(txn: Connection, user_id: str, device_id: str, pair: NewPair, now_ms: int) -> None:
        await txn.execute(
            "INSERT INTO access_tokens (token_hash, user_id, device_id, created_ts, valid_until_ts,"
            " refresh_token_hash) VALUES ($1, $2, $3, $4, $5, $6)",
            pair.access_hash, user_id, device_id, now_ms, pair.access_valid_until_ts, pair.refresh_hash)
        await txn.execute(
            f"INSERT INTO refresh_tokens ({_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, NULL)",
            pair.refresh_hash, user_id, device_id, pair.access_hash, now_ms, pair.refresh_expiry_ts,
            pair.session_expiry_ts)

    @staticmethod
    async def _delete_pairs(txn: Connection, where: str, value: str) -> None:
        rows = await txn.fetch(f"SELECT token_hash, access_token_hash FROM refresh_tokens WHERE {where}", value)
        for refresh_hash, access_hash in rows:
            await txn.execute("DELETE FROM access_tokens WHERE token_hash = $1", access_hash)
            await txn.execute("DELETE FROM refresh_tokens WHERE token_hash = $1", refresh_hash)
