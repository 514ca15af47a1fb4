"""Browser routes of the SSO gateway (thin: parse, call ``sso.handler``, respond).

- ``/_matrix/client/{r0,v3}/login/sso/redirect[/{idpId}]`` (spec: client login via SSO)
- ``/_synapse/client/pick_idp``, ``/_synapse/client/oidc/callback``,
  ``/_synapse/client/saml2/metadata.xml`` and ``/saml2/authn_response`` (SAML SP metadata
  and assertion consumer service), ``/_matrix/client/{r0,v3}/login/cas/{redirect,ticket}``,
  ``/_synapse/client/pick_username/{account_details,check}``, ``/_synapse/client/new_user_consent``
  (Synapse's paths, which operators have registered at their IdPs)

Spec: https://spec.matrix.org/latest/client-server-api/#get_matrixclientv3loginssoredirect
"""

from __future__ import annotations

import logging
import urllib.parse
from typing import Any

from aiohttp import web

from sso.handler import BROWSER_COOKIE, USERNAME_MAPPING_COOKIE, SsoHandler
from sso.provider import SsoError
from sso.jwt_login import LOGIN_TYPE as JWT_LOGIN_TYPE

from .http import json_response
from .server import HomeServer

log = logging.getLogger(__name__)

SSO_HANDLER = web.AppKey("sso_handler", SsoHandler)

__all__ = ["SSO_HANDLER", "add_sso_routes", "configured_idp_ids", "login_flows"]


def login_flows(hs: HomeServer) -> list[dict[str, Any]]:
    """The SSO, CAS and JWT entries of ``GET /login``."""
    flows: list[dict[str, Any]] = []
    sso = hs.config.sso
    providers = [*sso.oidc_providers, *(p for p in (sso.saml2_config, sso.cas_config) if p is not None)]
    if sso.cas_config is not None:
        flows.append({"type": "m.login.cas"})
    if providers or hs.config.oauth.enabled:
        idps = []
        for p in providers:
            entry = {"id": p.idp_id, "name": p.idp_name}
            if p.idp_icon:
                entry["icon"] = p.idp_icon
            if p.idp_brand:
                entry["brand"] = p.idp_brand
            idps.append(entry)
        flow: dict[str, Any] = {"type": "m.login.sso", "identity_providers": idps}
        if hs.config.oauth.enabled:
            # Spec "OAuth 2.0 aware clients": our pages (password, every IdP, registration) are
            # behind this flow, so clients should offer only it.
            flow["oauth_aware_preferred"] = True
        flows.append(flow)
    if hs.config.sso.jwt_config is not None:
        flows.append({"type": JWT_LOGIN_TYPE})
    return flows


def configured_idp_ids(hs: HomeServer) -> set[str]:
    """The ``idp_id`` of every configured OIDC, SAML and CAS provider."""
    sso = hs.config.sso
    return {p.idp_id for p in (*sso.oidc_providers, sso.saml2_config, sso.cas_config) if p is not None}


def _handler(request: web.Request) -> SsoHandler:
    return request.app[SSO_HANDLER]


async def sso_redirect(request: web.Request) -> web.StreamResponse:
    idp_id = request.match_info.get("idp_id")
    hs = _handler(request).hs
    if idp_id is None and hs.config.oauth.enabled:
        # OAuth-aware clients: our sign-in page (or sign-up, with action=register), then the
        # usual loginToken for redirectUrl (spec "OAuth 2.0 aware clients", server behaviour).
        from .oauth.metadata import Paths
        from .oauth.pages import with_query

        after = with_query(Paths.SSO_CONTINUE, redirectUrl=request.query.get("redirectUrl", ""))
        register = request.query.get("action") == "register" and hs.config.oauth.enable_registration
        return web.Response(status=302, headers={"Cache-Control": "no-store", "Location": with_query(
            Paths.SIGN_UP if register else Paths.LOGIN, next=after)})
    return await _handler(request).redirect_to_idp(idp_id, request.query.get("redirectUrl"), request.query)


async def pick_idp(request: web.Request) -> web.StreamResponse:
    return _handler(request).idp_picker(request.query.get("redirectUrl"), request.query.get("idp"))


async def oidc_callback(request: web.Request) -> web.StreamResponse:
    params: dict[str, str] = dict(request.query)
    if request.method == "POST":  # response_mode=form_post
        params.update({k: v for k, v in (await request.post()).items() if isinstance(v, str)})
    return await _handler(request).handle_callback(params.get("state"), request.cookies.get(BROWSER_COOKIE), params)


async def saml_metadata(request: web.Request) -> web.StreamResponse:
    provider = _handler(request).providers.get("saml")
    if provider is None:
        raise web.HTTPNotFound()
    try:
        xml = provider.sp_metadata_xml()
    except SsoError as e:
        return _handler(request).error_page(e)
    return web.Response(body=xml, content_type="application/samlmetadata+xml", charset="utf-8")


async def saml_authn_response(request: web.Request) -> web.StreamResponse:
    """The assertion consumer service (HTTP-POST binding)."""
    from sso.saml import session_id_from_response

    form = await request.post()
    params = {k: v for k, v in form.items() if isinstance(v, str)}
    state = params.get("RelayState") or session_id_from_response(params.get("SAMLResponse", ""))
    return await _handler(request).handle_callback(state, request.cookies.get(BROWSER_COOKIE), params,
                                                   idp_id="saml")


async def cas_ticket(request: web.Request) -> web.StreamResponse:
    """The CAS service URL: the CAS server sends the browser back here with a ``ticket``."""
    params = dict(request.query)
    return await _handler(request).handle_callback(params.get("state"), request.cookies.get(BROWSER_COOKIE),
                                                   params, idp_id="cas")


async def cas_redirect(request: web.Request) -> web.StreamResponse:
    """The legacy CAS redirect: the same as ``/login/sso/redirect/cas``."""
    return await _handler(request).redirect_to_idp("cas", request.query.get("redirectUrl"))


async def account_details_page(request: web.Request) -> web.StreamResponse:
    return await _handler(request).username_picker_page(request.cookies.get(USERNAME_MAPPING_COOKIE))


async def account_details_submit(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    fields = {k: v for k, v in form.items() if isinstance(v, str)}
    return await _handler(request).submit_username(request.cookies.get(USERNAME_MAPPING_COOKIE), fields)


async def new_user_consent_page(request: web.Request) -> web.StreamResponse:
    return await _handler(request).consent_page(request.cookies.get(USERNAME_MAPPING_COOKIE))


async def new_user_consent_submit(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    fields = {k: v for k, v in form.items() if isinstance(v, str)}
    return await _handler(request).submit_consent(request.cookies.get(USERNAME_MAPPING_COOKIE), fields)


async def check_username(request: web.Request) -> web.StreamResponse:
    result = await _handler(request).check_username(request.cookies.get(USERNAME_MAPPING_COOKIE),
                                                    request.query.get("username", ""))
    return json_response(result)


async def backchannel_logout(request: web.Request) -> web.StreamResponse:
    """OIDC Back-Channel Logout: the IdP POSTs a signed ``logout_token``; 200 once the devices
    are logged out, 400 with an OAuth-style error otherwise (spec section 2.8)."""
    from sso.oidc import LogoutTokenError

    form = await request.post()
    token = form.get("logout_token")
    try:
        await _handler(request).backchannel_logout(token if isinstance(token, str) else None)
    except LogoutTokenError as e:
        log.info("back-channel logout refused: %s", e)
        return json_response({"error": "invalid_request", "error_description": str(e)}, status=400,
                             headers={"Cache-Control": "no-store"})
    return web.Response(status=200, headers={"Cache-Control": "no-store"})


async def auth_fallback(request: web.Request) -> web.StreamResponse:
    """``GET /_matrix/client/{r0,v3}/auth/{stage}/fallback/web?session=...``: the web page a
    client opens for an auth stage it cannot do itself. We have them for ``m.login.sso`` and
    ``m.login.terms``.

    Spec: https://spec.matrix.org/latest/client-server-api/#fallback
    """
    from .http import Codes, MatrixError

    stage = request.match_info["stage"]
    if stage == "m.login.terms":
        from .consent_api import terms_fallback

        return await terms_fallback(request, _handler(request))
    if stage != "m.login.sso":
        raise MatrixError(404, Codes.UNRECOGNIZED, f"There is no fallback page for the auth stage {stage!r}")
    if request.method != "GET":
        raise MatrixError(405, Codes.UNRECOGNIZED, "This page is only fetched with GET")
    session = request.query.get("session")
    self_url = request.path + "?" + urllib.parse.urlencode({"session": session or ""})
    return await _handler(request).ui_auth_fallback(session, request.query.get("idp_id"), self_url)


def build_synapse_client_app(handler: SsoHandler) -> web.Application:
    app = web.Application()
    app[SSO_HANDLER] = handler
    app.router.add_get("/pick_idp", pick_idp)
    app.router.add_get("/oidc/callback", oidc_callback)
    app.router.add_post("/oidc/callback", oidc_callback)
    app.router.add_post("/oidc/backchannel_logout", backchannel_logout)
    app.router.add_get("/saml2/metadata.xml", saml_metadata)
    app.router.add_post("/saml2/authn_response", saml_authn_response)
    app.router.add_get("/pick_username/account_details", account_details_page)
    app.router.add_post("/pick_username/account_details", account_details_submit)
    app.router.add_get("/pick_username/check", check_username)
    app.router.add_get("/new_user_consent", new_user_consent_page)
    app.router.add_post("/new_user_consent", new_user_consent_submit)
    return app


def add_sso_routes(app: web.Application, hs: HomeServer) -> None:
    """Mount the SSO routes on a listener app serving ``client``. Call before the
    ``/_matrix/client`` sub-app is added, so the more specific paths are ours."""
    handler = SsoHandler(hs)
    app[SSO_HANDLER] = handler
    for ver in ("r0", "v3"):
        app.router.add_get(f"/_matrix/client/{ver}/login/sso/redirect", sso_redirect)
        app.router.add_get(f"/_matrix/client/{ver}/login/sso/redirect/{{idp_id}}", sso_redirect)
        app.router.add_get(f"/_matrix/client/{ver}/login/cas/redirect", cas_redirect)
        app.router.add_get(f"/_matrix/client/{ver}/login/cas/ticket", cas_ticket)
        app.router.add_get(f"/_matrix/client/{ver}/auth/{{stage}}/fallback/web", auth_fallback)
        app.router.add_post(f"/_matrix/client/{ver}/auth/{{stage}}/fallback/web", auth_fallback)
    app.add_subapp("/_synapse/client", build_synapse_client_app(handler))

    async def lifecycle(app: web.Application):
        # Warm the IdPs' metadata in the background: a provider that is down is logged,
        # never fatal; the next login retries.
        import asyncio

        async def warm() -> None:
            for provider in handler.providers.values():
                load = getattr(provider, "load_metadata", None)
                if load is None:
                    continue
                try:
                    await load()
                except Exception as e:  # noqa: BLE001 - any failure is only logged
                    log.warning("SSO provider %s is not reachable yet (will retry on use): %s",
                                provider.idp_id, getattr(e, "description", e))

        task = asyncio.create_task(warm())
        yield
        task.cancel()
        await handler.close()

    app.cleanup_ctx.append(lifecycle)
