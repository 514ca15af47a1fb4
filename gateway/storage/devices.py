"""Devices and access tokens. Tokens are stored as SHA-256 hashes, never in clear."""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from .database import Database


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class TokenOwner:
    user_id: str
    device_id: str | None
    valid_until_ts: int | None
    #: Tokens of the OAuth 2.0 API: their session, and whether they were used before.
    oauth_session_id: str | None = None
    first_used_ts: int | None = None
    #: Legacy tokens issued with a refresh token: that refresh token's hash.
    refresh_token_hash: str | None = None


@dataclass(frozen=True)
class TokenUser:
    """What every authenticated request needs to know about its token and its user. For
    an admin's session as another user, ``user_id`` is that user (the token's owner is
    ``puppeted_by``)."""

    user_id: str
    device_id: str | None
    valid_until_ts: int | None
    admin: bool
    deactivated: bool
    guest: bool
    shadow_banned: bool
    locked: bool
    suspended: bool
    puppeted_by: str | None
    #: Tokens of the OAuth 2.0 API: their session, and whether they were used before.
    oauth_session_id: str | None = None
    first_used_ts: int | None = None
    #: Legacy tokens issued with a refresh token: that refresh token's hash.
    refresh_token_hash: str | None = None


@dataclass(frozen=True)
class DeviceRow:
    user_id: str
    device_id: str
    display_name: str | None
    last_seen_ts: int | None
    last_seen_ip: str | None


class DeviceStore:
    def __init__(self, db: Database):
        self.db = db
        #: ``async listener(user_id, device_ids)`` after devices are deleted (their
        #: end-to-end keys go too: gateway/services/e2e_keys.py).
        self.deleted_listeners: list[Callable[[str, list[str]], Awaitable[None]]] = []
        #: ``async listener(user_id, device_ids)`` after a device is created or renamed
        #: (the user's device list changed).
        self.changed_listeners: list[Callable[[str, list[str]], Awaitable[None]]] = []

    async def _changed(self, user_id: str, device_id: str) -> None:
        for listener in self.changed_listeners:
            await listener(user_id, [device_id])

    async def upsert_device(self, user_id: str, device_id: str, display_name: str | None, now_ms: int) -> None:
        old = await self.get_device(user_id, device_id)
        await self.db.execute(
            "INSERT INTO devices (user_id, device_id, display_name, last_seen_ts) VALUES ($1, $2, $3, $4)"
            " ON CONFLICT (user_id, device_id) DO UPDATE SET last_seen_ts = EXCLUDED.last_seen_ts,"
            " display_name = COALESCE(EXCLUDED.display_name, devices.display_name)",
            user_id, device_id, display_name, now_ms,
        )
        if old is None or (display_name is not None and display_name != old.display_name):
            await self._changed(user_id, device_id)

    async def add_access_token(
        self, token: str, user_id: str, device_id: str | None, now_ms: int, valid_until_ts: int | None = None,
        puppets_user_id: str | None = None,
    ) -> None:
        """Store a token of ``user_id`` (acting as ``puppets_user_id`` when given)."""
        await self.db.execute(
            "INSERT INTO access_tokens (token_hash, user_id, device_id, created_ts, valid_until_ts, puppets_user_id)"
            " VALUES ($1, $2, $3, $4, $5, $6)",
            token_hash(token), user_id, device_id, now_ms, valid_until_ts, puppets_user_id,
        )

    async def get_token_owner(self, token: str) -> TokenOwner | None:
        row = await self.db.fetchrow(
            "SELECT user_id, device_id, valid_until_ts FROM access_tokens WHERE token_hash = $1",
            token_hash(token),
        )
        return TokenOwner(row[0], row[1], row[2]) if row else None

    async def get_token_requester(self, token: str) -> TokenUser | None:
        """The token's user and their flags, in one read (every authenticated request
        makes it); None for an unknown token or user."""
        row = await self.db.fetchrow(
            "SELECT u.user_id, t.device_id, t.valid_until_ts, u.admin, u.deactivated, u.is_guest, u.shadow_banned,"
            " u.locked, u.suspended, CASE WHEN t.puppets_user_id IS NULL THEN NULL ELSE t.user_id END,"
            " t.oauth_session_id, t.first_used_ts, t.refresh_token_hash"
            " FROM access_tokens t JOIN users u ON u.user_id = COALESCE(t.puppets_user_id, t.user_id)"
            " WHERE t.token_hash = $1",
            token_hash(token),
        )
        if row is None:
            return None
        return TokenUser(row[0], row[1], row[2], *(bool(v) for v in row[3:9]), *row[9:13])

    async def delete_access_token(self, token: str) -> None:
        await self.db.execute("DELETE FROM access_tokens WHERE token_hash = $1", token_hash(token))

    async def delete_devices(self, user_id: str, device_ids: list[str] | None = None,
                             except_token: str | None = None) -> list[str]:
        """Delete devices (all when ``device_ids`` is None), their tokens and pushers; returns the IDs."""
        async with self.db.transaction() as txn:
            if device_ids is None:
                rows = await txn.fetch("SELECT device_id FROM devices WHERE user_id = $1", user_id)
                device_ids = [r[0] for r in rows]
                keep = token_hash(except_token) if except_token else ""
                await txn.execute(
                    "DELETE FROM access_tokens WHERE user_id = $1 AND token_hash <> $2", user_id, keep
                )
            for device_id in device_ids:
                await txn.execute(
                    "DELETE FROM access_tokens WHERE user_id = $1 AND device_id = $2", user_id, device_id
                )
                await txn.execute(
                    "DELETE FROM refresh_tokens WHERE user_id = $1 AND device_id = $2", user_id, device_id
                )
                await txn.execute("DELETE FROM devices WHERE user_id = $1 AND device_id = $2", user_id, device_id)
                # A logged-out device gets no more pushes (its pushers go with it).
                await txn.execute("DELETE FROM pushers WHERE user_id = $1 AND device_id = $2", user_id, device_id)
        for listener in self.deleted_listeners:
            await listener(user_id, list(device_ids))
        return device_ids

    async def list_devices(self, user_id: str) -> list[DeviceRow]:
        rows = await self.db.fetch(
            "SELECT user_id, device_id, display_name, last_seen_ts, last_seen_ip FROM devices"
            " WHERE user_id = $1 ORDER BY device_id",
            user_id,
        )
        return [DeviceRow(*r) for r in rows]

    async def get_device(self, user_id: str, device_id: str) -> DeviceRow | None:
        row = await self.db.fetchrow(
            "SELECT user_id, device_id, display_name, last_seen_ts, last_seen_ip FROM devices"
            " WHERE user_id = $1 AND device_id = $2",
            user_id, device_id,
        )
        return DeviceRow(*row) if row else None

    async def set_display_name(self, user_id: str, device_id: str, display_name: str | None) -> bool:
        old = await self.get_device(user_id, device_id)
        if old is None:
            return False
        if old.display_name != display_name:
            await self.db.execute(
                "UPDATE devices SET display_name = $3 WHERE user_id = $1 AND device_id = $2",
                user_id, device_id, display_name,
            )
            await self._changed(user_id, device_id)
        return True
