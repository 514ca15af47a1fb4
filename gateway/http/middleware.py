"""Middlewares: Matrix errors for everything, CORS for client endpoints, request logs."""

from __future__ import annotations

import logging
import time

from aiohttp import web

from ..storage import UnstorableTextError
from .errors import Codes, MatrixError
from .json import json_response

log = logging.getLogger("gateway.access")
error_log = logging.getLogger("gateway.http")

#: Spec: client-server API, "Web Browser Clients".
CORS_HEADERS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "GET, HEAD, POST, PUT, DELETE, OPTIONS",
    "Access-Control-Allow-Headers": "X-Requested-With, Content-Type, Authorization",
}
CORS_PREFIXES = ("/_matrix/", "/.well-known/matrix/client", "/_synapse/client/", "/_synapse/admin/")


def _error(status: int, errcode: str, error: str) -> web.Response:
    return json_response({"errcode": errcode, "error": error}, status=status)


@web.middleware
async def error_middleware(request: web.Request, handler) -> web.StreamResponse:
    """Turn every failure into a Matrix JSON error; never send a stack trace."""
    try:
        return await handler(request)
    except MatrixError as e:
        return json_response(e.to_json(), status=e.status)
    except UnstorableTextError:
        return _error(400, Codes.INVALID_PARAM, "Text with a NUL character (\\u0000) is not accepted")
    except web.HTTPNotFound:
        return _error(404, Codes.UNRECOGNIZED, "Unrecognized request")
    except web.HTTPMethodNotAllowed:
        return _error(405, Codes.UNRECOGNIZED, f"Method {request.method} not allowed here")
    except web.HTTPRequestEntityTooLarge:
        return _error(413, Codes.TOO_LARGE, "Request body too large")
    except web.HTTPException as e:
        if e.status < 400:
            raise
        code = Codes.UNKNOWN
        return _error(e.status, code, e.reason)
    except Exception:
        error_log.exception("unhandled error in %s %s", request.method, request.path)
        return _error(500, Codes.UNKNOWN, "Internal server error")


@web.middleware
async def cors_middleware(request: web.Request, handler) -> web.StreamResponse:
    """Answers CORS preflight (``OPTIONS``) requests on client-facing paths itself; the
    headers themselves are added by :func:`add_cors_headers` to every response."""
    if request.method == "OPTIONS" and request.path.startswith(CORS_PREFIXES):
        return web.Response(status=204)
    return await handler(request)


async def add_cors_headers(request: web.Request, response: web.StreamResponse) -> None:
    """``on_response_prepare``: CORS headers on every response to a client-facing path,
    errors and streamed bodies included (a middleware would miss both: an error turned
    into a response outside it, and headers already sent by a streaming handler). Without
    them a browser sees a 404 as a network failure."""
    if request.path.startswith(CORS_PREFIXES):
        response.headers.update(CORS_HEADERS)


def body_limit_middleware(max_size: int, by_prefix: dict[str, int] | None = None):
    """Refuse a declared Content-Length over the limit before reading anything.

    Bodies without a Content-Length are still capped by aiohttp's ``client_max_size``.
    ``by_prefix`` gives other limits to paths that stream their body (media uploads).
    """
    prefixes = tuple((by_prefix or {}).items())

    @web.middleware
    async def middleware(request: web.Request, handler) -> web.StreamResponse:
        limit = next((size for prefix, size in prefixes if request.path.startswith(prefix)), max_size)
        if request.content_length is not None and request.content_length > limit:
            return _error(413, Codes.TOO_LARGE, f"Request body too large (limit {limit} bytes)")
        return await handler(request)

    return middleware


@web.middleware
async def x_forwarded_middleware(request: web.Request, handler) -> web.StreamResponse:
    """Behind a reverse proxy (``x_forwarded: true``): the client address and scheme come
    from ``X-Forwarded-For`` / ``X-Forwarded-Proto``."""
    changes = {}
    forwarded_for = request.headers.get("X-Forwarded-For")
    if forwarded_for:
        changes["remote"] = forwarded_for.split(",")[0].strip()
    proto = request.headers.get("X-Forwarded-Proto")
    if proto in ("http", "https"):
        changes["scheme"] = proto
    if changes:
        request = request.clone(**changes)
    return await handler(request)


def access_log_middleware(tag: str, observe=None):
    """Log one line per request; also hand (request, status, seconds) to ``observe``
    (the metrics), so both share one timing."""

    @web.middleware
    async def middleware(request: web.Request, handler) -> web.StreamResponse:
        start = time.monotonic()
        status = 500
        try:
            resp = await handler(request)
            status = resp.status
            return resp
        finally:
            elapsed = time.monotonic() - start
            log.info("%s %s %s %s %d %.3fs", tag, request.remote, request.method, request.rel_url.path,
                     status, elapsed)
            if observe is not None:
                observe(request, status, elapsed)

    return middleware
