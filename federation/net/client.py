"""Outbound federation requests: resolved per the spec, signed with X-Matrix.

The X-Matrix signature covers the exact encoded request target that goes on the wire,
so URLs are built already encoded (``encoded=True``) and never re-quoted by yarl.
Spec: server-server API, "Request Authentication".
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import json
import ssl
from typing import Any, AsyncIterator, Mapping
from urllib.parse import urlencode

import aiohttp
import orjson
from yarl import URL

from ..canonical_json import parse_json
from ..server_discovery import ServerDiscoveryError
from ..signing import ServerSigningKey, build_x_matrix_authorization
from .ip_ranges import IPRangePolicy
from .resolver import ServerResolver, create_connector

MAX_RESPONSE_BYTES = 50 * 1024 * 1024


class FederationRequestError(Exception):
    """The remote answered with an error, or could not be reached."""

    def __init__(self, destination: str, message: str, status: int | None = None, body: Any = None):
        super().__init__(f"{destination}: {message}")
        self.destination = destination
        self.status = status
        self.body = body


class FederationClient:
    def __init__(
        self,
        *,
        server_name: str,
        signing_key: ServerSigningKey,
        resolver: ServerResolver,
        ssl_context: ssl.SSLContext | None = None,
        ip_policy: IPRangePolicy | None = None,
        timeout: float = 30.0,
        no_verify_patterns: tuple[str, ...] = (),
        domain_whitelist: frozenset[str] | None = None,
    ):
        self.server_name = server_name
        self.signing_key = signing_key
        self.resolver = resolver
        self.ssl_context = ssl_context or ssl.create_default_context()
        self.ip_policy = ip_policy
        self.timeout = aiohttp.ClientTimeout(total=timeout, connect=min(10.0, timeout))
        #: ``federation_certificate_verification_whitelist``: hosts (globs) whose
        #: certificates are not checked.
        self.no_verify_patterns = tuple(p.lower() for p in no_verify_patterns)
        #: ``federation_domain_whitelist``: when set, no other server is contacted.
        self.domain_whitelist = domain_whitelist
        # Verifies nothing, so it loads no trust store (0.6 MiB a context).
        self._insecure_context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        self._insecure_context.check_hostname = False
        self._insecure_context.verify_mode = ssl.CERT_NONE
        self._session: aiohttp.ClientSession | None = None

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = create_connector(policy=self.ip_policy, ssl_context=self.ssl_context)
            self._session = aiohttp.ClientSession(connector=connector, timeout=self.timeout,
                                                  headers={"User-Agent": "Gateway"})
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def request(
        self,
        method: str,
        destination: str,
        path: str,
        *,
        query: Mapping[str, str] | None = None,
        content: Any = None,
        signed: bool = True,
        timeout: float | None = None,
        max_response_bytes: int = MAX_RESPONSE_BYTES,
        signing_key: ServerSigningKey | None = None,
        parse: bool = True,
    ) -> Any:
        """Send a request and return the parsed JSON answer (``parse=False``: a 2xx
        answer's body as bytes, unparsed: a big answer the caller reads piecewise).

        ``path`` must already be percent-encoded (see ``signing.quote_path_segment``).
        ``timeout`` (seconds, whole request) overrides the client's default.
        Raises FederationRequestError on a non-2xx answer, an answer larger than
        ``max_response_bytes``, a timeout, or when no address works (including
        addresses the IP range policy blocks). ``signing_key``: sign with this key
        instead of the server's (the federation tester's key of one run).
        """
        target, headers, body, resolved, extra = await self._prepare(
            method, destination, path, query, content, signed, timeout, signing_key)
        last_error: Exception | None = None
        for ip, port in resolved.candidates:
            literal = f"[{ip}]" if ":" in ip else ip
            url = URL(f"https://{literal}:{port}{target}", encoded=True)
            try:
                async with self._get_session().request(
                    method, url, data=body, headers=headers, server_hostname=resolved.sni,
                    allow_redirects=False, **extra,
                ) as resp:
                    if resp.content_length is not None and resp.content_length > max_response_bytes:
                        raise FederationRequestError(destination, "response too large", resp.status)
                    raw = await _read_at_most(resp, max_response_bytes + 1)
                    if len(raw) > max_response_bytes:
                        raise FederationRequestError(destination, "response too large", resp.status)
                    if not parse and resp.status < 300:
                        return raw
                    parsed = _parse_json(raw) if raw else None
                    start = bytes(raw[:200])
                    del raw  # a big answer's buffer goes before its parsed form is used
                    if resp.status >= 300:
                        raise FederationRequestError(destination, f"HTTP {resp.status}: {start!r}",
                                                     resp.status, parsed)
                    if parsed is None:
                        raise FederationRequestError(destination, "answer is not JSON", resp.status)
                    return parsed
            except (aiohttp.ClientError, OSError, asyncio.TimeoutError) as e:
                last_error = e
                continue
        what = "timed out" if isinstance(last_error, asyncio.TimeoutError) else str(last_error)
        raise FederationRequestError(destination, f"no address answered: {what}")


    async def _prepare(self, method: str, destination: str, path: str, query: Mapping[str, str] | None,
                       content: Any, signed: bool, timeout: float | None,
                       signing_key: ServerSigningKey | None = None):
        """The request target, headers, body, resolved destination and per-request options."""
        if self.domain_whitelist is not None and destination not in self.domain_whitelist:
            raise FederationRequestError(destination, "not in federation_domain_whitelist")
        target = path + ("?" + urlencode(query) if query else "")
        headers = {}
        body = None
        if content is not None:
            body = json.dumps(content).encode("utf-8")
            headers["Content-Type"] = "application/json"
        if signed:
            headers["Authorization"] = build_x_matrix_authorization(
                method, target, self.server_name, destination, content, signing_key or self.signing_key
            )
        try:
            resolved = await self.resolver.resolve(destination)
        except (OSError, ValueError, ServerDiscoveryError) as e:
            raise FederationRequestError(destination, f"cannot resolve: {e}") from e
        headers["Host"] = resolved.host_header
        host = resolved.tls_server_name.lower()
        skip_verify = any(fnmatch.fnmatchcase(host, p) for p in self.no_verify_patterns)
        extra: dict[str, Any] = {"ssl": self._insecure_context} if skip_verify else {}
        if timeout is not None:
            extra["timeout"] = aiohttp.ClientTimeout(total=timeout, connect=min(10.0, timeout))
        return target, headers, body, resolved, extra

    @contextlib.asynccontextmanager
    async def stream(
        self,
        method: str,
        destination: str,
        path: str,
        *,
        query: Mapping[str, str] | None = None,
        signed: bool = True,
        timeout: float | None = None,
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """Send a signed request and hand over the response unread, whatever its status
        (media downloads: the caller reads the body with its own size limit).

        Raises FederationRequestError when no address answers.
        """
        target, headers, body, resolved, extra = await self._prepare(
            method, destination, path, query, None, signed, timeout)
        last_error: Exception | None = None
        for ip, port in resolved.candidates:
            literal = f"[{ip}]" if ":" in ip else ip
            url = URL(f"https://{literal}:{port}{target}", encoded=True)
            try:
                resp = await self._get_session().request(
                    method, url, data=body, headers=headers, server_hostname=resolved.sni,
                    allow_redirects=False, **extra,
                )
            except (aiohttp.ClientError, OSError, asyncio.TimeoutError) as e:
                last_error = e
                continue
            try:
                yield resp
            finally:
                resp.release()
            return
        what = "timed out" if isinstance(last_error, asyncio.TimeoutError) else str(last_error)
        raise FederationRequestError(destination, f"no address answered: {what}")


async def _read_at_most(resp: aiohttp.ClientResponse, limit: int) -> bytearray:
    """The body, stopping once ``limit`` bytes have arrived (one growing buffer: a
    send_join answer of a big room is tens of MB)."""
    body = bytearray()
    async for chunk in resp.content.iter_chunked(65536):
        body += chunk
        if len(body) >= limit:
            break
    return body


def _parse_json(raw: bytes | bytearray) -> Any:
    """The JSON of an answer, or None. orjson parses the bytes in place (no decoded copy
    of a big answer, and faster); what it refuses but the standard library takes
    (integers beyond 64 bits, NaN) is parsed by the latter, as before."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        pass
    try:
        return parse_json(raw, allow_constants=True)
    except ValueError:
        return None
