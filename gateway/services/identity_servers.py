"""Talking to the identity server a client names (``id_server``): binding and unbinding
addresses, looking them up and storing third-party invites.

Spec: https://spec.matrix.org/latest/identity-service-api/ (v2 endpoints). Requests go over
HTTPS through the outbound IP rules (``ip_range_blacklist`` / ``ip_range_whitelist``); an
unbind is signed with our server key (X-Matrix), as the spec lets a homeserver do for its
users. An identity server's refusal is passed on with its status and errcode.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import re
from collections.abc import Callable
from typing import Any

import aiohttp
import yarl

from federation.canonical_json import encode_canonical_json
from federation.net.ip_ranges import BlockedAddressError
from federation.signing import ServerSigningKey, build_x_matrix_authorization

from ..http import Codes, MatrixError

log = logging.getLogger(__name__)

TIMEOUT_S = 30
#: A server name (host or IP literal, optional port), as ``id_server`` must be.
_ID_SERVER = re.compile(r"^(?:[A-Za-z0-9\-.]{1,253}|\[[0-9A-Fa-f:.]{2,45}\])(?::\d{1,5})?$")


def check_id_server(value: Any) -> str:
    """``id_server``: a host name with an optional port (no scheme, no path)."""
    if not isinstance(value, str) or not _ID_SERVER.match(value):
        raise MatrixError(400, Codes.INVALID_PARAM, "'id_server' must be a server name like id.example.org")
    return value


def lookup_hash(medium: str, address: str, pepper: str) -> str:
    """The spec's ``sha256`` lookup hash: unpadded URL-safe base64 of SHA-256("address medium pepper")."""
    digest = hashlib.sha256(f"{address} {medium} {pepper}".encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def _blocked(e: BaseException) -> bool:
    """Whether a connection failed because the outbound IP rules refused every address
    (aiohttp wraps the resolver's or socket factory's error)."""
    seen = 0
    while e is not None and seen < 5:
        if isinstance(e, BlockedAddressError) or isinstance(getattr(e, "os_error", None), BlockedAddressError):
            return True
        e, seen = e.__cause__ or e.__context__, seen + 1
    return False


class IdentityServerError(MatrixError):
    """The identity server refused (its status and errcode), or could not be reached."""


class IdentityServerClient:
    def __init__(self, *, server_name: str, signing_key: ServerSigningKey,
                 connector: Callable[[], aiohttp.BaseConnector]):
        self.server_name = server_name
        self.signing_key = signing_key
        self._connector = connector
        self._session: aiohttp.ClientSession | None = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(connector=self._connector(),
                                                  timeout=aiohttp.ClientTimeout(total=TIMEOUT_S),
                                                  headers={"User-Agent": "Gateway"})
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _request(self, method: str, id_server: str, path: str, *, token: str | None = None,
                       body: dict[str, Any] | None = None, signed: bool = False,
                       params: dict[str, str] | None = None) -> Any:
        id_server = check_id_server(id_server)
        headers = {}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        if signed:
            headers["Authorization"] = build_x_matrix_authorization(method, path, self.server_name, id_server, body,
                                                                    self.signing_key)
        data = encode_canonical_json(body) if body is not None else None
        if data is not None:
            headers["Content-Type"] = "application/json"
        try:
            async with self._http().request(method, f"https://{id_server}{path}", data=data, headers=headers,
                                            params=params, allow_redirects=False) as resp:
                answer = await resp.json(content_type=None)
                status = resp.status
        except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as e:
            if _blocked(e):
                raise IdentityServerError(400, Codes.SERVER_NOT_TRUSTED,
                                          f"{id_server} is in an address range this server does not contact") from None
            log.info("identity server %s: %s %s failed: %s", id_server, method, path, e)
            raise IdentityServerError(502, Codes.UNKNOWN, f"Could not reach the identity server {id_server}") \
                from None
        if status != 200:
            errcode = answer.get("errcode") if isinstance(answer, dict) else None
            error = answer.get("error") if isinstance(answer, dict) else None
            raise IdentityServerError(status if 400 <= status < 500 else 502,
                                      errcode if isinstance(errcode, str) else Codes.UNKNOWN,
                                      f"The identity server {id_server} refused: {error or status}")
        if not isinstance(answer, dict):
            raise IdentityServerError(502, Codes.UNKNOWN, f"The identity server {id_server} answered no JSON object")
        return answer

    async def bind(self, id_server: str, token: str, sid: str, client_secret: str, mxid: str) -> dict[str, Any]:
        """``POST /_matrix/identity/v2/3pid/bind``: the signed association."""
        return await self._request("POST", id_server, "/_matrix/identity/v2/3pid/bind", token=token,
                                   body={"sid": sid, "client_secret": client_secret, "mxid": mxid})

    async def unbind(self, id_server: str, mxid: str, medium: str, address: str) -> bool:
        """``POST /_matrix/identity/v2/3pid/unbind`` signed by us: True when it unbound."""
        try:
            await self._request("POST", id_server, "/_matrix/identity/v2/3pid/unbind", signed=True,
                                body={"mxid": mxid, "threepid": {"medium": medium, "address": address}})
        except IdentityServerError as e:
            log.info("unbinding %s from %s at %s: %s", address, mxid, id_server, e.error)
            return False
        return True

    async def lookup(self, id_server: str, token: str, medium: str, address: str) -> str | None:
        """The Matrix ID an address is bound to at ``id_server`` (v2 hashed lookup), or None."""
        details = await self._request("GET", id_server, "/_matrix/identity/v2/hash_details", token=token)
        algorithms, pepper = details.get("algorithms") or [], details.get("lookup_pepper")
        if "sha256" in algorithms and isinstance(pepper, str):
            key, body = lookup_hash(medium, address, pepper), {"algorithm": "sha256", "pepper": pepper}
        elif "none" in algorithms:
            key, body = f"{address} {medium}", {"algorithm": "none", "pepper": pepper or ""}
        else:
            raise IdentityServerError(502, Codes.UNKNOWN, f"{id_server} offers no lookup algorithm we know")
        answer = await self._request("POST", id_server, "/_matrix/identity/v2/lookup", token=token,
                                     body={**body, "addresses": [key]})
        mxid = (answer.get("mappings") or {}).get(key)
        return mxid if isinstance(mxid, str) else None

    async def store_invite(self, id_server: str, token: str, invite: dict[str, Any]) -> dict[str, Any]:
        """``POST /_matrix/identity/v2/store-invite``: ``token``, ``public_keys``, ``display_name``."""
        answer = await self._request("POST", id_server, "/_matrix/identity/v2/store-invite", token=token,
                                     body=invite)
        if not isinstance(answer.get("token"), str) or not isinstance(answer.get("display_name"), str):
            raise IdentityServerError(502, Codes.UNKNOWN, f"{id_server} answered store-invite without a token")
        return answer

    async def key_is_valid(self, key_validity_url: str, public_key: str) -> bool:
        """Ask the identity server whether ``public_key`` is still valid, at the
        ``key_validity_url`` its third-party invite gave (used as given, ``public_key`` in
        the query). False when it says no, cannot be reached or answers nonsense.
        https://spec.matrix.org/latest/identity-service-api/#get_matrixidentityv2pubkeyisvalid"""
        try:
            url = yarl.URL(key_validity_url)
        except (ValueError, TypeError):
            return False
        if url.scheme not in ("https", "http") or not url.host:
            return False
        try:
            async with self._http().get(url.update_query(public_key=public_key), allow_redirects=False) as resp:
                answer = await resp.json(content_type=None) if resp.status == 200 else None
        except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as e:
            log.info("checking a third-party invite key at %s: %s", key_validity_url, e)
            return False
        return isinstance(answer, dict) and answer.get("valid") is True
