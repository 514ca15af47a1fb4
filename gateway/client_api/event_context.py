"""Events around an event, and the event nearest a timestamp.

Spec: https://spec.matrix.org/latest/client-server-api/#get_matrixclientv3roomsroomidcontexteventid and
https://spec.matrix.org/latest/client-server-api/#get_matrixclientv1roomsroomidtimestamp_to_event

The event nearest a timestamp may come from another server of the room
(gateway/services/timestamp_to_event.py).

Tokens are the ``s<position>`` tokens of /messages: ``start`` paginates backwards from
the oldest event of ``events_before``, ``end`` forwards from the newest of ``events_after``.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from ..appkeys import HS
from ..http import MatrixError, json_response
from ..http.query import parse_timestamp_query
from ..services.room_previews import is_world_readable
from ..services.spaces import check_room_id
from .auth import guest_allowed, requester
from .rooms import MAX_MESSAGES_LIMIT, filter_conditions, parse_event_filter

routes = web.RouteTableDef()


@routes.get("/{ver:(r0|v3)}/rooms/{room_id}/context/{event_id}")
@guest_allowed
async def context(request: web.Request) -> web.Response:
    who = requester(request)
    return json_response(await event_context(request.app[HS], request.match_info["room_id"],
                                             request.match_info["event_id"], request.query, viewer=who.user_id,
                                             device=(who.user_id, who.device_id or "")))


async def event_context(hs, room_id: str, event_id: str, q, *, viewer: str | None,
                        device: tuple[str, str] | None = None) -> dict[str, Any]:
    """``/context`` as ``viewer`` may see it, or for a server admin (``viewer`` None: every
    event, whoever sent it; the admin API's view)."""
    await hs.events.get_room(room_id)
    if viewer is not None and await hs.events.state.get_membership(room_id, viewer) is None \
            and not await is_world_readable(hs.events, room_id):
        raise MatrixError.forbidden(f"You are not a member of {room_id}, and it is not world readable")
    target = await hs.events.store.get_event(event_id)
    if target is None or target.pdu.room_id != room_id or target.outlier or target.rejected_reason \
            or (viewer is not None and not await hs.events.filter_visible(viewer, [target])):
        raise MatrixError.not_found("Event not found")
    try:
        limit = int(q.get("limit", "10"))
    except ValueError:
        raise MatrixError.invalid_param("'limit' must be an integer") from None
    event_filter = parse_event_filter(q)
    if isinstance(event_filter.get("limit"), int):
        limit = event_filter["limit"]
    limit = max(0, min(limit, MAX_MESSAGES_LIMIT))
    around = await hs.events.events_around(viewer, target, before=limit // 2, after=limit - limit // 2,
                                           filters=filter_conditions(event_filter))
    around_before, around_after = around.before, around.after
    if viewer is not None:
        around_before = await hs.account_data.without_ignored(viewer, around_before)
        around_after = await hs.account_data.without_ignored(viewer, around_after)
    serialized = await hs.events.serialize_for_client([target, *around_before, *around_after],
                                                      requester_device=device)
    if viewer is not None:
        await hs.relations.bundle_aggregations(serialized, viewer)
    snap = await hs.events.state.get_state(around.last.state_group)
    state_ids = list(snap.state.values())
    if event_filter.get("lazy_load_members"):
        senders = {e.pdu.sender for e in (target, *around_before, *around_after)}
        state_ids = [e for (t, sk), e in snap.state.items() if t != "m.room.member" or sk in senders]
    pdus = await hs.events.get_pdus(state_ids)
    state = await hs.events.serialize_for_client([pdus[e] for e in state_ids if e in pdus])
    return {
        "event": serialized[0],
        "events_before": serialized[1:1 + len(around_before)],
        "events_after": serialized[1 + len(around_before):],
        "start": around.start,
        "end": around.end,
        "state": state,
    }


@routes.get("/v1/rooms/{room_id}/timestamp_to_event")
async def timestamp_to_event(request: web.Request) -> web.Response:
    hs = request.app[HS]
    who = requester(request)
    room_id = request.match_info["room_id"]
    check_room_id(room_id)
    await hs.events.get_room(room_id)
    ts, forwards = parse_timestamp_query(request.query)
    member = await hs.events.state.get_membership(room_id, who.user_id)
    if member is None:
        raise MatrixError.forbidden(f"You are not a member of {room_id}")
    found = await hs.timestamp_to_event.find(room_id, ts, forwards=forwards)
    if found is None or not await hs.events.filter_visible(who.user_id, [found]):
        raise MatrixError.not_found(f"No event found {'after' if forwards else 'before'} {ts}")
    return json_response({"event_id": found.event_id, "origin_server_ts": found.pdu.origin_server_ts})
