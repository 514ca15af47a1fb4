"""Stream writers: which process writes each stream, and writes forwarded to it.

``stream_writers`` names the instance that writes each stream (several event persisters
share the rooms out by a hash of the room ID: ``gateway.roles.writer_of``). A process that
is not a stream's writer does not write it: it calls the writer's replication listener
(``instance_map``) with the service call, ``POST /_synapse/replication/<endpoint>`` with a
JSON body, authenticated with ``worker_replication_secret`` as a Bearer token when one is
set. The writer runs the call, publishes the change over Redis as for its own writes, and
answers with the result or the Matrix error.

Forwarded calls are idempotent (event IDs, transaction IDs, or writes that set a value),
so a call whose connection failed is made again, a few times over some seconds; a writer
still unreachable after that is a 503 ``M_UNKNOWN`` naming it, never a 500.

Model: Synapse's replication HTTP endpoints ("Replication Architecture", seed 002).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import aiohttp
import orjson
from prometheus_client import Counter

from ..http import Codes, MatrixError
from ..roles import writer_of

if TYPE_CHECKING:
    from ..config.workers import WorkerConfig

log = logging.getLogger(__name__)

#: Delays between attempts to reach a writer (seconds): about 10 s in all, enough for a
#: writer's supervisor to start it again.
RETRY_DELAYS_S = (0.1, 0.2, 0.5, 1, 1, 2, 2, 3)
#: How long a forwarded call may take once sent (a remote invite waits on another server).
CALL_TIMEOUT_S = 120
PATH = "/_synapse/replication"
#: The header of a writer's 403 that refuses the caller itself (its secret), not the write.
SECRET_REFUSED = "X-Gateway-Replication-Refused"

#: Writes other processes forwarded here, by endpoint and outcome.
FORWARDED = Counter("gateway_forwarded_writes_total", "Writes other processes forwarded to this stream writer",
                    ["endpoint", "outcome"])

#: ``handler(body)`` -> the JSON answer of a forwarded call.
Handler = Callable[[dict[str, Any]], Awaitable[Any]]


class WriterUnreachable(MatrixError):
    def __init__(self, stream: str, instance: str, why: str):
        super().__init__(503, Codes.UNKNOWN, f"The {stream} stream's writer ({instance}) is unreachable ({why}); "
                                             "try again")


class StreamWriters:
    """This process's view of the stream writers: ``is_mine``, ``call`` (client side)
    and the endpoints other processes call here (``register``, ``handle``)."""

    def __init__(self, workers: "WorkerConfig", *, sleep: Callable[[float], Awaitable[None]] = asyncio.sleep):
        self.workers = workers
        self.instance_name = workers.instance_name
        self.secret = workers.worker_replication_secret
        self._sleep = sleep
        self._endpoints: dict[str, Handler] = {}
        self._session: aiohttp.ClientSession | None = None
        unreachable = sorted({w for ws in workers.stream_writers.values() for w in ws
                              if w != self.instance_name and w not in workers.instance_map})
        if unreachable:  # only main can be missing (the config requires the others)
            log.warning("instance_map has no entry for %s, which writes streams: writes forwarded there will "
                        "fail (503) until it has one", ", ".join(unreachable))

    # --- who writes ---------------------------------------------------------------------

    def writer(self, stream: str, room_id: str | None = None) -> str:
        return writer_of(self.workers, stream, room_id)

    def is_mine(self, stream: str, room_id: str | None = None) -> bool:
        return self.writer(stream, room_id) == self.instance_name

    # --- the writer's side ----------------------------------------------------------------

    def register(self, endpoint: str, handler: Handler) -> None:
        self._endpoints[endpoint] = handler

    def authorized(self, header: str | None) -> bool:
        """A request's ``Authorization`` header against ``worker_replication_secret``
        (compared in constant time); anything goes when no secret is set."""
        if self.secret is None:
            return True
        scheme, _, token = (header or "").partition(" ")
        return scheme == "Bearer" and hmac.compare_digest(token.encode(), self.secret.encode())

    async def handle(self, endpoint: str, body: Any) -> Any:
        handler = self._endpoints.get(endpoint)
        if handler is None:
            raise MatrixError(404, Codes.UNRECOGNIZED, f"No replication endpoint {endpoint!r} here")
        if not isinstance(body, dict):
            raise MatrixError.bad_json("A replication call's body is a JSON object")
        try:
            answer = await handler(body)
        except MatrixError as e:
            FORWARDED.labels(endpoint, e.errcode).inc()
            raise
        FORWARDED.labels(endpoint, "ok").inc()
        return answer

    # --- the caller's side ----------------------------------------------------------------

    async def call(self, stream: str, endpoint: str, body: dict[str, Any], *, room_id: str | None = None) -> Any:
        """Run ``endpoint`` on the writer of ``stream`` (of ``room_id``'s events) and
        return its answer; its Matrix errors are raised here as they are."""
        instance = self.writer(stream, room_id)
        where = self.workers.instance_map.get(instance)
        if where is None:
            raise WriterUnreachable(stream, instance, "no instance_map entry")
        url = f"{'https' if where.tls else 'http'}://{where.host}:{where.port}{PATH}/{endpoint}"
        headers = {"Content-Type": "application/json"}
        if self.secret is not None:
            headers["Authorization"] = f"Bearer {self.secret}"
        data = orjson.dumps(body)
        session = self._get_session()
        for attempt in range(len(RETRY_DELAYS_S) + 1):
            try:
                async with session.post(url, data=data, headers=headers) as r:
                    raw = await r.read()
                    status, refused = r.status, SECRET_REFUSED in r.headers
            except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, asyncio.TimeoutError) as e:
                # Refused, reset or cut mid-answer: the call is idempotent, so it is made again.
                if attempt == len(RETRY_DELAYS_S):
                    raise WriterUnreachable(stream, instance, type(e).__name__) from None
                log.info("forwarding %s to %s failed (%s); retrying", endpoint, instance, e)
                await self._sleep(RETRY_DELAYS_S[attempt])
                continue
            try:
                answer = orjson.loads(raw) if raw else None
            except orjson.JSONDecodeError:
                answer = None
            if status == 200:
                return answer
            if status == 403 and refused:  # a deployment problem, not the client's
                log.error("the %s writer %s refused our worker_replication_secret", stream, instance)
                raise MatrixError(502, Codes.UNKNOWN, f"The {stream} stream's writer ({instance}) refused this "
                                                      "process (worker_replication_secret differs)")
            if status != 500 and isinstance(answer, dict) and isinstance(answer.get("errcode"), str):
                extra = {k: v for k, v in answer.items() if k not in ("errcode", "error")}
                raise MatrixError(status, answer["errcode"], str(answer.get("error", "")), **extra)
            log.warning("the %s writer %s answered %s to %s", stream, instance, status, endpoint)
            raise MatrixError(502, Codes.UNKNOWN, f"The {stream} stream's writer ({instance}) failed")
        raise AssertionError("unreachable")

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=CALL_TIMEOUT_S,
                                                                                connect=5))
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def forward_calls(writers: StreamWriters, stream: str, service: Any, methods: tuple[str, ...], *,
                  prefix: str) -> None:
    """Serve ``service``'s write ``methods`` (JSON arguments, JSON answers) to the other
    processes when this one writes ``stream``; otherwise replace them on ``service`` by
    calls to the writer. Endpoints are named ``<prefix>.<method>``."""
    for name in methods:
        endpoint = f"{prefix}.{name}"
        if writers.is_mine(stream):
            method = getattr(service, name)

            async def handler(body: dict[str, Any], method=method) -> Any:
                args, kwargs = body.get("args", []), body.get("kwargs", {})
                if not isinstance(args, list) or not isinstance(kwargs, dict):
                    raise MatrixError.bad_json("'args' is a list and 'kwargs' an object")
                return await method(*args, **kwargs)

            writers.register(endpoint, handler)
        else:
            async def forwarded(*args: Any, endpoint=endpoint, **kwargs: Any) -> Any:
                return await writers.call(stream, endpoint, {"args": list(args), "kwargs": kwargs})

            setattr(service, name, forwarded)
