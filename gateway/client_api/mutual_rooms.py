"""The rooms the requester shares with another user.

Spec: https://spec.matrix.org/latest/client-server-api/#get_matrixclientv1mutual_rooms
(MSC2666; Synapse serves it as ``/unstable/uk.half-shot.msc2666/user/mutual_rooms``, where
matrix-js-sdk pages with the MSC's earlier names: ``batch_token`` in, ``next_batch_token`` out).

``next_batch`` names the last room ID of the page (opaque to clients): pages are read
from the current memberships each time, so a token made up by a client can only skip
rooms, never show one the two users do not share.
"""

from __future__ import annotations

import base64
import binascii

from aiohttp import web

from federation.ids import InvalidIdentifierError, UserID

from ..appkeys import HS
from ..http import MatrixError, json_response
from .auth import requester

routes = web.RouteTableDef()

#: Rooms per page.
PAGE_SIZE = 100


def encode_token(room_id: str) -> str:
    return "r" + base64.urlsafe_b64encode(room_id.encode("utf-8")).decode("ascii").rstrip("=")


def decode_token(token: str) -> str:
    invalid = MatrixError.invalid_param("Invalid 'from' token")
    if not token.startswith("r"):
        raise invalid
    raw = token[1:]
    try:
        room_id = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)).decode("utf-8")
    except (binascii.Error, ValueError):
        raise invalid from None
    if not room_id.startswith("!"):
        raise invalid
    return room_id


@routes.get("/v1/mutual_rooms")
async def mutual_rooms(request: web.Request) -> web.Response:
    return await _mutual_rooms(request, unstable=False)


@routes.get("/unstable/uk.half-shot.msc2666/user/mutual_rooms")
async def mutual_rooms_unstable(request: web.Request) -> web.Response:
    return await _mutual_rooms(request, unstable=True)


async def _mutual_rooms(request: web.Request, *, unstable: bool) -> web.Response:
    hs = request.app[HS]
    who = requester(request)
    other = request.query.get("user_id")
    if not other:
        raise MatrixError.missing_param("'user_id' is required")
    try:
        if not UserID.parse(other).is_compliant:
            raise InvalidIdentifierError("not a compliant user ID")
    except InvalidIdentifierError:
        raise MatrixError.invalid_param(f"{other!r} is not a valid user ID") from None
    if other == who.user_id:
        raise MatrixError.invalid_param("You cannot ask which rooms you share with yourself")
    token = request.query.get("from")
    if token is None and unstable:
        token = request.query.get("batch_token")
    after = decode_token(token) if token is not None else None
    rooms, count = await hs.events.state.get_mutual_rooms(who.user_id, other, after=after, limit=PAGE_SIZE + 1)
    body = {"joined": rooms[:PAGE_SIZE], "count": count}
    if len(rooms) > PAGE_SIZE:
        body["next_batch"] = encode_token(rooms[PAGE_SIZE - 1])
        if unstable:
            body["next_batch_token"] = body["next_batch"]
    return json_response(body)
