"""Rooms: createRoom, sending events, state, memberships, history, members.

Spec: https://spec.matrix.org/latest/client-server-api/#rooms and
https://spec.matrix.org/latest/client-server-api/#room-events

/messages pages in topological order with ``t<depth>-<position>`` tokens, and takes the
``s<position>`` tokens of /sync and /context ("after the event at this events-stream
position": a /sync ``prev_batch`` for a timeline starting at position P is ``s<P-1>``);
services/pagination.py has the rules.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from federation.canonical_json import parse_json
from ..appkeys import HS
from ..http import Codes, MatrixError, json_response, read_json_body
from ..server import HomeServer
from ..services.account_moderation import check_not_suspended, fake_event_id, forbid_redacting_others
from ..services.events import EventSpec
from ..services.pagination import RoomToken, parse_room_token, token_after, token_before
from ..services.room_previews import is_world_readable, reader_membership
from ..services.third_party_invites import is_third_party_invite
from ..storage.state import StateSnapshot
from .auth import guest_allowed, requester

routes = web.RouteTableDef()

PREFIX = "/{ver:(r0|v3)}"
MAX_MESSAGES_LIMIT = 1000


def _hs(request: web.Request) -> HomeServer:
    return request.app[HS]


def _room_id(request: web.Request) -> str:
    return request.match_info["room_id"]


def _txn(request: web.Request) -> tuple[str, str, str] | None:
    """The request's transaction (None for the POST forms, which have no ID)."""
    txn_id = request.match_info.get("txn_id")
    if txn_id is None:
        return None
    who = requester(request)
    return (who.user_id, who.device_id or "", txn_id)


def _massaged_ts(request: web.Request) -> int | None:
    """``ts``: an application service sets the event's ``origin_server_ts`` (ignored for
    other clients). https://spec.matrix.org/latest/application-service-api/#timestamp-massaging"""
    raw = request.query.get("ts")
    if raw is None or requester(request).app_service_id is None:
        return None
    if not raw.isdigit() or int(raw) > 2**53 - 1:
        raise MatrixError.invalid_param("'ts' must be a timestamp in milliseconds (0 to 2^53 - 1)")
    return int(raw)


def _optional_reason(body: dict[str, Any]) -> str | None:
    reason = body.get("reason")
    if reason is not None and not isinstance(reason, str):
        raise MatrixError.bad_json("'reason' must be a string")
    return reason


def _target(body: dict[str, Any]) -> str:
    target = body.get("user_id")
    if not isinstance(target, str):
        raise MatrixError.bad_json("'user_id' must be a user ID")
    return target


# --- creating rooms and sending events ------------------------------------------------


@routes.post(PREFIX + "/createRoom")
async def create_room(request: web.Request) -> web.Response:
    body = await read_json_body(request, allow_empty=True)
    who = requester(request)
    check_not_suspended(who)
    if who.shadow_banned and (body.get("invite") or body.get("invite_3pid")):
        await _hs(request).shadow_ban_delay()  # the room is made, its invites are not sent
        body = {k: v for k, v in body.items() if k not in ("invite", "invite_3pid")}
    _hs(request).ratelimiters["rc_room_creation"].ratelimit(who.user_id)
    room_id = await _hs(request).rooms.create_room(who.user_id, body, requester=who, is_admin=who.is_admin)
    return json_response({"room_id": room_id})


@routes.put(PREFIX + "/rooms/{room_id}/send/{event_type}/{txn_id}")
@routes.post(PREFIX + "/rooms/{room_id}/send/{event_type}")
@guest_allowed
async def send_message(request: web.Request) -> web.Response:
    """PUT with a transaction ID (the spec); POST without one is Synapse's older form,
    still used by bots and scripts: every POST is a new event (nothing to deduplicate)."""
    hs = _hs(request)
    content = await read_json_body(request, allow_empty=False)
    who = requester(request)
    user_id = who.user_id
    spec = EventSpec(request.match_info["event_type"], user_id, content, origin_server_ts=_massaged_ts(request))
    if who.suspended:  # only redactions of their own events
        redacts = content.get("redacts") if spec.type == "m.room.redaction" else None
        target = await hs.events.store.get_event(redacts) if isinstance(redacts, str) else None
        forbid_redacting_others(who, target.pdu.sender if target is not None and redacts else None)
    if who.shadow_banned:
        return await _dropped(request)
    # Only an event with a relationship needs the relations check (made alone under the
    # room's lock); the others are written with whatever else is being sent to the room.
    check = hs.relations.check_new_event if "m.relates_to" in content else None
    sent = await hs.events.send_event(_room_id(request), spec, txn=_txn(request),
                                      ratelimit=lambda: hs.ratelimit_message(user_id), before_persist=check)
    return json_response({"event_id": sent.pdu.event_id})


@routes.put(PREFIX + "/rooms/{room_id}/redact/{event_id}/{txn_id}")
@routes.post(PREFIX + "/rooms/{room_id}/redact/{event_id}")
async def redact(request: web.Request) -> web.Response:
    """PUT with a transaction ID; POST without one as for ``send``."""
    hs = _hs(request)
    body = await read_json_body(request, allow_empty=True)
    content: dict[str, Any] = {}
    if (reason := _optional_reason(body)) is not None:
        content["reason"] = reason
    who = requester(request)
    if who.suspended:
        target = await hs.events.store.get_event(request.match_info["event_id"])
        forbid_redacting_others(who, target.pdu.sender if target is not None else None)
    if who.shadow_banned:
        return await _dropped(request)
    spec = EventSpec("m.room.redaction", who.user_id, content, redacts=request.match_info["event_id"])
    sent = await hs.events.send_event(_room_id(request), spec, txn=_txn(request),
                                      ratelimit=lambda: hs.ratelimit_message(who.user_id, admin_redaction=who.is_admin))
    return json_response({"event_id": sent.pdu.event_id})


@routes.put(PREFIX + "/rooms/{room_id}/state/{event_type}")
@routes.put(PREFIX + "/rooms/{room_id}/state/{event_type}/{state_key:.*}")
@guest_allowed
async def put_state(request: web.Request) -> web.Response:
    hs = _hs(request)
    content = await read_json_body(request)
    who = requester(request)
    if request.match_info["event_type"] == "m.room.member":
        content = await hs.profiles.member_event_content(who.user_id, request.match_info.get("state_key", ""), content)
    spec = EventSpec(request.match_info["event_type"], who.user_id, content,
                     request.match_info.get("state_key", ""), origin_server_ts=_massaged_ts(request))
    # Leaving through the state API stays possible; the rest is an action suspension stops.
    if not (spec.type == "m.room.member" and spec.state_key == who.user_id and content.get("membership") == "leave"):
        check_not_suspended(who)
    if who.shadow_banned and (spec.type != "m.room.member" or content.get("membership") == "invite"):
        return await _dropped(request)
    if spec.type == "m.room.canonical_alias":
        await hs.directory.check_canonical_alias(_room_id(request), content)
    sent = await hs.events.send_state_event(_room_id(request), spec,
                                            ratelimit=lambda: hs.ratelimit_message(spec.sender))
    return json_response({"event_id": sent.pdu.event_id})


async def _dropped(request: web.Request) -> web.Response:
    """A shadow-banned user's event: answered as sent (after the delay), never created."""
    hs = _hs(request)
    room = await hs.events.get_room(_room_id(request))
    await hs.shadow_ban_delay()
    return json_response({"event_id": fake_event_id(room.room_version, hs.server_name, _txn(request))})


# --- memberships ---------------------------------------------------------------------


async def _room_and_servers(request: web.Request) -> tuple[str, list[str]]:
    """``{roomIdOrAlias}`` as a room ID, and the servers to go through: ``via``
    (``server_name`` is its legacy name), then those the alias names."""
    room_id = _room_id(request)
    servers = request.query.getall("via", []) + request.query.getall("server_name", [])
    if room_id.startswith("#"):
        room_id, alias_servers = await _hs(request).directory.resolve_alias(room_id)
        servers += alias_servers
    elif not room_id.startswith("!"):
        raise MatrixError.invalid_param(f"{room_id!r} is neither a room ID nor a room alias")
    return room_id, servers


@routes.post(PREFIX + "/rooms/{room_id}/join")
@routes.post(PREFIX + "/join/{room_id}")
@guest_allowed
async def join(request: web.Request) -> web.Response:
    body = await read_json_body(request, allow_empty=True)
    room_id, servers = await _room_and_servers(request)
    if body.get("reason") is None:
        body.pop("reason", None)
    else:
        _optional_reason(body)
    check_not_suspended(requester(request))
    if requester(request).is_guest:
        await _hs(request).guest_access.check_may_join(room_id)
    # The body's keys go into the join event (its reason, keys of the client's own, as
    # Synapse does), but not what only the server decides.
    extra = {k: v for k, v in body.items()
             if k not in ("membership", "third_party_signed", "join_authorised_via_users_server")}
    await _hs(request).rooms.join(requester(request).user_id, room_id, servers=servers, ratelimit=True,
                                  extra_content=extra)
    return json_response({"room_id": room_id})


@routes.post(PREFIX + "/knock/{room_id}")
async def knock(request: web.Request) -> web.Response:
    """Spec: https://spec.matrix.org/latest/client-server-api/#post_matrixclientv3knockroomidoralias"""
    body = await read_json_body(request, allow_empty=True)
    reason = _optional_reason(body)
    check_not_suspended(requester(request))
    room_id, servers = await _room_and_servers(request)
    await _hs(request).rooms.knock(requester(request).user_id, room_id, reason=reason, servers=servers)
    return json_response({"room_id": room_id})


@routes.post(PREFIX + "/rooms/{room_id}/leave")
@guest_allowed
async def leave(request: web.Request) -> web.Response:
    body = await read_json_body(request, allow_empty=True)
    hs = _hs(request)
    await hs.events.get_room(_room_id(request))
    await hs.rooms.leave(requester(request).user_id, _room_id(request), _optional_reason(body))
    return json_response({})


@routes.post(PREFIX + "/rooms/{room_id}/forget")
async def forget(request: web.Request) -> web.Response:
    """Spec: https://spec.matrix.org/latest/client-server-api/#post_matrixclientv3roomsroomidforget"""
    await read_json_body(request, allow_empty=True)
    hs, room_id = _hs(request), _room_id(request)
    await hs.events.get_room(room_id)
    member = await hs.events.state.get_membership(room_id, requester(request).user_id)
    if member is not None and member.membership in ("join", "invite", "knock"):
        raise MatrixError(400, Codes.UNKNOWN, f"You must leave {room_id} before forgetting it")
    await hs.events.state.forget_room(room_id, requester(request).user_id)
    return json_response({})


def _membership_action(action: str):
    async def handler(request: web.Request) -> web.Response:
        body = await read_json_body(request)
        hs = _hs(request)
        who = requester(request)
        check_not_suspended(who)
        await hs.events.get_room(_room_id(request))
        third_party = action == "invite" and is_third_party_invite(body)
        if action == "invite" and who.shadow_banned:  # answered as done, never sent
            if not third_party:
                _target(body)
            await hs.shadow_ban_delay()
            return json_response({})
        if third_party:  # by e-mail address, through the identity server the client names
            await hs.third_party_invites.invite(who.user_id, _room_id(request), body)
            return json_response({})
        if action == "invite":
            hs.rooms.ratelimit_invite(requester(request).user_id, _room_id(request), _target(body))
        method = getattr(hs.rooms, action)
        await method(requester(request).user_id, _room_id(request), _target(body), _optional_reason(body))
        return json_response({})

    handler.__name__ = action
    return handler


for _action in ("invite", "kick", "ban", "unban"):
    routes.post(PREFIX + "/rooms/{room_id}/" + _action)(_membership_action(_action))


# --- reading -------------------------------------------------------------------------


async def _visible_state(request: web.Request) -> StateSnapshot:
    """The room state the requester may see: the current state if joined or if the room
    is world readable (room previews), the state when they left if they were a member
    (spec: GET /state)."""
    hs = _hs(request)
    room_id, user_id = _room_id(request), requester(request).user_id
    room = await hs.events.get_room(room_id)
    member = await reader_membership(hs.events, room_id, user_id)
    if member is not None and member.membership in ("leave", "ban"):
        stored = await hs.events.store.get_event(member.event_id)
        if stored is not None and stored.state_group is not None:
            return await hs.events.state.get_state(stored.state_group)
        raise MatrixError.forbidden(f"You are not a member of {room_id}")
    return await hs.events.state.get_state(room.current_state_group)


@routes.get(PREFIX + "/rooms/{room_id}/state")
@guest_allowed
async def get_state(request: web.Request) -> web.Response:
    hs = _hs(request)
    snap = await _visible_state(request)
    pdus = await hs.events.get_pdus(snap.state.values())
    events = await hs.events.serialize_for_client([pdus[e] for e in snap.state.values() if e in pdus])
    return json_response(events)


@routes.get(PREFIX + "/rooms/{room_id}/state/{event_type}")
@routes.get(PREFIX + "/rooms/{room_id}/state/{event_type}/{state_key:.*}")
@guest_allowed
async def get_state_event(request: web.Request) -> web.Response:
    """``format`` (v1.16): ``content`` (the default) or ``event``, the whole client event.
    https://spec.matrix.org/v1.16/client-server-api/#get_matrixclientv3roomsroomidstateeventtypestatekey"""
    hs = _hs(request)
    fmt = request.query.get("format", "content")
    if fmt not in ("content", "event"):
        raise MatrixError.invalid_param("'format' must be 'content' or 'event'")
    snap = await _visible_state(request)
    key = (request.match_info["event_type"], request.match_info.get("state_key", ""))
    event_id = snap.state.get(key)
    if event_id is None:
        raise MatrixError.not_found(f"No {key[0]} state event with state key {key[1]!r}")
    stored = await hs.events.store.get_event(event_id)
    assert stored is not None
    body = (await hs.events.serialize_for_client([stored]))[0]
    if fmt == "event":
        return json_response(body)
    return json_response(body["content"])


@routes.get(PREFIX + "/joined_rooms")
async def joined_rooms(request: web.Request) -> web.Response:
    rooms = await _hs(request).events.state.get_rooms_for_user(requester(request).user_id)
    return json_response({"joined_rooms": rooms})


async def _waited_for_full_state(hs: HomeServer, room_id: str) -> bool:
    """A room joined with partial state (faster joins) lacks most member events until
    its resync ends: member lists wait for it (as Synapse's do). True if it had to wait;
    503 if the full state is still not there after ``FULL_STATE_WAIT_S``."""
    if not await hs.partial_state.is_partial(room_id):
        return False
    if not await hs.partial_state.await_full_state(room_id):
        raise MatrixError(503, Codes.UNKNOWN, f"The member list of {room_id} is still being fetched from other"
                          " servers; try again later")
    return True


@routes.get(PREFIX + "/rooms/{room_id}/members")
@guest_allowed
async def members(request: web.Request) -> web.Response:
    hs = _hs(request)
    snap = await _visible_state(request)
    if await _waited_for_full_state(hs, _room_id(request)):
        snap = await _visible_state(request)
    ids = [e for (t, _), e in snap.state.items() if t == "m.room.member"]
    pdus = await hs.events.get_pdus(ids)
    wanted, unwanted = request.query.get("membership"), request.query.get("not_membership")
    chosen = []
    for e in ids:
        pdu = pdus.get(e)
        if pdu is None:
            continue
        m = pdu.content.get("membership")
        if (wanted is None or m == wanted) and (unwanted is None or m != unwanted):
            chosen.append(pdu)
    chosen.sort(key=lambda p: p.state_key or "")
    return json_response({"chunk": await hs.events.serialize_for_client(chosen)})


@routes.get(PREFIX + "/rooms/{room_id}/joined_members")
async def joined_members(request: web.Request) -> web.Response:
    hs = _hs(request)
    room_id = _room_id(request)
    await hs.events.get_room(room_id)
    me = await hs.events.state.get_membership(room_id, requester(request).user_id)
    if me is None or me.membership != "join":
        raise MatrixError.forbidden(f"You are not joined to {room_id}")
    await _waited_for_full_state(hs, room_id)
    # Both keys always, null when unset (as Synapse answers; SyTest checks for them).
    joined = {m.user_id: {"display_name": m.displayname, "avatar_url": m.avatar_url}
              for m in await hs.events.state.get_members(room_id, "join")}
    return json_response({"joined": joined})


@routes.get(PREFIX + "/rooms/{room_id}/event/{event_id}")
@guest_allowed
async def get_event(request: web.Request) -> web.Response:
    hs = _hs(request)
    room_id, user_id = _room_id(request), requester(request).user_id
    await hs.events.get_room(room_id)
    stored = await hs.events.store.get_event(request.match_info["event_id"])
    not_found = MatrixError.not_found("Event not found")
    if stored is None or stored.pdu.room_id != room_id or stored.outlier or stored.rejected_reason:
        raise not_found
    if not await hs.events.filter_visible(user_id, [stored]):
        raise not_found
    body = (await hs.events.serialize_for_client([stored], requester_device=_device(request)))[0]
    await hs.relations.bundle_aggregations([body], user_id)
    return json_response(body)


def _device(request: web.Request) -> tuple[str, str]:
    who = requester(request)
    return (who.user_id, who.device_id or "")


def parse_token(token: str) -> int:
    """A /messages or /sync token -> its events-stream position (a topological token's
    stream part: for APIs that page by stream position, such as /relations)."""
    return parse_room_token(token).stream


def _filter_strings(f: dict[str, Any], key: str) -> list[str] | None:
    value = f.get(key)
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise MatrixError.bad_json(f"filter '{key}' must be a list of strings")
    return value


@routes.get(PREFIX + "/rooms/{room_id}/messages")
@guest_allowed
async def messages(request: web.Request) -> web.Response:
    hs = _hs(request)
    room_id, user_id = _room_id(request), requester(request).user_id
    return json_response(await room_messages(hs, room_id, request.query, viewer=user_id, device=_device(request)))


def parse_event_filter(query) -> dict[str, Any]:
    """The ``filter`` query parameter (a RoomEventFilter as JSON), or ``{}``."""
    if "filter" not in query:
        return {}
    try:
        event_filter = parse_json(query["filter"])
    except ValueError:
        raise MatrixError(400, Codes.NOT_JSON, "'filter' is not JSON") from None
    if not isinstance(event_filter, dict):
        raise MatrixError.bad_json("'filter' must be a JSON object")
    return event_filter


def filter_conditions(event_filter: dict[str, Any]) -> dict[str, Any]:
    """A RoomEventFilter's types and senders, as ``EventStore.get_room_events`` takes them."""
    return dict(types=_filter_strings(event_filter, "types"),
                not_types=_filter_strings(event_filter, "not_types") or (),
                senders=_filter_strings(event_filter, "senders"),
                not_senders=_filter_strings(event_filter, "not_senders") or ())


async def room_messages(hs: HomeServer, room_id: str, q, *, viewer: str | None,
                        device: tuple[str, str] | None = None, default_dir: str = "b") -> dict[str, Any]:
    """A page of the room's timeline as ``/messages`` answers it: what ``viewer`` may see,
    or, for a server admin (``viewer`` None), every event (the admin API's view)."""
    room = await hs.events.get_room(room_id)
    member = await hs.events.state.get_membership(room_id, viewer) if viewer is not None else None
    if viewer is not None and member is None and not await is_world_readable(hs.events, room_id):
        raise MatrixError.forbidden(f"You are not a member of {room_id}, and it is not world readable")
    direction = q.get("dir", default_dir)
    if direction not in ("b", "f"):
        raise MatrixError.invalid_param("'dir' must be 'b' or 'f'")
    backwards = direction == "b"
    try:
        limit = int(q.get("limit", "10"))
    except ValueError:
        raise MatrixError.invalid_param("'limit' must be an integer") from None
    limit = max(0, min(limit, MAX_MESSAGES_LIMIT))
    event_filter = parse_event_filter(q)
    if isinstance(event_filter.get("limit"), int):
        limit = max(0, min(event_filter["limit"], MAX_MESSAGES_LIMIT))
    pages = hs.pagination
    if q.get("from"):
        from_token = parse_room_token(q["from"])
    else:
        from_token = RoomToken(room.head_stream_ordering) if backwards else None
    from_key = None if from_token is None else await pages.key(room_id, from_token)
    to_key = await pages.key(room_id, parse_room_token(q["to"])) if q.get("to") else None
    # A member who left sees nothing after leaving (nothing after its position: the
    # token of that position stands before every later event).
    if member is not None and member.membership in ("leave", "ban"):
        left = await pages.key(room_id, RoomToken(member.stream_ordering))
        if backwards:
            from_key = left if from_key is None else min(from_key, left)
        else:
            to_key = left if to_key is None else min(to_key, left)
    # Paging back to a gap in what we hold (history before our join, or events missed
    # since) backfills it first (services/pagination.py).
    found = await pages.page(room_id, from_key=from_key, backwards=backwards, limit=limit, to_key=to_key,
                             conditions=filter_conditions(event_filter))
    visible = found if viewer is None else \
        await hs.account_data.without_ignored(viewer, await hs.events.filter_visible(viewer, found))
    chunk = await hs.events.serialize_for_client(visible, requester_device=device)
    if viewer is not None:
        await hs.relations.bundle_aggregations(chunk, viewer)
    start = q.get("from") or str(from_token or RoomToken(0))
    body: dict[str, Any] = {"chunk": chunk, "start": start}
    # Backwards, 'end' is left out once the start of the room is reached (the spec's rule);
    # forwards, more events may come at any time: the token to ask again from.
    if found and (len(found) == limit or not backwards):
        body["end"] = token_before(found[-1]) if backwards else token_after(found[-1])
    if event_filter.get("lazy_load_members"):
        senders = {e.pdu.sender for e in visible}
        current = await hs.events.state.get_current_state_ids(room_id)
        pdus = await hs.events.get_pdus([current[("m.room.member", s)] for s in senders
                                         if ("m.room.member", s) in current])
        body["state"] = await hs.events.serialize_for_client(list(pdus.values()))
    else:
        body["state"] = []
    return body
