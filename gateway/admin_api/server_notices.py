"""Sending server notices: Synapse's admin API.

``POST /_synapse/admin/v1/send_server_notice`` and
``PUT /_synapse/admin/v1/send_server_notice/{txnId}`` (idempotent), body
``{"user_id", "content", "type"?, "state_key"?}``, answer ``{"event_id"}``.
https://element-hq.github.io/synapse/latest/admin_api/server_notices.html
"""

from __future__ import annotations

from aiohttp import web

from ..appkeys import HS
from ..http.auth import requester
from ..http import MatrixError, json_response, read_json_body

routes = web.RouteTableDef()


async def _send(request: web.Request, txn_id: str | None) -> web.Response:
    hs = request.app[HS]
    body = await read_json_body(request)
    if not hs.server_notices.enabled:
        raise MatrixError.bad_json("Server notices are not enabled on this server")
    user_id, content = body.get("user_id"), body.get("content")
    if not isinstance(user_id, str):
        raise MatrixError.missing_param("'user_id' is required")
    if not isinstance(content, dict):
        raise MatrixError.bad_json("'content' must be an object")
    event_type = body.get("type", "m.room.message")
    state_key = body.get("state_key")
    if not isinstance(event_type, str) or (state_key is not None and not isinstance(state_key, str)):
        raise MatrixError.bad_json("'type' and 'state_key' must be strings")
    txn = None
    if txn_id is not None:
        who = requester(request)
        txn = (who.user_id, who.device_id or "", "server_notice:" + txn_id)
    sent = await hs.server_notices.send_notice(user_id, content, event_type=event_type, state_key=state_key, txn=txn)
    return json_response({"event_id": sent.pdu.event_id})


@routes.post("/v1/send_server_notice")
async def send_server_notice(request: web.Request) -> web.Response:
    return await _send(request, None)


@routes.put("/v1/send_server_notice/{txn_id}")
async def send_server_notice_txn(request: web.Request) -> web.Response:
    return await _send(request, request.match_info["txn_id"])
