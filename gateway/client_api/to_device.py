"""Send-to-device messaging (thin handler over ``hs.e2e_keys``).

Spec: https://spec.matrix.org/latest/client-server-api/#send-to-device-messaging
"""

from __future__ import annotations

from aiohttp import web

from ..appkeys import HS
from ..http import json_response, read_json_body
from .auth import guest_allowed, requester

routes = web.RouteTableDef()


@routes.put("/{ver:(r0|v3)}/sendToDevice/{event_type}/{txn_id}")
@guest_allowed
async def send_to_device(request: web.Request) -> web.Response:
    """Spec: https://spec.matrix.org/latest/client-server-api/#put_matrixclientv3sendtodeviceeventtypetxnid
    Idempotent per (device, transaction ID); ``*`` means every device of the user."""
    hs = request.app[HS]
    body = await read_json_body(request)
    req = requester(request)
    await hs.e2e_keys.send_to_device(req.user_id, req.device_id, request.match_info["event_type"],
                                     request.match_info["txn_id"], body.get("messages"))
    return json_response({})
