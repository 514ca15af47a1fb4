"""A room's history for admins, with Synapse's admin API paths: reading it whole, finding
an event by time, an event's context, and purging the old part.

Paths: GET /_synapse/admin/v1/rooms/{room_id}/messages, .../timestamp_to_event,
.../context/{event_id}, POST /v1/purge_history/{room_id}[/{event_id}],
GET /v1/purge_history_status/{purge_id}.
The reads answer as the client API's ``/messages`` and ``/context`` do, with every event of
the room, whatever its history visibility says.
https://element-hq.github.io/synapse/latest/admin_api/rooms.html and
https://element-hq.github.io/synapse/latest/admin_api/purge_history_api.html
"""

from __future__ import annotations

from aiohttp import web

from ..appkeys import HS
from ..client_api.event_context import event_context, parse_timestamp_query
from ..client_api.rooms import room_messages
from ..http import MatrixError, json_response, read_json_body
from .rooms import _room_id

routes = web.RouteTableDef()


@routes.get("/v1/rooms/{room_id}/messages")
async def messages(request: web.Request) -> web.Response:
    """``from``, ``to``, ``limit`` (10), ``filter``, ``dir`` (``f`` by default: oldest first)."""
    body = await room_messages(request.app[HS], _room_id(request), request.query, viewer=None, default_dir="f")
    return json_response(body)


@routes.get("/v1/rooms/{room_id}/timestamp_to_event")
async def timestamp_to_event(request: web.Request) -> web.Response:
    """The event of the room nearest ``ts`` in direction ``dir``, as this server has it."""
    hs = request.app[HS]
    room_id = _room_id(request)
    await hs.events.get_room(room_id)
    query = request.query if "dir" in request.query else {**request.query, "dir": "f"}
    ts, forwards = parse_timestamp_query(query)
    found = await hs.events.store.get_event_near_ts(room_id, ts, forwards=forwards)
    if found is None:
        raise MatrixError.not_found(f"Unable to find event from {ts} in direction {'f' if forwards else 'b'}")
    return json_response({"event_id": found.event_id, "origin_server_ts": found.pdu.origin_server_ts})


@routes.get("/v1/rooms/{room_id}/context/{event_id}")
async def context(request: web.Request) -> web.Response:
    body = await event_context(request.app[HS], _room_id(request), request.match_info["event_id"], request.query,
                               viewer=None)
    return json_response(body)


@routes.post("/v1/purge_history/{room_id}")
@routes.post("/v1/purge_history/{room_id}/{event_id}")
async def purge_history(request: web.Request) -> web.Response:
    """Start purging the history before an event (in the path, or ``purge_up_to_event_id``)
    or a time (``purge_up_to_ts``): it leaves the room's timeline, remote users' messages
    are deleted, and local users' too with ``delete_local_events`` (else they are kept out
    of the timeline, with the state). Answers a ``purge_id`` at once; the purge runs in the
    background."""
    hs = request.app[HS]
    room_id = _room_id(request)
    body = await read_json_body(request, allow_empty=True)
    delete_local = body.get("delete_local_events", False)
    if not isinstance(delete_local, bool):
        raise MatrixError.invalid_param("'delete_local_events' must be a boolean")
    event_id = request.match_info.get("event_id") or body.get("purge_up_to_event_id")
    before_ts = body.get("purge_up_to_ts")
    if event_id is not None and not isinstance(event_id, str):
        raise MatrixError.invalid_param("'purge_up_to_event_id' must be an event ID")
    if before_ts is not None and (not isinstance(before_ts, int) or isinstance(before_ts, bool) or before_ts < 0):
        raise MatrixError.invalid_param("'purge_up_to_ts' must be a timestamp in milliseconds")
    if event_id is None and before_ts is None:
        raise MatrixError.missing_param("Give an event ID (in the path or purge_up_to_event_id) or purge_up_to_ts")
    purge_id = await hs.purge_history.start(room_id, event_id=event_id, before_ts=None if event_id else before_ts,
                                            delete_local_events=delete_local)
    return json_response({"purge_id": purge_id})


@routes.get("/v1/purge_history_status/{purge_id}")
async def purge_status(request: web.Request) -> web.Response:
    """``active``, ``complete`` or ``failed`` (with ``error``)."""
    return json_response(await request.app[HS].purge_history.status(request.match_info["purge_id"]))
