"""SSO sessions: creating and claiming them, with the security checks in one place.

A login session is created when the browser is sent to the IdP. Its ID is the OAuth2
``state``; a random browser key, set as an HttpOnly cookie, is stored hashed next to it,
so that a callback only completes in the browser that started the login (no login CSRF).
A session completes once: a replayed callback is refused.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Callable

from gateway.storage.sso import PendingRegistration, SsoLoginSession, SsoStore

from .provider import SsoError

__all__ = ["SsoSessions", "LOGIN_SESSION_LIFETIME_MS", "PENDING_REGISTRATION_LIFETIME_MS", "hash_key",
           "new_secret"]

#: How long the user may spend at the IdP.
LOGIN_SESSION_LIFETIME_MS = 10 * 60 * 1000
#: How long the username picker stays valid.
PENDING_REGISTRATION_LIFETIME_MS = 15 * 60 * 1000


def new_secret() -> str:
    """256 random bits, URL-safe."""
    return secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


class SsoSessions:
    def __init__(self, store: SsoStore, clock_ms: Callable[[], int]):
        self.store = store
        self.clock_ms = clock_ms

    async def start_login(self, idp_id: str, client_redirect_url: str, *,
                          ui_auth_session_id: str | None = None,
                          lifetime_ms: int = LOGIN_SESSION_LIFETIME_MS) -> tuple[SsoLoginSession, str]:
        """A new login session and the browser key to set as a cookie."""
        now = self.clock_ms()
        browser_key = new_secret()
        session = SsoLoginSession(
            session_id=new_secret(),
            idp_id=idp_id,
            browser_key_hash=hash_key(browser_key),
            client_redirect_url=client_redirect_url,
            ui_auth_session_id=ui_auth_session_id,
            nonce=new_secret(),
            code_verifier=secrets.token_urlsafe(48),  # 64 characters, within RFC 7636's 43..128
            created_ts=now,
            expires_ts=now + lifetime_ms,
        )
        await self.store.expire_login_sessions(now)
        await self.store.add_login_session(session)
        return session, browser_key

    async def claim_login(self, state: str | None, browser_key: str | None, idp_id: str | None = None
                          ) -> SsoLoginSession:
        """The session for a callback, marked used. SsoError if it is unknown, from another
        browser, for another IdP, expired or already used."""
        if not state:
            raise SsoError("missing_session", "The identity provider did not send back the login state.")
        found = await self.store.get_login_session(state)
        if found is None:
            raise SsoError("unknown_session", "This login session is unknown. Please start the login again.")
        session, used_ts = found
        if not browser_key or not hmac.compare_digest(hash_key(browser_key), session.browser_key_hash):
            raise SsoError("mismatching_session",
                           "This login was started in another browser (or its cookie is gone). "
                           "Please start the login again from your Matrix client.")
        if idp_id is not None and idp_id != session.idp_id:
            raise SsoError("mismatching_session", "This login was started with another identity provider.")
        if used_ts is not None:
            raise SsoError("session_used", "This login has already been completed. Please start again.")
        if session.expires_ts <= self.clock_ms():
            raise SsoError("session_expired", "This login took too long. Please start the login again.")
        if not await self.store.mark_login_session_used(session.session_id, self.clock_ms()):
            raise SsoError("session_used", "This login has already been completed. Please start again.")
        return session

    async def start_registration(self, idp_id: str, remote_user_id: str, attributes: dict,
                                 client_redirect_url: str, auth_provider_session_id: str | None) -> str:
        """Store a pending registration; returns its session ID (the picker's cookie)."""
        now = self.clock_ms()
        session_id = new_secret()
        await self.store.add_pending_registration(PendingRegistration(
            session_id=session_id, idp_id=idp_id, remote_user_id=remote_user_id, attributes=attributes,
            client_redirect_url=client_redirect_url, auth_provider_session_id=auth_provider_session_id,
            chosen_localpart=None, created_ts=now, expires_ts=now + PENDING_REGISTRATION_LIFETIME_MS,
        ))
        return session_id

    async def get_registration(self, session_id: str | None) -> PendingRegistration:
        if not session_id:
            raise SsoError("missing_session", "No registration is in progress in this browser. "
                           "Please start the login again from your Matrix client.")
        pending = await self.store.get_pending_registration(session_id, self.clock_ms())
        if pending is None:
            raise SsoError("unknown_session", "This registration session has expired or is unknown. "
                           "Please start the login again from your Matrix client.")
        return pending
