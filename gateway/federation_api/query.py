"""Federation queries. Spec: https://spec.matrix.org/latest/server-server-api/#querying-for-information"""

from __future__ import annotations

from aiohttp import web

from ..appkeys import HS
from ..http import MatrixError, json_response
from ..services.directory import parse_alias
from .auth import public

routes = web.RouteTableDef()


@routes.get("/v1/query/profile")
async def query_profile(request: web.Request) -> web.Response:
    """Spec: https://spec.matrix.org/latest/server-server-api/#get_matrixfederationv1queryprofile"""
    hs = request.app[HS]
    return json_response(await hs.profiles.federation_query(request.query.get("user_id"), request.query.get("field")))


@routes.get("/v1/query/directory")
async def query_directory(request: web.Request) -> web.Response:
    """A local room alias -> room ID and servers.
    Spec: https://spec.matrix.org/latest/server-server-api/#get_matrixfederationv1querydirectory"""
    hs = request.app[HS]
    alias = request.query.get("room_alias")
    if not alias:
        raise MatrixError.missing_param("room_alias is required")
    parsed = parse_alias(alias)
    if not hs.directory.is_local(parsed):
        raise MatrixError.not_found("That alias is not on this server")
    room_id, servers = await hs.directory.resolve_alias(alias)
    return json_response({"room_id": room_id, "servers": servers})


@routes.get("/v1/openid/userinfo")
@public
async def openid_userinfo(request: web.Request) -> web.Response:
    """Who an OpenID token belongs to (no X-Matrix: the token is the credential).
    Spec: https://spec.matrix.org/latest/server-server-api/#openid"""
    hs = request.app[HS]
    token = request.query.get("access_token")
    if not token:
        raise MatrixError(401, "M_MISSING_TOKEN", "access_token is required")
    user_id = await hs.auth.store.get_openid_token_user(token, hs.clock_ms())
    if user_id is None:
        raise MatrixError(401, "M_UNKNOWN_TOKEN", "Unknown or expired OpenID token")
    return json_response({"sub": user_id})
