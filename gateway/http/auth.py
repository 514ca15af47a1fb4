"""Access-token authentication: a middleware of the client, admin and media sub-apps.

Spec: https://spec.matrix.org/latest/client-server-api/#using-access-tokens
Handlers are authenticated unless marked with ``@public``; the requester is in
``request[REQUESTER]``. Guest accounts may only call the handlers marked with
``@guest_allowed`` (the spec's list in https://spec.matrix.org/latest/client-server-api/#guest-access,
plus joining by alias, filters and logging out); anything else answers 403
``M_GUEST_ACCESS_FORBIDDEN``.
"""

from __future__ import annotations

from aiohttp import web

from ..appkeys import HS
from .errors import Codes, MatrixError
from ..services.auth import Requester

REQUESTER = web.RequestKey("requester", Requester)


def public(handler):
    """Mark a handler as needing no access token."""
    handler.gateway_public = True
    return handler


def guest_allowed(handler):
    """Mark a handler as open to guest accounts."""
    handler.gateway_guest_allowed = True
    return handler


def get_access_token(request: web.Request) -> str | None:
    header = request.headers.get("Authorization")
    if header is not None:
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise MatrixError(401, Codes.MISSING_TOKEN, "Authorization header must be 'Bearer <token>'")
        return token.strip()
    return request.query.get("access_token")


def token_auth_middleware(*, admin_only: bool):
    """Require an access token (of a server admin when ``admin_only``) on every matched
    route not marked ``@public``; the requester goes in ``request[REQUESTER]``."""

    @web.middleware
    async def middleware(request: web.Request, handler) -> web.StreamResponse:
        unmatched = getattr(request.match_info, "http_exception", None) is not None
        if unmatched or request.method == "OPTIONS" or getattr(handler, "gateway_public", False):
            return await handler(request)
        token = get_access_token(request)
        if not token:
            raise MatrixError(401, Codes.MISSING_TOKEN, "Missing access token")
        found = await request.app[HS].auth.get_requester(token)
        if admin_only and not found.is_admin:
            raise MatrixError(403, Codes.FORBIDDEN, "You are not a server admin")
        if found.is_guest and not getattr(handler, "gateway_guest_allowed", False):
            raise MatrixError(403, Codes.GUEST_ACCESS_FORBIDDEN, "Guest accounts may not do this")
        modules = request.app[HS].modules.callbacks
        if modules.has("is_user_expired") and not request.path.endswith(("/logout", "/logout/all")):
            expired = await modules.first_not_none("is_user_expired", found.user_id, on_error=True)
            if expired:
                raise MatrixError(403, "ORG_MATRIX_EXPIRED_ACCOUNT", "This account has expired")
        request[REQUESTER] = found
        await request.app[HS].auth.client_ips.seen(found.user_id, found.device_id, request.remote,
                                                   request.headers.get("User-Agent"))
        return await handler(request)

    return middleware


access_token_middleware = token_auth_middleware(admin_only=False)


def requester(request: web.Request) -> Requester:
    return request[REQUESTER]
