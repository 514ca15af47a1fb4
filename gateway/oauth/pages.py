"""The browser side of the OAuth 2.0 API: our pages, from the client's authorisation request
to the redirect with a code (or to "go back to your device").

The user signs in with a password or through an upstream IdP (every ``oidc_providers`` entry,
SAML, CAS): the upstream login is the SSO gateway's own flow (sso/handler.py: mapping
providers, username picker, new-user consent, attribute requirements), whose last step hands a
single-use login token to our ``upstream_done`` page instead of to a Matrix client. Then a
consent screen names the client. The same sign-in serves the legacy ``m.login.sso`` redirect
(OAuth-aware clients), the device code page and the account page.

Every page is bound to a browser by an HttpOnly cookie; every form carries a CSRF token derived
from it; every redirect goes to our own paths or to a redirect URI the client registered.
Spec: https://spec.matrix.org/latest/client-server-api/#authorisation-code-flow
"""

from __future__ import annotations

import hmac
import logging
import secrets
import urllib.parse
from typing import Any

from aiohttp import web

from sso.handler import SsoHandler, add_query_param, check_redirect_url, redirect
from sso.provider import SsoError
from sso.sessions import hash_key

from ..http import MatrixError
from ..server import HomeServer
from ..storage.profiles import ProfileStore
from .clients import localised
from .metadata import ACCOUNT_ACTIONS, Paths
from .service import AuthorizeError, BrowserUser, PageError

__all__ = ["OAuthPages", "add_page_routes", "BROWSER_COOKIE"]

log = logging.getLogger(__name__)

BROWSER_COOKIE = "gateway_oauth_browser"
#: How a browser signed in through ``jwt_config.login_url`` is recorded (its "IdP").
JWT_IDP_ID = "jwt"
#: Destructive account actions need a sign-in at most this old.
RECENT_SIGN_IN_MS = 10 * 60 * 1000


def local_next(value: str | None, default: str = Paths.ACCOUNT) -> str:
    """A ``next`` parameter: one of our own paths, never another site (no open redirect)."""
    if not value or not value.startswith(Paths.PAGES) or "//" in value or "\\" in value \
            or any(c in value for c in "\r\n\t"):
        return default
    return value


def identifier_of(username: str) -> dict[str, str]:
    """What someone typed in the username field: a user ID or localpart, or an e-mail address."""
    if not username.startswith("@") and "@" in username:
        return {"type": "m.id.thirdparty", "medium": "email", "address": username}
    return {"type": "m.id.user", "user": username}


def with_query(path: str, **params: str | None) -> str:
    query = urllib.parse.urlencode({k: v for k, v in params.items() if v is not None})
    return f"{path}?{query}" if query else path


class OAuthPages:
    def __init__(self, hs: HomeServer, sso: SsoHandler):
        self.hs, self.sso = hs, sso
        self.oauth = hs.oauth
        self.profiles = ProfileStore(hs.db)

    # --- the browser, its cookie and CSRF tokens ----------------------------------------------

    @staticmethod
    def browser_key(request: web.Request) -> str | None:
        return request.cookies.get(BROWSER_COOKIE)

    def ensure_browser(self, request: web.Request) -> tuple[str, bool]:
        key = self.browser_key(request)
        return (key, False) if key else (secrets.token_urlsafe(32), True)

    def keep_cookie(self, resp: web.StreamResponse, key: str) -> web.StreamResponse:
        self.sso.set_cookie(resp, BROWSER_COOKIE, key, Paths.PAGES,
                            self.hs.config.oauth.browser_session_lifetime_ms // 1000)
        return resp

    @staticmethod
    def csrf_token(browser_key: str) -> str:
        return hash_key("csrf:" + browser_key)[:40]

    def check_csrf(self, request: web.Request, form: dict[str, str]) -> str:
        """The browser key, if the form's CSRF token is this browser's (no cross-site posts)."""
        key = self.browser_key(request)
        sent = form.get("csrf", "")
        if not key or not sent.isascii() or not hmac.compare_digest(sent, self.csrf_token(key)):
            raise PageError("csrf", "This form has expired or did not come from this site. Please try again.", 403)
        return key

    def page(self, name: str, request: web.Request, status: int = 200, *, key: str | None = None,
             new_cookie: bool = False, **context: Any) -> web.StreamResponse:
        key = key or self.browser_key(request)
        resp = self.sso.render(name, status, server_name=self.hs.server_name,
                               csrf_token=self.csrf_token(key) if key else "", **context)
        return self.keep_cookie(resp, key) if new_cookie and key else resp

    def error(self, e: PageError | SsoError | AuthorizeError, status: int | None = None) -> web.Response:
        status = status or getattr(e, "status", 400)
        return self.sso.render("sso_error.html", status, error=e.error, error_description=e.description,
                               server_name=self.hs.server_name)

    async def signed_in(self, request: web.Request) -> BrowserUser | None:
        return await self.oauth.browser_user(self.browser_key(request))

    def to_login(self, next_path: str, **extra: str | None) -> web.Response:
        return redirect(with_query(Paths.LOGIN, next=next_path, **extra))

    # --- the authorisation endpoint --------------------------------------------------------------

    async def authorize(self, request: web.Request) -> web.StreamResponse:
        # Each request stores a grant for anyone who asks: rc_oauth_registration, as for clients.
        if self.hs.ratelimiters["rc_oauth_registration"].check("authorize:" + (request.remote or "")) is not None:
            return self.error(PageError("too_many_requests", "Too many sign-in requests from your address: wait a "
                                        "little and try again.", 429))
        key, new = self.ensure_browser(request)
        multi = {k: request.query.getall(k) for k in request.query.keys()}
        try:
            grant = await self.oauth.start_authorization(request.query, multi, key)
        except AuthorizeError as e:
            if e.redirect is not None:
                return redirect(e.redirect)
            log.info("authorisation request refused without redirect: %s", e)
            return self.error(e, 400)
        consent = with_query(Paths.CONSENT, grant=grant.grant_id)
        prompts = (grant.prompt or "").split()
        if "none" in prompts:  # OpenID Connect Core 3.1.2.6: answer without showing anything
            signed_in = not new and await self.oauth.browser_user(key) is not None
            resp = redirect(await self.oauth.refuse_without_interaction(
                grant, "consent_required" if signed_in else "login_required",
                "this app needs your consent on this server's page" if signed_in else "you are not signed in"))
        elif "create" in prompts and self.hs.config.oauth.enable_registration:
            resp = redirect(with_query(Paths.SIGN_UP, next=consent))
        elif "login" not in prompts and await self.oauth.browser_user(None if new else key) is not None:
            resp = redirect(consent)
        else:
            resp = self.to_login(consent, force="1" if "login" in prompts else None)
        return self.keep_cookie(resp, key) if new else resp

    # --- signing in: password ------------------------------------------------------------------

    def _providers(self, next_path: str) -> list[dict[str, Any]]:
        buttons = [{**self.sso.idp_info(p),
                    "url": with_query(f"{Paths.LOGIN_UPSTREAM}/{urllib.parse.quote(p.idp_id, safe='')}",
                                      next=next_path)}
                   for p in self.sso.providers.values()]
        jwt = self._jwt_config()
        if jwt is not None:
            buttons.append({"idp_id": JWT_IDP_ID, "idp_name": jwt.idp_name, "idp_icon": None, "idp_brand": None,
                            "url": with_query(Paths.LOGIN_JWT, next=next_path)})
        return buttons

    async def login_get(self, request: web.Request) -> web.StreamResponse:
        next_path = local_next(request.query.get("next"))
        if not request.query.get("force") and await self.signed_in(request) is not None:
            return redirect(next_path)
        return await self.login_page(request, next_path)

    async def login_page(self, request: web.Request, next_path: str, *, status: int = 200,
                         error: str | None = None, username: str = "") -> web.StreamResponse:
        key, new = self.ensure_browser(request)
        config = self.hs.config.oauth
        return self.page("oauth_login.html", request, status, key=key, new_cookie=new, next=next_path, error=error,
                         username=username, password_enabled=config.enable_password_login,
                         providers=self._providers(next_path),
                         register_url=with_query(Paths.SIGN_UP, next=next_path) if config.enable_registration
                         else None)

    async def login_submit(self, request: web.Request) -> web.StreamResponse:
        form = await _form(request)
        try:
            key = self.check_csrf(request, form)
        except PageError as e:
            return self.error(e)
        next_path = local_next(form.get("next"))
        if not self.hs.config.oauth.enable_password_login:
            return self.error(PageError("password_disabled", "Password sign-in is not offered here.", 403))
        username = form.get("username", "").strip()
        from ..client_api.login import password_login

        try:
            self.hs.ratelimiters["rc_login.address"].ratelimit(request.remote or "")
            if not username:
                raise MatrixError.forbidden("Invalid username or password")
            # The legacy /login's checks, password auth provider modules (LDAP, ...) included.
            user_id, _ = await password_login(self.hs, {"type": "m.login.password", "identifier": identifier_of(
                username), "password": form.get("password", "")})
        except MatrixError as e:
            message = "Too many attempts: wait a little and try again." if e.status == 429 else \
                "Invalid username or password" if e.status == 400 or e.errcode == "M_FORBIDDEN" else e.error
            return await self.login_page(request, next_path, status=429 if e.status == 429 else 401,
                                         error=message, username=username)
        key = await self.oauth.sign_in_browser(key, user_id, None)
        log.info("%s signed in on the OAuth pages with a password", user_id)
        return self.keep_cookie(redirect(next_path), key)

    async def logout(self, request: web.Request) -> web.StreamResponse:
        form = await _form(request)
        try:
            key = self.check_csrf(request, form)
        except PageError as e:
            return self.error(e)
        await self.oauth.sign_out_browser(key)
        return self.to_login(local_next(form.get("next")))

    # --- signing in: an upstream identity provider (the SSO gateway's flow) -------------------------

    def _upstream_binding(self, browser_key: str) -> str:
        return hash_key("upstream:" + browser_key)[:32]

    async def upstream_start(self, request: web.Request) -> web.StreamResponse:
        provider = self.sso.providers.get(request.match_info["idp_id"])
        if provider is None:
            return self.error(PageError("unknown_idp", "There is no such identity provider on this server.", 404))
        key, new = self.ensure_browser(request)
        done = self.oauth.url(Paths.LOGIN_UPSTREAM_DONE) + "?" + urllib.parse.urlencode(
            {"next": local_next(request.query.get("next")), "b": self._upstream_binding(key)})
        try:
            resp = await self.sso._send_to_idp(provider, done)
        except SsoError as e:
            return self.error(e)
        return self.keep_cookie(resp, key) if new else resp

    async def upstream_done(self, request: web.Request) -> web.StreamResponse:
        """The end of an upstream login: the SSO gateway's login token, for this browser only."""
        key = self.browser_key(request)
        binding = request.query.get("b", "")
        if not key or not binding.isascii() or not hmac.compare_digest(binding, self._upstream_binding(key)):
            return self.error(PageError("mismatching_browser", "This sign-in was started in another browser. "
                                        "Go back to your app and start again.", 403))
        try:
            details = await self.hs.auth.consume_login_token_details(request.query.get("loginToken", ""))
        except MatrixError:
            return self.error(PageError("invalid_login_token", "This sign-in has expired or was already used. "
                                        "Please start again."))
        key = await self.oauth.sign_in_browser(key, details.user_id, details.auth_provider_id,
                                               details.auth_provider_session_id)
        log.info("%s signed in on the OAuth pages through %s", details.user_id, details.auth_provider_id)
        return self.keep_cookie(redirect(local_next(request.query.get("next"))), key)

    # --- signing in: a token service (jwt_config.login_url) ------------------------------------------

    def _jwt_config(self):
        jwt = self.hs.config.sso.jwt_config
        return jwt if jwt is not None and jwt.login_url else None

    async def jwt_start(self, request: web.Request) -> web.StreamResponse:
        """Out to the service that issues ``org.matrix.login.jwt`` tokens, with the address to
        come back to (bound to this browser, as an upstream IdP login is)."""
        jwt = self._jwt_config()
        if jwt is None:
            return self.error(PageError("unknown_idp", "There is no such identity provider on this server.", 404))
        key, new = self.ensure_browser(request)
        back = self.oauth.url(Paths.LOGIN_JWT_DONE) + "?" + urllib.parse.urlencode(
            {"next": local_next(request.query.get("next")), "b": self._upstream_binding(key)})
        resp = redirect(add_query_param(jwt.login_url, "redirect_uri", back))
        return self.keep_cookie(resp, key) if new else resp

    async def jwt_done(self, request: web.Request) -> web.StreamResponse:
        """Back from the token service with ``token``: checked as the legacy ``/login`` checks
        an ``org.matrix.login.jwt`` token (the account is made at the first sign-in)."""
        from sso.jwt_login import jwt_login

        key = self.browser_key(request)
        binding = request.query.get("b", "")
        if self._jwt_config() is None:
            return self.error(PageError("unknown_idp", "There is no such identity provider on this server.", 404))
        if not key or not binding.isascii() or not hmac.compare_digest(binding, self._upstream_binding(key)):
            return self.error(PageError("mismatching_browser", "This sign-in was started in another browser. "
                                        "Go back to your app and start again.", 403))
        try:
            user_id = await jwt_login(self.hs, request.query.get("token"))
        except MatrixError as e:
            log.info("JWT sign-in on the OAuth pages refused: %s", e.error)
            return self.error(PageError("invalid_token", "The sign-in service's answer was not accepted. Please "
                                        "start again.", 403))
        key = await self.oauth.sign_in_browser(key, user_id, JWT_IDP_ID)
        log.info("%s signed in on the OAuth pages with a JWT", user_id)
        return self.keep_cookie(redirect(local_next(request.query.get("next"))), key)

    # --- registration (prompt=create, action=register) ------------------------------------------

    def _registration_context(self) -> dict[str, Any]:
        consent = self.hs.config.user_consent
        terms = consent if consent is not None and consent.require_at_registration else None
        return {"token_required": self.hs.config.registration_requires_token,
                "terms_url": f"{self.hs.config.public_baseurl}_matrix/consent?v={terms.version}" if terms else None,
                "policy_name": terms.policy_name if terms else None}

    async def register_page(self, request: web.Request) -> web.StreamResponse:
        if not self.hs.config.oauth.enable_registration:
            return self.error(PageError("registration_disabled", "This server does not let you create an account "
                                        "here.", 403))
        key, new = self.ensure_browser(request)
        return self.page("oauth_register.html", request, key=key, new_cookie=new,
                         next=local_next(request.query.get("next")), error=None, username="",
                         login_url=with_query(Paths.LOGIN, next=local_next(request.query.get("next"))),
                         **self._registration_context())

    async def register_submit(self, request: web.Request) -> web.StreamResponse:
        from ..passwords import hash_password
        from ..storage.users import UserExistsError

        form = await _form(request)
        try:
            key = self.check_csrf(request, form)
            if not self.hs.config.oauth.enable_registration:
                raise PageError("registration_disabled", "This server does not let you create an account here.", 403)
        except PageError as e:
            return self.error(e)
        next_path = local_next(form.get("next"))
        username = form.get("username", "").strip().lower().lstrip("@")
        context = self._registration_context()

        def again(message: str, status: int = 400) -> web.StreamResponse:
            return self.page("oauth_register.html", request, status, key=key, next=next_path, error=message,
                             username=username, login_url=with_query(Paths.LOGIN, next=next_path), **context)

        password = form.get("password", "")
        if len(password) < 8:
            return again("Choose a password of at least 8 characters.")
        if password != form.get("password_confirm"):
            return again("The two passwords are not the same.")
        store = self.hs.auth.store
        token = form.get("registration_token", "")
        if context["token_required"] and not await store.registration_token_valid(token, self.hs.clock_ms()):
            return again("This registration token is not valid.")
        if context["terms_url"] and form.get("accept_terms") != "yes":
            return again(f"Please accept the {context['policy_name']} to create an account.")
        try:
            self.hs.ratelimiters["rc_registration"].ratelimit(request.remote or "")
            user_id = await self.hs.usernames.check(username)
            await self.hs.auth.users.create_user(user_id, password_hash=hash_password(
                password, self.hs.config.bcrypt_rounds, self.hs.config.password_pepper),
                created_ts=self.hs.clock_ms(), displayname=username)
        except MatrixError as e:
            return again(e.error if e.errcode != "M_USER_IN_USE" else f"The username {username} is already taken.",
                         e.status)
        except UserExistsError:
            return again(f"The username {username} is already taken.")
        if context["token_required"]:
            await store.use_registration_token(token)
        consent = self.hs.config.user_consent
        if context["terms_url"] and consent is not None:
            await self.hs.auth.users.set_consent_version(user_id, consent.version, self.hs.clock_ms())
        await self.hs.modules.callbacks.notify("on_user_registration", user_id)
        key = await self.oauth.sign_in_browser(key, user_id, None)
        log.info("registered %s on the OAuth pages", user_id)
        return self.keep_cookie(redirect(next_path), key)

    # --- consent ---------------------------------------------------------------------------------

    def _client_view(self, client: dict[str, Any], request: web.Request) -> dict[str, Any]:
        languages = [part.split(";")[0].strip() for part in request.headers.get("Accept-Language", "").split(",")
                     if part.strip()]
        view = {name: localised(client, name, languages) for name in ("client_name", "logo_uri", "tos_uri",
                                                                        "policy_uri")}
        view["client_uri"] = client.get("client_uri")
        view["host"] = urllib.parse.urlsplit(client.get("client_uri") or "").hostname or ""
        view["client_name"] = view["client_name"] or view["host"] or "An app"
        return view

    async def consent_page(self, request: web.Request) -> web.StreamResponse:
        try:
            grant = await self.oauth.pending_grant(request.query.get("grant"), self.browser_key(request))
        except PageError as e:
            return self.error(e)
        user = await self.signed_in(request)
        if user is None:
            return self.to_login(request.path_qs)
        client = await self.oauth.get_client(grant.client_id) or {}
        profile = await self.profiles.get_profile(user.user_id) or {}
        return self.page("oauth_consent.html", request, grant_id=grant.grant_id, client=self._client_view(client, request),
                         user_id=user.user_id, display_name=profile.get("displayname"),
                         device_id=grant.device_id, device_grant=grant.kind == "device",
                         scopes=grant.scope.split(" "), switch_url=with_query(Paths.LOGIN, next=request.path_qs,
                                                                             force="1"))

    async def consent_submit(self, request: web.Request) -> web.StreamResponse:
        form = await _form(request)
        try:
            key = self.check_csrf(request, form)
            grant = await self.oauth.pending_grant(form.get("grant"), key)
            user = await self.signed_in(request)
            if user is None:
                return self.to_login(with_query(Paths.CONSENT, grant=grant.grant_id))
            if form.get("action") == "allow":
                target = await self.oauth.approve(grant, user)
            else:
                target = await self.oauth.deny(grant)
        except PageError as e:
            return self.error(e)
        if target is not None:
            return redirect(target)
        return self.page("oauth_device_done.html", request, approved=form.get("action") == "allow")

    # --- the device grant's verification page (RFC 8628 3.3) ------------------------------------------

    async def link_page(self, request: web.Request) -> web.StreamResponse:
        key, new = self.ensure_browser(request)
        return self.page("oauth_link.html", request, key=key, new_cookie=new, code=request.query.get("code", ""),
                         error=None)

    async def link_submit(self, request: web.Request) -> web.StreamResponse:
        """RFC 8628 5.1: user codes are short, so wrong ones are rate limited per address
        (``rc_login.failed_attempts``), or they could be guessed and bound to the guesser."""
        form = await _form(request)
        failures = self.hs.ratelimiters["rc_login.failed_attempts"]
        address = "oauth_link:" + (request.remote or "")
        try:
            key = self.check_csrf(request, form)
            if failures.check(address, update=False) is not None:
                return self.page("oauth_link.html", request, 429, code=form.get("code", ""),
                                 error="Too many wrong codes: wait a little and try again.")
            grant = await self.oauth.device_grant_for_code(form.get("code", ""), key)
        except PageError as e:
            if e.error == "csrf":
                return self.error(e)
            failures.check(address)  # count it
            return self.page("oauth_link.html", request, 400, code=form.get("code", ""), error=e.description)
        consent = with_query(Paths.CONSENT, grant=grant.grant_id)
        return redirect(consent if await self.signed_in(request) else with_query(Paths.LOGIN, next=consent))

    # --- the legacy SSO redirect for OAuth-aware clients -------------------------------------------

    async def sso_continue(self, request: web.Request) -> web.StreamResponse:
        """``/login/sso/redirect`` without an IdP sends the browser to our login page, then here:
        the SSO gateway's usual last step (a ``loginToken`` for the client's ``redirectUrl``,
        after the confirmation page unless the URL is whitelisted)."""
        try:
            target = check_redirect_url(request.query.get("redirectUrl"))
        except SsoError as e:
            return self.error(e)
        user = await self.signed_in(request)
        if user is None:
            return self.to_login(request.path_qs)
        return await self.sso.finish_login(user.user_id, target, None, new_user=False, idp_id=user.idp_id)

    # --- account management ------------------------------------------------------------------------

    async def account_get(self, request: web.Request) -> web.StreamResponse:
        return await self.account_page(request, request.query.get("action"), request.query.get("device_id"))

    async def account_slash(self, request: web.Request) -> web.StreamResponse:
        return redirect(Paths.ACCOUNT)

    async def account_page(self, request: web.Request, action: str | None, device_id: str | None, *,
                           notice: str | None = None, error: str | None = None,
                           status: int = 200) -> web.StreamResponse:
        user = await self.signed_in(request)
        if user is None:
            return self.to_login(with_query(Paths.ACCOUNT, action=action, device_id=device_id))
        if action not in ACCOUNT_ACTIONS:
            action = "org.matrix.profile"
        devices = await self.hs.auth.devices.list_devices(user.user_id)
        device = next((d for d in devices if d.device_id == device_id), None)
        if action in ("org.matrix.device_view", "org.matrix.device_delete") and device is None:
            action, error = "org.matrix.devices_list", error or (f"You have no device {device_id}." if device_id
                                                                 else None)
        profile = await self.profiles.get_profile(user.user_id) or {}
        return self.page("oauth_account.html", request, status, user_id=user.user_id,
                         display_name=profile.get("displayname") or "", action=action, devices=devices,
                         device=device, notice=notice, error=error, account_url=Paths.ACCOUNT,
                         reset_allowed=await self.oauth.cross_signing_reset_allowed(user.user_id),
                         needs_recent_sign_in=self._stale(user))

    def _stale(self, user: BrowserUser) -> bool:
        return user.auth_time < self.hs.clock_ms() - RECENT_SIGN_IN_MS

    async def account_submit(self, request: web.Request) -> web.StreamResponse:
        form = await _form(request)
        try:
            self.check_csrf(request, form)
        except PageError as e:
            return self.error(e)
        user = await self.signed_in(request)
        if user is None:
            return self.to_login(Paths.ACCOUNT)
        op = form.get("op")
        action, device_id = form.get("action"), form.get("device_id")

        async def show(notice: str | None = None, error: str | None = None, status: int = 200,
                       show_action: str | None = None) -> web.StreamResponse:
            return await self.account_page(request, show_action or action, device_id, notice=notice, error=error,
                                           status=status)

        if op in ("deactivate", "allow_cross_signing_reset") and self._stale(user):
            return self.to_login(with_query(Paths.ACCOUNT, action=action), force="1")
        if op == "set_displayname":
            name = form.get("displayname", "").strip()
            if len(name) > 256:
                return await show(error="That name is too long.", status=400)
            from ..services.auth import Requester

            account = await self.hs.auth.users.get_user(user.user_id)
            who = Requester(user.user_id, None, "", False, shadow_banned=bool(account and account.shadow_banned))
            try:  # as PUT /profile does: the rules, and the change in every room
                if name:
                    await self.hs.profiles.set_field(who, user.user_id, "displayname", name)
                else:
                    await self.hs.profiles.delete_field(who, user.user_id, "displayname")
            except MatrixError as e:
                return await show(error=e.error, status=e.status)
            return await show(notice="Your display name is saved.")
        if op == "delete_device":
            devices = self.hs.auth.devices
            deleted = await devices.delete_devices(user.user_id, [device_id]) \
                if device_id and await devices.get_device(user.user_id, device_id) else []
            device_id = None
            if not deleted:
                return await show(error="You have no such device.", status=404,
                                  show_action="org.matrix.devices_list")
            return await show(notice=f"The device {deleted[0]} is signed out.", show_action="org.matrix.devices_list")
        if op == "allow_cross_signing_reset":
            await self.oauth.allow_cross_signing_reset(user.user_id)
            return await show(notice="You may now reset your identity from your app within 10 minutes. Go back "
                              "to your app and continue.")
        if op == "deactivate":
            if form.get("confirm") != user.user_id:
                return await show(error="Type your full user ID to confirm.", status=400)
            try:
                await self.hs.auth.deactivate_account(user.user_id)
            except MatrixError as e:
                return await show(error=e.error, status=e.status)
            await self.oauth.store.delete_browser_sessions_of_user(user.user_id)
            return self.page("oauth_device_done.html", request, approved=False, deactivated=True)
        return await show(error="Unknown action.", status=400)


async def _form(request: web.Request) -> dict[str, str]:
    form = await request.post()
    return {k: v for k, v in form.items() if isinstance(v, str)}


def add_page_routes(app: web.Application, pages: OAuthPages, prefix: str) -> None:
    """The pages, on the sub-app mounted at ``prefix`` (``/_gateway``)."""
    def path(full: str) -> str:
        return full[len(prefix):]

    r = app.router
    r.add_get(path(Paths.AUTHORIZE), pages.authorize)
    r.add_get(path(Paths.LOGIN), pages.login_get)
    r.add_post(path(Paths.LOGIN), pages.login_submit)
    r.add_post(path(Paths.LOGOUT), pages.logout)
    r.add_get(path(Paths.LOGIN_UPSTREAM) + "/{idp_id}", pages.upstream_start)
    r.add_get(path(Paths.LOGIN_UPSTREAM_DONE), pages.upstream_done)
    r.add_get(path(Paths.LOGIN_JWT), pages.jwt_start)
    r.add_get(path(Paths.LOGIN_JWT_DONE), pages.jwt_done)
    r.add_get(path(Paths.SSO_CONTINUE), pages.sso_continue)
    r.add_get(path(Paths.SIGN_UP), pages.register_page)
    r.add_post(path(Paths.SIGN_UP), pages.register_submit)
    r.add_get(path(Paths.CONSENT), pages.consent_page)
    r.add_post(path(Paths.CONSENT), pages.consent_submit)
    r.add_get(path(Paths.LINK), pages.link_page)
    r.add_post(path(Paths.LINK), pages.link_submit)
    r.add_get(path(Paths.ACCOUNT), pages.account_get)
    r.add_post(path(Paths.ACCOUNT), pages.account_submit)
    r.add_get(path(Paths.ACCOUNT).rstrip("/"), pages.account_slash)
