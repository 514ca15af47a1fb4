"""/.well-known/matrix/server and /.well-known/matrix/client.

Spec: server-server API "Resolving server names"; client-server API "Well-known URIs".
"""

from __future__ import annotations

from urllib.parse import urlsplit

from aiohttp import web

from .appkeys import HS
from .http import MatrixError, json_response

routes = web.RouteTableDef()


@routes.get("/.well-known/matrix/server")
async def server_wellknown(request: web.Request) -> web.Response:
    hs = request.app[HS]
    if not hs.config.serve_server_wellknown:
        raise MatrixError(404, "M_NOT_FOUND", ".well-known/matrix/server is not served here")
    url = urlsplit(hs.config.public_baseurl)
    port = url.port or (443 if url.scheme == "https" else 80)
    host = f"[{url.hostname}]" if ":" in (url.hostname or "") else url.hostname
    return json_response(
        {"m.server": f"{host}:{port}"}, headers={"Cache-Control": "max-age=86400"}
    )


@routes.get("/.well-known/matrix/client")
async def client_wellknown(request: web.Request) -> web.Response:
    hs = request.app[HS]
    body = dict(hs.config.extra_well_known_client_content)
    body["m.homeserver"] = {"base_url": hs.config.public_baseurl}
    return json_response(body)
