"""Prometheus metrics: request counts and latencies, served on the ``metrics`` resource."""

from __future__ import annotations

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


def metrics_observer(tag: str):
    """Record a finished request (see ``access_log_middleware``)."""

    def observe(request: web.Request, status: int, elapsed: float) -> None:
        # The route pattern, not the concrete path, keeps label cardinality bounded.
        route = request.match_info.route
        resource = route.resource if route is not None else None
        pattern = resource.canonical if resource is not None else "unmatched"
        REQUESTS.labels(tag, request.method, pattern, str(status)).inc()
        LATENCY.labels(tag, request.method, pattern).observe(elapsed)

    return observe


async def metrics_handler(request: web.Request) -> web.Response:
    resp = web.Response(body=generate_latest(REGISTRY))
    resp.content_type = CONTENT_TYPE_LATEST.split(";")[0]
    return resp
