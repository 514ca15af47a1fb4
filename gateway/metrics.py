"""Prometheus metrics: request counts and latencies, served on the ``metrics`` resource."""

from __future__ import annotations

import time

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Counter, Histogram, generate_latest

REQUESTS = Counter(
    "gateway_http_requests_total",
    "HTTP requests handled, by listener tag, method, route and status",
    ["listener", "method", "route", "code"],
)
LATENCY = Histogram(
    "gateway_http_request_duration_seconds",
    "Time to produce an HTTP response",
    ["listener", "method", "route"],
)


def metrics_middleware(tag: str):
    @web.middleware
    async def middleware(request: web.Request, handler) -> web.StreamResponse:
        start = time.monotonic()
        status = 500
        try:
            resp = await handler(request)
            status = resp.status
            return resp
        finally:
            # The route pattern, not the concrete path, keeps label cardinality bounded.
            resource = request.match_info.route.resource if request.match_info.route else None
            route = resource.canonical if resource is not None else "unmatched"
            REQUESTS.labels(tag, request.method, route, str(status)).inc()
            LATENCY.labels(tag, request.method, route).observe(time.monotonic() - start)

    return middleware


async def metrics_handler(request: web.Request) -> web.Response:
    resp = web.Response(body=generate_latest(REGISTRY))
    resp.content_type = CONTENT_TYPE_LATEST.split(";")[0]
    return resp
