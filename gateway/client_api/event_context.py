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

from federation.canonical_json import parse_json
from ..appkeys import HS
from ..http import Codes, MatrixError, json_response
from ..services.room_previews import is_world_readable
from ..services.spaces import check_room_id
from ..storage.events import StoredEvent
from .auth import guest_allowed, requester
from .rooms import MAX_MESSAGES_LIMIT, _filter_strings

routes = web.RouteTableDef()


async def _visible_event(request: web.Request, room_id: str, event_id: str) -> StoredEvent:
    hs = request.app[HS]
    stored = await hs.events.store.get_event(event_id)
    not_found = MatrixError.not_found("Event not found")
    if stored is None or stored.pdu.room_id != room_id or stored.outlier or stored.rejected_reason:
        raise not_found
    if not await hs.events.filter_visible(requester(request).user_id, [stored]):
        raise not_found
    return stored


@routes.get("/{ver:(r0|v3)}/rooms/{room_id}/context/{event_id}")
@guest_allowed
async def context(request: web.Request) -> web.Response:
    hs = request.app[HS]
    who = requester(request)
    room_id = request.match_info["room_id"]
    await hs.events.get_room(room_id)
    if await hs.events.state.get_membership(room_id, who.user_id) is None \
            and not await is_world_readable(hs.events, room_id):
        raise MatrixError.forbidden(f"You are not a member of {room_id}, and it is not world readable")
    target = await _visible_event(request, room_id, request.match_info["event_id"])
    q = request.query
    try:
        limit = int(q.get("limit", "10"))
    except ValueError:
        raise MatrixError.invalid_param("'limit' must be an integer") from None
    event_filter: dict[str, Any] = {}
    if "filter" in q:
        try:
            event_filter = parse_json(q["filter"])
        except ValueError:
            raise MatrixError(400, Codes.NOT_JSON, "'filter' is not JSON") from None
        if not isinstance(event_filter, dict):
            raise MatrixError.bad_json("'filter' must be a JSON object")
        if isinstance(event_filter.get("limit"), int):
            limit = event_filter["limit"]
    limit = max(0, min(limit, MAX_MESSAGES_LIMIT))
    filters = dict(
        types=_filter_strings(event_filter, "types"), not_types=_filter_strings(event_filter, "not_types") or (),
        senders=_filter_strings(event_filter, "senders"),
        not_senders=_filter_strings(event_filter, "not_senders") or (),
    )
    around = await hs.events.events_around(who.user_id, target, before=limit // 2, after=limit - limit // 2,
                                           filters=filters)
    device = (who.user_id, who.device_id or "")
    around_before = await hs.account_data.without_ignored(who.user_id, around.before)
    around_after = await hs.account_data.without_ignored(who.user_id, around.after)
    serialized = await hs.events.serialize_for_client([target, *around_before, *around_after],
                                                      requester_device=device)
    await hs.relations.bundle_aggregations(serialized, who.user_id)
    snap = await hs.events.state.get_state(around.last.state_group)
    state_ids = list(snap.state.values())
    if event_filter.get("lazy_load_members"):
        senders = {e.pdu.sender for e in (target, *around_before, *around_after)}
        state_ids = [e for (t, sk), e in snap.state.items() if t != "m.room.member" or sk in senders]
    pdus = await hs.events.get_pdus(state_ids)
    state = await hs.events.serialize_for_client([pdus[e] for e in state_ids if e in pdus])
    return json_response({
        "event": serialized[0],
        "events_before": serialized[1:1 + len(around_before)],
        "events_after": serialized[1 + len(around_before):],
        "start": around.start,
        "end": around.end,
        "state": state,
    })


def parse_timestamp_query(query) -> tuple[int, bool]:
    """``ts`` and ``dir`` of a timestamp_to_event request: (timestamp, forwards)."""
    try:
        ts = int(query["ts"])
    except KeyError:
        raise MatrixError.missing_param("'ts' is required") from None
    except ValueError:
        raise MatrixError.invalid_param("'ts' must be an integer") from None
    direction = query.get("dir")
    if direction not in ("f", "b"):
        raise MatrixError.invalid_param("'dir' must be 'f' or 'b'")
    return ts, direction == "f"


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
