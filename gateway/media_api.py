"""/_matrix/media: uploads (POST upload, POST v1/create, PUT upload/{server}/{id}) and the
deprecated unauthenticated downloads, served only with ``enable_authenticated_media: false``.

Spec: https://spec.matrix.org/latest/client-server-api/#content-repository
"""

from __future__ import annotations

from aiohttp import web

from .appkeys import HS, MEDIA
from .client_api import media as client_media
from .http.auth import access_token_middleware, public, requester
from .http import Codes, MatrixError, json_response
from .server import HomeServer

routes = web.RouteTableDef()
preview_routes = web.RouteTableDef()


def _check_declared_size(request: web.Request) -> None:
    limit = request.config_dict[MEDIA].config.max_upload_size
    if request.content_length is not None and request.content_length > limit:
        raise MatrixError(413, Codes.TOO_LARGE, f"Upload is larger than the limit of {limit} bytes")


async def _chunks(request: web.Request):
    async for chunk in request.content.iter_chunked(65536):
        yield chunk


@routes.post("/{ver:(r0|v3|v1)}/upload")
async def upload(request: web.Request) -> web.Response:
    _check_declared_size(request)
    mxc = await request.config_dict[MEDIA].upload(requester(request).user_id, request.headers.get("Content-Type"),
                                                  request.query.get("filename"), _chunks(request))
    return json_response({"content_uri": mxc})


@routes.post("/v1/create")
async def create(request: web.Request) -> web.Response:
    hs = request.app[HS]
    user_id = requester(request).user_id
    hs.ratelimiters["rc_media_create"].ratelimit(user_id)
    mxc, expires = await hs.media.create(user_id)
    return json_response({"content_uri": mxc, "unused_expires_at": expires})


@routes.put("/{ver:(r0|v3)}/upload/{server_name}/{media_id}")
async def upload_to(request: web.Request) -> web.Response:
    _check_declared_size(request)
    await request.config_dict[MEDIA].upload_to(requester(request).user_id, request.match_info["server_name"],
                                               request.match_info["media_id"], request.headers.get("Content-Type"),
                                               request.query.get("filename"), _chunks(request))
    return json_response({})


@routes.get("/{ver:(r0|v3)}/config")
async def get_config(request: web.Request) -> web.Response:
    return client_media.config_response(request)


def _legacy_allowed(request: web.Request) -> bool:
    """Whether remote media may be fetched; 404 when the deprecated endpoints are frozen
    (``enable_authenticated_media``), except for the IdP icons of our login pages."""
    media = request.config_dict[MEDIA]
    key = (request.match_info["server_name"], request.match_info["media_id"])
    if media.config.enable_authenticated_media and key not in media.public_media:
        # As Synapse: only /_matrix/client/v1/media serves new media.
        raise MatrixError.not_found("Not found")
    return request.query.get("allow_remote", "true").lower() != "false"


# v1 as well: Synapse's (and our) ``mxc_to_http`` template filter builds /_matrix/media/v1 URLs.
@routes.get("/{ver:(r0|v3|v1)}/download/{server_name}/{media_id}")
@routes.get("/{ver:(r0|v3|v1)}/download/{server_name}/{media_id}/{file_name}")
@public
async def legacy_download(request: web.Request) -> web.StreamResponse:
    return await client_media.download(request, allow_remote=_legacy_allowed(request))


@routes.get("/{ver:(r0|v3|v1)}/thumbnail/{server_name}/{media_id}")
@public
async def legacy_thumbnail(request: web.Request) -> web.StreamResponse:
    return await client_media.thumbnail(request, allow_remote=_legacy_allowed(request))


@preview_routes.get("/{ver:(r0|v3)}/preview_url")
async def legacy_preview(request: web.Request) -> web.Response:
    return await client_media.preview(request)


def build_app(hs: HomeServer) -> web.Application:
    app = web.Application(middlewares=[access_token_middleware])
    app[HS] = hs
    app.add_routes(routes)
    if hs.config.media.url_preview_enabled:
        app.add_routes(preview_routes)
    return app
