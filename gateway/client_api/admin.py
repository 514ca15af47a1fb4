"""Server administration in the Client-Server API: whois.

Spec: https://spec.matrix.org/latest/client-server-api/#get_matrixclientv3adminwhoisuserid
"""

from __future__ import annotations

from aiohttp import web

from federation.ids import InvalidIdentifierError, UserID

from ..appkeys import HS
from ..http import MatrixError, json_response
from .auth import requester

routes = web.RouteTableDef()


@routes.get("/{ver:(r0|v3)}/admin/whois/{user_id}")
async def whois(request: web.Request) -> web.Response:
    """For server admins and the user themselves (403 before any lookup, so nobody
    learns which users exist); local users only."""
    hs = request.app[HS]
    who = requester(request)
    user_id = request.match_info["user_id"]
    if user_id != who.user_id and not who.is_admin:
        raise MatrixError.forbidden("You are not a server admin")
    try:
        parsed = UserID.parse(user_id)
    except InvalidIdentifierError:
        raise MatrixError.invalid_param(f"{user_id!r} is not a valid user ID") from None
    if parsed.server_name != hs.server_name:
        raise MatrixError.invalid_param("Only users of this server can be looked up")
    if await hs.auth.users.get_user(user_id) is None:
        raise MatrixError.not_found("User not found")
    return json_response(await hs.auth.client_ips.whois(user_id))
