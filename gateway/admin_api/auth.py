"""Admin API authentication: an access token of a server admin (``M_FORBIDDEN`` otherwise)."""

from __future__ import annotations

from aiohttp import web

from ..appkeys import HS
from ..client_api.auth import REQUESTER, get_access_token, public
from ..http import Codes, MatrixError

__all__ = ["admin_middleware", "public"]


@web.middleware
async def admin_middleware(request: web.Request, handler) -> web.StreamResponse:
    unmatched = getattr(request.match_info, "http_exception", None) is not None
    if unmatched or request.method == "OPTIONS" or getattr(handler, "gateway_public", False):
        return await handler(request)
    token = get_access_token(request)
    if not token:
        raise MatrixError(401, Codes.MISSING_TOKEN, "Missing access token")
    requester = await request.app[HS].auth.get_requester(token)
    if not requester.is_admin:
        raise MatrixError(403, Codes.FORBIDDEN, "You are not a server admin")
    request[REQUESTER] = requester
    return await handler(request)
