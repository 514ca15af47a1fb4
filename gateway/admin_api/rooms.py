"""Room administration, with Synapse's admin API paths and shapes.

Paths: /_synapse/admin/v1/rooms, /v1/rooms/{room_id}, .../members, .../state, .../block,
.../make_room_admin, .../forward_extremities (GET, DELETE), DELETE /v1/rooms/{room_id} (synchronous),
DELETE /v2/rooms/{room_id} (background) with /v2/rooms/{room_id}/delete_status and
/v2/rooms/delete_status/{delete_id}, /v1/users/{user_id}/joined_rooms, POST /v1/join/{room}.
https://element-hq.github.io/synapse/latest/admin_api/rooms.html
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from federation.ids import is_valid_room_id, is_valid_user_id

from ..appkeys import HS
from ..http.auth import requester
from ..http import MatrixError, json_response, read_json_body
from ..server import HomeServer
from ..services.room_admin import ORDERINGS, ShutdownOptions
from .users import _int_param

routes = web.RouteTableDef()


def _hs(request: web.Request) -> HomeServer:
    return request.app[HS]


def _room_id(request: web.Request) -> str:
    room_id = request.match_info["room_id"]
    if not is_valid_room_id(room_id):
        raise MatrixError.invalid_param(f"{room_id!r} is not a room ID")
    return room_id


@routes.get("/v1/rooms")
async def list_rooms(request: web.Request) -> web.Response:
    q = request.query
    order_by = q.get("order_by", "name")
    if order_by not in ORDERINGS:
        raise MatrixError.invalid_param(f"'order_by' must be one of {', '.join(sorted(ORDERINGS))}")
    direction = q.get("dir", "f")
    if direction not in ("f", "b"):
        raise MatrixError.invalid_param("'dir' must be 'f' or 'b'")
    body = await _hs(request).room_admin.list_rooms(
        order_by=order_by, backwards=direction == "b", search_term=q.get("search_term") or None,
        start=_int_param(request, "from", 0), limit=_int_param(request, "limit", 100),
    )
    return json_response(body)


@routes.get("/v1/rooms/{room_id}")
async def room_details(request: web.Request) -> web.Response:
    return json_response(await _hs(request).room_admin.room_details(_room_id(request)))


@routes.get("/v1/rooms/{room_id}/members")
async def room_members(request: web.Request) -> web.Response:
    members = await _hs(request).room_admin.members(_room_id(request))
    return json_response({"members": members, "total": len(members)})


@routes.get("/v1/rooms/{room_id}/state")
async def room_state(request: web.Request) -> web.Response:
    hs = _hs(request)
    pdus = await hs.room_admin.state(_room_id(request))
    return json_response({"state": await hs.events.serialize_for_client(pdus)})


@routes.get("/v1/rooms/{room_id}/forward_extremities")
async def forward_extremities(request: web.Request) -> web.Response:
    hs = _hs(request)
    room_id = _room_id(request)
    await hs.events.get_room(room_id)
    ids = await hs.events.store.get_forward_extremities(room_id)
    stored = await hs.events.store.get_events(ids)
    results = [{"event_id": e, "state_group": s.state_group, "depth": s.pdu.depth, "received_ts": s.received_ts}
               for e, s in sorted(stored.items())]
    return json_response({"count": len(results), "results": results})


@routes.delete("/v1/rooms/{room_id}/forward_extremities")
async def delete_forward_extremities(request: web.Request) -> web.Response:
    """Keep only the newest forward extremity (Synapse's remedy for rooms with too many;
    never something to automate)."""
    hs = _hs(request)
    room_id = _room_id(request)
    await hs.events.get_room(room_id)
    async with hs.events.room_lock(room_id):
        deleted = await hs.room_admin.store.delete_forward_extremities(room_id)
        hs.events.forget_room(room_id)
        hs.federation_events.forget_room(room_id)
    return json_response({"deleted": deleted})


@routes.put("/v1/rooms/{room_id}/block")
async def block_room(request: web.Request) -> web.Response:
    hs = _hs(request)
    room_id = _room_id(request)
    body = await read_json_body(request)
    block = body.get("block")
    if not isinstance(block, bool):
        raise MatrixError.bad_json("'block' must be a boolean")
    if block:
        await hs.room_admin.store.block_room(room_id, requester(request).user_id, hs.clock_ms())
    else:
        await hs.room_admin.store.unblock_room(room_id)
    return json_response({"block": block})


@routes.get("/v1/rooms/{room_id}/block")
async def get_block(request: web.Request) -> web.Response:
    blocker = await _hs(request).room_admin.store.get_room_blocker(_room_id(request))
    return json_response({"block": False} if blocker is None else {"block": True, "user_id": blocker})


def _shutdown_options(hs: HomeServer, body: dict[str, Any]) -> ShutdownOptions:
    defaults = ShutdownOptions()
    values: dict[str, Any] = {}
    new_user = body.get("new_room_user_id")
    if new_user is not None:
        if not isinstance(new_user, str) or not is_valid_user_id(new_user) \
                or new_user.partition(":")[2] != hs.server_name:
            raise MatrixError.bad_json("'new_room_user_id' must be a local user ID")
        values["new_room_user_id"] = new_user
    for key in ("room_name", "message"):
        if key in body and body[key] is not None:
            if not isinstance(body[key], str):
                raise MatrixError.bad_json(f"'{key}' must be a string")
            values[key] = body[key]
    for key in ("block", "purge", "force_purge"):
        if key in body:
            if not isinstance(body[key], bool):
                raise MatrixError.bad_json(f"'{key}' must be a boolean")
            values[key] = body[key]
    return ShutdownOptions(**{**defaults.__dict__, **values})


@routes.delete("/v1/rooms/{room_id}")
async def delete_room_v1(request: web.Request) -> web.Response:
    """Synchronous: answers when the room is shut down (and purged)."""
    hs = _hs(request)
    room_id = _room_id(request)
    options = _shutdown_options(hs, await read_json_body(request))
    if await hs.events.store.get_room(room_id) is None and not options.block:
        raise MatrixError.bad_json(f"Unknown room {room_id} (only blocking an unknown room is possible)")
    return json_response(await hs.room_admin.shutdown(room_id, requester(request).user_id, options))


@routes.delete("/v2/rooms/{room_id}")
async def delete_room_v2(request: web.Request) -> web.Response:
    """In the background: answers with a delete_id to ask for the status with."""
    hs = _hs(request)
    room_id = _room_id(request)
    options = _shutdown_options(hs, await read_json_body(request))
    if await hs.events.store.get_room(room_id) is None:
        raise MatrixError.not_found(f"Unknown room {room_id}")
    await hs.modules.callbacks.all_true("check_can_shutdown_room", "Shutting down this room",
                                        requester(request).user_id, room_id)
    delete_id = hs.room_admin.start_delete(room_id, requester(request).user_id, options)
    return json_response({"delete_id": delete_id})


@routes.get("/v2/rooms/{room_id}/delete_status")
async def delete_status_by_room(request: web.Request) -> web.Response:
    results = await _hs(request).room_admin.delete_status(room_id=_room_id(request))
    if not results:
        raise MatrixError.not_found("No deletion of this room is known")
    return json_response({"results": results})


@routes.get("/v2/rooms/delete_status/{delete_id}")
async def delete_status_by_id(request: web.Request) -> web.Response:
    results = await _hs(request).room_admin.delete_status(delete_id=request.match_info["delete_id"])
    if not results:
        raise MatrixError.not_found("No such deletion")
    status = dict(results[0])
    status.pop("delete_id")
    return json_response(status)


@routes.post("/v1/rooms/{room_id}/make_room_admin")
async def make_room_admin(request: web.Request) -> web.Response:
    hs = _hs(request)
    body = await read_json_body(request)
    user_id = body.get("user_id", requester(request).user_id)
    if not isinstance(user_id, str) or not is_valid_user_id(user_id):
        raise MatrixError.bad_json("'user_id' must be a user ID")
    await hs.room_admin.make_room_admin(_room_id(request), user_id)
    return json_response({})


@routes.get("/v1/users/{user_id}/joined_rooms")
async def user_joined_rooms(request: web.Request) -> web.Response:
    rooms = await _hs(request).events.state.get_rooms_for_user(request.match_info["user_id"])
    return json_response({"joined_rooms": sorted(rooms), "total": len(rooms)})


@routes.post("/v1/join/{room_id}")
async def force_join(request: web.Request) -> web.Response:
    """Join a local user to a room this server is in (Synapse's "Edit Room Membership" API)."""
    hs = _hs(request)
    room_id = _room_id(request)
    body = await read_json_body(request)
    user_id = body.get("user_id")
    if not isinstance(user_id, str) or not is_valid_user_id(user_id) or user_id.partition(":")[2] != hs.server_name:
        raise MatrixError.bad_json("'user_id' must be a local user ID")
    user = await hs.auth.users.get_user(user_id)
    if user is None or user.deactivated:
        raise MatrixError.not_found(f"Unknown user {user_id}")
    await hs.events.get_room(room_id)
    member = await hs.events.state.get_membership(room_id, user_id)
    if member is None or member.membership != "join":
        rule_id = await hs.events.state.get_current_state_event_id(room_id, "m.room.join_rules", "")
        rule = (await hs.events.get_pdus([rule_id])).get(rule_id) if rule_id else None
        if (rule is None or rule.content.get("join_rule") != "public") \
                and (member is None or member.membership != "invite"):
            # As in Synapse: the admin invites, which needs them in the room with invite power.
            await hs.rooms.invite(requester(request).user_id, room_id, user_id)
        await hs.rooms.join(user_id, room_id, by_admin=True)
    return json_response({"room_id": room_id})
