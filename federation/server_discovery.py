"""Server discovery: the pure parts of resolving a server name.

Spec: server-server API, "Resolving server names".
https://spec.matrix.org/latest/server-server-api/#resolving-server-names

What lives here (plain data in, plain data out, no I/O, no clock):

- :func:`split_server_name`: a server name (``host[:port]``) as a :class:`ServerAddress`,
  telling IP literals from DNS names.
- :func:`parse_well_known`: the body of ``/.well-known/matrix/server`` -> the delegated name.
- :func:`cache_lifetime`: how long to keep a well-known answer, from ``Cache-Control`` /
  ``Expires``, within bounds; :class:`WellKnownCacheEntry` and the two functions that
  make entries after a fetch (:func:`entry_after_success`, :func:`entry_after_failure`).
- :func:`order_srv_records`: RFC 2782 ordering (priority, then weighted random by weight)
  given the records and a random source.

The network side (DNS, HTTPS, the cache itself) is ``federation.net.resolver``.
"""

from __future__ import annotations

import ipaddress
import json
import re
from dataclasses import dataclass, replace
from email.utils import parsedate_to_datetime
from typing import Callable, Iterable, Mapping, Sequence

__all__ = [
    "DEFAULT_FEDERATION_PORT",
    "WELL_KNOWN_PATH",
    "WELL_KNOWN_MAX_BODY_BYTES",
    "WELL_KNOWN_MAX_REDIRECTS",
    "WELL_KNOWN_DEFAULT_CACHE_SECONDS",
    "WELL_KNOWN_MIN_CACHE_SECONDS",
    "WELL_KNOWN_MAX_CACHE_SECONDS",
    "WELL_KNOWN_FAILURE_CACHE_SECONDS",
    "WELL_KNOWN_MAX_STALE_SECONDS",
    "SRV_SERVICE",
    "SRV_SERVICE_LEGACY",
    "ServerDiscoveryError",
    "InvalidServerName",
    "InvalidWellKnown",
    "ServiceUnavailable",
    "ServerAddress",
    "split_server_name",
    "parse_well_known",
    "cache_lifetime",
    "WellKnownCacheEntry",
    "entry_after_success",
    "entry_after_failure",
    "refresh_retry_delay",
    "SrvRecord",
    "order_srv_records",
]

#: The port used when neither the server name nor SRV give one.
DEFAULT_FEDERATION_PORT = 8448
WELL_KNOWN_PATH = "/.well-known/matrix/server"
#: A well-known body larger than this is refused (it is a few dozen bytes in practice).
WELL_KNOWN_MAX_BODY_BYTES = 50 * 1024
#: 30x redirects followed for one well-known fetch (loops end here too).
WELL_KNOWN_MAX_REDIRECTS = 5
#: Cache bounds: the spec recommends 24 h by default and at most 48 h.
WELL_KNOWN_DEFAULT_CACHE_SECONDS = 24 * 3600
WELL_KNOWN_MIN_CACHE_SECONDS = 5 * 60
WELL_KNOWN_MAX_CACHE_SECONDS = 48 * 3600
#: How long "no (valid) well-known" is remembered; the spec recommends up to an hour.
WELL_KNOWN_FAILURE_CACHE_SECONDS = 3600
#: A good answer whose refresh keeps failing (network trouble, 5xx) stays in use this long
#: past its expiry, so that a short outage of a web server does not reroute federation.
WELL_KNOWN_MAX_STALE_SECONDS = 48 * 3600
#: Refresh a good answer once this fraction of its lifetime has passed.
WELL_KNOWN_REFRESH_FRACTION = 0.8
#: First retry of a failed refresh, doubled per failure up to WELL_KNOWN_FAILURE_CACHE_SECONDS.
WELL_KNOWN_REFRESH_RETRY_SECONDS = 120

SRV_SERVICE = "_matrix-fed._tcp"
#: Deprecated since spec v1.8, still looked up after SRV_SERVICE.
SRV_SERVICE_LEGACY = "_matrix._tcp"


class ServerDiscoveryError(Exception):
    """Base class of server discovery errors."""


class InvalidServerName(ServerDiscoveryError, ValueError):
    """A string does not follow the server name grammar."""


class InvalidWellKnown(ServerDiscoveryError, ValueError):
    """A well-known response body is unusable (the caller then proceeds as if there was none)."""


class ServiceUnavailable(ServerDiscoveryError):
    """An SRV answer says the service is decidedly not available (target ``.``, RFC 2782)."""


# ---------------------------------------------------------------------------
# Server names
# ---------------------------------------------------------------------------

_DNS_NAME = re.compile(r"[A-Za-z0-9.\-]{1,255}")
_IPV4_SHAPE = re.compile(r"[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}")
_IPV6_CHARS = re.compile(r"[0-9A-Fa-f:.]{2,45}")
_PORT = re.compile(r"[0-9]{1,5}")


@dataclass(frozen=True)
class ServerAddress:
    """A server name split into its parts.

    ``host`` is as written, without the brackets of an IPv6 literal; ``ip`` is set when
    the host is an IP literal; ``port`` is None when the name has no explicit port.
    ``text`` is the server name as given, which is also the ``Host`` header to send.
    """

    text: str
    host: str
    port: int | None
    ip: ipaddress.IPv4Address | ipaddress.IPv6Address | None

    @property
    def is_ip_literal(self) -> bool:
        return self.ip is not None

    @property
    def host_header(self) -> str:
        """The ``Host`` header value: the name as given, port included if it had one."""
        return self.text

    @property
    def tls_name(self) -> str:
        """The name the certificate must be valid for: the hostname or the IP address."""
        return str(self.ip) if self.ip is not None else self.host

    @property
    def cache_key(self) -> str:
        """DNS names are case-insensitive; a key for caches keyed by server name."""
        return self.text.lower()

    def __str__(self) -> str:
        return self.text


def split_server_name(name: str) -> ServerAddress:
    """Split ``name`` per the server name grammar (appendices, "Server Name").

    https://spec.matrix.org/latest/appendices/#server-name

    Raises InvalidServerName for anything the grammar does not allow, including an IPv4
    literal with a part over 255, an unbracketed IPv6 address, or port 0 / over 65535.
    """
    if not isinstance(name, str) or not name:
        raise InvalidServerName(f"server name must be a non-empty string, got {name!r}")
    port: int | None = None
    if name.startswith("["):
        close = name.find("]")
        if close < 0:
            raise InvalidServerName(f"unterminated IPv6 literal in server name {name!r}")
        host, rest = name[1:close], name[close + 1:]
        if rest:
            if not rest.startswith(":"):
                raise InvalidServerName(f"unexpected {rest!r} after IPv6 literal in {name!r}")
            port = _parse_port(rest[1:], name)
        if not _IPV6_CHARS.fullmatch(host):
            raise InvalidServerName(f"invalid IPv6 literal in server name {name!r}")
        try:
            ip: ipaddress.IPv4Address | ipaddress.IPv6Address | None = ipaddress.IPv6Address(host)
        except ValueError:
            raise InvalidServerName(f"invalid IPv6 literal in server name {name!r}") from None
        return ServerAddress(name, host, port, ip)

    host, sep, port_text = name.partition(":")
    if sep:
        if ":" in port_text:
            raise InvalidServerName(f"IPv6 literals must be in brackets: {name!r}")
        port = _parse_port(port_text, name)
    if not _DNS_NAME.fullmatch(host):
        raise InvalidServerName(f"invalid hostname in server name {name!r}")
    ip = None
    if _IPV4_SHAPE.fullmatch(host):
        if any(int(part) > 255 for part in host.split(".")):
            raise InvalidServerName(f"invalid IPv4 literal in server name {name!r}")
        ip = ipaddress.IPv4Address(".".join(str(int(p)) for p in host.split(".")))
    return ServerAddress(name, host, port, ip)


def _parse_port(text: str, name: str) -> int:
    if not _PORT.fullmatch(text):
        raise InvalidServerName(f"invalid port in server name {name!r}")
    port = int(text)
    if not 0 < port < 65536:
        raise InvalidServerName(f"port out of range in server name {name!r}")
    return port


# ---------------------------------------------------------------------------
# Well-known
# ---------------------------------------------------------------------------


def parse_well_known(body: bytes | str) -> ServerAddress:
    """The delegated server name from a ``/.well-known/matrix/server`` body.

    https://spec.matrix.org/latest/server-server-api/#getwell-knownmatrixserver

    The body is parsed as JSON whatever its Content-Type; it must be an object whose
    ``m.server`` is a string following the server name grammar. Raises InvalidWellKnown.
    """
    if isinstance(body, bytes):
        if len(body) > WELL_KNOWN_MAX_BODY_BYTES:
            raise InvalidWellKnown(f"well-known body is over {WELL_KNOWN_MAX_BODY_BYTES} bytes")
        try:
            body = body.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidWellKnown("well-known body is not UTF-8") from None
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        raise InvalidWellKnown("well-known body is not JSON") from None
    if not isinstance(data, dict):
        raise InvalidWellKnown(f"well-known body is a JSON {type(data).__name__}, not an object")
    server = data.get("m.server")
    if not isinstance(server, str):
        raise InvalidWellKnown("well-known has no string 'm.server'")
    try:
        return split_server_name(server)
    except InvalidServerName as e:
        raise InvalidWellKnown(f"well-known 'm.server' is not a server name: {e}") from None


def _header(headers: Mapping[str, str] | Iterable[tuple[str, str]], name: str) -> str | None:
    """Case-insensitive header lookup over a mapping or (name, value) pairs; first wins."""
    items = headers.items() if isinstance(headers, Mapping) else headers
    for key, value in items:
        if key.lower() == name:
            return value
    return None


def _cache_control(value: str) -> dict[str, str | None]:
    directives: dict[str, str | None] = {}
    for part in value.split(","):
        key, sep, arg = part.strip().partition("=")
        key = key.strip().lower()
        if key:
            directives[key] = arg.strip().strip('"') if sep else None
    return directives


def cache_lifetime(
    headers: Mapping[str, str] | Iterable[tuple[str, str]],
    now: float,
    *,
    default: float = WELL_KNOWN_DEFAULT_CACHE_SECONDS,
    minimum: float = WELL_KNOWN_MIN_CACHE_SECONDS,
    maximum: float = WELL_KNOWN_MAX_CACHE_SECONDS,
) -> float:
    """Seconds to cache a well-known response, from its headers, clamped to [minimum, maximum].

    ``Cache-Control: max-age`` wins over ``Expires`` (RFC 9111); ``no-store`` / ``no-cache``
    give the minimum (the bound that keeps us from refetching on every request); ``Expires``
    is taken relative to the response's ``Date`` when there is one (so clock skew does not
    matter), else to ``now`` (Unix seconds). Without usable headers: ``default``.
    """
    lifetime: float | None = None
    cc = _header(headers, "cache-control")
    if cc is not None:
        directives = _cache_control(cc)
        if "no-store" in directives or "no-cache" in directives:
            lifetime = 0
        elif directives.get("max-age") is not None:
            arg = directives["max-age"] or ""
            if arg.isdigit():
                lifetime = int(arg)
    if lifetime is None:
        expires = _header(headers, "expires")
        if expires is not None:
            expires_at = _http_date(expires)
            # An unparseable Expires (often "0" or "-1") means "already expired" (RFC 9111).
            if expires_at is None:
                lifetime = 0
            else:
                date = _header(headers, "date")
                base = _http_date(date) if date is not None else None
                lifetime = expires_at - (base if base is not None else now)
    if lifetime is None:
        lifetime = default
    return float(min(max(lifetime, minimum), maximum))


def _http_date(value: str) -> float | None:
    try:
        return parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


@dataclass(frozen=True)
class WellKnownCacheEntry:
    """What is known about one server's well-known, and until when.

    ``delegated`` is the delegated name, or None for "no (valid) well-known". Until
    ``refresh_at`` the entry is used as is; after it a refresh is due. A good answer stays
    usable until ``usable_until`` (past its nominal expiry) while refreshes fail for
    transient reasons; ``failures`` counts those consecutive failures.
    """

    delegated: ServerAddress | None
    fetched_at: float
    refresh_at: float
    expires_at: float
    usable_until: float
    failures: int = 0

    def needs_refresh(self, now: float) -> bool:
        return now >= self.refresh_at

    def usable(self, now: float) -> bool:
        return now < self.usable_until


def entry_after_success(
    delegated: ServerAddress | None, lifetime: float, now: float
) -> WellKnownCacheEntry:
    """A cache entry for a definitive answer that lasts ``lifetime`` seconds (see cache_lifetime).

    The refresh is due before the expiry (at WELL_KNOWN_REFRESH_FRACTION of the lifetime)
    so that a failed refresh can fall back on the still valid answer.
    """
    expires_at = now + lifetime
    if delegated is None:
        return WellKnownCacheEntry(None, now, expires_at, expires_at, expires_at)
    return WellKnownCacheEntry(
        delegated,
        fetched_at=now,
        refresh_at=now + lifetime * WELL_KNOWN_REFRESH_FRACTION,
        expires_at=expires_at,
        usable_until=expires_at + WELL_KNOWN_MAX_STALE_SECONDS,
    )


def refresh_retry_delay(failures: int) -> float:
    """Delay before retrying a failed refresh: exponential from 2 minutes, at most an hour."""
    return float(min(WELL_KNOWN_REFRESH_RETRY_SECONDS * 2 ** max(failures - 1, 0),
                     WELL_KNOWN_FAILURE_CACHE_SECONDS))


def entry_after_failure(
    previous: WellKnownCacheEntry | None, now: float, *, transient: bool
) -> WellKnownCacheEntry:
    """The cache entry after a fetch that gave no valid well-known.

    ``transient`` failures (no HTTP answer, timeout, 5xx) keep a previous good answer in use
    while it is usable, retrying with exponential back-off. Anything else (404, bad JSON, a
    definitive HTTP answer) or no good answer to fall back on gives a "no well-known" entry
    cached for WELL_KNOWN_FAILURE_CACHE_SECONDS.
    """
    if (
        transient
        and previous is not None
        and previous.delegated is not None
        and previous.usable(now)
    ):
        failures = previous.failures + 1
        retry_at = min(now + refresh_retry_delay(failures), previous.usable_until)
        return replace(previous, refresh_at=retry_at, failures=failures)
    failures = previous.failures + 1 if previous is not None and previous.delegated is None else 1
    until = now + WELL_KNOWN_FAILURE_CACHE_SECONDS
    return WellKnownCacheEntry(None, now, until, until, until, failures)


# ---------------------------------------------------------------------------
# SRV
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class SrvRecord:
    """One SRV answer (RFC 2782). ``target`` without the trailing dot; "." means no service."""

    priority: int
    weight: int
    port: int
    target: str


def order_srv_records(records: Sequence[SrvRecord], random: Callable[[], float]) -> list[SrvRecord]:
    """The order in which to try SRV targets (RFC 2782, "Usage rules").

    https://www.rfc-editor.org/rfc/rfc2782

    Lowest priority first; within one priority, repeatedly pick a record with probability
    proportional to its weight (zero-weight records get a small chance, placed first in the
    running sum as the RFC says). ``random`` returns a float in [0, 1). Raises
    ServiceUnavailable when the answer is the single record with target ``.``; ``.`` targets
    among other records are dropped.
    """
    if len(records) == 1 and records[0].target in (".", ""):
        raise ServiceUnavailable("SRV record says the service is not available (target '.')")
    usable = [r for r in records if r.target not in (".", "")]
    ordered: list[SrvRecord] = []
    for priority in sorted({r.priority for r in usable}):
        group = sorted((r for r in usable if r.priority == priority), key=lambda r: r.weight != 0)
        while group:
            total = sum(r.weight for r in group)
            pick = min(int(random() * (total + 1)), total)
            running = 0
            for i, record in enumerate(group):
                running += record.weight
                if running >= pick:
                    ordered.append(group.pop(i))
                    break
    return ordered
