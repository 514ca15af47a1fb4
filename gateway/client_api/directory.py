"""Room aliases and the room directory (thin handlers over ``hs.directory``).

Spec: https://spec.matrix.org/latest/client-server-api/#room-aliases and
https://spec.matrix.org/latest/client-server-api/#listing-rooms
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from ..appkeys import HS
from ..http import MatrixError, json_response, read_json_body
from ..server import HomeServer
from .auth import get_access_token, public, requester, requester_for_token

routes = web.RouteTableDef()

PREFIX = "/{ver:(r0|v3)}"


def _hs(request: web.Request) -> HomeServer:
    return request.app[HS]


# --- aliases ---------------------------------------------------------------------------


@routes.put(PREFIX + "/directory/room/{alias}")
async def put_alias(request: web.Request) -> web.Response:
    body = await read_json_body(request)
    room_id = body.get("room_id")
    if not isinstance(room_id, str):
        raise MatrixError.bad_json("'room_id' must be a room ID")
    who = requester(request)
    await _hs(request).directory.create_alias(who.user_id, request.match_info["alias"], room_id,
                                              is_admin=who.is_admin, app_service_id=who.app_service_id)
    return json_response({})


@routes.get(PREFIX + "/directory/room/{alias}")
@public
async def get_alias(request: web.Request) -> web.Response:
    room_id, servers = await _hs(request).directory.resolve_alias(request.match_info["alias"])
    return json_response({"room_id": room_id, "servers": servers})


@routes.delete(PREFIX + "/directory/room/{alias}")
async def delete_alias(request: web.Request) -> web.Response:
    who = requester(request)
    await _hs(request).directory.delete_alias(who.user_id, request.match_info["alias"], is_admin=who.is_admin,
                                              app_service_id=who.app_service_id)
    return json_response({})


@routes.get(PREFIX + "/rooms/{room_id}/aliases")
async def room_aliases(request: web.Request) -> web.Response:
    """The room's local aliases, for members (or anyone if it is world-readable)."""
    hs = _hs(request)
    room_id = request.match_info["room_id"]
    await hs.events.get_room(room_id)
    member = await hs.events.state.get_membership(room_id, requester(request).user_id)
    if member is None or member.membership != "join":
        hv_id = await hs.events.state.get_current_state_event_id(room_id, "m.room.history_visibility", "")
        hv = (await hs.events.get_pdus([hv_id])).get(hv_id) if hv_id else None
        if hv is None or hv.content.get("history_visibility") != "world_readable":
            raise MatrixError.forbidden("You are not joined to this room")
    return json_response({"aliases": await hs.directory.get_local_aliases(room_id)})


# --- the room directory --------------------------------------------------------------------


@routes.get(PREFIX + "/directory/list/room/{room_id}")
@public
async def get_visibility(request: web.Request) -> web.Response:
    return json_response({"visibility": await _hs(request).directory.get_visibility(request.match_info["room_id"])})


@routes.put(PREFIX + "/directory/list/room/{room_id}")
async def set_visibility(request: web.Request) -> web.Response:
    body = await read_json_body(request, allow_empty=True)
    who = requester(request)
    await _hs(request).directory.set_visibility(who.user_id, request.match_info["room_id"],
                                                body.get("visibility", "public"), is_admin=who.is_admin)
    return json_response({})


def _int_param(value: Any, name: str) -> int | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise MatrixError.invalid_param(f"'{name}' must be an integer")
    try:
        return int(value)
    except (TypeError, ValueError):
        raise MatrixError.invalid_param(f"'{name}' must be an integer") from None


async def _public_rooms(request: web.Request, body: dict[str, Any]) -> web.Response:
    hs = _hs(request)
    server = request.query.get("server")
    if server and server != hs.server_name:
        return json_response(await hs.directory.query_remote_public_rooms(server, body))
    since = body.get("since")
    if since is not None and not isinstance(since, str):
        raise MatrixError.invalid_param("'since' must be a string")
    flt = body.get("filter") or {}
    if not isinstance(flt, dict):
        raise MatrixError.bad_json("'filter' must be an object")
    term = flt.get("generic_search_term")
    if term is not None and not isinstance(term, str):
        raise MatrixError.bad_json("'filter.generic_search_term' must be a string")
    room_types = flt.get("room_types")
    if room_types is not None and (not isinstance(room_types, list)
                                   or not all(t is None or isinstance(t, str) for t in room_types)):
        raise MatrixError.bad_json("'filter.room_types' must be a list of strings or nulls")
    network = None
    instance = body.get("third_party_instance_id")
    if instance is not None:
        if not isinstance(instance, str):
            raise MatrixError.bad_json("'third_party_instance_id' must be a string")
        network = hs.appservices.parse_instance_id(instance)
    result = await hs.directory.list_public_rooms(
        limit=_int_param(body.get("limit"), "limit"), since=since, search_term=term, room_types=room_types,
        network=network, all_networks=body.get("include_all_networks") is True,
    )
    return json_response(result)


@routes.get(PREFIX + "/publicRooms")
@public
async def get_public_rooms(request: web.Request) -> web.Response:
    hs = _hs(request)
    if not hs.config.directory.allow_public_rooms_without_auth:
        token = get_access_token(request)
        if not token:
            raise MatrixError(401, "M_MISSING_TOKEN", "Missing access token")
        await requester_for_token(request, token)
    q = request.query
    return await _public_rooms(request, {"limit": q.get("limit"), "since": q.get("since"),
                                         "include_all_networks": q.get("include_all_networks") == "true",
                                         "third_party_instance_id": q.get("third_party_instance_id")})


@routes.post(PREFIX + "/publicRooms")
async def post_public_rooms(request: web.Request) -> web.Response:
    return await _public_rooms(request, await read_json_body(request, allow_empty=True))
