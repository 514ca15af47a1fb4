"""Fetching other servers' signing keys over the network.

- :class:`DirectKeyFetcher`: ``GET /_matrix/key/v2/server`` from each server itself.
- :class:`NotaryKeyFetcher`: batched ``POST /_matrix/key/v2/query`` to the configured
  ``trusted_key_servers``, each answer checked against the notary's configured
  ``verify_keys``.
- :class:`ChainedKeyFetcher`: notaries first, then directly, for what is still missing.
- :class:`CoalescingKeyFetcher`: concurrent fetches for the same server share one
  request; servers that failed are backed off (exponentially), so a burst of events
  or requests naming an unreachable server or an unknown key is no fetch storm.

All implement ``federation.keyring.KeyFetcher``. They never raise for a remote's
failure: what could not be fetched is missing from the result.
Spec: https://spec.matrix.org/latest/server-server-api/#retrieving-server-keys
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Protocol, Sequence

from ..keyring import (
    KeyFetcher,
    KeyRequest,
    KeyResponseError,
    ServerKeyResponse,
    check_notary_response,
    merge_key_requests,
    notary_query_body,
    parse_key_response,
    valid_server_name,
)
from .client import FederationRequestError

log = logging.getLogger(__name__)

__all__ = [
    "Backoff",
    "ChainedKeyFetcher",
    "CoalescingKeyFetcher",
    "DirectKeyFetcher",
    "Notary",
    "NotaryKeyFetcher",
]


class RequestSender(Protocol):
    """What the fetchers need of ``federation.net.client.FederationClient``."""

    async def request(self, method: str, destination: str, path: str, *, query: Any = None,
                      content: Any = None, signed: bool = True) -> Any: ...


@dataclass(frozen=True)
class Notary:
    """A trusted key server; ``verify_keys`` (key ID -> unpadded base64) must have
    signed its answers. None: rely on its TLS certificate alone."""

    server_name: str
    verify_keys: Mapping[str, str] | None


def _satisfied(requests: Sequence[KeyRequest], responses: Sequence[ServerKeyResponse]) -> list[KeyRequest]:
    """The requests that some response answers."""
    return [r for r in requests if any(resp.server_name == r.server_name and resp.has(r) for resp in responses)]


def _known(request: KeyRequest, responses: Sequence[ServerKeyResponse]) -> bool:
    """Whether the server answered with the key asked for (any key, for a request of
    none), valid long enough or not: a server that only has older keys is up, not
    failing."""
    return any(resp.server_name == request.server_name
               and (request.key_id is None or any(k.key_id == request.key_id for k in resp.keys))
               for resp in responses)


class DirectKeyFetcher:
    """Asks each server for its own keys, ``concurrency`` servers at a time."""

    def __init__(self, client: RequestSender, clock_ms: Callable[[], int], *, concurrency: int = 10):
        self.client = client
        self.clock_ms = clock_ms
        self._limit = asyncio.Semaphore(concurrency)

    async def _fetch_one(self, server_name: str) -> ServerKeyResponse | None:
        if not valid_server_name(server_name):
            log.warning("not fetching keys of %r: not a valid server name", server_name)
            return None
        async with self._limit:
            try:
                doc = await self.client.request("GET", server_name, "/_matrix/key/v2/server", signed=False)
                keys = parse_key_response(doc, server_name, fetched_ts=self.clock_ms())
            except (FederationRequestError, KeyResponseError) as e:
                log.warning("cannot fetch keys of %s directly: %s", server_name, e)
                return None
        return ServerKeyResponse(server_name, doc, tuple(keys))

    async def fetch(self, requests: Sequence[KeyRequest]) -> list[ServerKeyResponse]:
        servers = sorted({r.server_name for r in requests})
        results = await asyncio.gather(*(self._fetch_one(s) for s in servers))
        return [r for r in results if r is not None]


class NotaryKeyFetcher:
    """Asks the notaries in turn, one batched query (of at most ``batch_size``
    servers) per notary for what the previous ones did not answer."""

    def __init__(self, client: RequestSender, notaries: Sequence[Notary], clock_ms: Callable[[], int],
                 *, batch_size: int = 100):
        self.client = client
        self.notaries = tuple(notaries)
        self.clock_ms = clock_ms
        self.batch_size = batch_size

    async def _ask(self, notary: Notary, requests: list[KeyRequest]) -> list[ServerKeyResponse]:
        try:
            answer = await self.client.request("POST", notary.server_name, "/_matrix/key/v2/query",
                                               content=notary_query_body(requests), signed=False)
        except FederationRequestError as e:
            log.info("notary %s did not answer: %s", notary.server_name, e)
            return []
        good, problems = check_notary_response(
            answer, notary.server_name, notary.verify_keys, {r.server_name for r in requests},
            fetched_ts=self.clock_ms(),
        )
        for problem in problems:
            log.warning("%s", problem)
        return good

    async def fetch(self, requests: Sequence[KeyRequest]) -> list[ServerKeyResponse]:
        missing = merge_key_requests(requests)
        out: list[ServerKeyResponse] = []
        for notary in self.notaries:
            # A notary is not asked about itself: its own keys come from it directly.
            asking = [r for r in missing if r.server_name != notary.server_name]
            servers = sorted({r.server_name for r in asking})
            for i in range(0, len(servers), self.batch_size):
                batch = set(servers[i:i + self.batch_size])
                out += await self._ask(notary, [r for r in asking if r.server_name in batch])
            answered = set(_satisfied(missing, out))
            missing = [r for r in missing if r not in answered]
            if not missing:
                break
        return out


class ChainedKeyFetcher:
    """Each fetcher in turn, for the requests the previous ones left unanswered."""

    def __init__(self, fetchers: Sequence[KeyFetcher]):
        self.fetchers = tuple(fetchers)

    async def fetch(self, requests: Sequence[KeyRequest]) -> list[ServerKeyResponse]:
        missing = merge_key_requests(requests)
        out: list[ServerKeyResponse] = []
        for fetcher in self.fetchers:
            if not missing:
                break
            out += await fetcher.fetch(missing)
            answered = set(_satisfied(missing, out))
            missing = [r for r in missing if r not in answered]
        return out


class Backoff:
    """Retry delays per server, or per key of a server: ``initial_s`` after a failure,
    multiplied after each further failure up to ``maximum_s``; a success clears it."""

    def __init__(self, *, initial_s: float = 30.0, multiplier: float = 2.0, maximum_s: float = 3600.0,
                 monotonic: Callable[[], float] = time.monotonic):
        self.initial_s = initial_s
        self.multiplier = multiplier
        self.maximum_s = maximum_s
        self.monotonic = monotonic
        # (server, key ID or None) -> (retry at, last delay)
        self._state: dict[tuple[str, str | None], tuple[float, float]] = {}

    def blocked(self, server_name: str, key_id: str | None = None) -> bool:
        state = self._state.get((server_name, key_id))
        return state is not None and self.monotonic() < state[0]

    def failed(self, server_name: str, key_id: str | None = None) -> None:
        previous = self._state.get((server_name, key_id))
        delay = self.initial_s if previous is None else min(previous[1] * self.multiplier, self.maximum_s)
        self._state[(server_name, key_id)] = (self.monotonic() + delay, delay)

    def succeeded(self, server_name: str, key_id: str | None = None) -> None:
        self._state.pop((server_name, key_id), None)

    def reset(self, server_name: str) -> None:
        """Forget past failures of the server and of each of its keys (e.g. the server
        just proved it is up)."""
        for k in [k for k in self._state if k[0] == server_name]:
            del self._state[k]


class CoalescingKeyFetcher:
    """Wraps a fetcher: a server with a fetch in flight is not asked again (callers
    share the result), and a key whose last fetch did not bring it (the server was
    unreachable, refused, or answered without it) is not asked for again until its
    backoff ends. The backoff is per key, not per server: a server that lacked one key
    (or refused one query) is still asked for another."""

    def __init__(self, inner: KeyFetcher, backoff: Backoff | None = None):
        self.inner = inner
        self.backoff = backoff or Backoff()
        self._inflight: dict[str, asyncio.Future[list[ServerKeyResponse]]] = {}
        #: Number of fetches passed to ``inner`` (for tests and metrics).
        self.fetches = 0

    async def fetch(self, requests: Sequence[KeyRequest]) -> list[ServerKeyResponse]:
        requests = merge_key_requests(requests)
        out: list[ServerKeyResponse] = []
        waiting: list[asyncio.Future[list[ServerKeyResponse]]] = []
        mine: list[KeyRequest] = []
        for r in requests:
            shared = self._inflight.get(r.server_name)
            if shared is not None:
                if shared not in waiting:
                    waiting.append(shared)
            elif not self.backoff.blocked(r.server_name, r.key_id):
                mine.append(r)
        if mine:
            out += await self._run(mine)
        for shared in waiting:
            out += await asyncio.shield(shared)
        # What a shared fetch did not answer (it was for other key IDs) is asked once more.
        again = [r for r in requests if r.server_name not in {m.server_name for m in mine}
                 and not _satisfied([r], out) and r.server_name not in self._inflight
                 and not self.backoff.blocked(r.server_name, r.key_id)]
        if again:
            out += await self._run(again)
        return out

    async def _run(self, requests: list[KeyRequest]) -> list[ServerKeyResponse]:
        servers = sorted({r.server_name for r in requests})
        loop = asyncio.get_running_loop()
        futures = {s: loop.create_future() for s in servers}
        self._inflight.update(futures)
        self.fetches += 1
        results: list[ServerKeyResponse] = []
        try:
            results = await self.inner.fetch(requests)
        except Exception:  # a bug in a fetcher must not leave waiters hanging
            log.exception("key fetch for %s failed", ", ".join(servers))
        finally:
            for s, fut in futures.items():
                self._inflight.pop(s, None)
                fut.set_result([r for r in results if r.server_name == s])
        for r in requests:
            if _known(r, results):
                self.backoff.succeeded(r.server_name, r.key_id)
            else:  # unreachable, or without the key asked for: not asked again for a while
                self.backoff.failed(r.server_name, r.key_id)
        return results
