"""Media administration with Synapse's admin API paths.

Paths: POST /v1/media/quarantine/{serverName}/{mediaId}, POST /v1/media/unquarantine/...,
POST /v1/room/{roomId}/media/quarantine (alias /v1/quarantine_media/{roomId}),
GET /v1/media/{serverName}/{mediaId}, DELETE /v1/media/{serverName}/{mediaId}.
Quarantined media is answered with 404 by every download path.
"""

from __future__ import annotations

from aiohttp import web

from ..appkeys import HS
from ..client_api.auth import requester
from ..http import Codes, MatrixError, json_response
from ..services.media import check_media_id, check_server_name

routes = web.RouteTableDef()


def _ids(request: web.Request) -> tuple[str, str]:
    return check_server_name(request.match_info["server_name"]), check_media_id(request.match_info["media_id"])


@routes.post("/v1/media/quarantine/{server_name}/{media_id}")
async def quarantine(request: web.Request) -> web.Response:
    server_name, media_id = _ids(request)
    if not await request.app[HS].media.quarantine(server_name, media_id, requester(request).user_id):
        raise MatrixError.not_found("Unknown media")
    return json_response({})


@routes.post("/v1/media/unquarantine/{server_name}/{media_id}")
async def unquarantine(request: web.Request) -> web.Response:
    server_name, media_id = _ids(request)
    if not await request.app[HS].media.quarantine(server_name, media_id, None):
        raise MatrixError.not_found("Unknown media")
    return json_response({})


@routes.post("/v1/room/{room_id}/media/quarantine")
@routes.post("/v1/quarantine_media/{room_id}")
async def quarantine_room_media(request: web.Request) -> web.Response:
    """Quarantine every piece of media the room's events point at (local, and remote
    media we have cached)."""
    hs = request.app[HS]
    by = requester(request).user_id
    count = 0
    for server_name, media_id in await hs.media.store.mxc_uris_in_room(request.match_info["room_id"]):
        if await hs.media.quarantine(server_name, media_id, by):
            count += 1
    return json_response({"num_quarantined": count})


@routes.get("/v1/media/{server_name}/{media_id}")
async def get_media(request: web.Request) -> web.Response:
    server_name, media_id = _ids(request)
    info = await request.app[HS].media.store.get_media(server_name, media_id)
    if info is None:
        raise MatrixError.not_found("Unknown media")
    return json_response({"media_info": {
        "media_origin": info.origin, "media_id": info.media_id, "user_id": info.user_id,
        "media_type": info.media_type, "media_length": info.media_length, "upload_name": info.upload_name,
        "created_ts": info.created_ts, "filesystem_id": info.filesystem_id,
        "quarantined_by": info.quarantined_by, "sha256": info.sha256, "authenticated": True,
    }})


@routes.delete("/v1/media/{server_name}/{media_id}")
async def delete_media(request: web.Request) -> web.Response:
    hs = request.app[HS]
    server_name, media_id = _ids(request)
    if server_name != hs.server_name:
        raise MatrixError(400, Codes.INVALID_PARAM, "Can only delete local media")
    if not await hs.media.delete(server_name, media_id):
        raise MatrixError.not_found("Unknown media")
    return json_response({"deleted_media": [media_id], "total": 1})
