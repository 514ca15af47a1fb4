"""``POST /rooms/{roomId}/upgrade``.

Spec: https://spec.matrix.org/latest/client-server-api/#post_matrixclientv3roomsroomidupgrade
"""

from __future__ import annotations

from aiohttp import web

from ..appkeys import HS
from ..http import json_response, read_json_body
from ..services.account_moderation import check_not_suspended, fake_room_id
from ..services.room_upgrades import parse_upgrade_request
from .auth import requester

routes = web.RouteTableDef()


@routes.post("/{ver:(r0|v3)}/rooms/{room_id}/upgrade")
async def upgrade(request: web.Request) -> web.Response:
    hs = request.app[HS]
    body = await read_json_body(request)
    new_version, additional_creators = parse_upgrade_request(body)
    who = requester(request)
    user_id = who.user_id
    check_not_suspended(who)
    hs.ratelimiters["rc_room_creation"].ratelimit(user_id)
    if who.shadow_banned:  # answered as done; nothing is created
        await hs.events.get_room(request.match_info["room_id"])
        await hs.shadow_ban_delay()
        return json_response({"replacement_room": fake_room_id(hs.server_name)})
    new_room_id = await hs.room_upgrades.upgrade(user_id, request.match_info["room_id"], new_version,
                                                 additional_creators)
    return json_response({"replacement_room": new_room_id})
