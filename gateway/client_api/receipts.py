"""Receipts and read markers.

Spec: https://spec.matrix.org/latest/client-server-api/#post_matrixclientv3roomsroomidreceiptreceipttypeeventid
and https://spec.matrix.org/latest/client-server-api/#post_matrixclientv3roomsroomidread_markers
"""

from __future__ import annotations

from aiohttp import web

from ..appkeys import RECEIPTS
from ..http import MatrixError, json_response, read_json_body
from .auth import requester

routes = web.RouteTableDef()


@routes.post("/{ver:(r0|v3)}/rooms/{room_id}/receipt/{receipt_type}/{event_id}")
async def post_receipt(request: web.Request) -> web.Response:
    body = await read_json_body(request, allow_empty=True)
    thread_id = body.get("thread_id")
    if thread_id is not None and (not isinstance(thread_id, str) or not thread_id):
        raise MatrixError.invalid_param("'thread_id' must be a non-empty string")
    receipt_type = request.match_info["receipt_type"]
    if receipt_type == "m.fully_read" and thread_id is not None:
        raise MatrixError.invalid_param("m.fully_read takes no 'thread_id'")
    await request.config_dict[RECEIPTS].send_receipt(
        requester(request).user_id, request.match_info["room_id"], receipt_type, request.match_info["event_id"],
        thread_id,
    )
    return json_response({})


@routes.post("/{ver:(r0|v3)}/rooms/{room_id}/read_markers")
async def post_read_markers(request: web.Request) -> web.Response:
    body = await read_json_body(request, allow_empty=True)
    ids = {}
    for key in ("m.fully_read", "m.read", "m.read.private"):
        value = body.get(key)
        if value is not None and not isinstance(value, str):
            raise MatrixError.bad_json(f"'{key}' must be an event ID")
        ids[key] = value
    await request.config_dict[RECEIPTS].set_read_markers(
        requester(request).user_id, request.match_info["room_id"], fully_read=ids["m.fully_read"],
        read=ids["m.read"], read_private=ids["m.read.private"],
    )
    return json_response({})
