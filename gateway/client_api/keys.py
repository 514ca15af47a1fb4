"""End-to-end encryption keys: upload, query, claim, changes, cross-signing, signatures.

Spec: https://spec.matrix.org/latest/client-server-api/#end-to-end-encryption
(thin handlers over ``hs.e2e_keys``, gateway/services/e2e_keys.py).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from ..appkeys import HS
from ..http import MatrixError, json_response, read_json_body
from ..services.sync import SyncToken
from .account import require_reauth
from .auth import guest_allowed, requester

routes = web.RouteTableDef()
PREFIX = "/{ver:(r0|v3)}"
#: Cross-signing also under ``unstable``, where MSC1756 put it and clients from before
#: spec v1.1 (and Synapse) still call it.
CROSS_SIGNING = "/{ver:(r0|v3|unstable)}"


def _timeout(body: dict[str, Any]) -> int:
    timeout = body.get("timeout", 10_000)
    if not isinstance(timeout, int) or isinstance(timeout, bool) or timeout < 0:
        raise MatrixError.invalid_param("timeout must be a non-negative integer (ms)")
    return min(timeout, 60_000)


@routes.post(PREFIX + "/keys/upload")
@guest_allowed
async def upload_keys(request: web.Request) -> web.Response:
    hs = request.app[HS]
    body = await read_json_body(request, allow_empty=True)
    req = requester(request)
    return json_response(await hs.e2e_keys.upload_keys(req.user_id, req.device_id, body))


@routes.post(PREFIX + "/keys/query")
@guest_allowed
async def query_keys(request: web.Request) -> web.Response:
    hs = request.app[HS]
    body = await read_json_body(request)
    return json_response(await hs.e2e_keys.query_keys(requester(request).user_id, body.get("device_keys"),
                                                      _timeout(body)))


@routes.post(PREFIX + "/keys/claim")
@guest_allowed
async def claim_keys(request: web.Request) -> web.Response:
    hs = request.app[HS]
    body = await read_json_body(request)
    return json_response(await hs.e2e_keys.claim_keys(body.get("one_time_keys"), _timeout(body)))


@routes.get(PREFIX + "/keys/changes")
async def key_changes(request: web.Request) -> web.Response:
    """Spec: https://spec.matrix.org/latest/client-server-api/#get_matrixclientv3keyschanges"""
    hs = request.app[HS]
    raw_from, raw_to = request.query.get("from"), request.query.get("to")
    if not raw_from or not raw_to:
        raise MatrixError.missing_param("from and to are required")
    start, end = SyncToken.parse(raw_from), SyncToken.parse(raw_to)
    positions = await hs.sync.store.get_positions()
    upto_lists = min(end.device_lists if end.device_lists is not None else positions["device_lists"],
                     positions["device_lists"])
    since_lists = start.device_lists if start.device_lists is not None else upto_lists
    changed, left = await hs.e2e_keys.changes(requester(request).user_id, start.events, min(since_lists, upto_lists),
                                              end.events, upto_lists)
    return json_response({"changed": changed, "left": left})


@routes.post(CROSS_SIGNING + "/keys/device_signing/upload")
async def upload_signing_keys(request: web.Request) -> web.Response:
    hs = request.app[HS]
    body = await read_json_body(request)

    async def auth() -> None:
        await require_reauth(request, body, "POST /keys/device_signing/upload")

    await hs.e2e_keys.upload_signing_keys(requester(request).user_id, body, auth)
    return json_response({})


@routes.post(CROSS_SIGNING + "/keys/signatures/upload")
async def upload_signatures(request: web.Request) -> web.Response:
    hs = request.app[HS]
    body = await read_json_body(request)
    return json_response(await hs.e2e_keys.upload_signatures(requester(request).user_id, body))
