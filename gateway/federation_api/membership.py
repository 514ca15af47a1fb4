"""Membership handshakes with other servers (thin; the rules are in
gateway.services.federation.membership).

Spec: https://spec.matrix.org/latest/server-server-api/#joining-rooms,
https://spec.matrix.org/latest/server-server-api/#leaving-rooms-rejecting-invites,
https://spec.matrix.org/latest/server-server-api/#inviting-to-a-room,
https://spec.matrix.org/latest/server-server-api/#knocking-rooms
"""

from __future__ import annotations

from aiohttp import web

from ..appkeys import HS
from ..http import json_response
from ..http.json import read_json_body
from .auth import ORIGIN, public

routes = web.RouteTableDef()


def _handler(request: web.Request):
    return request.app[HS].federation_membership


def _make(kind: str):
    async def handler(request: web.Request) -> web.Response:
        versions = request.query.getall("ver", [])
        answer = await _handler(request).on_make(request[ORIGIN], kind, request.match_info["room_id"],
                                                 request.match_info["user_id"], versions)
        return json_response(answer)

    handler.__name__ = f"make_{kind}"
    return handler


def _send(kind: str, v1: bool):
    async def handler(request: web.Request) -> web.Response:
        body = await read_json_body(request)
        omit = request.query.get("omit_members", "false").lower() == "true" and not v1
        answer = await _handler(request).on_send(request[ORIGIN], kind, request.match_info["room_id"],
                                                 request.match_info["event_id"], body, omit_members=omit, v1=v1)
        return json_response([200, answer] if v1 else answer)

    handler.__name__ = f"send_{kind}_{'v1' if v1 else 'v2'}"
    return handler


for _kind in ("join", "leave"):
    routes.get(f"/v1/make_{_kind}/{{room_id}}/{{user_id}}")(_make(_kind))
    routes.put(f"/v1/send_{_kind}/{{room_id}}/{{event_id}}")(_send(_kind, True))
    routes.put(f"/v2/send_{_kind}/{{room_id}}/{{event_id}}")(_send(_kind, False))


routes.get("/v1/make_knock/{room_id}/{user_id}")(_make("knock"))


@routes.put("/v2/invite/{room_id}/{event_id}")
async def invite(request: web.Request) -> web.Response:
    body = await read_json_body(request)
    answer = await _handler(request).on_invite(request[ORIGIN], request.match_info["room_id"],
                                               request.match_info["event_id"], body)
    return json_response(answer)


@routes.put("/v1/invite/{room_id}/{event_id}")
async def invite_v1(request: web.Request) -> web.Response:
    """The v1 form: the body is the event (the stripped state in its ``unsigned``), the
    room version is 1 or 2 (the spec says to assume so; their events look the same), and
    the answer has v1's extra ``[200, ...]`` wrapper."""
    body = await read_json_body(request)
    answer = await _handler(request).on_invite(request[ORIGIN], request.match_info["room_id"],
                                               request.match_info["event_id"], v2_invite_body(body))
    return json_response([200, answer])


def v2_invite_body(event: dict) -> dict:
    unsigned = event.get("unsigned")
    room_state = unsigned.get("invite_room_state") if isinstance(unsigned, dict) else None
    return {"room_version": "1", "event": event, "invite_room_state": room_state or []}


@routes.put("/v1/send_knock/{room_id}/{event_id}")
async def send_knock(request: web.Request) -> web.Response:
    body = await read_json_body(request)
    answer = await _handler(request).on_send_knock(request[ORIGIN], request.match_info["room_id"],
                                                   request.match_info["event_id"], body)
    return json_response(answer)


# --- third-party invites -----------------------------------------------------------------


@routes.put("/v1/exchange_third_party_invite/{room_id}")
async def exchange_third_party_invite(request: web.Request) -> web.Response:
    """Spec: https://spec.matrix.org/latest/server-server-api/#put_matrixfederationv1exchange_third_party_inviteroomid"""
    body = await read_json_body(request)
    await request.app[HS].third_party_invites.on_exchange(request[ORIGIN], request.match_info["room_id"], body)
    return json_response({})


@routes.put("/v1/3pid/onbind")
@routes.post("/v1/3pid/onbind")
@public
async def on_bind(request: web.Request) -> web.Response:
    """Spec: https://spec.matrix.org/latest/server-server-api/#put_matrixfederationv13pidonbind
    (from an identity server, which does not sign its requests; POST as Sydent sends it). The
    invites it carries are checked by the rooms' auth rules (the identity server's signature)."""
    body = await read_json_body(request)
    await request.app[HS].third_party_invites.on_bind(body)
    return json_response({})
