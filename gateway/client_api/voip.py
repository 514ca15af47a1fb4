"""Voice over IP: TURN server credentials.

Spec: https://spec.matrix.org/latest/client-server-api/#voice-over-ip
"""

from __future__ import annotations

from aiohttp import web

from ..appkeys import HS
from ..http import Codes, MatrixError, json_response
from ..services.voip import turn_credentials
from .auth import guest_allowed, requester

routes = web.RouteTableDef()


@routes.get("/{ver:(r0|v3)}/voip/turnServer")
@guest_allowed
async def get_turn_server(request: web.Request) -> web.Response:
    """Spec: https://spec.matrix.org/latest/client-server-api/#get_matrixclientv3voipturnserver
    (guests only with ``turn_allow_guests``)."""
    hs = request.app[HS]
    req = requester(request)
    if req.is_guest and not hs.config.turn.allow_guests:
        raise MatrixError(403, Codes.GUEST_ACCESS_FORBIDDEN, "Guests may not use the TURN server")
    return json_response(turn_credentials(hs.config.turn, req.user_id, hs.clock_ms()))
