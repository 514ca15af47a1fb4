"""Authenticated media (spec v1.11): /_matrix/client/v1/media/{config,download,thumbnail,preview_url}.

Spec: https://spec.matrix.org/latest/client-server-api/#content-repository
The handlers here are shared with the legacy /_matrix/media routes (gateway/media_api.py).
"""

from __future__ import annotations

from aiohttp import web

from ..appkeys import MEDIA, URL_PREVIEWER
from ..http import Codes, MatrixError, json_response
from ..http.content import file_response
from ..http.query import thumbnail_params
from ..services.media import timeout_ms_param
from .auth import guest_allowed, requester

routes = web.RouteTableDef()
preview_routes = web.RouteTableDef()

async def download(request: web.Request, *, allow_remote: bool = True) -> web.StreamResponse:
    media = request.config_dict[MEDIA]
    info = await media.get_media(request.match_info["server_name"], request.match_info["media_id"],
                                 timeout_ms=timeout_ms_param(request.query.get("timeout_ms")),
                                 allow_remote=allow_remote)
    served = media.served(info)
    filename = request.match_info.get("file_name") or served.upload_name
    return file_response(served.path, served.media_type, filename)


async def thumbnail(request: web.Request, *, allow_remote: bool = True) -> web.StreamResponse:
    width, height, method = thumbnail_params(request)
    served = await request.config_dict[MEDIA].thumbnail_of(
        request.match_info["server_name"], request.match_info["media_id"], width, height, method,
        timeout_ms=timeout_ms_param(request.query.get("timeout_ms")), allow_remote=allow_remote)
    return file_response(served.path, served.media_type, served.upload_name)


def config_response(request: web.Request) -> web.Response:
    return json_response({"m.upload.size": request.config_dict[MEDIA].config.max_upload_size})


async def preview(request: web.Request) -> web.Response:
    url = request.query.get("url")
    if not url:
        raise MatrixError(400, Codes.MISSING_PARAM, "Missing query parameter 'url'")
    return json_response(await request.config_dict[URL_PREVIEWER].preview(url, requester(request).user_id))


@routes.get("/v1/media/config")
async def get_config(request: web.Request) -> web.Response:
    return config_response(request)


@routes.get("/v1/media/download/{server_name}/{media_id}")
@routes.get("/v1/media/download/{server_name}/{media_id}/{file_name}")
@guest_allowed
async def get_download(request: web.Request) -> web.StreamResponse:
    return await download(request)


@routes.get("/v1/media/thumbnail/{server_name}/{media_id}")
@guest_allowed
async def get_thumbnail(request: web.Request) -> web.StreamResponse:
    return await thumbnail(request)


@preview_routes.get("/v1/media/preview_url")
async def get_preview_url(request: web.Request) -> web.Response:
    return await preview(request)
