"""The v1 ways of syncing: the event stream and the initial syncs.

Spec: https://spec.matrix.org/latest/client-server-api/#get_matrixclientv3events,
https://spec.matrix.org/latest/client-server-api/#get_matrixclientv3initialsync,
https://spec.matrix.org/latest/client-server-api/#get_matrixclientv3eventseventid (all three
deprecated in favour of /sync, still used by older clients and bots), and room previews:
https://spec.matrix.org/latest/client-server-api/#get_matrixclientv3roomsroomidinitialsync and
https://spec.matrix.org/latest/client-server-api/#peeking_get_matrixclientv3events
"""

from __future__ import annotations

from aiohttp import web

from ..appkeys import HS
from ..http import Codes, MatrixError, json_response
from ..http.query import parse_bool, parse_int
from ..services import event_stream, initial_sync
from ..services.event_stream import v1_event
from .auth import guest_allowed, requester

routes = web.RouteTableDef()

PREFIX = "/{ver:(r0|v3)}"
#: How long /events waits when the client gives no ``timeout`` (ms), as Synapse.
DEFAULT_TIMEOUT_MS = 30_000


def _limit(request: web.Request, default: int) -> int:
    limit = parse_int(request.query.get("limit"), "limit", minimum=0)
    return default if limit is None else min(limit, event_stream.MAX_LIMIT)


@routes.get(PREFIX + "/events")
@guest_allowed
async def get_events(request: web.Request) -> web.Response:
    who = requester(request)
    q = request.query
    if who.is_guest and not q.get("room_id"):
        raise MatrixError(403, Codes.GUEST_ACCESS_FORBIDDEN, "Guests may only follow one room's events (room_id)")
    timeout = parse_int(q.get("timeout"), "timeout", minimum=0)
    if not who.is_guest:
        # Following the stream is being online, as a /sync without set_presence is
        # (Synapse does the same for /events).
        await request.app[HS].user_directory.user_syncing(who.user_id, "online")
    body = await request.app[HS].event_stream.get_events(
        who.user_id, who.device_id, from_token=q.get("from") or None,
        timeout_ms=DEFAULT_TIMEOUT_MS if timeout is None else timeout,
        limit=_limit(request, event_stream.DEFAULT_LIMIT),
        room_id=q.get("room_id") or None,
    )
    return json_response(body)


@routes.get(PREFIX + "/events/{event_id}")
async def get_event(request: web.Request) -> web.Response:
    hs = request.app[HS]
    who = requester(request)
    stored = await hs.events.store.get_event(request.match_info["event_id"])
    if stored is None or stored.outlier or stored.rejected_reason \
            or not await hs.events.filter_visible(who.user_id, [stored]):
        raise MatrixError.not_found("Event not found")
    body = (await hs.events.serialize_for_client([stored], requester_device=(who.user_id, who.device_id or "")))[0]
    return json_response(v1_event(body))


@routes.get(PREFIX + "/initialSync")
async def get_initial_sync(request: web.Request) -> web.Response:
    who = requester(request)
    body = await request.app[HS].initial_sync.initial_sync(
        who.user_id, who.device_id, limit=_limit(request, initial_sync.DEFAULT_LIMIT),
        archived=parse_bool(request.query.get("archived"), "archived"))
    return json_response(body)


@routes.get(PREFIX + "/rooms/{room_id}/initialSync")
@guest_allowed
async def room_initial_sync(request: web.Request) -> web.Response:
    who = requester(request)
    body = await request.app[HS].initial_sync.room_initial_sync(
        who.user_id, who.device_id, request.match_info["room_id"],
        limit=_limit(request, initial_sync.DEFAULT_LIMIT))
    return json_response(body)
