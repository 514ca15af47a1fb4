"""/_synapse/replication: the stream writers' endpoints, on ``replication`` listeners.

Other processes of the deployment forward writes here (gateway/services/stream_writers.py):
``POST /_synapse/replication/<endpoint>`` with a JSON object, answered with the call's
JSON result or its Matrix error. With ``worker_replication_secret`` set, a request without
``Authorization: Bearer <secret>`` is refused (403 ``M_FORBIDDEN``).
"""

from __future__ import annotations

import orjson
from aiohttp import web

from .http import MatrixError
from .services.stream_writers import SECRET_REFUSED, StreamWriters

WRITERS = web.AppKey("stream_writers", StreamWriters)


@web.middleware
async def _secret_middleware(request: web.Request, handler) -> web.StreamResponse:
    if not request.app[WRITERS].authorized(request.headers.get("Authorization")):
        return web.json_response({"errcode": "M_FORBIDDEN",
                                  "error": "Replication requests need the worker_replication_secret"},
                                 status=403, headers={SECRET_REFUSED: "1"})
    return await handler(request)


async def _call(request: web.Request) -> web.Response:
    try:
        body = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        raise MatrixError(400, "M_NOT_JSON", "The body is not JSON") from None
    answer = await request.app[WRITERS].handle(request.match_info["endpoint"], body)
    return web.Response(body=orjson.dumps(answer), content_type="application/json")


def build_app(writers: StreamWriters) -> web.Application:
    app = web.Application(middlewares=[_secret_middleware])
    app[WRITERS] = writers
    app.router.add_post("/{endpoint}", _call)
    return app
