"""Token lifetimes and refresh tokens of the legacy API (``refresh_token: true``, ``/refresh``).

Spec: https://spec.matrix.org/latest/client-server-api/#refreshing-access-tokens. Synapse's
keys (gateway/config/sessions.py) set the lifetimes. A refresh gives a new access token and
a new refresh token; the old refresh token may be retried (the answer was lost) until the
new access token or the new refresh token is used, then it is revoked. The OAuth 2.0 API's
refresh tokens live elsewhere (gateway/oauth/) and are refused here, as ours are there.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Any

from ..config.sessions import SessionConfig
from ..http import Codes, MatrixError
from ..storage.devices import token_hash
from ..storage.refresh_tokens import NewPair, RefreshTokenStore
from ..storage.users import UserStore

ACCESS_TOKEN_PREFIX = "gwt_"
REFRESH_TOKEN_PREFIX = "gwrf_"


def new_token(prefix: str) -> str:
    # The prefix tells operators what a leaked string is; the rest is 256 random bits.
    return f"{prefix}{secrets.token_urlsafe(32)}"


def _earliest(*times: int | None) -> int | None:
    known = [t for t in times if t is not None]
    return min(known) if known else None


class RefreshTokens:
    def __init__(self, store: RefreshTokenStore, users: UserStore, config: SessionConfig,
                 clock_ms: Callable[[], int]):
        self.store = store
        self.users = users
        self.config = config
        self.clock_ms = clock_ms

    def session_expiry(self, now: int) -> int | None:
        """When a login made now ends (``session_lifetime``), refreshed or not."""
        lifetime = self.config.session_lifetime_ms
        return now + lifetime if lifetime is not None else None

    def nonrefreshable_valid_until(self, now: int) -> int | None:
        lifetime = self.config.nonrefreshable_access_token_lifetime_ms
        return _earliest(now + lifetime if lifetime is not None else None, self.session_expiry(now))

    async def issue(self, user_id: str, device_id: str) -> dict[str, Any]:
        """A first pair for a login or registration that asked for a refresh token: the
        ``access_token``, ``refresh_token`` and ``expires_in_ms`` of the response."""
        now = self.clock_ms()
        pair, tokens = self._new_pair(now, self.session_expiry(now))
        await self.store.add_pair(user_id, device_id, pair, now)
        return tokens

    async def refresh(self, refresh_token: str) -> dict[str, Any]:
        """``POST /refresh``: a new pair for a valid refresh token; 401 ``M_UNKNOWN_TOKEN``
        otherwise (``soft_logout: true`` when it merely expired: the device is still there)."""
        now = self.clock_ms()
        row = await self.store.get(token_hash(refresh_token))
        if row is None:
            raise MatrixError(401, Codes.UNKNOWN_TOKEN, "Unknown refresh token, or it was replaced",
                              soft_logout=False)
        user = await self.users.get_user(row.user_id)
        if user is None or user.deactivated:
            raise MatrixError(401, Codes.UNKNOWN_TOKEN, "Unknown refresh token", soft_logout=False)
        if user.locked:  # no new token until an admin unlocks the account; the session stays
            raise MatrixError(401, Codes.USER_LOCKED, "This account has been locked", soft_logout=True)
        if row.expiry_ts is not None and row.expiry_ts <= now:
            raise MatrixError(401, Codes.UNKNOWN_TOKEN, "The refresh token has expired: log in again",
                              soft_logout=True)
        pair, tokens = self._new_pair(now, row.session_expiry_ts)
        if not await self.store.replace(row, pair, now):
            raise MatrixError(401, Codes.UNKNOWN_TOKEN, "This refresh token was just used by another request",
                              soft_logout=False)
        return tokens

    def _new_pair(self, now: int, session_expiry: int | None) -> tuple[NewPair, dict[str, Any]]:
        access, refresh = new_token(ACCESS_TOKEN_PREFIX), new_token(REFRESH_TOKEN_PREFIX)
        access_until = _earliest(now + self.config.refreshable_access_token_lifetime_ms, session_expiry)
        lifetime = self.config.refresh_token_lifetime_ms
        refresh_until = _earliest(now + lifetime if lifetime is not None else None, session_expiry)
        pair = NewPair(token_hash(access), token_hash(refresh), access_until, refresh_until, session_expiry)
        tokens: dict[str, Any] = {"access_token": access, "refresh_token": refresh}
        if access_until is not None:
            tokens["expires_in_ms"] = access_until - now
        return pair, tokens

    async def on_first_use(self, access_token: str, refresh_hash: str) -> None:
        """An access token issued with a refresh token is used for the first time: the
        pair it replaced is revoked."""
        await self.store.first_use(token_hash(access_token), refresh_hash, self.clock_ms())
