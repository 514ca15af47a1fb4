"""Routes of the OAuth 2.0 API (thin: parse, call ``gateway.oauth``, respond).

- JSON endpoints for clients: registration (RFC 7591), token (RFC 6749 / 8628), revocation
  (RFC 7009), device authorisation (RFC 8628), JWKS, userinfo, and the discovery documents
  ``/.well-known/openid-configuration`` and ``/.well-known/oauth-authorization-server``;
  with CORS, since web clients call them from their own origin.
- Browser pages (``gateway.oauth.pages``): authorisation, login, registration, consent,
  device code entry, account management.

``GET /_matrix/client/v1/auth_metadata`` is in gateway/client_api/oauth.py.
Spec: https://spec.matrix.org/latest/client-server-api/#oauth-20-api
"""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web

from .http import json_response
from .http.middleware import CORS_HEADERS
from .oauth.clients import ClientMetadataError
from .oauth.metadata import Paths, openid_configuration, server_metadata
from .oauth.service import OAuthError
from .server import HomeServer

log = logging.getLogger(__name__)

_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}

__all__ = ["add_oauth_routes"]


def _hs(request: web.Request) -> HomeServer:
    from .appkeys import HS

    return request.app[HS]


def _oauth_error(e: OAuthError | ClientMetadataError, status: int | None = None) -> web.Response:
    body = {"error": e.error, "error_description": e.description}
    headers = dict(_NO_STORE)
    if (status or getattr(e, "status", 400)) == 401:
        headers["WWW-Authenticate"] = 'Bearer error="invalid_client"'
    return json_response(body, status=status or getattr(e, "status", 400), headers=headers)


async def _form(request: web.Request) -> dict[str, str]:
    """The form-encoded body; a parameter given twice is an error (RFC 6749 section 3.2)."""
    if request.content_type != "application/x-www-form-urlencoded":
        raise OAuthError("invalid_request", "the body must be application/x-www-form-urlencoded")
    form = await request.post()
    out: dict[str, str] = {}
    for key in form.keys():
        values = form.getall(key)
        if len(values) > 1:
            raise OAuthError("invalid_request", f"parameter {key} given more than once")
        if isinstance(values[0], str):
            out[key] = values[0]
    return out


def _too_many(request: web.Request, kind: str) -> web.Response | None:
    """``rc_oauth_registration``: client registrations and device authorisations per address
    (both store rows for anyone who asks). A 429 with ``Retry-After``, or None."""
    wait = _hs(request).ratelimiters["rc_oauth_registration"].check(kind + (request.remote or ""))
    if wait is None:
        return None
    return json_response({"error": "slow_down", "error_description": "too many requests from this address: "
                          "retry later"}, status=429, headers={**_NO_STORE, "Retry-After": str(max(1, int(wait) + 1))})


async def register_client(request: web.Request) -> web.Response:
    """RFC 7591 3.1: JSON client metadata -> 201 with the ``client_id``."""
    try:
        body = await request.json()
    except ValueError:
        return _oauth_error(ClientMetadataError("invalid_client_metadata", "the body must be JSON"), 400)
    except RecursionError:
        return _oauth_error(ClientMetadataError("invalid_client_metadata", "the body is nested too deeply"), 400)
    limited = _too_many(request, "register:")
    if limited is not None:
        return limited
    try:
        registered = await _hs(request).oauth.register_client(body)
    except ClientMetadataError as e:
        return _oauth_error(e, 400)
    return json_response(registered, status=201, headers=_NO_STORE)


async def token(request: web.Request) -> web.Response:
    try:
        return json_response(await _hs(request).oauth.token(await _form(request)), headers=_NO_STORE)
    except OAuthError as e:
        return _oauth_error(e)


async def revoke(request: web.Request) -> web.Response:
    """RFC 7009: 200 whether or not the token was known."""
    try:
        form = await _form(request)
        hint = form.get("token_type_hint")
        if hint is not None and hint not in ("access_token", "refresh_token"):
            raise OAuthError("unsupported_token_type", "token_type_hint must be access_token or refresh_token")
        await _hs(request).oauth.revoke(form.get("token"), form.get("client_id"))
    except OAuthError as e:
        return _oauth_error(e)
    return json_response({}, headers=_NO_STORE)


async def device_authorization(request: web.Request) -> web.Response:
    limited = _too_many(request, "device:")
    if limited is not None:
        return limited
    try:
        return json_response(await _hs(request).oauth.device_authorization(await _form(request)), headers=_NO_STORE)
    except OAuthError as e:
        return _oauth_error(e)


async def jwks(request: web.Request) -> web.Response:
    return json_response(await _hs(request).oauth.id_tokens.jwks())


async def userinfo(request: web.Request) -> web.Response:
    """OpenID Connect userinfo: ``sub`` (the user ID) for an OAuth access token."""
    from .http.auth import get_access_token
    from .http import MatrixError

    hs = _hs(request)
    try:
        token_value = get_access_token(request)
        found = await hs.auth.get_requester(token_value) if token_value else None
    except MatrixError:
        found = None
    if found is None or found.oauth_session_id is None:
        return json_response({"error": "invalid_token", "error_description": "unknown or expired access token"},
                             status=401, headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})
    from .storage.profiles import ProfileStore

    profile = await ProfileStore(hs.db).get_profile(found.user_id) or {}
    body: dict[str, Any] = {"sub": found.user_id, "device_id": found.device_id}
    if profile.get("displayname"):
        body["name"] = profile["displayname"]
    return json_response(body, headers=_NO_STORE)


async def well_known_openid(request: web.Request) -> web.Response:
    return json_response(openid_configuration(_hs(request).config.public_baseurl))


async def well_known_oauth(request: web.Request) -> web.Response:
    return json_response(server_metadata(_hs(request).config.public_baseurl))


#: The JSON endpoints web clients call from their own origin (no cookies involved).
_JSON_ENDPOINTS = {Paths.REGISTER: ("POST", register_client), Paths.TOKEN: ("POST", token),
                   Paths.REVOKE: ("POST", revoke), Paths.DEVICE_AUTHORIZATION: ("POST", device_authorization),
                   Paths.JWKS: ("GET", jwks), Paths.USERINFO: ("*", userinfo)}
_PREFIX = "/_gateway"


_WELL_KNOWN = ("/.well-known/openid-configuration", "/.well-known/oauth-authorization-server")


@web.middleware
async def _preflight(request: web.Request, handler) -> web.StreamResponse:
    """Answer CORS preflights for the JSON endpoints (our pages are for top-level navigation)."""
    if request.method == "OPTIONS" and request.path in _JSON_ENDPOINTS:
        return web.Response(status=204)
    return await handler(request)


async def _cors_headers(request: web.Request, response: web.StreamResponse) -> None:
    """``on_response_prepare``: CORS headers on every answer of the JSON endpoints and the
    discovery documents, errors included (as gateway/http/middleware.py does for /_matrix)."""
    if request.path in _JSON_ENDPOINTS or request.path in _WELL_KNOWN:
        response.headers.update(CORS_HEADERS)


def build_app(hs: HomeServer, sso_handler) -> web.Application:
    """Everything under ``/_gateway/`` (mounted when ``oauth.enabled``)."""
    from .appkeys import HS
    from .oauth import pages

    app = web.Application(middlewares=[_preflight])
    app[HS] = hs
    for path, (method, handler) in _JSON_ENDPOINTS.items():
        app.router.add_route(method, path[len(_PREFIX):], handler)
        if method != "*":
            app.router.add_route("OPTIONS", path[len(_PREFIX):], _empty)
    pages.add_page_routes(app, pages.OAuthPages(hs, sso_handler), _PREFIX)
    return app


def add_oauth_routes(app: web.Application, hs: HomeServer, sso_handler) -> None:
    """Mount the OAuth 2.0 endpoints and pages on a ``client`` listener."""
    app.add_subapp(_PREFIX, build_app(hs, sso_handler))
    app.router.add_get(_WELL_KNOWN[0], well_known_openid)
    app.router.add_get(_WELL_KNOWN[1], well_known_oauth)
    for path in _WELL_KNOWN:
        app.router.add_route("OPTIONS", path, _empty)
    app.on_response_prepare.append(_cors_headers)


async def _empty(request: web.Request) -> web.Response:
    return web.Response(status=204)
