"""The OAuth 2.0 API's tables: clients, browser sessions, grants, sessions, refresh tokens.

Secrets (codes, device codes, refresh tokens, cookies) are stored as SHA-256 hashes. The
access tokens themselves live in ``access_tokens`` (gateway/storage/devices.py), with the
OAuth session they belong to.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from typing import Any

from .database import Database

__all__ = ["OAuthStore", "Grant", "OAuthSession", "RefreshToken", "REPLACED"]


@dataclass(frozen=True)
class Grant:
    grant_id: str
    kind: str  # "code" or "device"
    client_id: str
    scope: str
    device_id: str
    redirect_uri: str | None
    response_mode: str | None
    state: str | None
    nonce: str | None
    code_challenge: str | None
    prompt: str | None
    browser_key_hash: str | None
    user_code: str | None
    device_code_hash: str | None
    code_hash: str | None
    user_id: str | None
    auth_time: int | None
    idp_id: str | None
    idp_session_id: str | None
    status: str
    session_id: str | None
    created_ts: int
    expires_ts: int
    last_poll_ts: int | None


_GRANT_COLUMNS = ", ".join(f.name for f in fields(Grant))


@dataclass(frozen=True)
class OAuthSession:
    session_id: str
    client_id: str
    user_id: str
    device_id: str
    scope: str
    created_ts: int
    finished_ts: int | None


_SESSION_COLUMNS = ", ".join(f.name for f in fields(OAuthSession))


@dataclass(frozen=True)
class RefreshToken:
    token_hash: str
    session_id: str
    access_token_hash: str
    created_ts: int
    consumed_ts: int | None
    next_token_hash: str | None


_REFRESH_COLUMNS = ", ".join(f.name for f in fields(RefreshToken))
#: ``next_token_hash`` of a refresh token two generations old: never valid again, kept only to
#: recognise its replay.
REPLACED = "!replaced"


class OAuthStore:
    def __init__(self, db: Database):
        self.db = db

    # --- clients ---------------------------------------------------------------------

    async def add_client(self, client_id: str, metadata: dict[str, Any], now_ms: int) -> None:
        await self.db.execute("INSERT INTO oauth_clients (client_id, metadata, created_ts) VALUES ($1, $2, $3)",
                              client_id, json.dumps(metadata), now_ms)

    async def delete_unused_clients(self, registered_before_ts: int, finished_before_ts: int) -> int:
        """Forget sessions that ended before ``finished_before_ts`` and grants that expired
        before ``registered_before_ts``, then clients registered before ``registered_before_ts``
        with no grant and no session left (spec: never a client with an active session).
        Returns how many clients went."""
        async with self.db.transaction() as txn:
            await txn.execute("DELETE FROM oauth_sessions WHERE finished_ts < $1", finished_before_ts)
            await txn.execute("DELETE FROM oauth_grants WHERE expires_ts < $1", registered_before_ts)
            return await txn.execute(
                "DELETE FROM oauth_clients WHERE created_ts < $1"
                " AND NOT EXISTS (SELECT 1 FROM oauth_sessions s WHERE s.client_id = oauth_clients.client_id)"
                " AND NOT EXISTS (SELECT 1 FROM oauth_grants g WHERE g.client_id = oauth_clients.client_id)",
                registered_before_ts)

    async def get_client(self, client_id: str) -> dict[str, Any] | None:
        raw = await self.db.fetchval("SELECT metadata FROM oauth_clients WHERE client_id = $1", client_id)
        return json.loads(raw) if raw is not None else None

    # --- browser sessions (signed in on our pages) --------------------------------------

    async def add_browser_session(self, session_hash: str, user_id: str, idp_id: str | None,
                                  idp_session_id: str | None, now_ms: int, expires_ts: int,
                                  replaces: str | None = None) -> None:
        """A signed-in browser; ``replaces``: its key before the sign-in, whose session ends
        and whose pending grants move to the new key."""
        async with self.db.transaction() as txn:
            await txn.execute("DELETE FROM oauth_browser_sessions WHERE session_hash = $1 OR session_hash = $2"
                              " OR expires_ts < $3", session_hash, replaces or session_hash, now_ms)
            if replaces is not None:
                await txn.execute("UPDATE oauth_grants SET browser_key_hash = $2 WHERE browser_key_hash = $1"
                                  " AND status = 'pending'", replaces, session_hash)
            await txn.execute(
                "INSERT INTO oauth_browser_sessions (session_hash, user_id, idp_id, idp_session_id, created_ts,"
                " expires_ts) VALUES ($1, $2, $3, $4, $5, $6)",
                session_hash, user_id, idp_id, idp_session_id, now_ms, expires_ts)

    async def get_browser_session(self, session_hash: str, now_ms: int
                                  ) -> tuple[str, str | None, str | None, int] | None:
        """(user_id, idp_id, idp_session_id, signed-in time) of a live browser session."""
        row = await self.db.fetchrow(
            "SELECT user_id, idp_id, idp_session_id, created_ts FROM oauth_browser_sessions"
            " WHERE session_hash = $1 AND expires_ts > $2", session_hash, now_ms)
        return tuple(row) if row else None

    async def delete_browser_session(self, session_hash: str) -> None:
        await self.db.execute("DELETE FROM oauth_browser_sessions WHERE session_hash = $1", session_hash)

    async def delete_browser_sessions_of_idp_session(self, idp_id: str, idp_session_id: str) -> None:
        await self.db.execute("DELETE FROM oauth_browser_sessions WHERE idp_id = $1 AND idp_session_id = $2",
                              idp_id, idp_session_id)

    async def delete_browser_sessions_of_user(self, user_id: str) -> None:
        await self.db.execute("DELETE FROM oauth_browser_sessions WHERE user_id = $1", user_id)

    # --- grants (authorisation code requests and device authorisations) ------------------

    async def add_grant(self, grant: Grant) -> None:
        values = [getattr(grant, f.name) for f in fields(Grant)]
        placeholders = ", ".join(f"${i}" for i in range(1, len(values) + 1))
        await self.db.execute("DELETE FROM oauth_grants WHERE expires_ts < $1", grant.created_ts - 3_600_000)
        await self.db.execute(f"INSERT INTO oauth_grants ({_GRANT_COLUMNS}) VALUES ({placeholders})", *values)

    async def _grant_where(self, where: str, *args: Any) -> Grant | None:
        row = await self.db.fetchrow(f"SELECT {_GRANT_COLUMNS} FROM oauth_grants WHERE {where}", *args)
        return Grant(*row) if row else None

    async def get_grant(self, grant_id: str) -> Grant | None:
        return await self._grant_where("grant_id = $1", grant_id)

    async def get_grant_by_code(self, code_hash: str) -> Grant | None:
        return await self._grant_where("code_hash = $1", code_hash)

    async def get_grant_by_device_code(self, device_code_hash: str) -> Grant | None:
        return await self._grant_where("device_code_hash = $1", device_code_hash)

    async def get_grant_by_user_code(self, user_code: str) -> Grant | None:
        return await self._grant_where("user_code = $1", user_code)

    async def bind_grant_to_browser(self, grant_id: str, browser_key_hash: str) -> bool:
        """A device grant is tied to the first browser that entered its user code."""
        n = await self.db.execute(
            "UPDATE oauth_grants SET browser_key_hash = $2 WHERE grant_id = $1 AND status = 'pending'"
            " AND (browser_key_hash IS NULL OR browser_key_hash = $2)", grant_id, browser_key_hash)
        return n > 0

    async def decide_grant(self, grant_id: str, status: str, user: tuple[str, int, str | None, str | None] | None,
                           code_hash: str | None, expires_ts: int) -> bool:
        """pending -> approved (with the user: (user_id, auth_time, idp_id, idp_session_id), and
        the code of a code grant) or denied; once."""
        user_id, auth_time, idp_id, idp_session_id = user or (None, None, None, None)
        n = await self.db.execute(
            "UPDATE oauth_grants SET status = $2, user_id = $3, auth_time = $4, idp_id = $5, idp_session_id = $6,"
            " code_hash = $7, expires_ts = $8 WHERE grant_id = $1 AND status = 'pending'",
            grant_id, status, user_id, auth_time, idp_id, idp_session_id, code_hash, expires_ts)
        return n > 0

    async def mark_grant_exchanged(self, grant_id: str, session_id: str) -> bool:
        """approved -> exchanged, atomically: a code or device code gives tokens once."""
        n = await self.db.execute(
            "UPDATE oauth_grants SET status = 'exchanged', session_id = $2 WHERE grant_id = $1 AND status = 'approved'",
            grant_id, session_id)
        return n > 0

    async def record_poll(self, grant_id: str, now_ms: int) -> int | None:
        """Store this poll's time; returns the previous one (RFC 8628 ``slow_down``)."""
        async with self.db.transaction() as txn:
            last = await txn.fetchval("SELECT last_poll_ts FROM oauth_grants WHERE grant_id = $1", grant_id)
            await txn.execute("UPDATE oauth_grants SET last_poll_ts = $2 WHERE grant_id = $1", grant_id, now_ms)
        return last

    # --- sessions and tokens ------------------------------------------------------------------

    async def add_session(self, session: OAuthSession) -> None:
        values = [getattr(session, f.name) for f in fields(OAuthSession)]
        await self.db.execute(f"INSERT INTO oauth_sessions ({_SESSION_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7)",
                              *values)

    async def get_session(self, session_id: str) -> OAuthSession | None:
        row = await self.db.fetchrow(f"SELECT {_SESSION_COLUMNS} FROM oauth_sessions WHERE session_id = $1",
                                     session_id)
        return OAuthSession(*row) if row else None

    async def live_sessions_of_device(self, user_id: str, device_id: str) -> list[str]:
        rows = await self.db.fetch("SELECT session_id FROM oauth_sessions WHERE user_id = $1 AND device_id = $2"
                                   " AND finished_ts IS NULL", user_id, device_id)
        return [r[0] for r in rows]

    async def finish_session(self, session_id: str, now_ms: int) -> bool:
        """End a session: its access tokens and refresh tokens stop working. False if it had ended."""
        async with self.db.transaction() as txn:
            n = await txn.execute("UPDATE oauth_sessions SET finished_ts = $2 WHERE session_id = $1"
                                  " AND finished_ts IS NULL", session_id, now_ms)
            await txn.execute("DELETE FROM access_tokens WHERE oauth_session_id = $1", session_id)
            await txn.execute("DELETE FROM oauth_refresh_tokens WHERE session_id = $1", session_id)
        return n > 0

    async def add_tokens(self, session_id: str, user_id: str, device_id: str, access_hash: str, refresh_hash: str,
                         now_ms: int, valid_until_ts: int, *, previous_refresh_hash: str | None = None) -> None:
        """A new access token and refresh token of a session (after a refresh, the consumed
        refresh token points to the new one)."""
        async with self.db.transaction() as txn:
            await txn.execute(
                "INSERT INTO access_tokens (token_hash, user_id, device_id, created_ts, valid_until_ts,"
                " oauth_session_id) VALUES ($1, $2, $3, $4, $5, $6)",
                access_hash, user_id, device_id, now_ms, valid_until_ts, session_id)
            await txn.execute(
                f"INSERT INTO oauth_refresh_tokens ({_REFRESH_COLUMNS}) VALUES ($1, $2, $3, $4, NULL, NULL)",
                refresh_hash, session_id, access_hash, now_ms)
            if previous_refresh_hash is not None:
                await txn.execute(
                    "UPDATE oauth_refresh_tokens SET consumed_ts = COALESCE(consumed_ts, $2), next_token_hash = $3"
                    " WHERE token_hash = $1", previous_refresh_hash, now_ms, refresh_hash)

    async def get_refresh_token(self, token_hash: str) -> RefreshToken | None:
        row = await self.db.fetchrow(f"SELECT {_REFRESH_COLUMNS} FROM oauth_refresh_tokens WHERE token_hash = $1",
                                     token_hash)
        return RefreshToken(*row) if row else None

    async def claim_refresh_token(self, token_hash: str, expected_next: str | None, now_ms: int) -> bool:
        """Take a refresh token for one refresh: only if its successor is still the one seen
        (two concurrent refreshes with one token: one wins)."""
        if expected_next is None:
            n = await self.db.execute(
                "UPDATE oauth_refresh_tokens SET consumed_ts = $2, next_token_hash = '' WHERE token_hash = $1"
                " AND next_token_hash IS NULL", token_hash, now_ms)
        else:
            n = await self.db.execute(
                "UPDATE oauth_refresh_tokens SET next_token_hash = '' WHERE token_hash = $1 AND next_token_hash = $2",
                token_hash, expected_next)
        return n > 0

    async def drop_tokens(self, refresh_hash: str) -> None:
        """Forget a refresh token and the access token issued with it (a lost refresh response)."""
        async with self.db.transaction() as txn:
            access = await txn.fetchval("SELECT access_token_hash FROM oauth_refresh_tokens WHERE token_hash = $1",
                                        refresh_hash)
            await txn.execute("DELETE FROM oauth_refresh_tokens WHERE token_hash = $1", refresh_hash)
            if access is not None:
                await txn.execute("DELETE FROM access_tokens WHERE token_hash = $1", access)

    async def access_token_used(self, access_hash: str) -> bool:
        used = await self.db.fetchval("SELECT first_used_ts FROM access_tokens WHERE token_hash = $1", access_hash)
        return used is not None

    async def mark_access_token_used(self, access_hash: str, now_ms: int) -> None:
        """The first use of an access token: the access token issued before it (with the
        refresh token it replaced) stops working, and that refresh token may not be retried."""
        async with self.db.transaction() as txn:
            n = await txn.execute("UPDATE access_tokens SET first_used_ts = $2 WHERE token_hash = $1"
                                  " AND first_used_ts IS NULL", access_hash, now_ms)
            if not n:
                return
            await txn.execute(
                "DELETE FROM access_tokens WHERE token_hash IN (SELECT old.access_token_hash"
                " FROM oauth_refresh_tokens old JOIN oauth_refresh_tokens cur ON old.next_token_hash = cur.token_hash"
                " WHERE cur.access_token_hash = $1)", access_hash)

    async def drop_predecessors(self, refresh_hash: str, now_ms: int, keep_tombstones_ms: int) -> None:
        """The refresh tokens this one replaced can no longer be retried: their access tokens go,
        and each stays only as a tombstone (``next_token_hash`` = ``REPLACED``) for
        ``keep_tombstones_ms``, so that a replay is still recognised as one (spec: "the session
        is compromised"). Older tombstones of the session are forgotten."""
        async with self.db.transaction() as txn:
            rows = await txn.fetch("SELECT token_hash, access_token_hash, session_id FROM oauth_refresh_tokens"
                                   " WHERE next_token_hash = $1", refresh_hash)
            for old_refresh, old_access, session_id in rows:
                await txn.execute("DELETE FROM access_tokens WHERE token_hash = $1", old_access)
                await txn.execute("UPDATE oauth_refresh_tokens SET next_token_hash = $2 WHERE token_hash = $1",
                                  old_refresh, REPLACED)
                await txn.execute("DELETE FROM oauth_refresh_tokens WHERE session_id = $1 AND next_token_hash = $2"
                                  " AND consumed_ts < $3", session_id, REPLACED, now_ms - keep_tombstones_ms)

    async def delete_device_tokens(self, user_id: str, device_id: str) -> None:
        """Every access token of a device, and its link to an IdP session (a new sign-in takes it)."""
        async with self.db.transaction() as txn:
            await txn.execute("DELETE FROM access_tokens WHERE user_id = $1 AND device_id = $2", user_id, device_id)
            await txn.execute("DELETE FROM refresh_tokens WHERE user_id = $1 AND device_id = $2", user_id, device_id)
            await txn.execute("DELETE FROM device_auth_providers WHERE user_id = $1 AND device_id = $2",
                              user_id, device_id)

    async def link_device_to_idp_session(self, user_id: str, device_id: str, idp_id: str,
                                         idp_session_id: str) -> None:
        """The device signed in through this IdP session (``device_auth_providers``, which the
        IdP's back-channel logout reads)."""
        await self.db.execute(
            "INSERT INTO device_auth_providers (user_id, device_id, auth_provider_id, auth_provider_session_id)"
            " VALUES ($1, $2, $3, $4)", user_id, device_id, idp_id, idp_session_id)

    async def session_of_access_token(self, access_hash: str) -> str | None:
        return await self.db.fetchval("SELECT oauth_session_id FROM access_tokens WHERE token_hash = $1",
                                      access_hash)

    # --- the id_token signing key, and cross-signing reset approvals -----------------------------

    async def get_or_create_signing_key(self, kid: str, pem: str, now_ms: int) -> tuple[str, str]:
        """The (kid, PEM) in use: ours, unless another process stored one first."""
        row = await self.db.fetchrow("SELECT kid, private_key_pem FROM oauth_signing_keys ORDER BY created_ts LIMIT 1")
        if row is not None:
            return row[0], row[1]
        await self.db.execute("INSERT INTO oauth_signing_keys (kid, private_key_pem, created_ts) VALUES ($1, $2, $3)"
                              " ON CONFLICT DO NOTHING", kid, pem, now_ms)
        row = await self.db.fetchrow("SELECT kid, private_key_pem FROM oauth_signing_keys ORDER BY created_ts, kid"
                                     " LIMIT 1")
        return row[0], row[1]

    async def allow_cross_signing_reset(self, user_id: str, until_ts: int) -> None:
        await self.db.execute(
            "INSERT INTO oauth_cross_signing_reset (user_id, allowed_until_ts) VALUES ($1, $2)"
            " ON CONFLICT (user_id) DO UPDATE SET allowed_until_ts = EXCLUDED.allowed_until_ts", user_id, until_ts)

    async def cross_signing_reset_allowed_until(self, user_id: str) -> int | None:
        return await self.db.fetchval("SELECT allowed_until_ts FROM oauth_cross_signing_reset WHERE user_id = $1",
                                      user_id)
