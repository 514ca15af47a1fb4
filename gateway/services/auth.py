"""Access tokens, devices at login, password checks and login tokens.

Spec: client-server API, "Client Authentication" and "Login".
https://spec.matrix.org/latest/client-server-api/#client-authentication
"""

from __future__ import annotations

import secrets
import string
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..http import Codes, MatrixError
from ..passwords import check_password
from ..server import HomeServer
from ..storage.auth import AuthStore
from ..storage.client_ips import ClientIpStore
from ..storage.devices import DeviceStore, token_hash
from ..storage.refresh_tokens import RefreshTokenStore
from ..storage.users import UserStore
from .client_ips import ClientIps
from .refresh_tokens import ACCESS_TOKEN_PREFIX, RefreshTokens, new_token

#: How long an ``m.login.token`` stays valid (SSO hands these to clients).
LOGIN_TOKEN_LIFETIME_MS = 2 * 60 * 1000


@dataclass(frozen=True)
class Requester:
    """Who is making a client request."""

    user_id: str
    device_id: str | None
    access_token: str
    is_admin: bool
    #: A guest account (https://spec.matrix.org/latest/client-server-api/#guest-access).
    is_guest: bool = False
    #: Set for a token of the OAuth 2.0 API (gateway/oauth/): its session.
    oauth_session_id: str | None = None
    #: The application service whose ``as_token`` made the request (identity assertion).
    app_service_id: str | None = None
    #: Shadow-banned by an admin: what the user sends is answered as done, and dropped.
    shadow_banned: bool = False
    #: Suspended (https://spec.matrix.org/latest/client-server-api/#account-suspension).
    suspended: bool = False
    #: The admin acting as this user (a session from the admin API's "login as a user").
    puppeted_by: str | None = None


@dataclass(frozen=True)
class LoginTokenDetails:
    """A consumed ``m.login.token``: its user and the IdP (session) it was issued after."""

    user_id: str
    auth_provider_id: str | None
    auth_provider_session_id: str | None
    #: The OIDC mapping provider's extra attributes, for the /login response.
    extra_attributes: dict[str, Any] = field(default_factory=dict)


def user_locked() -> MatrixError:
    return MatrixError(401, Codes.USER_LOCKED, "This account has been locked", soft_logout=True)


def user_suspended() -> MatrixError:
    """https://spec.matrix.org/latest/client-server-api/#account-suspension"""
    return MatrixError(403, Codes.USER_SUSPENDED, "You cannot perform this action while suspended.")


def new_device_id() -> str:
    return "".join(secrets.choice(string.ascii_uppercase) for _ in range(10))


class AuthService:
    def __init__(self, hs: HomeServer):
        self.hs = hs
        self.users = UserStore(hs.db)
        self.devices = DeviceStore(hs.db)
        self.store = AuthStore(hs.db)
        #: Where and with which client devices connect (whois, devices' last_seen_*).
        self.client_ips = ClientIps(ClientIpStore(hs.db), self.devices, lambda: hs.clock_ms())
        #: ``async listener(user_id)`` while an account is deactivated (its addresses go).
        self.deactivation_listeners: list[Callable[[str], Awaitable[None]]] = []
        #: Token lifetimes and the legacy API's refresh tokens.
        self.refresh_tokens = RefreshTokens(RefreshTokenStore(hs.db), self.users, hs.config.sessions,
                                            lambda: hs.clock_ms())

    async def get_requester(self, token: str, *, allow_locked: bool = False) -> Requester:
        """The user of an access token, or ``M_UNKNOWN_TOKEN``. A locked account is 401
        ``M_USER_LOCKED`` with ``soft_logout`` (the session stays) unless ``allow_locked``
        (logging out): https://spec.matrix.org/latest/client-server-api/#account-locking"""
        found = await self.devices.get_token_requester(token)
        if found is None:
            raise MatrixError(401, Codes.UNKNOWN_TOKEN, "Unrecognised access token", soft_logout=False)
        now = self.hs.clock_ms()
        if found.deactivated:
            raise MatrixError(401, Codes.UNKNOWN_TOKEN, "Unrecognised access token", soft_logout=False)
        if found.locked and not allow_locked:  # before expiry: the client keeps its session and waits
            raise user_locked()
        if found.valid_until_ts is not None and found.valid_until_ts <= now:
            # The device stays: the client refreshes, or logs in again with its device ID.
            raise MatrixError(401, Codes.UNKNOWN_TOKEN, "Access token has expired", soft_logout=True)
        if found.first_used_ts is None:
            if found.oauth_session_id is not None:
                await self.hs.oauth.store.mark_access_token_used(token_hash(token), now)
            elif found.refresh_token_hash is not None:
                await self.refresh_tokens.on_first_use(token, found.refresh_token_hash)
        return Requester(found.user_id, found.device_id, token, found.admin, found.guest,
                         oauth_session_id=found.oauth_session_id, shadow_banned=found.shadow_banned,
                         suspended=found.suspended, puppeted_by=found.puppeted_by)

    async def login_session(
        self, user_id: str, *, device_id: str | None = None, display_name: str | None = None,
        refresh_token: bool = False, expiring: bool = True,
    ) -> dict:
        """Create (or reuse) a device and a new access token for it; with ``refresh_token``
        (the client asked for one) also a refresh token. The token lives as long as the
        ``*_access_token_lifetime`` and ``session_lifetime`` say, unless not ``expiring``
        (guests, who cannot log in again)."""
        now = self.hs.clock_ms()
        device_id = device_id or new_device_id()
        await self.devices.upsert_device(user_id, device_id, display_name, now)
        result = {"user_id": user_id, "device_id": device_id, "home_server": self.hs.server_name}
        if refresh_token:
            result.update(await self.refresh_tokens.issue(user_id, device_id))
            return result
        token = new_token(ACCESS_TOKEN_PREFIX)
        valid_until = self.refresh_tokens.nonrefreshable_valid_until(now) if expiring else None
        await self.devices.add_access_token(token, user_id, device_id, now, valid_until)
        result["access_token"] = token
        if valid_until is not None:
            result["expires_in_ms"] = valid_until - now
        return result

    async def puppet_session(self, admin: str, user_id: str, valid_until_ms: int | None) -> str:
        """A device-less access token of ``admin`` that acts as ``user_id`` (Synapse's
        admin "login as a user"): it ends with the admin's sessions, not the user's."""
        token = new_token(ACCESS_TOKEN_PREFIX)
        await self.devices.add_access_token(token, admin, None, self.hs.clock_ms(), valid_until_ms,
                                            puppets_user_id=user_id)
        return token

    async def check_password_login(self, user_id: str, password: str) -> None:
        """Raise ``M_FORBIDDEN`` unless the password is right; ``M_USER_DEACTIVATED`` if so."""
        user = await self.users.get_user(user_id)
        if user is None or not check_password(password, user.password_hash, self.hs.config.password_pepper):
            raise MatrixError(403, Codes.FORBIDDEN, "Invalid username or password")
        if user.deactivated:
            raise MatrixError(403, Codes.USER_DEACTIVATED, "This account has been deactivated")

    async def create_login_token(self, user_id: str, *, auth_provider_id: str | None = None,
                                 auth_provider_session_id: str | None = None,
                                 extra_attributes: Mapping[str, Any] | None = None) -> str:
        token = f"gwl_{secrets.token_urlsafe(32)}"
        await self.store.add_login_token(
            token, user_id, self.hs.clock_ms() + LOGIN_TOKEN_LIFETIME_MS,
            auth_provider_id, auth_provider_session_id, extra_attributes,
        )
        return token

    async def consume_login_token(self, token: str) -> str:
        return (await self.consume_login_token_details(token)).user_id

    async def consume_login_token_details(self, token: str) -> "LoginTokenDetails":
        """The token's user and the IdP session it came from; ``M_FORBIDDEN`` if invalid or used."""
        row = await self.store.consume_login_token(token, self.hs.clock_ms())
        if row is None:
            raise MatrixError(403, Codes.FORBIDDEN, "Invalid or expired login token")
        return LoginTokenDetails(*row)

    async def record_device_auth_provider(self, user_id: str, device_id: str, details: "LoginTokenDetails") -> None:
        """Remember the IdP session a device logged in through (for OIDC back-channel logout)."""
        if details.auth_provider_id and details.auth_provider_session_id:
            await self.store.add_device_auth_provider(user_id, device_id, details.auth_provider_id,
                                                      details.auth_provider_session_id)

    async def deactivate_account(self, user_id: str, *, by_admin: bool = False, erase: bool = False) -> None:
        """Deactivate a local account (its owner, the OAuth account page or an admin): no
        password, no devices; modules may refuse it and hear of it. ``erase``: the user's
        events are from now on served redacted to those who could not see them when they
        were sent (``gateway/services/events.py``, ``federation_room_data.py``).
        https://spec.matrix.org/latest/client-server-api/#post_matrixclientv3accountdeactivate"""
        modules = self.hs.modules.callbacks
        await modules.all_true("check_can_deactivate_user", "Deactivating this account", user_id, by_admin)
        await self.users.set_deactivated(user_id, True)
        if erase:
            await self.users.set_erased(user_id, True)
        await self.users.set_password_hash(user_id, None)
        await self.devices.delete_devices(user_id)
        for listener in self.deactivation_listeners:
            await listener(user_id)
        await self.users.delete_threepids(user_id)  # nobody can ask for a reset through them
        await modules.notify("on_user_deactivation_status_changed", user_id, True, by_admin)
