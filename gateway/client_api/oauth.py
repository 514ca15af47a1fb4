"""The OAuth 2.0 API's one Client-Server endpoint, and the legacy ``/refresh`` beside it.

Spec: https://spec.matrix.org/latest/client-server-api/#get_matrixclientv1auth_metadata and
https://spec.matrix.org/latest/client-server-api/#post_matrixclientv3refresh
"""

from __future__ import annotations

from aiohttp import web

from ..appkeys import HS
from ..http import Codes, MatrixError, json_response, read_json_body
from ..oauth.metadata import server_metadata
from .auth import public

routes = web.RouteTableDef()


@routes.get("/v1/auth_metadata")
@routes.get("/unstable/org.matrix.msc2965/auth_metadata")
@public
async def auth_metadata(request: web.Request) -> web.Response:
    """The authorisation server metadata; 404 ``M_UNRECOGNIZED`` while the API is off."""
    hs = request.app[HS]
    if not hs.config.oauth.enabled:
        raise MatrixError(404, Codes.UNRECOGNIZED, "This server does not offer the OAuth 2.0 API "
                          "(legacy authentication is in use)")
    return json_response(server_metadata(hs.config.public_baseurl))


@routes.post("/v3/refresh")
@public
async def refresh(request: web.Request) -> web.Response:
    """We issue no refresh tokens on the legacy API; those of the OAuth 2.0 API are used at its
    token endpoint, never here (the two APIs' tokens do not mix)."""
    body = await read_json_body(request)
    if not isinstance(body.get("refresh_token"), str):
        raise MatrixError.missing_param("'refresh_token' is required")
    hint = " (OAuth 2.0 refresh tokens are used at the token endpoint)" if body["refresh_token"].startswith("gwr_") \
        else ""
    raise MatrixError(401, Codes.UNKNOWN_TOKEN, "Unknown refresh token" + hint, soft_logout=False)
