"""User-interactive auth sessions, registration tokens and login tokens."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .database import Database
from .devices import token_hash


@dataclass(frozen=True)
class UIASession:
    session_id: str
    created_ts: int
    user_id: str | None
    request_key: str
    completed: tuple[str, ...]
    #: What the session remembers (gateway/services/uia.py).
    data: dict


class AuthStore:
    def __init__(self, db: Database):
        self.db = db

    # --- user-interactive auth --------------------------------------------------

    async def create_uia_session(self, session_id: str, now_ms: int, user_id: str | None, request_key: str) -> None:
        await self.db.execute(
            "INSERT INTO ui_auth_sessions (session_id, created_ts, user_id, request_key) VALUES ($1, $2, $3, $4)",
            session_id, now_ms, user_id, request_key,
        )

    async def get_uia_session(self, session_id: str) -> UIASession | None:
        row = await self.db.fetchrow(
            "SELECT session_id, created_ts, user_id, request_key, completed, data FROM ui_auth_sessions"
            " WHERE session_id = $1",
            session_id,
        )
        if row is None:
            return None
        return UIASession(row[0], row[1], row[2], row[3], tuple(json.loads(row[4])), json.loads(row[5]))

    async def set_uia_session_data(self, session_id: str, data: dict) -> None:
        await self.db.execute("UPDATE ui_auth_sessions SET data = $2 WHERE session_id = $1",
                              session_id, json.dumps(data))

    async def mark_uia_stage_done(self, session_id: str, stage: str) -> tuple[str, ...]:
        async with self.db.transaction() as txn:
            raw = await txn.fetchval("SELECT completed FROM ui_auth_sessions WHERE session_id = $1", session_id)
            done = json.loads(raw or "[]")
            if stage not in done:
                done.append(stage)
            await txn.execute(
                "UPDATE ui_auth_sessions SET completed = $2 WHERE session_id = $1", session_id, json.dumps(done)
            )
        return tuple(done)

    async def delete_uia_session(self, session_id: str) -> None:
        await self.db.execute("DELETE FROM ui_auth_sessions WHERE session_id = $1", session_id)

    async def expire_uia_sessions(self, older_than_ms: int) -> None:
        await self.db.execute("DELETE FROM ui_auth_sessions WHERE created_ts < $1", older_than_ms)

    # --- registration tokens ----------------------------------------------------

    async def registration_token_valid(self, token: str, now_ms: int) -> bool:
        row = await self.db.fetchrow(
            "SELECT uses_allowed, pending, completed, expiry_time FROM registration_tokens WHERE token = $1", token
        )
        if row is None:
            return False
        uses_allowed, pending, completed, expiry = row
        if expiry is not None and expiry < now_ms:
            return False
        return uses_allowed is None or pending + completed < uses_allowed

    async def use_registration_token(self, token: str) -> None:
        await self.db.execute("UPDATE registration_tokens SET completed = completed + 1 WHERE token = $1", token)

    async def create_registration_token(self, token: str, uses_allowed: int | None, expiry_time: int | None) -> None:
        await self.db.execute(
            "INSERT INTO registration_tokens (token, uses_allowed, expiry_time) VALUES ($1, $2, $3)",
            token, uses_allowed, expiry_time,
        )

    # --- login tokens (m.login.token) -------------------------------------------

    async def add_login_token(self, token: str, user_id: str, expiry_ts: int,
                              auth_provider_id: str | None = None,
                              auth_provider_session_id: str | None = None,
                              extra_attributes: Mapping[str, Any] | None = None) -> None:
        await self.db.execute(
            "INSERT INTO login_tokens (token_hash, user_id, expiry_ts, auth_provider_id, auth_provider_session_id,"
            " extra_attributes) VALUES ($1, $2, $3, $4, $5, $6)",
            token_hash(token), user_id, expiry_ts, auth_provider_id, auth_provider_session_id,
            json.dumps(dict(extra_attributes)) if extra_attributes else None,
        )

    async def consume_login_token(self, token: str, now_ms: int
                                  ) -> tuple[str, str | None, str | None, dict[str, Any]] | None:
        """(user, auth_provider_id, auth_provider_session_id, extra_attributes) if the token is
        valid and unused; marks it used (single use, atomically)."""
        row = await self.db.fetchrow(
            "UPDATE login_tokens SET used_ts = $2 WHERE token_hash = $1 AND used_ts IS NULL AND expiry_ts > $2"
            " RETURNING user_id, auth_provider_id, auth_provider_session_id, extra_attributes",
            token_hash(token), now_ms,
        )
        await self.db.execute("DELETE FROM login_tokens WHERE expiry_ts < $1", now_ms - 3_600_000)
        return (row[0], row[1], row[2], json.loads(row[3]) if row[3] else {}) if row else None

    # --- devices logged in through an identity provider's session ---------------------

    async def add_device_auth_provider(self, user_id: str, device_id: str, auth_provider_id: str,
                                       auth_provider_session_id: str) -> None:
        await self.db.execute(
            "INSERT INTO device_auth_providers (user_id, device_id, auth_provider_id, auth_provider_session_id)"
            " VALUES ($1, $2, $3, $4)",
            user_id, device_id, auth_provider_id, auth_provider_session_id,
        )

    async def devices_for_auth_provider_session(self, auth_provider_id: str, auth_provider_session_id: str | None,
                                                user_id: str | None = None) -> list[tuple[str, str]]:
        """(user, device) pairs logged in through that IdP session (``None``: any session of
        ``user_id`` at that IdP)."""
        query = "SELECT user_id, device_id FROM device_auth_providers WHERE auth_provider_id = $1"
        args: list = [auth_provider_id]
        if auth_provider_session_id is not None:
            args.append(auth_provider_session_id)
            query += f" AND auth_provider_session_id = ${len(args)}"
        if user_id is not None:
            args.append(user_id)
            query += f" AND user_id = ${len(args)}"
        rows = await self.db.fetch(query + " ORDER BY user_id, device_id", *args)
        return [(r[0], r[1]) for r in rows]

    async def delete_device_auth_providers(self, user_id: str, device_id: str) -> None:
        await self.db.execute("DELETE FROM device_auth_providers WHERE user_id = $1 AND device_id = $2",
                              user_id, device_id)

    async def list_registration_tokens(self) -> list[dict]:
        rows = await self.db.fetch(
            "SELECT token, uses_allowed, pending, completed, expiry_time FROM registration_tokens ORDER BY token"
        )
        return [dict(zip(("token", "uses_allowed", "pending", "completed", "expiry_time"), r)) for r in rows]

    async def update_registration_token(self, token: str, changes: dict) -> bool:
        sets, args = [], [token]
        for column in ("uses_allowed", "expiry_time"):
            if column in changes:
                args.append(changes[column])
                sets.append(f"{column} = ${len(args)}")
        if not sets:
            return await self.db.fetchval("SELECT 1 FROM registration_tokens WHERE token = $1", token) is not None
        return await self.db.execute(f"UPDATE registration_tokens SET {', '.join(sets)} WHERE token = $1", *args) > 0

    async def delete_registration_token(self, token: str) -> bool:
        return await self.db.execute("DELETE FROM registration_tokens WHERE token = $1", token) > 0

    # --- OpenID tokens (for integrations) ----------------------------------------

    async def add_openid_token(self, token: str, user_id: str, expires_ts: int, now_ms: int) -> None:
        await self.db.execute("DELETE FROM openid_tokens WHERE expires_ts < $1", now_ms)
        await self.db.execute(
            "INSERT INTO openid_tokens (token_hash, user_id, expires_ts) VALUES ($1, $2, $3)",
            token_hash(token), user_id, expires_ts,
        )

    async def get_openid_token_user(self, token: str, now_ms: int) -> str | None:
        return await self.db.fetchval(
            "SELECT user_id FROM openid_tokens WHERE token_hash = $1 AND expires_ts > $2", token_hash(token), now_ms
        )
