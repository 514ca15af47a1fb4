"""User directory search and presence (thin handlers over ``hs.user_directory``).

Spec: https://spec.matrix.org/latest/client-server-api/#post_matrixclientv3user_directorysearch and
https://spec.matrix.org/latest/client-server-api/#presence
"""

from __future__ import annotations

from aiohttp import web

from ..appkeys import HS
from ..http import MatrixError, json_response, read_json_body
from .auth import requester

routes = web.RouteTableDef()

PREFIX = "/{ver:(r0|v3)}"


@routes.post(PREFIX + "/user_directory/search")
async def search(request: web.Request) -> web.Response:
    body = await read_json_body(request)
    term = body.get("search_term")
    if not isinstance(term, str):
        raise MatrixError.bad_json("'search_term' must be a string")
    limit = body.get("limit", 10)
    if isinstance(limit, bool) or not isinstance(limit, int):
        raise MatrixError.bad_json("'limit' must be an integer")
    result = await request.app[HS].user_directory.search(requester(request).user_id, term, limit)
    return json_response(result)


@routes.put(PREFIX + "/presence/{user_id}/status")
async def set_presence(request: web.Request) -> web.Response:
    body = await read_json_body(request)
    if "presence" not in body:
        raise MatrixError.missing_param("'presence' is required")
    await request.app[HS].user_directory.set_presence(requester(request).user_id, request.match_info["user_id"],
                                                      body["presence"], body.get("status_msg"))
    return json_response({})


@routes.get(PREFIX + "/presence/{user_id}/status")
async def get_presence(request: web.Request) -> web.Response:
    found = await request.app[HS].user_directory.get_presence_for(requester(request).user_id,
                                                                  request.match_info["user_id"])
    return json_response(found)
