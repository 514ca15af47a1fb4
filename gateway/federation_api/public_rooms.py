"""The public room directory over federation (``allow_public_rooms_over_federation``).

Spec: https://spec.matrix.org/latest/server-server-api/#public-room-directory
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from ..appkeys import HS
from ..http import MatrixError, json_response, read_json_body

routes = web.RouteTableDef()


def _int(value: Any) -> int | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise MatrixError.invalid_param("'limit' must be an integer")
    try:
        return int(value)
    except (TypeError, ValueError):
        raise MatrixError.invalid_param("'limit' must be an integer") from None


async def _list(request: web.Request, limit: Any, since: Any, flt: Any) -> web.Response:
    hs = request.app[HS]
    if not hs.config.directory.allow_public_rooms_over_federation:
        raise MatrixError.forbidden("This server does not share its public room list over federation")
    if since is not None and not isinstance(since, str):
        raise MatrixError.invalid_param("'since' must be a string")
    if not isinstance(flt, dict):
        raise MatrixError.bad_json("'filter' must be an object")
    term = flt.get("generic_search_term")
    room_types = flt.get("room_types")
    if term is not None and not isinstance(term, str):
        raise MatrixError.bad_json("'filter.generic_search_term' must be a string")
    if room_types is not None and (not isinstance(room_types, list)
                                   or not all(t is None or isinstance(t, str) for t in room_types)):
        raise MatrixError.bad_json("'filter.room_types' must be a list")
    return json_response(await hs.directory.list_public_rooms(limit=_int(limit), since=since, search_term=term,
                                                              room_types=room_types))


@routes.get("/v1/publicRooms")
async def get_public_rooms(request: web.Request) -> web.Response:
    q = request.query
    return await _list(request, q.get("limit"), q.get("since"), {})


@routes.post("/v1/publicRooms")
async def post_public_rooms(request: web.Request) -> web.Response:
    body = await read_json_body(request, allow_empty=True)
    return await _list(request, body.get("limit"), body.get("since"), body.get("filter") or {})
