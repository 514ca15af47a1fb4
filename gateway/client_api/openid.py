"""OpenID tokens for integrations. Spec:
https://spec.matrix.org/latest/client-server-api/#openid
"""

from __future__ import annotations

import secrets

from aiohttp import web

from ..appkeys import HS
from ..http import MatrixError, json_response, read_json_body
from .auth import requester

routes = web.RouteTableDef()

OPENID_TOKEN_LIFETIME_S = 3600


@routes.post("/{ver:(r0|v3)}/user/{user_id}/openid/request_token")
async def request_token(request: web.Request) -> web.Response:
    hs = request.app[HS]
    user_id = request.match_info["user_id"]
    if requester(request).user_id != user_id:
        raise MatrixError.forbidden("You can only request an OpenID token for yourself")
    await read_json_body(request, allow_empty=True)
    token = secrets.token_urlsafe(32)
    now = hs.clock_ms()
    await hs.auth.store.add_openid_token(token, user_id, now + OPENID_TOKEN_LIFETIME_S * 1000, now)
    return json_response({
        "access_token": token, "token_type": "Bearer", "matrix_server_name": hs.server_name,
        "expires_in": OPENID_TOKEN_LIFETIME_S,
    })
