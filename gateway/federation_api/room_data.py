"""Serving events and room state to other servers (thin; the rules are in
gateway.services.federation.room_data).

Spec: https://spec.matrix.org/latest/server-server-api/#retrieving-events,
https://spec.matrix.org/latest/server-server-api/#backfilling-and-retrieving-missing-events,
https://spec.matrix.org/latest/server-server-api/#get_matrixfederationv1event_authroomideventid,
https://spec.matrix.org/latest/server-server-api/#get_matrixfederationv1timestamp_to_eventroomid

Event IDs of rooms 3+ contain ``/`` and ``+``: senders percent-encode them and the
router matches the encoded path, so ``{event_id}`` is one segment, decoded once.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from ..appkeys import HS
from ..http import MatrixError, json_response
from ..http.query import parse_timestamp_query
from ..http.json import read_json_body
from ..services.federation.room_data import parse_limit
from .auth import ORIGIN

routes = web.RouteTableDef()


def _envelope(hs, pdus: list[dict[str, Any]]) -> dict[str, Any]:
    return {"origin": hs.server_name, "origin_server_ts": hs.clock_ms(), "pdus": pdus}


@routes.get("/v1/event/{event_id}")
async def get_event(request: web.Request) -> web.Response:
    hs = request.app[HS]
    pdu = await hs.federation_room_data.get_event(request[ORIGIN], request.match_info["event_id"])
    return json_response(_envelope(hs, [pdu]))


def _event_id_param(request: web.Request) -> str:
    event_id = request.query.get("event_id")
    if not event_id:
        raise MatrixError.missing_param("event_id is required")
    return event_id


@routes.get("/v1/state/{room_id}")
async def get_state(request: web.Request) -> web.Response:
    hs = request.app[HS]
    room_id = request.match_info["room_id"]
    event_id = _event_id_param(request)
    await hs.federation_room_data.assert_server_in_room(request[ORIGIN], room_id, for_state=True)
    return json_response(await hs.federation_room_data.get_state(room_id, event_id))


@routes.get("/v1/state_ids/{room_id}")
async def get_state_ids(request: web.Request) -> web.Response:
    hs = request.app[HS]
    room_id = request.match_info["room_id"]
    event_id = _event_id_param(request)
    await hs.federation_room_data.assert_server_in_room(request[ORIGIN], room_id, for_state=True)
    state_ids, chain_ids = await hs.federation_room_data.state_ids_before(room_id, event_id)
    return json_response({"pdu_ids": state_ids, "auth_chain_ids": chain_ids})


@routes.get("/v1/event_auth/{room_id}/{event_id}")
async def get_event_auth(request: web.Request) -> web.Response:
    hs = request.app[HS]
    room_id = request.match_info["room_id"]
    await hs.federation_room_data.assert_server_in_room(request[ORIGIN], room_id)
    return json_response(await hs.federation_room_data.get_event_auth(room_id, request.match_info["event_id"]))


def _id_list(body: dict, key: str) -> list[str]:
    value = body.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise MatrixError.bad_json(f"{key} must be a list of event IDs")
    return value


@routes.post("/v1/get_missing_events/{room_id}")
async def get_missing_events(request: web.Request) -> web.Response:
    hs = request.app[HS]
    room_id = request.match_info["room_id"]
    body = await read_json_body(request)
    earliest, latest = _id_list(body, "earliest_events"), _id_list(body, "latest_events")
    limit = body.get("limit", 10)
    min_depth = body.get("min_depth", 0)
    if not isinstance(limit, int) or isinstance(limit, bool) or not isinstance(min_depth, int) \
            or isinstance(min_depth, bool):
        raise MatrixError.bad_json("limit and min_depth must be integers")
    await hs.federation_room_data.assert_server_in_room(request[ORIGIN], room_id)
    events = await hs.federation_room_data.get_missing_events(request[ORIGIN], room_id, earliest, latest,
                                                              limit, min_depth)
    return json_response({"events": events})


@routes.get("/v1/backfill/{room_id}")
async def backfill(request: web.Request) -> web.Response:
    hs = request.app[HS]
    room_id = request.match_info["room_id"]
    from_ids = request.query.getall("v", [])
    if not from_ids:
        raise MatrixError.missing_param("v (event IDs to backfill from) is required")
    limit = parse_limit(request.query.get("limit"), 10)
    await hs.federation_room_data.assert_server_in_room(request[ORIGIN], room_id)
    pdus = await hs.federation_room_data.backfill(request[ORIGIN], room_id, from_ids, limit)
    return json_response(_envelope(hs, pdus))


@routes.get("/v1/timestamp_to_event/{room_id}")
async def timestamp_to_event(request: web.Request) -> web.Response:
    ts, forwards = parse_timestamp_query(request.query)
    return json_response(await request.app[HS].federation_room_data.timestamp_to_event(
        request[ORIGIN], request.match_info["room_id"], ts, forwards=forwards))
