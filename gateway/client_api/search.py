"""Server-side search.

Spec: https://spec.matrix.org/latest/client-server-api/#post_matrixclientv3search
"""

from __future__ import annotations

from aiohttp import web

from ..appkeys import HS
from ..http import json_response, read_json_body
from ..services.search import RoomEventsCriteria
from .auth import requester

routes = web.RouteTableDef()


@routes.post("/{ver:(r0|v3)}/search")
async def search(request: web.Request) -> web.Response:
    who = requester(request)
    criteria = RoomEventsCriteria.parse_request(await read_json_body(request))
    found = await request.app[HS].search.search(who.user_id, who.device_id, criteria,
                                                request.query.get("next_batch"))
    return json_response({"search_categories": found})
