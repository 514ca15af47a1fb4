"""Media administration with Synapse's admin API paths.

Paths: POST /v1/media/quarantine/{serverName}/{mediaId}, POST /v1/media/unquarantine/...,
POST /v1/room/{roomId}/media/quarantine (alias /v1/quarantine_media/{roomId}),
POST /v1/user/{userId}/media/quarantine, POST /v1/media/protect|unprotect/{mediaId},
GET /v1/room/{roomId}/media, GET|DELETE /v1/users/{userId}/media,
GET /v1/statistics/users/media, GET /v1/media/{serverName}/{mediaId},
DELETE /v1/media/{serverName}/{mediaId}, POST /v1/media/delete?before_ts= (also
/v1/media/{serverName}/delete), POST /v1/purge_media_cache?before_ts=.
Quarantined media is answered with 404 by every download path; protected media cannot be
quarantined. https://element-hq.github.io/synapse/latest/admin_api/media_admin_api.html
"""

from __future__ import annotations

from aiohttp import web

from federation.ids import is_valid_room_id

from ..appkeys import HS
from ..http.auth import requester
from ..http import Codes, MatrixError, json_response
from ..services.media import check_media_id, check_server_name
from ..storage.media import MEDIA_STATISTICS_ORDERINGS, USER_MEDIA_ORDERINGS, MediaInfo
from .users import _bool_param, _int_param, existing_local_user

routes = web.RouteTableDef()

#: A timestamp below this is in seconds, not milliseconds (as Synapse warns: "from the year 1970").
_MIN_TIMESTAMP_MS = 30_000_000_000


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


async def _room_mxc_uris(request: web.Request) -> set[tuple[str, str]]:
    hs = request.app[HS]
    room_id = request.match_info["room_id"]
    if not is_valid_room_id(room_id):
        raise MatrixError.invalid_param(f"{room_id!r} is not a room ID")
    if await hs.events.store.get_room(room_id) is None:
        raise MatrixError.not_found("Unknown room")
    return await hs.media.store.mxc_uris_in_room(room_id)


@routes.post("/v1/room/{room_id}/media/quarantine")
@routes.post("/v1/quarantine_media/{room_id}")
async def quarantine_room_media(request: web.Request) -> web.Response:
    """Quarantine every piece of media the room's events point at (local, and remote
    media we have cached), but protected media."""
    hs = request.app[HS]
    by = requester(request).user_id
    count = 0
    for server_name, media_id in await _room_mxc_uris(request):
        info = await hs.media.store.get_media(server_name, media_id)
        if info is not None and info.safe_from_quarantine:
            continue
        if await hs.media.quarantine(server_name, media_id, by):
            count += 1
    return json_response({"num_quarantined": count})


@routes.get("/v1/room/{room_id}/media")
async def room_media(request: web.Request) -> web.Response:
    """The mxc:// URIs the room's events point at (encrypted events hide theirs)."""
    server_name = request.app[HS].server_name
    found = sorted(await _room_mxc_uris(request))
    return json_response({"local": [f"mxc://{s}/{m}" for s, m in found if s == server_name],
                          "remote": [f"mxc://{s}/{m}" for s, m in found if s != server_name]})


@routes.post("/v1/user/{user_id}/media/quarantine")
async def quarantine_user_media(request: web.Request) -> web.Response:
    """Quarantine every upload of a local user (protected media excepted)."""
    user_id = await existing_local_user(request)
    count = await request.app[HS].media.store.quarantine_user_media(user_id, requester(request).user_id)
    return json_response({"num_quarantined": count})


async def _protect(request: web.Request, protected: bool) -> web.Response:
    media_id = check_media_id(request.match_info["media_id"])
    if not await request.app[HS].media.store.set_protected(media_id, protected):
        raise MatrixError.not_found("Unknown media")
    return json_response({})


@routes.post("/v1/media/protect/{media_id}")
async def protect(request: web.Request) -> web.Response:
    """Keep a local media item from being quarantined (stickers, shared images)."""
    return await _protect(request, True)


@routes.post("/v1/media/unprotect/{media_id}")
async def unprotect(request: web.Request) -> web.Response:
    return await _protect(request, False)


def _user_media_json(info: MediaInfo) -> dict:
    return {"media_id": info.media_id, "media_type": info.media_type, "media_length": info.media_length,
            "upload_name": info.upload_name, "created_ts": info.created_ts, "last_access_ts": info.last_access_ts,
            "quarantined_by": info.quarantined_by, "safe_from_quarantine": info.safe_from_quarantine}


def _order(request: web.Request, orderings, default: str, default_backwards: bool) -> tuple[str, bool]:
    """``order_by`` and ``dir`` (``b`` for backwards)."""
    order_by = request.query.get("order_by")
    direction = request.query.get("dir")
    if order_by is not None and order_by not in orderings:
        raise MatrixError.invalid_param(f"'order_by' must be one of {', '.join(orderings)}")
    if direction is not None and direction not in ("f", "b"):
        raise MatrixError.invalid_param("'dir' must be 'f' or 'b'")
    if order_by is None and direction is None:
        return default, default_backwards
    return order_by or default, direction == "b"


async def _user_media_page(request: web.Request) -> tuple[str, list[MediaInfo], int, int]:
    user_id = await existing_local_user(request)
    offset, limit = _int_param(request, "from", 0), _int_param(request, "limit", 100)
    # Newest first unless asked otherwise.
    order_by, backwards = _order(request, USER_MEDIA_ORDERINGS, "created_ts", True)
    media, total = await request.app[HS].media.store.list_user_media(
        user_id, order_by=order_by, backwards=backwards, offset=offset, limit=limit)
    return user_id, media, total, offset


@routes.get("/v1/users/{user_id}/media")
async def list_user_media(request: web.Request) -> web.Response:
    _, media, total, offset = await _user_media_page(request)
    body: dict = {"media": [_user_media_json(m) for m in media], "total": total}
    if offset + len(media) < total:
        body["next_token"] = offset + len(media)
    return json_response(body)


@routes.delete("/v1/users/{user_id}/media")
async def delete_user_media(request: web.Request) -> web.Response:
    """Delete the page of the user's media the same parameters would list (100 at most
    unless ``limit`` says otherwise)."""
    _, media, _, _ = await _user_media_page(request)
    deleted = await request.app[HS].media.delete_local([m.media_id for m in media])
    return json_response({"deleted_media": deleted, "total": len(deleted)})


def _timestamp_param(request: web.Request, name: str) -> int | None:
    return _int_param(request, name, 0) if name in request.query else None


def _before_ts(request: web.Request) -> int:
    before_ts = _timestamp_param(request, "before_ts")
    if before_ts is None:
        raise MatrixError.missing_param("'before_ts' is required")
    if before_ts < _MIN_TIMESTAMP_MS:
        raise MatrixError.invalid_param("'before_ts' is from the year 1970: it must be in milliseconds")
    return before_ts


@routes.post("/v1/media/delete")
@routes.post("/v1/media/{server_name}/delete")
async def delete_old_media(request: web.Request) -> web.Response:
    """Delete local media last served before ``before_ts`` and larger than ``size_gt``;
    avatars stay unless ``keep_profiles=false``; quarantined and protected media stay."""
    hs = request.app[HS]
    server_name = request.match_info.get("server_name")
    if server_name is not None and server_name != hs.server_name:
        raise MatrixError.invalid_param("Can only delete local media")
    before_ts = _before_ts(request)
    size_gt = _int_param(request, "size_gt", 0)
    keep_profiles = _bool_param(request, "keep_profiles", True)
    deleted = await hs.media.delete_old_local(before_ts=before_ts, size_gt=size_gt, keep_profiles=bool(keep_profiles))
    return json_response({"deleted_media": deleted, "total": len(deleted)})


@routes.post("/v1/purge_media_cache")
async def purge_media_cache(request: web.Request) -> web.Response:
    """Drop cached remote media last served before ``before_ts`` (fetched again if asked for)."""
    return json_response({"deleted": await request.app[HS].media.purge_remote_cache(_before_ts(request))})


@routes.get("/v1/statistics/users/media")
async def user_media_statistics(request: web.Request) -> web.Response:
    offset, limit = _int_param(request, "from", 0), _int_param(request, "limit", 100)
    order_by, backwards = _order(request, MEDIA_STATISTICS_ORDERINGS, "user_id", False)
    from_ts, until_ts = _timestamp_param(request, "from_ts"), _timestamp_param(request, "until_ts")
    if from_ts is not None and until_ts is not None and until_ts < from_ts:
        raise MatrixError.invalid_param("'until_ts' must not be before 'from_ts'")
    search_term = request.query.get("search_term")
    if search_term is not None and not search_term:
        raise MatrixError.invalid_param("'search_term' must not be empty")
    users, total = await request.app[HS].media.store.user_media_statistics(
        order_by=order_by, backwards=backwards, offset=offset, limit=limit, from_ts=from_ts, until_ts=until_ts,
        search_term=search_term)
    body: dict = {"users": users, "total": total}
    if offset + len(users) < total:
        body["next_token"] = offset + len(users)
    return json_response(body)


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
        "safe_from_quarantine": info.safe_from_quarantine, "last_access_ts": info.last_access_ts,
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
