"""SSO state in the database: login sessions, pending registrations, external ID links.

Nothing here lives in memory, so a restart in the middle of a login (or a second
process answering the callback) does not break it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from .database import Database, IntegrityError


@dataclass(frozen=True)
class SsoLoginSession:
    """A login sent to an IdP; ``session_id`` is the OAuth2 ``state``."""

    session_id: str
    idp_id: str
    browser_key_hash: str
    client_redirect_url: str
    ui_auth_session_id: str | None
    nonce: str | None
    code_verifier: str | None
    created_ts: int
    expires_ts: int


@dataclass(frozen=True)
class PendingRegistration:
    """A new SSO user who still has to choose a username."""

    session_id: str
    idp_id: str
    remote_user_id: str
    attributes: dict[str, Any]  # UserAttributes.to_json() plus "extra_attributes"
    client_redirect_url: str
    auth_provider_session_id: str | None
    chosen_localpart: str | None
    created_ts: int
    expires_ts: int


class SsoStore:
    def __init__(self, db: Database):
        self.db = db

    # --- login sessions -------------------------------------------------------------

    async def add_login_session(self, s: SsoLoginSession) -> None:
        await self.db.execute(
            "INSERT INTO sso_login_sessions (session_id, idp_id, browser_key_hash, client_redirect_url,"
            " ui_auth_session_id, nonce, code_verifier, created_ts, expires_ts)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            s.session_id, s.idp_id, s.browser_key_hash, s.client_redirect_url, s.ui_auth_session_id,
            s.nonce, s.code_verifier, s.created_ts, s.expires_ts,
        )

    async def get_login_session(self, session_id: str) -> tuple[SsoLoginSession, int | None] | None:
        """The session and when it was used (None if not yet)."""
        row = await self.db.fetchrow(
            "SELECT session_id, idp_id, browser_key_hash, client_redirect_url, ui_auth_session_id, nonce,"
            " code_verifier, created_ts, expires_ts, used_ts FROM sso_login_sessions WHERE session_id = $1",
            session_id,
        )
        if row is None:
            return None
        return SsoLoginSession(*[row[i] for i in range(9)]), row[9]

    async def mark_login_session_used(self, session_id: str, now_ms: int) -> bool:
        """Single use: True for the first caller only."""
        n = await self.db.execute(
            "UPDATE sso_login_sessions SET used_ts = $2 WHERE session_id = $1 AND used_ts IS NULL",
            session_id, now_ms,
        )
        return n == 1

    async def expire_login_sessions(self, now_ms: int, keep_used_ms: int = 3_600_000) -> None:
        # Used sessions are kept a while so that a replayed callback is recognised as such.
        await self.db.execute("DELETE FROM sso_login_sessions WHERE expires_ts < $1", now_ms - keep_used_ms)

    # --- pending registrations --------------------------------------------------------

    async def add_pending_registration(self, p: PendingRegistration) -> None:
        await self.db.execute(
            "INSERT INTO sso_pending_registrations (session_id, idp_id, remote_user_id, attributes,"
            " client_redirect_url, auth_provider_session_id, chosen_localpart, created_ts, expires_ts)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            p.session_id, p.idp_id, p.remote_user_id, json.dumps(p.attributes), p.client_redirect_url,
            p.auth_provider_session_id, p.chosen_localpart, p.created_ts, p.expires_ts,
        )
        await self.db.execute("DELETE FROM sso_pending_registrations WHERE expires_ts < $1", p.created_ts)

    async def get_pending_registration(self, session_id: str, now_ms: int) -> PendingRegistration | None:
        row = await self.db.fetchrow(
            "SELECT session_id, idp_id, remote_user_id, attributes, client_redirect_url, auth_provider_session_id,"
            " chosen_localpart, created_ts, expires_ts FROM sso_pending_registrations"
            " WHERE session_id = $1 AND expires_ts > $2",
            session_id, now_ms,
        )
        if row is None:
            return None
        return PendingRegistration(row[0], row[1], row[2], json.loads(row[3]), row[4], row[5], row[6], row[7], row[8])

    async def set_pending_choice(self, session_id: str, localpart: str, use_display_name: bool) -> None:
        """The username chosen in the picker, kept until the user accepts the terms."""
        await self.db.execute(
            "UPDATE sso_pending_registrations SET chosen_localpart = $2, use_display_name = $3"
            " WHERE session_id = $1", session_id, localpart, use_display_name)

    async def get_pending_consent(self, session_id: str) -> tuple[bool, str | None]:
        """(use_display_name, terms_accepted_version) of a pending registration."""
        row = await self.db.fetchrow(
            "SELECT use_display_name, terms_accepted_version FROM sso_pending_registrations WHERE session_id = $1",
            session_id)
        return (True, None) if row is None else (bool(row[0]), row[1])

    async def set_terms_accepted(self, session_id: str, version: str) -> None:
        await self.db.execute(
            "UPDATE sso_pending_registrations SET terms_accepted_version = $2 WHERE session_id = $1",
            session_id, version)

    async def take_pending_registration(self, session_id: str) -> bool:
        """Delete it; True for the first caller only (so one session registers one user)."""
        return await self.db.execute("DELETE FROM sso_pending_registrations WHERE session_id = $1", session_id) == 1

    # --- external IDs -----------------------------------------------------------------

    async def get_user_by_external_id(self, auth_provider: str, external_id: str) -> str | None:
        return await self.db.fetchval(
            "SELECT user_id FROM user_external_ids WHERE auth_provider = $1 AND external_id = $2",
            auth_provider, external_id,
        )

    async def link_external_id(self, auth_provider: str, external_id: str, user_id: str) -> None:
        """Record that this IdP identity is ``user_id``; IntegrityError if it is already linked."""
        await self.db.execute(
            "INSERT INTO user_external_ids (auth_provider, external_id, user_id) VALUES ($1, $2, $3)",
            auth_provider, external_id, user_id,
        )

    async def replace_external_ids(self, user_id: str, external_ids: list[tuple[str, str]]) -> None:
        """Make ``external_ids`` (provider, ID) the user's links (IntegrityError if one is another user's)."""
        async with self.db.transaction() as txn:
            await txn.execute("DELETE FROM user_external_ids WHERE user_id = $1", user_id)
            for provider, external_id in external_ids:
                await txn.execute(
                    "INSERT INTO user_external_ids (auth_provider, external_id, user_id) VALUES ($1, $2, $3)",
                    provider, external_id, user_id)

    async def get_external_ids(self, user_id: str) -> list[tuple[str, str]]:
        rows = await self.db.fetch(
            "SELECT auth_provider, external_id FROM user_external_ids WHERE user_id = $1 ORDER BY 1, 2", user_id
        )
        return [(r[0], r[1]) for r in rows]


__all__ = ["IntegrityError", "PendingRegistration", "SsoLoginSession", "SsoStore"]
