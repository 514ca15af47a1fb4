"""Federation destinations, with Synapse's admin API paths and fields:
/_synapse/admin/v1/federation/destinations[/{destination}[/rooms|/reset_connection]].
https://element-hq.github.io/synapse/latest/usage/administration/admin_api/federation.html
"""

from __future__ import annotations

from aiohttp import web

from ..appkeys import HS
from ..http import Codes, MatrixError, json_response, read_json_body
from ..storage.destinations import DESTINATION_ORDER_COLUMNS, DestinationStore
from .users import _int_param

routes = web.RouteTableDef()


def _backwards(request: web.Request) -> bool:
    direction = request.query.get("dir", "f")
    if direction not in ("f", "b"):
        raise MatrixError.invalid_param("'dir' must be 'f' or 'b'")
    return direction == "b"


def _store(request: web.Request) -> DestinationStore:
    return request.app[HS].federation_sender.store


async def _existing(request: web.Request) -> str:
    destination = request.match_info["destination"]
    if await _store(request).get_destination(destination) is None:
        raise MatrixError.not_found("Unknown destination")
    return destination


@routes.get("/v1/federation/destinations")
async def list_destinations(request: web.Request) -> web.Response:
    offset = _int_param(request, "from", 0)
    limit = _int_param(request, "limit", 100, maximum=1000)
    order_by = request.query.get("order_by", "destination")
    if order_by not in DESTINATION_ORDER_COLUMNS:
        raise MatrixError.invalid_param(f"Unknown value for order_by: {order_by!r}")
    rows, total = await _store(request).list_destinations(
        offset=offset, limit=limit, order_by=order_by, backwards=_backwards(request),
        search=request.query.get("destination") or None,
    )
    body = {"destinations": [r.to_json() for r in rows], "total": total}
    if offset + len(rows) < total:
        body["next_token"] = str(offset + len(rows))
    return json_response(body)


@routes.get("/v1/federation/destinations/{destination}")
async def get_destination(request: web.Request) -> web.Response:
    row = await _store(request).get_destination(request.match_info["destination"])
    if row is None:
        raise MatrixError.not_found("Unknown destination")
    return json_response(row.to_json())


@routes.get("/v1/federation/destinations/{destination}/rooms")
async def destination_rooms(request: web.Request) -> web.Response:
    destination = await _existing(request)
    offset = _int_param(request, "from", 0)
    limit = _int_param(request, "limit", 100, maximum=1000)
    rows, total = await _store(request).list_destination_rooms(destination, offset=offset, limit=limit,
                                                               backwards=_backwards(request))
    body = {"rooms": [{"room_id": r, "stream_ordering": p} for r, p in rows], "total": total}
    if offset + len(rows) < total:
        body["next_token"] = str(offset + len(rows))
    return json_response(body)


@routes.post("/v1/federation/destinations/{destination}/reset_connection")
async def reset_connection(request: web.Request) -> web.Response:
    await read_json_body(request, allow_empty=True)
    hs = request.app[HS]
    destination = request.match_info["destination"]
    row = await _store(request).get_destination(destination)
    if row is None:
        raise MatrixError.not_found("Unknown destination")
    if row.retry_last_ts == 0:
        raise MatrixError(400, Codes.UNKNOWN, "The retry timing does not need to be reset for this destination.")
    await hs.federation_sender.reset_connection(destination)
    return json_response({})
