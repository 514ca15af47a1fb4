"""Our media for other servers: /_matrix/federation/v1/media/{download,thumbnail}/{mediaId}.

Spec: https://spec.matrix.org/latest/server-server-api/#content-repository
The answer is multipart/mixed: a JSON part (metadata, an empty object today), then the
bytes with their own Content-Type and Content-Disposition. Local media only.
"""

from __future__ import annotations

import secrets

from aiohttp import web

from ..appkeys import MEDIA
from ..http.query import thumbnail_params
from ..http.content import content_disposition
from ..services.media import ServedFile, timeout_ms_param

routes = web.RouteTableDef()

CHUNK = 256 * 1024


async def _multipart(request: web.Request, served: ServedFile) -> web.StreamResponse:
    boundary = secrets.token_hex(16)
    head = (f"--{boundary}\r\nContent-Type: application/json\r\n\r\n{{}}\r\n"
            f"--{boundary}\r\nContent-Type: {served.media_type}\r\n"
            f"Content-Disposition: {content_disposition(served.media_type, served.upload_name)}\r\n\r\n").encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    with open(served.path, "rb") as f:
        size = served.path.stat().st_size
        resp = web.StreamResponse(headers={"Content-Type": f"multipart/mixed; boundary={boundary}"})
        resp.content_length = len(head) + size + len(tail)
        await resp.prepare(request)
        await resp.write(head)
        while chunk := f.read(CHUNK):
            await resp.write(chunk)
        await resp.write(tail)
    await resp.write_eof()
    return resp


@routes.get("/v1/media/download/{media_id}")
async def download(request: web.Request) -> web.StreamResponse:
    media = request.config_dict[MEDIA]
    info = await media.get_local(request.match_info["media_id"], timeout_ms_param(request.query.get("timeout_ms")))
    return await _multipart(request, media.served(info))


@routes.get("/v1/media/thumbnail/{media_id}")
async def thumbnail(request: web.Request) -> web.StreamResponse:
    width, height, method = thumbnail_params(request)
    media = request.config_dict[MEDIA]
    info = await media.get_local(request.match_info["media_id"], timeout_ms_param(request.query.get("timeout_ms")))
    return await _multipart(request, await media.thumbnail(info, width, height, method))
