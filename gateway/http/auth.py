"""Access-token authentication: a middleware of the client, admin and media sub-apps.

Spec: https://spec.matrix.org/latest/client-server-api/#using-access-tokens
Handlers are authenticated unless marked with ``@public``; the requester is in
``request[REQUESTER]``. Guest accounts may only call the handlers marked with
``@guest_allowed`` (the spec's list in https://spec.matrix.org/latest/client-server-api/#guest-access,
plus joining by alias, filters and logging out); anything else answers 403
``M_GUEST_ACCESS_FORBIDDEN``. A locked account gets 401 ``M_USER_LOCKED`` everywhere but
``/logout`` and ``/logout/all`` (https://spec.matrix.org/latest/client-server-api/#account-locking).
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


def allowed_while_locked(handler):
    """Mark a handler a locked account may still call (logging out)."""
    handler.gateway_allowed_while_locked = True
    return handler


def get_access_token(request: web.Request) -> str | None:
    header = request.headers.get("Authorization")
    if header is not None:
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise MatrixError(401, Codes.MISSING_TOKEN, "Authorization header must be 'Bearer <token>'")
        return token.strip()
    return request.query.get("access_token")


async def requester_for_token(request: web.Request, token: str, *, allow_locked: bool = False) -> Requester:
    """The owner of an access token, or, for an application service's ``as_token``, the
    user (``user_id``) and device (``device_id``, or MSC3202's unstable name) it acts as.
    https://spec.matrix.org/latest/application-service-api/#identity-assertion"""
    hs = request.app[HS]
    service = hs.appservices.by_token(token) if hs.config.appservice.services else None
    if service is None:
        return await hs.auth.get_requester(token, allow_locked=allow_locked)
    q = request.query
    return await hs.appservices.requester(service, token, user_id=q.get("user_id"),
                                          device_id=q.get("device_id", q.get("org.matrix.msc3202.device_id")),
                                          ip=request.remote)


def calling_appservice(request: web.Request):
    """For ``m.login.application_service``: the service whose ``as_token`` the request
    carries; 401 ``M_MISSING_TOKEN`` / ``M_UNKNOWN_TOKEN`` otherwise."""
    hs = request.app[HS]
    token = get_access_token(request)
    if not token:
        raise MatrixError(401, Codes.MISSING_TOKEN, "m.login.application_service needs the as_token")
    service = hs.appservices.by_token(token) if hs.config.appservice.services else None
    if service is None or not service.may_connect_from(request.remote):
        raise MatrixError(401, Codes.UNKNOWN_TOKEN, "Unrecognised access token", soft_logout=False)
    return service


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
        # The route's own mark, not the path: "/rooms/{id}/send/{type}/logout" ends in /logout too.
        logging_out = getattr(request.match_info.handler, "gateway_allowed_while_locked", False)
        found = await requester_for_token(request, token, allow_locked=logging_out)
        if admin_only and not found.is_admin:
            raise MatrixError(403, Codes.FORBIDDEN, "You are not a server admin")
        if found.is_guest and not getattr(handler, "gateway_guest_allowed", False):
            raise MatrixError(403, Codes.GUEST_ACCESS_FORBIDDEN, "Guest accounts may not do this")
        modules = request.app[HS].modules.callbacks
        if modules.has("is_user_expired") and not logging_out:
            expired = await modules.first_not_none("is_user_expired", found.user_id, on_error=True)
            if expired:
                raise MatrixError(403, "ORG_MATRIX_EXPIRED_ACCOUNT", "This account has expired")
        request[REQUESTER] = found
        # An admin acting as the user leaves no trace in the user's sessions.
        if found.puppeted_by is None and (found.app_service_id is None
                                          or request.app[HS].config.appservice.track_appservice_user_ips):
            await request.app[HS].auth.client_ips.seen(found.user_id, found.device_id, request.remote,
                                                       request.headers.get("User-Agent"))
        return await handler(request)

    return middleware


access_token_middleware = token_auth_middleware(admin_only=False)


def requester(request: web.Request) -> Requester:
    return request[REQUESTER]
