"""Clients, grants, sessions and tokens of the OAuth 2.0 API, all kept in the database.

Spec: https://spec.matrix.org/latest/client-server-api/#oauth-20-api; RFC 6749 (sections 4.1
and 6: the code and refresh grants, 5.2: errors), RFC 7636 (PKCE), RFC 7009 (revocation),
RFC 8628 (the device grant), RFC 7591 (registration).

A *grant* is one authorisation (a code request from a browser, or a device authorisation);
once the user approves it and the client exchanges it, it becomes a *session*: a client's
hold on one device of one user, with one live access token (short-lived) and refresh token.
Ending a session logs its device out.
"""

from __future__ import annotations

import logging
import secrets
import urllib.parse
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from ..config.oauth import OAuthConfig
from ..storage.database import Database, IntegrityError
from ..storage.devices import DeviceStore, token_hash
from ..storage.oauth import REPLACED, Grant, OAuthSession, OAuthStore
from ..storage.users import UserStore
from . import pkce
from .clients import DEVICE_CODE_GRANT, ClientMetadataError, redirect_uri_allowed, validate_client_metadata
from .id_tokens import IdTokenSigner
from .metadata import Paths
from .scopes import ScopeError, parse_scope

__all__ = ["OAuthService", "OAuthError", "AuthorizeError", "PageError"]

log = logging.getLogger(__name__)

#: How long the user has, from the client's authorisation request, to sign in and consent.
AUTHORIZATION_LIFETIME_MS = 30 * 60 * 1000
#: How long an authorisation code may wait for the client (RFC 6749 4.1.2: short).
CODE_LIFETIME_MS = 2 * 60 * 1000
#: A client registration with no grant and no session is deleted after this long (grants
#: themselves go an hour after they expire).
UNUSED_CLIENT_LIFETIME_MS = 24 * 3600 * 1000
#: An ended session is kept this long (a reused authorisation code finds it), then deleted.
FINISHED_SESSION_LIFETIME_MS = 24 * 3600 * 1000
#: How long a replaced refresh token is remembered, so that its replay ends the session.
REFRESH_TOMBSTONE_LIFETIME_MS = 7 * 24 * 3600 * 1000
#: How long an approval of a cross-signing reset lasts (the m.oauth UI-auth stage).
CROSS_SIGNING_RESET_WINDOW_MS = 10 * 60 * 1000
#: The ``prompt`` values we act on: the spec's ``create`` (sign-up) and OpenID Connect's
#: ``login`` (sign in again), ``consent`` (always shown anyway) and ``none`` (no page at all;
#: as clients register anew for every sign-in and consent is per grant, it always answers
#: ``login_required`` or ``consent_required``). Others are ignored.
PROMPT_VALUES = ("create", "login", "consent", "none")
#: RFC 8628 section 6.1: letters without vowels (no words) and no look-alikes.
USER_CODE_ALPHABET = "BCDFGHJKLMNPQRSTVWXZ"


class OAuthError(Exception):
    """An RFC 6749 section 5.2 error: ``{"error", "error_description"}`` with ``status``."""

    def __init__(self, error: str, description: str, status: int = 400):
        super().__init__(f"{error}: {description}")
        self.error, self.description, self.status = error, description, status

    def to_json(self) -> dict[str, str]:
        return {"error": self.error, "error_description": self.description}


class AuthorizeError(Exception):
    """An authorisation request refused. With a ``redirect`` (the client and redirect URI are
    known) the browser goes back to the client with the error; without one the user sees an
    error page and is never sent anywhere (RFC 6749 4.1.2.1: no open redirector)."""

    def __init__(self, error: str, description: str, redirect: str | None = None):
        super().__init__(f"{error}: {description}")
        self.error, self.description, self.redirect = error, description, redirect


class PageError(Exception):
    """A problem to show on one of our pages (error code, text, HTTP status)."""

    def __init__(self, error: str, description: str, status: int = 400):
        super().__init__(f"{error}: {description}")
        self.error, self.description, self.status = error, description, status


def _secret() -> str:
    return secrets.token_urlsafe(32)


def callback_url(redirect_uri: str, response_mode: str, params: dict[str, str]) -> str:
    """The client's redirect URI with ``params`` in its query or fragment."""
    params = {k: v for k, v in params.items() if v is not None}
    if response_mode == "fragment":
        return f"{redirect_uri}#{urllib.parse.urlencode(params)}"
    parts = urllib.parse.urlsplit(redirect_uri)
    query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True) + list(params.items())
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))


def normalise_user_code(raw: str) -> str:
    return "".join(c for c in raw.upper() if c.isalnum())


@dataclass(frozen=True)
class BrowserUser:
    user_id: str
    idp_id: str | None
    idp_session_id: str | None
    auth_time: int


class OAuthService:
    def __init__(self, *, db: Database, config: OAuthConfig, baseurl: str, clock_ms: Callable[[], int],
                 devices: DeviceStore, users: UserStore):
        self.config, self.baseurl, self.clock_ms = config, baseurl, clock_ms
        self.store = OAuthStore(db)
        self.devices, self.users = devices, users
        self.id_tokens = IdTokenSigner(self.store, baseurl, clock_ms)
        self.static_clients = {c.client_id: c.metadata for c in config.static_clients}

    def url(self, path: str) -> str:
        return self.baseurl.rstrip("/") + path

    # --- clients (RFC 7591) -----------------------------------------------------------------

    async def register_client(self, body: Any) -> dict[str, Any]:
        """Store a new client; the registration response (RFC 7591 3.2.1). Raises
        ClientMetadataError for metadata the rules refuse."""
        metadata = validate_client_metadata(body, allow_loopback_http=self.config.allow_loopback_http_web_clients)
        client_id = secrets.token_urlsafe(18)
        now = self.clock_ms()
        await self.store.add_client(client_id, metadata, now)
        await self.store.delete_unused_clients(now - UNUSED_CLIENT_LIFETIME_MS, now - FINISHED_SESSION_LIFETIME_MS)
        return {"client_id": client_id, "client_id_issued_at": now // 1000, **metadata}

    async def get_client(self, client_id: str | None) -> dict[str, Any] | None:
        if not client_id:
            return None
        if client_id in self.static_clients:
            return self.static_clients[client_id]
        return await self.store.get_client(client_id)

    # --- the authorisation request (RFC 6749 4.1.1) -----------------------------------------------

    async def start_authorization(self, query: Mapping[str, str], multi: Mapping[str, list[str]],
                                  browser_key: str) -> Grant:
        """Check an authorisation request and keep it, bound to this browser."""
        client = await self.get_client(query.get("client_id"))
        if client is None:
            raise AuthorizeError("invalid_client", "This app is not registered with this server.")
        redirect_uri = query.get("redirect_uri")
        if not redirect_uri or not redirect_uri_allowed(redirect_uri, client.get("redirect_uris", [])):
            raise AuthorizeError("invalid_redirect_uri",
                                 "The app asked to return to an address it did not register.")
        response_mode = query.get("response_mode") or "query"
        state = query.get("state")
        redirect_mode = response_mode if response_mode in ("query", "fragment") else "query"

        def refuse(error: str, description: str) -> AuthorizeError:
            return AuthorizeError(error, description, callback_url(
                redirect_uri, redirect_mode, {"error": error, "error_description": description, "state": state}))

        repeated = [name for name, values in multi.items() if len(values) > 1]
        if repeated:
            raise refuse("invalid_request", f"parameter {repeated[0]} given more than once")
        if response_mode not in ("query", "fragment"):
            raise refuse("invalid_request", "response_mode must be query or fragment")
        if query.get("response_type") != "code":
            raise refuse("unsupported_response_type", "only response_type=code is supported")
        if "authorization_code" not in client.get("grant_types", []):
            raise refuse("unauthorized_client", "this client did not register the authorization_code grant")
        if query.get("code_challenge_method") != "S256" or not pkce.valid_challenge(query.get("code_challenge")):
            raise refuse("invalid_request", "PKCE is required: code_challenge_method=S256 and a code_challenge")
        try:
            scope = parse_scope(query.get("scope"))
        except ScopeError as e:
            raise refuse("invalid_scope", str(e)) from None
        prompts = [p for p in (query.get("prompt") or "").split(" ") if p]
        if "none" in prompts and len(prompts) > 1:  # OpenID Connect Core 3.1.2.1
            raise refuse("invalid_request", "prompt=none cannot be combined with other prompt values")
        prompt = " ".join(p for p in dict.fromkeys(prompts) if p in PROMPT_VALUES)
        now = self.clock_ms()
        grant = Grant(
            grant_id=_secret(), kind="code", client_id=query["client_id"], scope=str(scope),
            device_id=scope.device_id, redirect_uri=redirect_uri, response_mode=response_mode, state=state,
            nonce=query.get("nonce"), code_challenge=query["code_challenge"], prompt=prompt or None,
            browser_key_hash=token_hash(browser_key), user_code=None, device_code_hash=None, code_hash=None,
            user_id=None, auth_time=None, idp_id=None, idp_session_id=None, status="pending", session_id=None,
            created_ts=now, expires_ts=now + AUTHORIZATION_LIFETIME_MS, last_poll_ts=None)
        await self.store.add_grant(grant)
        return grant

    async def pending_grant(self, grant_id: str | None, browser_key: str | None) -> Grant:
        """A grant waiting for this browser's user to decide; PageError otherwise."""
        grant = await self.store.get_grant(grant_id) if grant_id else None
        if grant is None:
            raise PageError("unknown_request", "This sign-in request is unknown. Go back to your app and start again.")
        if not browser_key or grant.browser_key_hash != token_hash(browser_key):
            raise PageError("mismatching_browser", "This sign-in request was started in another browser. "
                            "Go back to your app and start again.", 403)
        if grant.status != "pending":
            raise PageError("request_used", "This sign-in request has already been answered.")
        if grant.expires_ts <= self.clock_ms():
            raise PageError("request_expired", "This sign-in request has expired. Go back to your app and start "
                            "again.")
        return grant

    async def approve(self, grant: Grant, user: BrowserUser) -> str | None:
        """The user allowed the client: the redirect with the code (code grants), or None
        (a device grant: the device collects its tokens by polling)."""
        now = self.clock_ms()
        code = _secret() if grant.kind == "code" else None
        expires = now + CODE_LIFETIME_MS if code else grant.expires_ts
        if not await self.store.decide_grant(grant.grant_id, "approved",
                                             (user.user_id, user.auth_time, user.idp_id, user.idp_session_id),
                                             token_hash(code) if code else None, expires):
            raise PageError("request_used", "This sign-in request has already been answered.")
        if code is None:
            return None
        return callback_url(grant.redirect_uri, grant.response_mode, {"code": code, "state": grant.state})

    async def refuse_without_interaction(self, grant: Grant, error: str, description: str) -> str:
        """``prompt=none`` when we would have to show a page: the grant ends, and the browser
        goes back to the client with ``login_required`` or ``consent_required``."""
        await self.store.decide_grant(grant.grant_id, "denied", None, None, grant.expires_ts)
        return callback_url(grant.redirect_uri, grant.response_mode,
                            {"error": error, "error_description": description, "state": grant.state})

    async def deny(self, grant: Grant) -> str | None:
        if not await self.store.decide_grant(grant.grant_id, "denied", None, None, grant.expires_ts):
            raise PageError("request_used", "This sign-in request has already been answered.")
        if grant.kind != "code":
            return None
        return callback_url(grant.redirect_uri, grant.response_mode, {
            "error": "access_denied", "error_description": "The user did not allow this app.", "state": grant.state})

    # --- the device authorisation grant (RFC 8628) ------------------------------------------------

    async def device_authorization(self, form: Mapping[str, str]) -> dict[str, Any]:
        client = await self.get_client(form.get("client_id"))
        if client is None:
            raise OAuthError("invalid_client", "unknown client_id", 401)
        if DEVICE_CODE_GRANT not in client.get("grant_types", []):
            raise OAuthError("unauthorized_client", "this client did not register the device_code grant")
        try:
            scope = parse_scope(form.get("scope"))
        except ScopeError as e:
            raise OAuthError("invalid_scope", str(e)) from None
        now = self.clock_ms()
        device_code = _secret()
        for _ in range(5):
            user_code = "".join(secrets.choice(USER_CODE_ALPHABET) for _ in range(8))
            grant = Grant(
                grant_id=_secret(), kind="device", client_id=form["client_id"], scope=str(scope),
                device_id=scope.device_id, redirect_uri=None, response_mode=None, state=None, nonce=None,
                code_challenge=None, prompt=None, browser_key_hash=None, user_code=user_code,
                device_code_hash=token_hash(device_code), code_hash=None, user_id=None, auth_time=None,
                idp_id=None, idp_session_id=None, status="pending", session_id=None, created_ts=now,
                expires_ts=now + self.config.device_code_lifetime_ms, last_poll_ts=None)
            try:
                await self.store.add_grant(grant)
                break
            except IntegrityError:
                continue  # the same user code is live: draw again
        else:
            raise OAuthError("server_error", "could not allocate a user code", 500)
        shown = f"{user_code[:4]}-{user_code[4:]}"
        return {
            "device_code": device_code, "user_code": shown,
            "verification_uri": self.url(Paths.LINK),
            "verification_uri_complete": self.url(Paths.LINK) + "?" + urllib.parse.urlencode({"code": shown}),
            "expires_in": self.config.device_code_lifetime_ms // 1000,
            "interval": self.config.device_code_poll_interval_ms // 1000,
        }

    async def device_grant_for_code(self, user_code: str, browser_key: str) -> Grant:
        """The pending device grant of a user code, now bound to this browser."""
        grant = await self.store.get_grant_by_user_code(normalise_user_code(user_code))
        if grant is None or grant.kind != "device" or grant.expires_ts <= self.clock_ms():
            raise PageError("unknown_code", "This code is unknown or has expired. Check it on your device.")
        if grant.status != "pending" or not await self.store.bind_grant_to_browser(grant.grant_id,
                                                                                   token_hash(browser_key)):
            raise PageError("request_used", "This code has already been used.")
        return grant

    # --- the token endpoint (RFC 6749 sections 4.1.3, 6; RFC 8628 3.4) --------------------------------

    async def token(self, form: Mapping[str, str]) -> dict[str, Any]:
        grant_type = form.get("grant_type")
        if grant_type == "authorization_code":
            return await self._code_grant(form)
        if grant_type == "refresh_token":
            return await self._refresh_grant(form)
        if grant_type == DEVICE_CODE_GRANT:
            return await self._device_code_grant(form)
        raise OAuthError("unsupported_grant_type", f"grant_type {grant_type!r} is not supported")

    async def _client_of_request(self, form: Mapping[str, str]) -> str:
        client_id = form.get("client_id")
        if not client_id:
            raise OAuthError("invalid_request", "client_id is required (public clients name themselves)")
        if await self.get_client(client_id) is None:
            raise OAuthError("invalid_client", "unknown client_id", 401)
        return client_id

    async def _code_grant(self, form: Mapping[str, str]) -> dict[str, Any]:
        client_id = await self._client_of_request(form)
        code = form.get("code")
        if not code:
            raise OAuthError("invalid_request", "code is required")
        grant = await self.store.get_grant_by_code(token_hash(code))
        if grant is None or grant.kind != "code":
            raise OAuthError("invalid_grant", "unknown authorization code")
        if grant.status == "exchanged":
            # RFC 6749 4.1.2: a code used twice was stolen; what it gave is revoked.
            if grant.session_id:
                await self.end_session(grant.session_id, logout_device=True)
            raise OAuthError("invalid_grant", "this authorization code has already been used")
        if grant.status != "approved" or grant.expires_ts <= self.clock_ms():
            raise OAuthError("invalid_grant", "this authorization code has expired")
        if grant.client_id != client_id:
            raise OAuthError("invalid_grant", "this authorization code was issued to another client")
        if form.get("redirect_uri") != grant.redirect_uri:
            raise OAuthError("invalid_grant", "redirect_uri does not match the authorization request")
        if not pkce.verify(form.get("code_verifier"), grant.code_challenge):
            raise OAuthError("invalid_grant", "code_verifier does not match the code_challenge")
        return await self._exchange(grant)

    async def _device_code_grant(self, form: Mapping[str, str]) -> dict[str, Any]:
        client_id = await self._client_of_request(form)
        device_code = form.get("device_code")
        grant = await self.store.get_grant_by_device_code(token_hash(device_code)) if device_code else None
        if grant is None or grant.client_id != client_id:
            raise OAuthError("invalid_grant", "unknown device_code")
        now = self.clock_ms()
        if grant.status == "denied":
            raise OAuthError("access_denied", "the user did not allow this device")
        if grant.status == "exchanged":
            raise OAuthError("invalid_grant", "this device_code has already been used")
        if grant.expires_ts <= now:
            raise OAuthError("expired_token", "the device_code has expired: start again")
        if grant.status == "pending":
            last = await self.store.record_poll(grant.grant_id, now)
            if last is not None and now - last < self.config.device_code_poll_interval_ms:
                raise OAuthError("slow_down", "polling too often")
            raise OAuthError("authorization_pending", "the user has not answered yet")
        return await self._exchange(grant)

    async def _exchange(self, grant: Grant) -> dict[str, Any]:
        """An approved grant -> a new session and its first tokens (once)."""
        session_id = _secret()
        if not await self.store.mark_grant_exchanged(grant.grant_id, session_id):
            raise OAuthError("invalid_grant", "this grant has already been used")
        user = await self.users.get_user(grant.user_id)
        if user is None or user.deactivated:
            raise OAuthError("invalid_grant", "this account has been deactivated")
        if user.locked:  # no new session until an admin unlocks the account (spec: account locking)
            raise OAuthError("access_denied", "this account has been locked")
        client = await self.get_client(grant.client_id) or {}
        now = self.clock_ms()
        reused = await self._take_over_device(grant.user_id, grant.device_id)
        # A new device is named after the client; a reused one keeps its name.
        await self.devices.upsert_device(grant.user_id, grant.device_id, None if reused else client.get("client_name"),
                                         now)
        session = OAuthSession(session_id, grant.client_id, grant.user_id, grant.device_id, grant.scope, now, None)
        await self.store.add_session(session)
        if grant.idp_id and grant.idp_session_id:  # for the IdP's back-channel logout
            await self.store.link_device_to_idp_session(grant.user_id, grant.device_id, grant.idp_id,
                                                        grant.idp_session_id)
        body = await self._issue_tokens(session)
        if "openid" in grant.scope.split(" "):
            body["id_token"] = await self.id_tokens.id_token(
                user_id=grant.user_id, client_id=grant.client_id, nonce=grant.nonce, auth_time=grant.auth_time,
                access_token=body["access_token"], device_id=grant.device_id)
        log.info("OAuth session for %s device %s (client %s)", grant.user_id, grant.device_id, grant.client_id)
        return body

    async def _take_over_device(self, user_id: str, device_id: str) -> bool:
        """The user signs in again on a device ID they have: the device (and its keys) stays,
        every earlier token of it stops working. False for a new device."""
        if await self.devices.get_device(user_id, device_id) is None:
            return False
        for old in await self.store.live_sessions_of_device(user_id, device_id):
            await self.store.finish_session(old, self.clock_ms())
        await self.store.delete_device_tokens(user_id, device_id)
        return True

    async def _issue_tokens(self, session: OAuthSession, previous_refresh_hash: str | None = None) -> dict[str, Any]:
        access, refresh = f"gwa_{_secret()}", f"gwr_{_secret()}"
        now = self.clock_ms()
        lifetime = self.config.access_token_lifetime_ms
        await self.store.add_tokens(session.session_id, session.user_id, session.device_id, token_hash(access),
                                    token_hash(refresh), now, now + lifetime,
                                    previous_refresh_hash=previous_refresh_hash)
        return {"access_token": access, "token_type": "Bearer", "expires_in": lifetime // 1000,
                "refresh_token": refresh, "scope": session.scope}

    async def _refresh_grant(self, form: Mapping[str, str]) -> dict[str, Any]:
        """Rotation (spec "Refresh token grant"): a refresh token gives a new pair once; it may be
        retried (the answer was lost) until the new access token is used or the new refresh
        token is; after that it is a replay, and the session ends."""
        client_id = await self._client_of_request(form)
        raw = form.get("refresh_token")
        if not raw:
            raise OAuthError("invalid_request", "refresh_token is required")
        h = token_hash(raw)
        row = await self.store.get_refresh_token(h)
        session = await self.store.get_session(row.session_id) if row else None
        if row is None or session is None or session.finished_ts is not None:
            raise OAuthError("invalid_grant", "unknown or revoked refresh token")
        if session.client_id != client_id:
            raise OAuthError("invalid_grant", "this refresh token was issued to another client")
        if row.next_token_hash is None:
            if not await self.store.claim_refresh_token(h, None, self.clock_ms()):
                raise OAuthError("invalid_grant", "this refresh token is being used by another request")
            await self.store.drop_predecessors(h, self.clock_ms(), REFRESH_TOMBSTONE_LIFETIME_MS)
            return await self._issue_tokens(session, previous_refresh_hash=h)
        if row.next_token_hash == "":
            raise OAuthError("invalid_grant", "this refresh token is being used by another request")
        # A tombstone (replaced two refreshes ago) has no successor: a replay as well.
        successor = await self.store.get_refresh_token(row.next_token_hash) if row.next_token_hash != REPLACED else None
        if successor is None or successor.next_token_hash is not None \
                or await self.store.access_token_used(successor.access_token_hash):
            log.warning("refresh token replayed for %s device %s: ending the session", session.user_id,
                        session.device_id)
            await self.end_session(session.session_id, logout_device=True)
            raise OAuthError("invalid_grant", "this refresh token has already been used")
        # A retry: the successor was never used, so its answer was lost. Replace it.
        if not await self.store.claim_refresh_token(h, successor.token_hash, self.clock_ms()):
            raise OAuthError("invalid_grant", "this refresh token is being used by another request")
        await self.store.drop_tokens(successor.token_hash)
        return await self._issue_tokens(session, previous_refresh_hash=h)

    # --- revocation (RFC 7009) and the end of sessions -------------------------------------------

    async def revoke(self, token: str | None, client_id: str | None) -> None:
        """Revoke the session of an access or refresh token (both tokens, and the device).
        Unknown tokens, and tokens of the legacy API, are no error (RFC 7009 2.2)."""
        if not token:
            raise OAuthError("invalid_request", "token is required")
        h = token_hash(token)
        session_id = await self.store.session_of_access_token(h)
        if session_id is None:
            row = await self.store.get_refresh_token(h)
            session_id = row.session_id if row else None
        if session_id is None:
            return
        session = await self.store.get_session(session_id)
        if session is not None and client_id and client_id != session.client_id:
            log.warning("client %s revoked a token of client %s (user %s): revoked anyway", client_id,
                        session.client_id, session.user_id)
        await self.end_session(session_id, logout_device=True)

    async def end_session(self, session_id: str, *, logout_device: bool) -> None:
        session = await self.store.get_session(session_id)
        if session is None:
            return
        if await self.store.finish_session(session_id, self.clock_ms()) and logout_device:
            await self.devices.delete_devices(session.user_id, [session.device_id])

    async def on_devices_deleted(self, user_id: str, device_ids: list[str]) -> None:
        """A device logged out (``/logout``, ``DELETE /devices``, ...): its sessions end."""
        for device_id in device_ids:
            for session_id in await self.store.live_sessions_of_device(user_id, device_id):
                await self.store.finish_session(session_id, self.clock_ms())

    # --- browsers signed in on our pages ------------------------------------------------------

    async def browser_user(self, browser_key: str | None) -> BrowserUser | None:
        if not browser_key:
            return None
        found = await self.store.get_browser_session(token_hash(browser_key), self.clock_ms())
        if found is None:
            return None
        user = await self.users.get_user(found[0])
        if user is None or user.deactivated:
            return None
        return BrowserUser(*found)

    async def sign_in_browser(self, browser_key: str, user_id: str, idp_id: str | None = None,
                              idp_session_id: str | None = None) -> str:
        """Sign the browser in under a new key (its new cookie, returned): a key someone
        planted or saw before the sign-in is worth nothing after it (session fixation). The
        browser's pending authorisation requests move to the new key."""
        now = self.clock_ms()
        new_key = _secret()
        await self.store.add_browser_session(token_hash(new_key), user_id, idp_id, idp_session_id, now,
                                             now + self.config.browser_session_lifetime_ms,
                                             replaces=token_hash(browser_key))
        return new_key

    async def sign_out_browser(self, browser_key: str | None) -> None:
        if browser_key:
            await self.store.delete_browser_session(token_hash(browser_key))

    # --- cross-signing reset (the m.oauth UI-auth stage) ----------------------------------------

    async def allow_cross_signing_reset(self, user_id: str) -> int:
        until = self.clock_ms() + CROSS_SIGNING_RESET_WINDOW_MS
        await self.store.allow_cross_signing_reset(user_id, until)
        return until

    async def cross_signing_reset_allowed(self, user_id: str) -> bool:
        until = await self.store.cross_signing_reset_allowed_until(user_id)
        return until is not None and until > self.clock_ms()


__all__ += ["callback_url", "normalise_user_code", "BrowserUser", "ClientMetadataError"]
