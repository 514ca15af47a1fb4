"""Spaces and room summaries (thin handlers over ``hs.spaces``).

Spec: https://spec.matrix.org/latest/client-server-api/#get_matrixclientv1roomsroomidhierarchy and
https://spec.matrix.org/latest/client-server-api/#get_matrixclientv1room_summaryroomidoralias
(also at MSC3266's unstable paths, as Synapse serves them).
"""

from __future__ import annotations

from aiohttp import web

from ..appkeys import HS
from ..http import json_response
from ..http.query import parse_bool, parse_int
from .auth import get_access_token, public, requester, requester_for_token

routes = web.RouteTableDef()


@routes.get("/v1/rooms/{room_id}/hierarchy")
async def hierarchy(request: web.Request) -> web.Response:
    q = request.query
    body = await request.app[HS].spaces.client_hierarchy(
        requester(request).user_id, request.match_info["room_id"],
        suggested_only=parse_bool(q.get("suggested_only"), "suggested_only"),
        max_depth=parse_int(q.get("max_depth"), "max_depth", minimum=0),
        limit=parse_int(q.get("limit"), "limit", minimum=1),
        from_token=q.get("from"),
        via=q.getall("org.matrix.msc4235.via", []),  # MSC4235: where to ask about a root we are not in
    )
    return json_response(body)


@routes.get("/v1/room_summary/{room}")
@routes.get("/unstable/im.nheko.summary/summary/{room}")
@routes.get("/unstable/im.nheko.summary/rooms/{room}/summary")
@public
async def room_summary(request: web.Request) -> web.Response:
    """Authentication is optional: without a token only rooms open to anyone show, and
    no ``membership`` is given."""
    hs = request.app[HS]
    token = get_access_token(request)
    user_id = (await requester_for_token(request, token)).user_id if token else None
    if user_id is None:  # it may make this server ask others: limited per client address
        hs.spaces.anonymous_summaries.ratelimit(request.remote or "")
    body = await hs.spaces.room_summary(user_id, request.match_info["room"], request.query.getall("via", []))
    return json_response(body)
