"""PUT /rooms/{roomId}/typing/{userId}.

Spec: https://spec.matrix.org/latest/client-server-api/#put_matrixclientv3roomsroomidtypinguserid
"""

from __future__ import annotations

from aiohttp import web

from ..appkeys import HS, TYPING
from ..http import MatrixError, json_response, read_json_body
from .auth import requester

routes = web.RouteTableDef()


@routes.put("/{ver:(r0|v3)}/rooms/{room_id}/typing/{user_id}")
async def put_typing(request: web.Request) -> web.Response:
    room_id, user_id = request.match_info["room_id"], request.match_info["user_id"]
    if requester(request).user_id != user_id:
        raise MatrixError.forbidden("You may only set your own typing state")
    body = await read_json_body(request)
    typing = body.get("typing")
    if not isinstance(typing, bool):
        raise MatrixError.bad_json("'typing' must be a boolean")
    # Only 'typing' is required; without a timeout the service's default (30 s) applies.
    timeout = body.get("timeout")
    if typing and timeout is not None and (not isinstance(timeout, int) or isinstance(timeout, bool) or timeout < 0):
        raise MatrixError.bad_json("'timeout' must be a non-negative integer (milliseconds)")
    service = request.config_dict[TYPING]
    if requester(request).shadow_banned:  # as Synapse: nobody sees them type
        await service.check_may_type(user_id, room_id)
        await request.config_dict[HS].shadow_ban_delay()
        return json_response({})
    await service.set_typing(user_id, room_id, typing, timeout if typing else None)
    return json_response({})
