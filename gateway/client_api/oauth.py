"""The OAuth 2.0 API's one Client-Server endpoint (the legacy ``/refresh`` is in login.py).

Spec: https://spec.matrix.org/latest/client-server-api/#get_matrixclientv1auth_metadata
"""

from __future__ import annotations

from aiohttp import web

from ..appkeys import HS
from ..http import Codes, MatrixError, json_response
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
