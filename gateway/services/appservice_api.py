"""Requests to application services (the homeserver -> application service API).

Spec: https://spec.matrix.org/latest/application-service-api/#homeserver---application-service-api

Every request carries ``Authorization: Bearer <hs_token>`` (and, with Synapse's
``use_appservice_legacy_authorization``, the ``access_token`` query parameter of spec
versions before 1.4). Services are configured by the operator and usually listen on
loopback or a private network, so, as Synapse does, the outbound IP range blacklist is
not applied to their URLs; TLS uses the outbound certificate rules (the system CAs,
``federation_custom_ca_list``, ``federation_verify_certificates``) and names resolve
through the system resolver (``/etc/hosts``, container DNS), as the operator expects.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

import aiohttp

from federation.net.resolver import create_connector

from ..config import FederationConfig
from ..config.appservice import ApplicationService
from ..outbound import outbound_ssl_context

log = logging.getLogger(__name__)

PREFIX = "/_matrix/app/v1"
TRANSACTION_TIMEOUT_S = 60
QUERY_TIMEOUT_S = 30
PING_TIMEOUT_S = 15


class AppServiceRequestError(Exception):
    """A request that did not get a 2xx answer: ``status`` None when no HTTP answer came
    (``timed_out`` then says whether it was a timeout)."""

    def __init__(self, message: str, *, status: int | None = None, body: str = "", timed_out: bool = False):
        super().__init__(message)
        self.status = status
        self.body = body
        self.timed_out = timed_out


class AppServiceApi:
    def __init__(self, federation: FederationConfig, *, legacy_authorization: bool = False):
        self._federation = federation
        self._legacy = legacy_authorization
        self._session: aiohttp.ClientSession | None = None

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = create_connector(policy=None, dns_resolver=aiohttp.ThreadedResolver(),
                                         ssl_context=outbound_ssl_context(self._federation))
            self._session = aiohttp.ClientSession(connector=connector, headers={"User-Agent": "Gateway"})
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def request(self, service: ApplicationService, method: str, path: str, *, body: Any = None,
                      query: Mapping[str, Any] | None = None, timeout_s: float = QUERY_TIMEOUT_S) -> Any:
        """One request to the service (``path`` under its URL); the JSON answer of a 2xx.
        AppServiceRequestError otherwise."""
        if service.url is None:
            raise AppServiceRequestError(f"{service.id} has no url")
        params = dict(query or {})
        if self._legacy:
            params["access_token"] = service.hs_token
        headers = {"Authorization": f"Bearer {service.hs_token}"}
        try:
            async with self._get_session().request(
                method, service.url + path, json=body, params=params or None, headers=headers,
                allow_redirects=False, timeout=aiohttp.ClientTimeout(total=timeout_s),
            ) as resp:
                text = await resp.text(errors="replace")
                if not 200 <= resp.status < 300:
                    raise AppServiceRequestError(f"{service.id} answered {resp.status} to {method} {path}",
                                                 status=resp.status, body=text[:2000])
        except asyncio.TimeoutError:
            raise AppServiceRequestError(f"{service.id} did not answer {method} {path} in {timeout_s} s",
                                         timed_out=True) from None
        except (aiohttp.ClientError, OSError, ValueError) as e:
            raise AppServiceRequestError(f"cannot reach {service.id} ({service.url}): {e}") from None
        try:
            return json.loads(text) if text.strip() else {}
        except ValueError:
            return {}

    # --- the endpoints ----------------------------------------------------------------

    async def push_transaction(self, service: ApplicationService, txn_id: int, body: Mapping[str, Any]) -> None:
        """``PUT /transactions/{txnId}``; the legacy path when the service does not know the
        v1 one (spec: "Legacy routes"). Raises AppServiceRequestError when not acknowledged."""
        path = f"/transactions/{quote(str(txn_id), safe='')}"
        try:
            await self.request(service, "PUT", PREFIX + path, body=body, timeout_s=TRANSACTION_TIMEOUT_S)
        except AppServiceRequestError as e:
            if e.status not in (404, 405, 501):
                raise
            await self.request(service, "PUT", path, body=body, timeout_s=TRANSACTION_TIMEOUT_S)

    async def ping(self, service: ApplicationService, transaction_id: str | None) -> int:
        """``POST /ping``; the milliseconds it took."""
        body = {} if transaction_id is None else {"transaction_id": transaction_id}
        start = time.monotonic()
        await self.request(service, "POST", PREFIX + "/ping", body=body, timeout_s=PING_TIMEOUT_S)
        return int((time.monotonic() - start) * 1000)

    async def query_user(self, service: ApplicationService, user_id: str) -> bool:
        """``GET /users/{userId}``: whether the service says the user exists (it has just
        registered it, then)."""
        return await self._query(service, f"{PREFIX}/users/{quote(user_id, safe='')}")

    async def query_alias(self, service: ApplicationService, alias: str) -> bool:
        """``GET /rooms/{roomAlias}``: whether the service made the alias."""
        return await self._query(service, f"{PREFIX}/rooms/{quote(alias, safe='')}")

    async def _query(self, service: ApplicationService, path: str) -> bool:
        if service.url is None:
            return False
        try:
            await self.request(service, "GET", path)
            return True
        except AppServiceRequestError as e:
            if e.status != 404:
                log.info("application service query failed: %s", e)
            return False

    async def get_protocol(self, service: ApplicationService, protocol: str) -> dict[str, Any] | None:
        """``GET /thirdparty/protocol/{protocol}``: the service's metadata, if it answers one."""
        if service.url is None:
            return None
        try:
            answer = await self.request(service, "GET", f"{PREFIX}/thirdparty/protocol/{quote(protocol, safe='')}")
        except AppServiceRequestError as e:
            log.info("third-party protocol %s of %s: %s", protocol, service.id, e)
            return None
        return answer if isinstance(answer, dict) else None

    async def query_3pe(self, service: ApplicationService, kind: str, protocol: str | None,
                        fields: Mapping[str, str]) -> list[dict[str, Any]]:
        """``GET /thirdparty/{user|location}[/{protocol}]``: the service's matches ([] when it fails)."""
        if service.url is None:
            return []
        path = f"{PREFIX}/thirdparty/{kind}" + ("" if protocol is None else f"/{quote(protocol, safe='')}")
        try:
            answer = await self.request(service, "GET", path, query=fields)
        except AppServiceRequestError as e:
            log.info("third-party %s lookup at %s: %s", kind, service.id, e)
            return []
        return [a for a in answer if isinstance(a, dict)] if isinstance(answer, list) else []
