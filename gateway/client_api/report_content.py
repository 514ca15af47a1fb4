"""Reporting content: events, rooms and users (thin handlers over ``hs.reports``).

Spec: https://spec.matrix.org/latest/client-server-api/#reporting-content
"""

from __future__ import annotations

from aiohttp import web

from ..appkeys import HS
from ..http import json_response, read_json_body
from ..services.reports import parse_reason, parse_score
from .auth import requester

routes = web.RouteTableDef()


@routes.post("/{ver:(r0|v3)}/rooms/{room_id}/report/{event_id}")
async def report_event(request: web.Request) -> web.Response:
    body = await read_json_body(request, allow_empty=True)
    reason, score = parse_reason(body, required=False), parse_score(body)
    m = request.match_info
    await request.app[HS].reports.report_event(requester(request).user_id, m["room_id"], m["event_id"],
                                               reason, score)
    return json_response({})


@routes.post("/v3/rooms/{room_id}/report")
async def report_room(request: web.Request) -> web.Response:
    reason = parse_reason(await read_json_body(request), required=True)
    await request.app[HS].reports.report_room(requester(request).user_id, request.match_info["room_id"], reason)
    return json_response({})


@routes.post("/v3/users/{user_id}/report")
async def report_user(request: web.Request) -> web.Response:
    reason = parse_reason(await read_json_body(request), required=True)
    await request.app[HS].reports.report_user(requester(request).user_id, request.match_info["user_id"], reason)
    return json_response({})
