"""The shared half of every SSO login: after the IdP, up to the client's ``loginToken``.

Map the remote identity to a user (existing link, or a new account, or the username
picker), issue a single-use login token and send the browser back to the client: at once
if the client's URL is whitelisted (``sso.client_whitelist``), else through the
``sso_redirect_confirm.html`` page, so a link from an attacker cannot silently take a
user's token to another site.

Spec: https://spec.matrix.org/latest/client-server-api/#client-login-via-sso
"""

from __future__ import annotations

import hashlib

import logging
import urllib.parse
from dataclasses import replace
from functools import cached_property
from typing import Any, Mapping

import aiohttp
from aiohttp import web

from gateway.http import MatrixError
from gateway.services.threepids import canonical_email
from gateway.server import HomeServer
from gateway.storage.database import IntegrityError
from gateway.storage.profiles import ProfileStore
from gateway.storage.sso import PendingRegistration, SsoLoginSession, SsoStore
from gateway.storage.users import UserExistsError

from .mapping import UserAttributes
from .pages import lazy_environment
from .provider import IdentityProvider, RemoteIdentity, SsoError
from .sessions import LOGIN_SESSION_LIFETIME_MS, SsoSessions

__all__ = ["SsoHandler", "BROWSER_COOKIE", "USERNAME_MAPPING_COOKIE", "add_query_param", "check_redirect_url"]

log = logging.getLogger(__name__)

#: Binds an IdP callback to the browser that started the login.
BROWSER_COOKIE = "gateway_sso_session"
#: The username picker's session (Synapse's cookie name).
USERNAME_MAPPING_COOKIE = "username_mapping_session"
PICKER_PATH = "/_synapse/client/pick_username"
CONSENT_PATH = "/_synapse/client/new_user_consent"
#: The picker's cookie covers the picker and the consent page (as Synapse's does).
SSO_PAGES_PATH = "/_synapse/client/"
#: How many localpart collisions the mapper may resolve before we give up (as Synapse).
MAX_MAPPING_ATTEMPTS = 1000

_FORBIDDEN_SCHEMES = {"javascript", "data", "vbscript", "file", "blob", "about"}


def check_redirect_url(url: str | None) -> str:
    """The client's ``redirectUrl`` if it is an absolute URL with a harmless scheme."""
    if not url:
        raise SsoError("missing_redirect_url", "The app did not say where to return after login (redirectUrl).")
    parsed = urllib.parse.urlsplit(url)
    scheme = parsed.scheme.lower()
    if not scheme or scheme in _FORBIDDEN_SCHEMES or len(url) > 4096 or any(c in url for c in "\r\n\t"):
        raise SsoError("invalid_redirect_url", "The app asked to return to an address that is not allowed.")
    if scheme in ("http", "https") and not parsed.netloc:
        raise SsoError("invalid_redirect_url", "The app asked to return to an address that is not allowed.")
    return url


def redirect(url: str) -> web.Response:
    return web.Response(status=302, headers={"Location": url, "Cache-Control": "no-store"})


def add_query_param(url: str, name: str, value: str) -> str:
    parts = urllib.parse.urlsplit(url)
    query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    query = [(k, v) for k, v in query if k != name] + [(name, value)]
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))


class SsoHandler:
    def __init__(self, hs: HomeServer):
        self.hs = hs
        self.store = SsoStore(hs.db)
        self.sessions = SsoSessions(self.store, hs.clock_ms)
        self.profiles = ProfileStore(hs.db)
        self.env = lazy_environment(hs.config.custom_template_directory, public_baseurl=hs.config.public_baseurl)
        self._http: aiohttp.ClientSession | None = None
        self.providers: dict[str, IdentityProvider] = {}
        if hs.config.sso.oidc_providers:
            # authlib and joserfc only when an OIDC provider is configured (memory).
            from .oidc import OidcProvider

        callback = f"{hs.config.public_baseurl}_synapse/client/oidc/callback"
        for p in hs.config.sso.oidc_providers:
            self.providers[p.idp_id] = OidcProvider(p, callback, self.http, hs.clock_ms)
        if hs.config.sso.saml2_config is not None:
            from .saml import SamlProvider

            self.providers["saml"] = SamlProvider(hs.config.sso.saml2_config)
        if hs.config.sso.cas_config is not None:
            from .cas import CasProvider

            self.providers["cas"] = CasProvider(hs.config.sso.cas_config, hs.config.public_baseurl, self.http)

    def http(self) -> aiohttp.ClientSession:
        if self._http is None or self._http.closed:
            self._http = aiohttp.ClientSession()
        return self._http

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()

    @cached_property
    def secure_cookies(self) -> bool:
        return self.hs.config.public_baseurl.startswith("https://")

    # --- pages ------------------------------------------------------------------------

    def render(self, name: str, status: int = 200, **context: Any) -> web.Response:
        html = self.env.get_template(name).render(**context)
        return web.Response(text=html, status=status, content_type="text/html", charset="utf-8", headers={
            "Cache-Control": "no-store",
            "X-Frame-Options": "DENY",
            "Content-Security-Policy": "frame-ancestors 'none'",
            "Referrer-Policy": "no-referrer",
            "X-Content-Type-Options": "nosniff",
        })

    def error_page(self, e: SsoError) -> web.Response:
        return self.render("sso_error.html", e.status, error=e.error, error_description=e.description,
                           server_name=self.hs.server_name)

    def set_cookie(self, resp: web.StreamResponse, name: str, value: str, path: str, max_age: int,
                   samesite: str = "Lax") -> None:
        # SameSite=None needs Secure: over plain http (development) fall back to Lax.
        if samesite == "None" and not self.secure_cookies:
            samesite = "Lax"
        resp.set_cookie(name, value, path=path, max_age=max_age, httponly=True, secure=self.secure_cookies,
                        samesite=samesite)

    @staticmethod
    def idp_info(p: IdentityProvider) -> dict[str, Any]:
        return {"idp_id": p.idp_id, "idp_name": p.idp_name, "idp_icon": p.idp_icon, "idp_brand": p.idp_brand}

    def identity_providers(self) -> list[dict[str, Any]]:
        """For ``GET /login``'s ``m.login.sso`` flow (spec: id, name, icon, brand)."""
        out = []
        for p in self.providers.values():
            entry = {"id": p.idp_id, "name": p.idp_name}
            if p.idp_icon:
                entry["icon"] = p.idp_icon
            if p.idp_brand:
                entry["brand"] = p.idp_brand
            out.append(entry)
        return out

    # --- 1. to the IdP ------------------------------------------------------------------

    async def redirect_to_idp(self, idp_id: str | None, client_redirect_url: str | None,
                              request_params: Mapping[str, str] | None = None) -> web.StreamResponse:
        """``/login/sso/redirect[/{idpId}]``: straight to the IdP, or the picker if there are several."""
        try:
            client_redirect_url = check_redirect_url(client_redirect_url)
            if idp_id is None:
                if len(self.providers) == 1:
                    idp_id = next(iter(self.providers))
                elif not self.providers:
                    raise SsoError("sso_disabled", "Single sign-on is not enabled on this server.", 404)
                else:
                    query = urllib.parse.urlencode({"redirectUrl": client_redirect_url})
                    return redirect(f"/_synapse/client/pick_idp?{query}")
            provider = self.providers.get(idp_id)
            if provider is None:
                raise SsoError("unknown_idp", f"There is no identity provider {idp_id!r} on this server.", 404)
            return await self._send_to_idp(provider, client_redirect_url, request_params=request_params)
        except SsoError as e:
            return self.error_page(e)

    async def _send_to_idp(self, provider: IdentityProvider, client_redirect_url: str,
                           ui_auth_session_id: str | None = None,
                           request_params: Mapping[str, str] | None = None) -> web.StreamResponse:
        """Start a login session and redirect the browser to the IdP, binding the session to
        this browser with a cookie. Raises SsoError if the IdP is unreachable."""
        lifetime = getattr(provider, "session_lifetime_ms", None) or LOGIN_SESSION_LIFETIME_MS
        session, browser_key = await self.sessions.start_login(provider.idp_id, client_redirect_url,
                                                               ui_auth_session_id=ui_auth_session_id,
                                                               lifetime_ms=lifetime)
        url = await provider.authorization_url(session, request_params)
        resp = redirect(url)
        self.set_cookie(resp, BROWSER_COOKIE, browser_key, getattr(provider, "cookie_path", "/_synapse/client/"),
                        max(3600, lifetime // 1000), getattr(provider, "cookie_samesite", "Lax"))
        return resp

    def idp_picker(self, client_redirect_url: str | None, idp_id: str | None) -> web.StreamResponse:
        try:
            client_redirect_url = check_redirect_url(client_redirect_url)
        except SsoError as e:
            return self.error_page(e)
        if idp_id:
            if idp_id not in self.providers:
                return self.error_page(SsoError("unknown_idp", f"Unknown identity provider {idp_id!r}.", 404))
            query = urllib.parse.urlencode({"redirectUrl": client_redirect_url})
            return redirect(
                f"/_matrix/client/v3/login/sso/redirect/{urllib.parse.quote(idp_id, safe='')}?{query}")
        return self.render("sso_login_idp_picker.html", redirect_url=client_redirect_url,
                           server_name=self.hs.server_name,
                           providers=[self.idp_info(p) for p in self.providers.values()])

    # --- 2. back from the IdP -------------------------------------------------------------

    async def handle_callback(self, state: str | None, browser_key: str | None, params: Mapping[str, str],
                              idp_id: str | None = None) -> web.StreamResponse:
        """An IdP's answer: claim the session, let the provider check it, then log in."""
        try:
            session = await self.sessions.claim_login(state, browser_key, idp_id)
            provider = self.providers.get(session.idp_id)
            if provider is None:
                raise SsoError("unknown_idp", "This identity provider is no longer configured.", 404)
            identity = await provider.complete(session, params)
            if session.ui_auth_session_id is not None:
                return await self.complete_ui_auth(identity, session.ui_auth_session_id)
            return await self.complete_login(provider, identity, session)
        except SsoError as e:
            log.info("SSO login failed: %s", e)
            return self.error_page(e)

    async def complete_login(self, provider: IdentityProvider, identity: RemoteIdentity,
                             session: SsoLoginSession) -> web.StreamResponse:
        user_id = await self.store.get_user_by_external_id(identity.idp_id, identity.remote_user_id)
        if user_id is not None:
            if self.hs.config.sso.sso.update_profile_information:
                attrs = await identity.map_attributes(0)
                if attrs.display_name:
                    await self.hs.profiles.update(user_id, "displayname", attrs.display_name, by_admin=True)
                await self.set_avatar_from_picture(user_id, attrs.picture)
            return await self.finish_login(user_id, session.client_redirect_url, identity, new_user=False)

        if identity.grandfathered_localpart:
            user_id = f"@{identity.grandfathered_localpart}:{self.hs.server_name}"
            if await self.hs.auth.users.get_user(user_id) is not None:
                log.info("linking %s to the existing %s (grandfathered)", identity.remote_user_id, user_id)
                await self._link(identity, user_id)
                return await self.finish_login(user_id, session.client_redirect_url, identity, new_user=False)

        allow_existing = getattr(provider, "allow_existing_users", False)
        enable_registration = getattr(provider, "enable_registration", True)
        for failures in range(MAX_MAPPING_ATTEMPTS):
            attrs = await identity.map_attributes(failures)
            if attrs.localpart is None or attrs.confirm_localpart:
                if not enable_registration:
                    raise SsoError("registration_disabled", "This server does not register new users from "
                                   f"{provider.idp_name}.", 403)
                return await self.start_username_picker(identity, attrs, session.client_redirect_url)
            user_id = f"@{attrs.localpart}:{self.hs.server_name}"
            existing = await self.hs.auth.users.get_user(user_id)
            if existing is not None:
                if allow_existing:
                    await self._link(identity, user_id)
                    return await self.finish_login(user_id, session.client_redirect_url, identity, new_user=False)
                continue  # taken: ask the mapper for another localpart
            if not enable_registration:
                raise SsoError("registration_disabled",
                               f"This server does not register new users from {provider.idp_name}.", 403)
            if self.consent_version() is not None:  # the terms first, then the account
                return await self.start_username_picker(identity, attrs, session.client_redirect_url,
                                                        chosen_localpart=attrs.localpart)
            try:
                await self.register(identity, attrs.localpart, attrs.display_name, attrs.picture,
                                    emails=attrs.emails)
            except UserExistsError:
                continue
            return await self.finish_login(user_id, session.client_redirect_url, identity, new_user=True)
        raise SsoError("mapping_error", "Could not find a free username for you. Contact the administrator.", 500)

    async def _link(self, identity: RemoteIdentity, user_id: str) -> None:
        try:
            await self.store.link_external_id(identity.idp_id, identity.remote_user_id, user_id)
        except IntegrityError:  # two callbacks raced: fine if they agree
            linked = await self.store.get_user_by_external_id(identity.idp_id, identity.remote_user_id)
            if linked != user_id:
                raise SsoError("mapping_error", "This identity is already linked to another account.", 409) from None

    async def register(self, identity: RemoteIdentity, localpart: str, display_name: str | None,
                       picture: str | None = None, *, consent_version: str | None = None,
                       emails: Any = ()) -> str:
        """A new account without a password, linked to the IdP identity (and its picture
        as avatar, its addresses as validated e-mail addresses, when the mapping gives them)."""
        try:
            user_id = await self.hs.usernames.check(localpart)
        except MatrixError as e:
            if e.errcode == "M_USER_IN_USE":
                raise UserExistsError(localpart) from None
            raise SsoError("invalid_username", e.error) from None
        await self.hs.auth.users.create_user(user_id, password_hash=None, created_ts=self.hs.clock_ms(),
                                             displayname=display_name)
        await self._link(identity, user_id)
        if consent_version is not None:
            await self.hs.auth.users.set_consent_version(user_id, consent_version, self.hs.clock_ms())
        log.info("registered %s from %s (%s)", user_id, identity.idp_id, identity.remote_user_id)
        await self.set_avatar_from_picture(user_id, picture)
        await self.add_emails(user_id, emails)
        return user_id

    async def add_emails(self, user_id: str, emails: Any) -> None:
        """The mapping's addresses (``email_template``; the IdP vouches for them) on a new
        account, as validated e-mail addresses (with missed-message mails when
        ``notif_for_new_users``). One not allowed (``allowed_local_3pids``) or on another
        account is left out and logged; the login goes on."""
        threepids = self.hs.threepids
        for raw in emails or ():
            try:
                address = canonical_email(raw)
                if not await threepids.is_allowed("email", address, registration=True):
                    raise MatrixError(403, "M_THREEPID_DENIED", "not allowed on this server")
                await threepids.add(user_id, "email", address, self.hs.clock_ms())
            except MatrixError as e:
                log.info("e-mail address %r from the IdP not added to %s: %s", raw, user_id, e.error)
                continue
            if self.hs.email_notifs is not None:
                await self.hs.email_notifs.add_new_user_pusher(user_id, address)

    async def set_avatar_from_picture(self, user_id: str, picture: str | None) -> None:
        """The IdP's picture URL (``picture_template``) as the user's avatar: downloaded
        under the outbound IP rules into our media repository, once per URL. A failure is
        logged and never stops the login."""
        if not picture or not picture.startswith(("https://", "http://")):
            return
        marker = "sso-avatar-" + hashlib.sha256(picture.encode()).hexdigest()[:32]
        current = (await self.profiles.get_profile(user_id) or {}).get("avatar_url") or ""
        prefix = f"mxc://{self.hs.server_name}/"
        if current.startswith(prefix):
            info = await self.hs.media.store.get_local_media(current[len(prefix):])
            if info is not None and info.upload_name == marker:
                return  # this picture is already the avatar
        try:
            mxc = await self.hs.media.upload_image_from_url(user_id, picture, marker)
        except MatrixError as e:
            log.warning("SSO avatar for %s not set: %s", user_id, e.error)
            return
        await self.hs.profiles.update(user_id, "avatar_url", mxc, by_admin=True)

    async def finish_login(self, user_id: str, client_redirect_url: str, identity: RemoteIdentity | None,
                           *, new_user: bool, idp_id: str | None = None,
                           auth_provider_session_id: str | None = None) -> web.StreamResponse:
        """Issue the login token and go back to the client (directly, or via the confirm page)."""
        user = await self.hs.auth.users.get_user(user_id)
        if user is None or user.deactivated:
            return self.render("sso_account_deactivated.html", 403, server_name=self.hs.server_name)
        token = await self.hs.auth.create_login_token(
            user_id,
            auth_provider_id=identity.idp_id if identity else idp_id,
            auth_provider_session_id=identity.auth_provider_session_id if identity else auth_provider_session_id,
            extra_attributes=identity.extra_attributes if identity else None,
        )
        target = add_query_param(client_redirect_url, "loginToken", token)
        if self.is_whitelisted(client_redirect_url):
            return redirect(target)
        profile = await self.profiles.get_profile(user_id) or {}
        display_url = urllib.parse.urlunsplit(urllib.parse.urlsplit(client_redirect_url)._replace(query="",
                                                                                                  fragment=""))
        return self.render("sso_redirect_confirm.html", redirect_url=target, display_url=display_url,
                           server_name=self.hs.server_name, new_user=new_user, user_id=user_id,
                           user_profile={"display_name": profile.get("displayname"),
                                         "avatar_url": profile.get("avatar_url")})

    def is_whitelisted(self, url: str) -> bool:
        fallback = f"{self.hs.config.public_baseurl}_matrix/static/client/login/"
        prefixes = [*self.hs.config.sso.sso.client_whitelist, fallback]
        if self.hs.config.oauth.enabled:  # an upstream login for our own OAuth 2.0 pages
            prefixes.append(f"{self.hs.config.public_baseurl}_gateway/login/upstream_done?")
        return any(url.startswith(prefix) for prefix in prefixes)

    # --- user-interactive auth through SSO (m.login.sso) -------------------------------------

    async def linked_providers(self, user_id: str) -> list[IdentityProvider]:
        """The configured IdPs this user has an identity at, in a stable order."""
        out: list[IdentityProvider] = []
        for idp_id, _ in await self.store.get_external_ids(user_id):
            provider = self.providers.get(idp_id)
            if provider is not None and provider not in out:
                out.append(provider)
        return out

    async def _open_ui_auth_session(self, ui_auth_session_id: str | None):
        from gateway.services.uia import SESSION_LIFETIME_MS

        if not ui_auth_session_id:
            raise SsoError("missing_session", "No authentication session was given. Please go back to your app "
                           "and try again.")
        uia = await self.hs.auth.store.get_uia_session(ui_auth_session_id)
        if uia is None or uia.user_id is None or uia.created_ts < self.hs.clock_ms() - SESSION_LIFETIME_MS:
            raise SsoError("unknown_session", "This authentication session is unknown or has expired. "
                           "Please go back to your app and try again.")
        return uia

    async def ui_auth_fallback(self, ui_auth_session_id: str | None, idp_id: str | None,
                               self_url: str) -> web.StreamResponse:
        """``GET /auth/m.login.sso/fallback/web``: without ``idp_id``, the confirmation page
        (one button per IdP the user is linked to); with it, off to that IdP.

        Spec: https://spec.matrix.org/latest/client-server-api/#fallback and
        https://spec.matrix.org/latest/client-server-api/#sso-during-user-interactive-authentication
        """
        try:
            uia = await self._open_ui_auth_session(ui_auth_session_id)
            linked = await self.linked_providers(uia.user_id)
            if not linked:
                raise SsoError("no_sso_identity", "Your account is not linked to an identity provider of this "
                               "server, so it cannot be confirmed by single sign-on.", 403)
            if idp_id is None:
                choices = [{**self.idp_info(p), "redirect_url": add_query_param(self_url, "idp_id", p.idp_id)}
                           for p in linked]
                return self.render("sso_auth_confirm.html", server_name=self.hs.server_name,
                                   description=describe_ui_auth_request(uia.request_key),
                                   idp=choices[0], redirect_url=choices[0]["redirect_url"], providers=choices)
            provider = next((p for p in linked if p.idp_id == idp_id), None)
            if provider is None:
                raise SsoError("unknown_idp", "Your account is not linked to this identity provider.", 403)
            return await self._send_to_idp(provider, "", ui_auth_session_id=uia.session_id)
        except SsoError as e:
            return self.error_page(e)

    async def complete_ui_auth(self, identity: RemoteIdentity, ui_auth_session_id: str) -> web.StreamResponse:
        """Back from the IdP during UI auth: the identity must be the session's user; then the
        ``m.login.sso`` stage is done (in the database) and the success page tells the client."""
        uia = await self._open_ui_auth_session(ui_auth_session_id)
        user_id = await self.store.get_user_by_external_id(identity.idp_id, identity.remote_user_id)
        if user_id != uia.user_id:
            log.info("UI auth by SSO refused: %s at %s is %s, not %s", identity.remote_user_id, identity.idp_id,
                     user_id, uia.user_id)
            return self.render("sso_auth_bad_user.html", 403, server_name=self.hs.server_name,
                               user_id_to_verify=uia.user_id)
        await self.hs.auth.store.mark_uia_stage_done(uia.session_id, "m.login.sso")
        return self.render("sso_auth_success.html", server_name=self.hs.server_name)

    # --- OIDC back-channel logout -----------------------------------------------------------

    async def backchannel_logout(self, logout_token: str | None) -> list[tuple[str, str]]:
        """Log out the devices of the IdP session a logout token names; returns them.

        Spec: https://openid.net/specs/openid-connect-backchannel-1_0.html (Synapse's
        ``backchannel_logout_enabled`` / ``backchannel_logout_ignore_sub``). The ``sid`` is the
        id_token's, stored with each device that logged in after it; a ``sub`` alone logs out
        every device of that user logged in through this IdP. Raises LogoutTokenError.
        """
        from .oidc import LogoutTokenError, OidcProvider, _unverified_claims, validate_logout_token

        if not logout_token:
            raise LogoutTokenError("no logout_token")
        issuer = _unverified_claims(logout_token).get("iss")
        candidates = [p for p in self.providers.values() if isinstance(p, OidcProvider)
                      and p.config.backchannel_logout_enabled and p.config.issuer == issuer]
        if not candidates:
            raise LogoutTokenError("no identity provider with back-channel logout enabled has this issuer")
        errors = []
        for provider in candidates:  # several providers may share an issuer (other client IDs)
            try:
                sid, sub = await validate_logout_token(provider, logout_token)
            except LogoutTokenError as e:
                errors.append(str(e))
                continue
            except SsoError as e:  # the IdP's keys could not be fetched
                errors.append(e.description)
                continue
            return await self._logout_idp_session(provider, sid, sub)
        raise LogoutTokenError("; ".join(errors))

    async def _logout_idp_session(self, provider: IdentityProvider, sid: str | None,
                                  sub: str | None) -> list[tuple[str, str]]:
        auth_store = self.hs.auth.store
        expected_user = None
        if sub is not None and not provider.config.backchannel_logout_ignore_sub:
            expected_user = await self.store.get_user_by_external_id(provider.idp_id, sub)
            if expected_user is None:
                log.info("back-channel logout from %s for unknown sub %s: nothing to do", provider.idp_id, sub)
                return []
        devices = await auth_store.devices_for_auth_provider_session(provider.idp_id, sid, expected_user)
        for user_id, device_id in devices:
            await self.hs.auth.devices.delete_devices(user_id, [device_id])
            await auth_store.delete_device_auth_providers(user_id, device_id)
        if sid is not None and self.hs.config.oauth.enabled:  # signed out of our OAuth pages too
            await self.hs.oauth.store.delete_browser_sessions_of_idp_session(provider.idp_id, sid)
        log.info("back-channel logout from %s (sid %s): logged out %d device(s)", provider.idp_id, sid, len(devices))
        return devices

    # --- 3. the username picker -------------------------------------------------------------

    async def start_username_picker(self, identity: RemoteIdentity, attrs: UserAttributes,
                                    client_redirect_url: str, *,
                                    chosen_localpart: str | None = None) -> web.StreamResponse:
        """A pending registration, then the picker (or, when the mapping chose the name and
        the terms must be accepted, the consent page)."""
        session_id = await self.sessions.start_registration(
            identity.idp_id, identity.remote_user_id,
            {**attrs.to_json(), "extra_attributes": identity.extra_attributes},
            client_redirect_url, identity.auth_provider_session_id,
        )
        if chosen_localpart is not None:
            await self.store.set_pending_choice(session_id, chosen_localpart, True)
        resp = redirect(CONSENT_PATH if chosen_localpart is not None else f"{PICKER_PATH}/account_details")
        self.set_cookie(resp, USERNAME_MAPPING_COOKIE, session_id, SSO_PAGES_PATH, 15 * 60)
        return resp

    def _picker_page(self, pending: PendingRegistration, status: int = 200, error: str | None = None,
                     localpart: str | None = None) -> web.Response:
        provider = self.providers.get(pending.idp_id)
        idp = self.idp_info(provider) if provider else {"idp_id": pending.idp_id, "idp_name": pending.idp_id,
                                                         "idp_icon": None, "idp_brand": None}
        attrs = pending.attributes
        return self.render("sso_auth_account_details.html", status, server_name=self.hs.server_name, idp=idp,
                           error=error, user_attributes={
                               "display_name": attrs.get("display_name"), "emails": attrs.get("emails") or [],
                               "localpart": localpart if localpart is not None else attrs.get("localpart") or "",
                           })

    async def username_picker_page(self, session_id: str | None) -> web.Response:
        try:
            return self._picker_page(await self.sessions.get_registration(session_id))
        except SsoError as e:
            return self.error_page(e)

    async def check_username(self, session_id: str | None, localpart: str) -> dict[str, Any]:
        """``/pick_username/check``: ``{"available": bool}``; MatrixError for an invalid name."""
        try:
            await self.sessions.get_registration(session_id)
        except SsoError as e:
            raise MatrixError(400, "M_UNKNOWN", e.description) from None
        try:
            await self.hs.usernames.check(localpart)
        except MatrixError as e:
            if e.errcode == "M_USER_IN_USE":
                return {"available": False}
            raise
        return {"available": True}

    async def submit_username(self, session_id: str | None, form: Mapping[str, Any]) -> web.StreamResponse:
        try:
            pending = await self.sessions.get_registration(session_id)
        except SsoError as e:
            return self.error_page(e)
        localpart = str(form.get("username", "")).strip()
        use_display_name = form.get("use_display_name") == "true"
        if self.consent_version() is not None:
            # The terms come next: check the name now, keep the choice with the session.
            try:
                await self.hs.usernames.check(localpart)
            except MatrixError as e:
                message = f"The username {localpart} is already taken." if e.errcode == "M_USER_IN_USE" \
                    else e.error
                return self._picker_page(pending, 400, message, localpart)
            await self.store.set_pending_choice(pending.session_id, localpart, use_display_name)
            return redirect(CONSENT_PATH)
        return await self._register_pending(pending, localpart, use_display_name, None)

    async def _register_pending(self, pending: PendingRegistration, localpart: str, use_display_name: bool,
                                consent_version: str | None) -> web.StreamResponse:
        attrs = pending.attributes
        display_name = attrs.get("display_name") if use_display_name else None
        identity = RemoteIdentity(pending.idp_id, pending.remote_user_id, _no_mapping, attrs.get("extra_attributes")
                                  or {}, pending.auth_provider_session_id)
        # Claim the session first, so two submits cannot register two accounts.
        if not await self.store.take_pending_registration(pending.session_id):
            return self.error_page(SsoError("session_used", "This registration has already been completed."))
        try:
            user_id = await self.register(identity, localpart, display_name, attrs.get("picture"),
                                          consent_version=consent_version, emails=attrs.get("emails") or ())
        except (UserExistsError, SsoError) as e:
            # Let the user try another name (the terms, if any, are asked again after it).
            await self.store.add_pending_registration(replace(pending, chosen_localpart=None))
            message = f"The username {localpart} is already taken." if isinstance(e, UserExistsError) \
                else e.description
            return self._picker_page(pending, 400, message, localpart)
        resp = await self.finish_login(user_id, pending.client_redirect_url, identity, new_user=True)
        resp.del_cookie(USERNAME_MAPPING_COOKIE, path=SSO_PAGES_PATH)
        return resp

    # --- 4. new-user consent (user_consent.require_at_registration) ----------------------------

    def consent_version(self) -> str | None:
        """The policy version new users must accept, or None if they need not."""
        consent = self.hs.config.user_consent
        return consent.version if consent is not None and consent.require_at_registration else None

    async def _pending_with_choice(self, session_id: str | None) -> PendingRegistration:
        pending = await self.sessions.get_registration(session_id)
        if pending.chosen_localpart is None:
            raise SsoError("missing_username", "Please choose a username first.")
        return pending

    async def consent_page(self, session_id: str | None) -> web.StreamResponse:
        """``/_synapse/client/new_user_consent``: the terms, after the username."""
        version = self.consent_version()
        if version is None:
            return self.error_page(SsoError("consent_not_required", "This server has no terms to accept.", 404))
        try:
            pending = await self._pending_with_choice(session_id)
        except SsoError as e:
            return self.error_page(e)
        use_display_name, _ = await self.store.get_pending_consent(pending.session_id)
        return self.render("sso_new_user_consent.html", server_name=self.hs.server_name,
                           user_id=f"@{pending.chosen_localpart}:{self.hs.server_name}",
                           user_profile={"display_name": pending.attributes.get("display_name")
                                         if use_display_name else None},
                           consent_version=version,
                           terms_url=f"{self.hs.config.public_baseurl}_matrix/consent?v={version}")

    async def submit_consent(self, session_id: str | None, form: Mapping[str, Any]) -> web.StreamResponse:
        """The user accepted ``accepted_version``: it must be the current one. Registers them."""
        version = self.consent_version()
        if version is None:
            return self.error_page(SsoError("consent_not_required", "This server has no terms to accept.", 404))
        try:
            pending = await self._pending_with_choice(session_id)
            if form.get("accepted_version") != version:
                raise SsoError("consent_version_mismatch", "The terms have changed since this page was shown. "
                               "Please read and accept the current version.")
        except SsoError as e:
            return self.error_page(e)
        await self.store.set_terms_accepted(pending.session_id, version)
        use_display_name, _ = await self.store.get_pending_consent(pending.session_id)
        return await self._register_pending(pending, pending.chosen_localpart, use_display_name, version)


_UI_AUTH_DESCRIPTIONS = {
    "POST /account/password": "change your password",
    "POST /account/deactivate": "deactivate your account",
    "POST /delete_devices": "remove devices from your account",
    "POST /keys/device_signing/upload": "replace your cross-signing keys",
}


def describe_ui_auth_request(request_key: str) -> str:
    """What the user is confirming, for ``sso_auth_confirm.html``'s ``description``."""
    if request_key.startswith("DELETE /devices/"):
        return "remove a device from your account"
    return _UI_AUTH_DESCRIPTIONS.get(request_key, "confirm this action")


async def _no_mapping(failures: int) -> UserAttributes:  # the user chose the localpart
    return UserAttributes(localpart=None)
