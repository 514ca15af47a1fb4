"""Server-side key backup (thin handlers over gateway/services/room_keys.py).

Spec: https://spec.matrix.org/latest/client-server-api/#server-side-key-backups
"""

from __future__ import annotations

from aiohttp import web

from ..appkeys import ROOM_KEYS
from ..http import json_response, read_json_body
from .auth import requester

routes = web.RouteTableDef()
PREFIX = "/{ver:(r0|v3|unstable)}/room_keys"


def _service(request: web.Request):
    return request.config_dict[ROOM_KEYS]


@routes.post(PREFIX + "/version")
async def create_version(request: web.Request) -> web.Response:
    body = await read_json_body(request)
    return json_response({"version": await _service(request).create_version(requester(request).user_id, body)})


@routes.get(PREFIX + "/version")
async def current_version(request: web.Request) -> web.Response:
    return json_response(await _service(request).version_json(requester(request).user_id, None))


@routes.get(PREFIX + "/version/{version}")
async def get_version(request: web.Request) -> web.Response:
    return json_response(await _service(request).version_json(requester(request).user_id,
                                                              request.match_info["version"]))


@routes.put(PREFIX + "/version/{version}")
async def update_version(request: web.Request) -> web.Response:
    body = await read_json_body(request)
    await _service(request).update_version(requester(request).user_id, request.match_info["version"], body)
    return json_response({})


@routes.delete(PREFIX + "/version/{version}")
async def delete_version(request: web.Request) -> web.Response:
    await _service(request).delete_version(requester(request).user_id, request.match_info["version"])
    return json_response({})


def _where(request: web.Request) -> tuple[str | None, str | None]:
    return request.match_info.get("room_id"), request.match_info.get("session_id")


for path in ("/keys", "/keys/{room_id}", "/keys/{room_id}/{session_id}"):
    @routes.put(PREFIX + path)
    async def put_keys(request: web.Request) -> web.Response:
        body = await read_json_body(request)
        return json_response(await _service(request).put_keys(
            requester(request).user_id, request.query.get("version"), body, *_where(request)))

    @routes.get(PREFIX + path)
    async def get_keys(request: web.Request) -> web.Response:
        return json_response(await _service(request).get_keys(
            requester(request).user_id, request.query.get("version"), *_where(request)))

    @routes.delete(PREFIX + path)
    async def delete_keys(request: web.Request) -> web.Response:
        return json_response(await _service(request).delete_keys(
            requester(request).user_id, request.query.get("version"), *_where(request)))
