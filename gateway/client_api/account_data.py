"""Account data (global and per room) and room tags.

Spec: https://spec.matrix.org/latest/client-server-api/#client-config and
https://spec.matrix.org/latest/client-server-api/#room-tagging
"""

from __future__ import annotations

from aiohttp import web

from ..appkeys import ACCOUNT_DATA
from ..http import MatrixError, json_response, read_json_body
from .auth import requester

routes = web.RouteTableDef()

PREFIX = "/{ver:(r0|v3)}/user/{user_id}"


def _own_user(request: web.Request) -> str:
    user_id = request.match_info["user_id"]
    if requester(request).user_id != user_id:
        raise MatrixError.forbidden("You may only read and change your own account data")
    return user_id


@routes.get(PREFIX + "/account_data/{type}")
async def get_global(request: web.Request) -> web.Response:
    content = await request.config_dict[ACCOUNT_DATA].get(_own_user(request), None, request.match_info["type"])
    return json_response(content)


@routes.put(PREFIX + "/account_data/{type}")
async def put_global(request: web.Request) -> web.Response:
    user_id = _own_user(request)
    body = await read_json_body(request)
    await request.config_dict[ACCOUNT_DATA].put(user_id, None, request.match_info["type"], body)
    return json_response({})


@routes.get(PREFIX + "/rooms/{room_id}/account_data/{type}")
async def get_room(request: web.Request) -> web.Response:
    content = await request.config_dict[ACCOUNT_DATA].get(_own_user(request), request.match_info["room_id"],
                                                     request.match_info["type"])
    return json_response(content)


@routes.put(PREFIX + "/rooms/{room_id}/account_data/{type}")
async def put_room(request: web.Request) -> web.Response:
    user_id = _own_user(request)
    body = await read_json_body(request)
    await request.config_dict[ACCOUNT_DATA].put(user_id, request.match_info["room_id"], request.match_info["type"], body)
    return json_response({})


@routes.get(PREFIX + "/rooms/{room_id}/tags")
async def get_tags(request: web.Request) -> web.Response:
    tags = await request.config_dict[ACCOUNT_DATA].get_tags(_own_user(request), request.match_info["room_id"])
    return json_response({"tags": tags})


@routes.put(PREFIX + "/rooms/{room_id}/tags/{tag}")
async def put_tag(request: web.Request) -> web.Response:
    user_id = _own_user(request)
    body = await read_json_body(request, allow_empty=True)
    await request.config_dict[ACCOUNT_DATA].add_tag(user_id, request.match_info["room_id"], request.match_info["tag"], body)
    return json_response({})


@routes.delete(PREFIX + "/rooms/{room_id}/tags/{tag}")
async def delete_tag(request: web.Request) -> web.Response:
    user_id = _own_user(request)
    await request.config_dict[ACCOUNT_DATA].remove_tag(user_id, request.match_info["room_id"], request.match_info["tag"])
    return json_response({})
