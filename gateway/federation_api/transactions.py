"""PUT /_matrix/federation/v1/send/{txnId}: incoming transactions (thin; the work is in
gateway.services.federation.inbox).
Spec: https://spec.matrix.org/latest/server-server-api/#put_matrixfederationv1sendtxnid"""

from __future__ import annotations

from aiohttp import web

from ..appkeys import HS
from ..http import json_response
from ..http.json import read_json_body
from .auth import ORIGIN

routes = web.RouteTableDef()


@routes.put("/v1/send/{txn_id}")
async def send_transaction(request: web.Request) -> web.Response:
    hs = request.app[HS]
    body = await read_json_body(request)
    answer = await hs.federation_transactions.on_transaction(request[ORIGIN], request.match_info["txn_id"], body)
    return json_response(answer)
