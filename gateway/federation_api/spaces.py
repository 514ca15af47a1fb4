"""The space hierarchy for other servers (thin; the rules are in gateway.services.spaces).

Spec: https://spec.matrix.org/latest/server-server-api/#get_matrixfederationv1hierarchyroomid
"""

from __future__ import annotations

from aiohttp import web

from ..appkeys import HS
from ..http.query import parse_bool
from ..http import json_response
from .auth import ORIGIN

routes = web.RouteTableDef()


@routes.get("/v1/hierarchy/{room_id}")
async def hierarchy(request: web.Request) -> web.Response:
    suggested_only = parse_bool(request.query.get("suggested_only"), "suggested_only")
    return json_response(await request.app[HS].spaces.federation_hierarchy(
        request[ORIGIN], request.match_info["room_id"], suggested_only=suggested_only))
