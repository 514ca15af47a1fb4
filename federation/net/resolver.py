"""Server name -> where to connect: IP literals, well-known delegation, SRV, A/AAAA.

Spec: server-server API, "Resolving server names" and "TLS".
https://spec.matrix.org/latest/server-server-api/#resolving-server-names

:class:`ServerResolver` runs the spec's ordered steps and returns a
:class:`ResolvedServer`: the ``(ip, port)`` candidates to try in order, the ``Host``
header, and the name the TLS certificate must be valid for (also the SNI, unless it is an
IP address). The pure parts (name grammar, well-known parsing, cache lifetimes, RFC 2782
ordering) are in ``federation.server_discovery``.

DNS goes through dnspython's async resolver (:class:`DnsResolver`, also an aiohttp
resolver), optionally against configured ``dns_nameservers``. Every address is checked
against the outbound :class:`~federation.net.ip_ranges.IPRangePolicy`, both when
resolving and when the well-known fetch connects (:func:`create_connector`).

Using a ResolvedServer with aiohttp (what the federation client does)::

    resolved = await resolver.resolve("example.org")
    for candidate in resolved.candidates:
        async with session.get(resolved.url("/_matrix/federation/v1/version", candidate),
                               headers={"Host": resolved.host_header},
                               server_hostname=resolved.sni) as resp: ...
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import random as _random
import socket
import ssl
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from yarl import URL

from federation.net.ip_ranges import BlockedAddressError, IPRangePolicy, PolicyResolver, policy_socket_factory
from federation.server_discovery import (
    DEFAULT_FEDERATION_PORT,
    SRV_SERVICE,
    SRV_SERVICE_LEGACY,
    WELL_KNOWN_MAX_BODY_BYTES,
    WELL_KNOWN_MAX_REDIRECTS,
    WELL_KNOWN_PATH,
    InvalidWellKnown,
    ServerAddress,
    ServerDiscoveryError,
    ServiceUnavailable,
    SrvRecord,
    WellKnownCacheEntry,
    cache_lifetime,
    entry_after_failure,
    entry_after_success,
    order_srv_records,
    parse_well_known,
    split_server_name,
)

__all__ = [
    "ResolutionError",
    "DnsLookupError",
    "ResolvedServer",
    "DnsResolver",
    "ServerResolver",
    "WellKnownFetch",
    "create_connector",
    "parse_nameserver",
    "ServiceUnavailable",
    "BlockedAddressError",
]

logger = logging.getLogger(__name__)

_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
_NUMERIC_FLAGS = socket.AI_NUMERICHOST | socket.AI_NUMERICSERV


class ResolutionError(ServerDiscoveryError):
    """A server name could not be turned into any address to connect to."""


class DnsLookupError(OSError):
    """A DNS name has no A/AAAA records, or DNS failed (an OSError, as aiohttp expects)."""


def parse_nameserver(value: str | tuple[str, int]) -> tuple[str, int]:
    """``"127.0.0.1:5353"``, ``"[::1]:53"``, ``"10.0.0.1"`` or a tuple -> ``(ip, port)``."""
    if isinstance(value, tuple):
        host, port = value
    elif value.startswith("["):
        host, _, rest = value[1:].partition("]")
        port = int(rest[1:]) if rest.startswith(":") else 53
    elif value.count(":") == 1:
        host, _, port_text = value.partition(":")
        port = int(port_text)
    else:
        host, port = value, 53
    ipaddress.ip_address(host)  # a nameserver must be an IP address
    return host, int(port)


@dataclass(frozen=True)
class ResolvedServer:
    """Where and how to connect to a Matrix server.

    ``candidates``: ``(ip, port)`` pairs in the order to try them. ``host_header``: the
    ``Host`` header (the delegated server name, with its port if it has one).
    ``tls_server_name``: the name (or IP address) the certificate must be valid for; never
    an SRV target. ``delegated_name`` equals ``server_name`` when there is no delegation.
    """

    server_name: str
    delegated_name: str
    candidates: tuple[tuple[str, int], ...]
    host_header: str
    tls_server_name: str

    @property
    def sni(self) -> str | None:
        """The TLS SNI to send: the certificate name, or None for an IP address (spec, "TLS")."""
        try:
            ipaddress.ip_address(self.tls_server_name)
        except ValueError:
            return self.tls_server_name
        return None

    def url(self, path: str, candidate: tuple[str, int] | None = None) -> str:
        """``https://<ip>:<port><path>`` for a candidate (the first by default)."""
        ip, port = candidate if candidate is not None else self.candidates[0]
        host = f"[{ip}]" if ":" in ip else ip
        return f"https://{host}:{port}{path}"


class DnsResolver(AbstractResolver):
    """DNS through dnspython's async resolver: SRV and A/AAAA lookups, with a TTL cache.

    ``nameservers``: ``[(ip, port), ...]``, or None for the system's (/etc/resolv.conf).
    Also an aiohttp resolver (``resolve(host, port, family)``); note that it does not read
    /etc/hosts.
    """

    def __init__(
        self,
        nameservers: Sequence[tuple[str, int] | str] | None = None,
        *,
        timeout: float = 5.0,
        cache_size: int = 10_000,
    ):
        self._nameservers = [parse_nameserver(ns) for ns in nameservers] if nameservers else None
        self._timeout, self._cache_size = timeout, cache_size
        self._resolver: Any = None

    def _dnspython(self) -> Any:
        """dnspython's resolver, made (and dnspython imported) at the first lookup: a
        server that never resolves a name does not carry it (docs/performance.md, "Memory")."""
        if self._resolver is None:
            import dns.asyncresolver
            import dns.nameserver
            import dns.resolver

            if self._nameservers is not None:
                resolver = dns.asyncresolver.Resolver(configure=False)
                resolver.nameservers = [dns.nameserver.Do53Nameserver(*ns) for ns in self._nameservers]
            else:
                resolver = dns.asyncresolver.Resolver()
            resolver.lifetime = self._timeout
            resolver.timeout = min(self._timeout, 2.0)
            resolver.cache = dns.resolver.LRUCache(self._cache_size) if self._cache_size else None
            self._resolver = resolver
        return self._resolver

    async def _query(self, name: str, rdtype: str) -> list[Any]:
        """The records of one type ("SRV", "A", "AAAA"); [] when the name or the type
        does not exist."""
        import dns.exception
        import dns.name
        import dns.resolver

        resolver = self._dnspython()
        try:
            answer = await resolver.resolve(name, rdtype, search=False)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return []
        except (dns.exception.SyntaxError, dns.name.NameTooLong):
            return []  # no such name can exist (an empty or over-long label: "a..b")
        except dns.resolver.NoNameservers as e:
            raise DnsLookupError(f"DNS lookup of {rdtype} {name} failed: {e}") from e
        except dns.exception.Timeout as e:
            raise DnsLookupError(f"DNS lookup of {rdtype} {name} timed out") from e
        return list(answer)

    async def lookup_srv(self, name: str) -> list[SrvRecord]:
        """SRV records for ``name`` (e.g. ``_matrix-fed._tcp.example.org``); [] if none."""
        return [
            SrvRecord(r.priority, r.weight, r.port, r.target.to_text(omit_final_dot=True) or ".")
            for r in await self._query(name, "SRV")
        ]

    async def lookup_addresses(self, host: str, family: int = socket.AF_UNSPEC) -> list[str]:
        """IP addresses of ``host`` (CNAMEs followed), IPv6 and IPv4 interleaved, IPv6 first.

        Raises DnsLookupError when there are none; a failure of one family is tolerated
        when the other gives addresses.
        """
        try:
            return [str(ipaddress.ip_address(host))]
        except ValueError:
            pass
        types = []
        if family in (socket.AF_UNSPEC, socket.AF_INET6):
            types.append("AAAA")
        if family in (socket.AF_UNSPEC, socket.AF_INET):
            types.append("A")
        results = await asyncio.gather(*(self._query(host, t) for t in types), return_exceptions=True)
        lists = [[r.address for r in res] for res in results if not isinstance(res, BaseException)]
        errors = [res for res in results if isinstance(res, BaseException)]
        addresses = [a for group in _interleave(lists) for a in group]
        if not addresses:
            if errors:
                raise errors[0]
            raise DnsLookupError(f"no A/AAAA records for {host}")
        return addresses

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        addresses = await self.lookup_addresses(host, family)
        return [
            {
                "hostname": host,
                "host": a,
                "port": port,
                "family": socket.AF_INET6 if ":" in a else socket.AF_INET,
                "proto": 0,
                "flags": _NUMERIC_FLAGS,
            }
            for a in addresses
        ]

    async def close(self) -> None:
        return None


def _interleave(lists: list[list[str]]) -> list[list[str]]:
    out: list[list[str]] = []
    for i in range(max((len(x) for x in lists), default=0)):
        out.append([x[i] for x in lists if i < len(x)])
    return out


def create_connector(
    *,
    policy: IPRangePolicy | None,
    dns_resolver: AbstractResolver | None = None,
    ssl_context: ssl.SSLContext | None = None,
    **kwargs: Any,
) -> aiohttp.TCPConnector:
    """An aiohttp connector that applies ``policy`` to every address it connects to.

    Names are resolved as the operating system does (``getaddrinfo`` in a thread:
    /etc/hosts, then DNS), as an operator expects of a URL such as a push gateway's or an
    identity server's, unless ``dns_resolver`` is given (a :class:`DnsResolver`, for
    configured nameservers). Resolved names are filtered by a PolicyResolver, and literal
    IPs (which aiohttp does not resolve) by a socket factory, so a name that resolves (or
    later re-resolves) to a blocked range fails with BlockedAddressError before any
    connection. ``policy=None`` turns the checks off. ``ssl_context`` defaults to Python's
    (the system's trust store, which honours ``SSL_CERT_FILE`` / ``SSL_CERT_DIR``).
    Needs aiohttp >= 3.12 (``socket_factory``).
    """
    resolver = dns_resolver or aiohttp.ThreadedResolver()
    if policy is not None:
        resolver = PolicyResolver(policy, resolver)
        kwargs["socket_factory"] = policy_socket_factory(policy)
    return aiohttp.TCPConnector(
        resolver=resolver,
        ssl=ssl_context if ssl_context is not None else ssl.create_default_context(),
        use_dns_cache=False,
        **kwargs,
    )


@dataclass(frozen=True)
class WellKnownFetch:
    """The outcome of one well-known fetch: a delegated name, or an error and whether it is
    ``transient`` (no HTTP answer, 5xx) as opposed to a definitive answer (404, bad JSON...)."""

    delegated: ServerAddress | None
    lifetime: float = 0.0
    error: str | None = None
    transient: bool = False


class ServerResolver:
    """Resolves server names per the spec, with a bounded well-known cache.

    Parameters: ``nameservers`` (config ``dns_nameservers``), ``ip_policy`` (None: no
    outbound range checks), ``ssl_context`` for the well-known HTTPS fetch (default: the
    system's CAs), ``well_known_port`` (443; tests use a free port), ``clock`` (Unix
    seconds, injectable), ``random`` (for SRV weights), ``well_known_timeout`` (seconds for
    one fetch, redirects included).

    Use as ``async with ServerResolver(...) as r`` or call ``close()``.
    """

    def __init__(
        self,
        *,
        nameservers: Sequence[tuple[str, int] | str] | None = None,
        ip_policy: IPRangePolicy | None = None,
        ssl_context: ssl.SSLContext | None = None,
        well_known_port: int = 443,
        clock: Callable[[], float] = time.time,
        random: Callable[[], float] = _random.random,
        well_known_timeout: float = 10.0,
        dns_timeout: float = 5.0,
        max_cache_entries: int = 10_000,
        user_agent: str = "Gateway",
        dns_resolver: DnsResolver | None = None,
    ):
        self.dns = dns_resolver or DnsResolver(nameservers, timeout=dns_timeout)
        self.ip_policy = ip_policy
        self._ssl_context = ssl_context
        self.well_known_port = well_known_port
        self._clock = clock
        self._random = random
        self._timeout = well_known_timeout
        self._max_entries = max_cache_entries
        self._user_agent = user_agent
        self._cache: dict[str, WellKnownCacheEntry] = {}
        self._inflight: dict[str, asyncio.Future[ServerAddress | None]] = {}
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> "ServerResolver":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    # -- the spec's steps ---------------------------------------------------------------

    async def resolve(self, server_name: str, *, well_known: WellKnownFetch | None = None) -> ResolvedServer:
        """Run "Resolving server names" for ``server_name``.

        ``well_known``: a fetch already made (the federation tester's), used instead of
        the cache. Raises InvalidServerName, ServiceUnavailable (SRV target "."),
        DnsLookupError / ResolutionError (no address), BlockedAddressError (every address
        is blocked).
        """
        address = split_server_name(server_name)
        target = address
        if address.ip is None and address.port is None:
            delegated = well_known.delegated if well_known is not None else await self.get_well_known(address)
            if delegated is not None:
                target = delegated
        candidates = await self._candidates(target)
        if self.ip_policy is not None:
            allowed = [c for c in candidates if self.ip_policy.is_allowed(c[0])]
            if not allowed:
                raise BlockedAddressError(target.text, [ip for ip, _ in candidates])
            candidates = allowed
        return ResolvedServer(
            server_name=server_name,
            delegated_name=target.text,
            candidates=tuple(candidates),
            host_header=target.host_header,
            tls_server_name=target.tls_name,
        )

    async def _candidates(self, target: ServerAddress) -> list[tuple[str, int]]:
        """Steps 1, 2, 4-6 (and 3.1-3.5 for a delegated name): addresses and ports."""
        if target.ip is not None:
            return [(str(target.ip), target.port or DEFAULT_FEDERATION_PORT)]
        if target.port is not None:
            return [(a, target.port) for a in await self.dns.lookup_addresses(target.host)]
        for service in (SRV_SERVICE, SRV_SERVICE_LEGACY):
            try:
                records = await self.dns.lookup_srv(f"{service}.{target.host}")
            except DnsLookupError as e:
                logger.info("SRV lookup for %s failed, treating as no record: %s", target.host, e)
                records = []
            if records:
                return await self._srv_candidates(target, service, records)
        return [(a, DEFAULT_FEDERATION_PORT) for a in await self.dns.lookup_addresses(target.host)]

    async def _srv_candidates(
        self, target: ServerAddress, service: str, records: list[SrvRecord]
    ) -> list[tuple[str, int]]:
        ordered = order_srv_records(records, self._random)
        lookups = await asyncio.gather(
            *(self.dns.lookup_addresses(r.target) for r in ordered), return_exceptions=True
        )
        candidates: list[tuple[str, int]] = []
        for record, found in zip(ordered, lookups):
            if isinstance(found, BaseException):
                logger.info("SRV target %s of %s.%s: %s", record.target, service, target.host, found)
                continue
            candidates.extend((a, record.port) for a in found if (a, record.port) not in candidates)
        if not candidates:
            raise ResolutionError(f"no SRV target of {service}.{target.host} has an address")
        return candidates

    # -- well-known ---------------------------------------------------------------------

    async def get_well_known(self, server: ServerAddress | str) -> ServerAddress | None:
        """The delegated server name from ``server``'s well-known (cached), or None."""
        if isinstance(server, str):
            server = split_server_name(server)
        key = server.cache_key
        entry = self._cache.get(key)
        if entry is not None and not entry.needs_refresh(self._clock()):
            return entry.delegated
        pending = self._inflight.get(key)
        if pending is None:
            pending = asyncio.ensure_future(self._refresh(server, entry))
            self._inflight[key] = pending
            pending.add_done_callback(lambda _f: self._inflight.pop(key, None))
        return await asyncio.shield(pending)

    async def _refresh(self, server: ServerAddress, previous: WellKnownCacheEntry | None) -> ServerAddress | None:
        fetch = await self.fetch_well_known(server)
        now = self._clock()
        if fetch.delegated is not None:
            entry = entry_after_success(fetch.delegated, fetch.lifetime, now)
        else:
            logger.info("no usable well-known for %s: %s", server.text, fetch.error)
            entry = entry_after_failure(previous, now, transient=fetch.transient)
        self._store(server.cache_key, entry)
        return entry.delegated if entry.usable(now) else None

    def _store(self, key: str, entry: WellKnownCacheEntry) -> None:
        self._cache.pop(key, None)
        self._cache[key] = entry
        while len(self._cache) > self._max_entries:
            del self._cache[next(iter(self._cache))]

    def cached_well_known(self, server_name: str) -> WellKnownCacheEntry | None:
        """The cache entry for ``server_name``, if any (for diagnostics and admin tools)."""
        return self._cache.get(split_server_name(server_name).cache_key)

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = create_connector(
                policy=self.ip_policy, dns_resolver=self.dns, ssl_context=self._ssl_context, limit=100
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                cookie_jar=aiohttp.DummyCookieJar(),
                trust_env=False,
                headers={"User-Agent": self._user_agent},
            )
        return self._session

    async def fetch_well_known(self, server: ServerAddress) -> WellKnownFetch:
        """One uncached fetch of ``https://<host>/.well-known/matrix/server``.

        Follows at most WELL_KNOWN_MAX_REDIRECTS https redirects (no loops), reads at most
        WELL_KNOWN_MAX_BODY_BYTES, gives up after ``well_known_timeout`` seconds.
        """
        url = URL.build(scheme="https", host=server.host, port=self.well_known_port, path=WELL_KNOWN_PATH)
        return await self.fetch_well_known_url(url)

    async def fetch_well_known_url(self, url: URL) -> WellKnownFetch:
        """:meth:`fetch_well_known` from a given URL (the tester follows a redirect with it)."""
        try:
            async with asyncio.timeout(self._timeout):
                return await self._fetch(url)
        except TimeoutError:
            return WellKnownFetch(None, error=f"timed out after {self._timeout}s", transient=True)
        except (aiohttp.ClientError, OSError, ssl.SSLError) as e:
            return WellKnownFetch(None, error=f"{type(e).__name__}: {e}", transient=True)
        except ValueError as e:  # an unusable redirect Location
            return WellKnownFetch(None, error=f"bad redirect: {e}")

    async def _fetch(self, url: URL) -> WellKnownFetch:
        session = self._get_session()
        seen = {url}
        for _ in range(WELL_KNOWN_MAX_REDIRECTS + 1):
            async with session.get(url, allow_redirects=False) as resp:
                if resp.status in _REDIRECT_STATUSES:
                    location = resp.headers.get("Location")
                    if not location:
                        return WellKnownFetch(None, error=f"{resp.status} without Location")
                    url = resp.url.join(URL(location))
                    if url.scheme != "https":
                        return WellKnownFetch(None, error=f"redirect to non-https URL {url}")
                    if url in seen:
                        return WellKnownFetch(None, error=f"redirect loop at {url}")
                    seen.add(url)
                    continue
                if resp.status != 200:
                    return WellKnownFetch(None, error=f"HTTP {resp.status}", transient=resp.status >= 500)
                body = await _read_capped(resp, WELL_KNOWN_MAX_BODY_BYTES)
                if body is None:
                    return WellKnownFetch(None, error=f"body over {WELL_KNOWN_MAX_BODY_BYTES} bytes")
                try:
                    delegated = parse_well_known(body)
                except InvalidWellKnown as e:
                    return WellKnownFetch(None, error=str(e))
                return WellKnownFetch(delegated, lifetime=cache_lifetime(resp.headers, self._clock()))
        return WellKnownFetch(None, error=f"more than {WELL_KNOWN_MAX_REDIRECTS} redirects")


async def _read_capped(resp: aiohttp.ClientResponse, limit: int) -> bytes | None:
    """The body, or None as soon as it is known to exceed ``limit`` bytes."""
    if resp.content_length is not None and resp.content_length > limit:
        return None
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = await resp.content.read(16 * 1024)
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
