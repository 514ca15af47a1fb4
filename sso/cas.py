"""Central Authentication Service (CAS 2.0 / 3.0): an ``IdentityProvider`` next to OIDC and SAML.

The browser goes to ``<server_url>/login?service=<our ticket URL>``; the CAS server sends
it back with a one-time ``ticket``, which we validate server to server at
``/proxyValidate`` (``/p3/proxyValidate`` for protocol 3) with the very same service URL.
The service URL is Synapse's ``<public_baseurl>_matrix/client/r0/login/cas/ticket``, with
our login session's ID as ``state`` (the session is also bound to the browser's cookie).

The validation answer is XML: parsed with defusedxml (no DTDs, no entities). Redirects are
never followed: only the configured server answers.

Protocol: https://apereo.github.io/cas/7.0.x/protocol/CAS-Protocol-Specification.html
Config: Synapse's ``cas_config``.
"""

from __future__ import annotations

import asyncio
import logging
import urllib.parse
from dataclasses import dataclass, field
from typing import Callable, Mapping

import aiohttp
from defusedxml import ElementTree as SafeElementTree

from gateway.config.sso import CasConfig
from gateway.storage.sso import SsoLoginSession

from .mapping import UserAttributes, map_username_to_mxid_localpart
from .provider import RemoteIdentity, SsoError

__all__ = ["CasProvider", "CasResponse", "parse_cas_response", "TICKET_PATH"]

log = logging.getLogger(__name__)

TICKET_PATH = "_matrix/client/r0/login/cas/ticket"
_NS = "{http://www.yale.edu/tp/cas}"
_HTTP_TIMEOUT = aiohttp.ClientTimeout(total=15)
_MAX_BODY = 256 * 1024


@dataclass(frozen=True)
class CasResponse:
    username: str
    attributes: dict[str, list[str]] = field(default_factory=dict)


def parse_cas_response(body: bytes | str) -> CasResponse:
    """A ``cas:serviceResponse`` -> the user and attributes; SsoError for a failure or junk."""
    try:
        root = SafeElementTree.fromstring(body)
    except Exception:  # noqa: BLE001 - malformed, DTD, entities
        raise SsoError("invalid_cas_response", "The CAS server's answer could not be read.", 502) from None
    if root.tag != f"{_NS}serviceResponse":
        raise SsoError("invalid_cas_response", "The CAS server's answer is not a CAS service response.", 502)
    failure = root.find(f"{_NS}authenticationFailure")
    if failure is not None:
        code = failure.get("code", "INVALID_TICKET")
        log.info("CAS ticket refused: %s %s", code, (failure.text or "").strip())
        raise SsoError("invalid_ticket", "The CAS server did not accept this login ticket "
                       f"({code}). Please log in again.", 403)
    success = root.find(f"{_NS}authenticationSuccess")
    user = success.find(f"{_NS}user") if success is not None else None
    if user is None or not (user.text or "").strip():
        raise SsoError("invalid_cas_response", "The CAS server's answer names no user.", 502)
    attributes: dict[str, list[str]] = {}
    attrs = success.find(f"{_NS}attributes")
    if attrs is not None:
        for child in attrs:
            if not isinstance(child.tag, str) or not child.tag.startswith(_NS):
                continue
            name = child.tag[len(_NS):]
            attributes.setdefault(name, []).append((child.text or "").strip())
    return CasResponse(user.text.strip(), attributes)


class CasProvider:
    """``cas_config``; implements ``sso.provider.IdentityProvider``."""

    #: Our ticket URL is under /_matrix/client, so the browser cookie must be sent there.
    cookie_path = "/_matrix/client/"

    def __init__(self, config: CasConfig, public_baseurl: str, http: Callable[[], aiohttp.ClientSession]):
        self.config = config
        self.public_baseurl = public_baseurl
        self._http = http
        self.idp_id = config.idp_id
        self.idp_name = config.idp_name
        self.idp_icon = config.idp_icon
        self.idp_brand = config.idp_brand
        self.enable_registration = config.enable_registration
        self.allow_existing_users = False

    def service_url(self, session_id: str) -> str:
        return f"{self.public_baseurl}{TICKET_PATH}?" + urllib.parse.urlencode({"state": session_id})

    async def authorization_url(self, session: SsoLoginSession,
                                request_params: Mapping[str, str] | None = None) -> str:
        return f"{self.config.server_url}/login?" + urllib.parse.urlencode(
            {"service": self.service_url(session.session_id)})

    async def complete(self, session: SsoLoginSession, params: Mapping[str, str]) -> RemoteIdentity:
        ticket = params.get("ticket")
        if not ticket:
            raise SsoError("invalid_request", "The CAS server sent no login ticket.")
        response = await self.validate_ticket(ticket, self.service_url(session.session_id))
        for req in self.config.required_attributes:
            if not req.matches(response.attributes):
                log.info("CAS: login of %s refused, required attribute %s not met", response.username,
                         req.attribute)
                raise SsoError("unauthorised", "You are not authorised to log in here.", 403)
        localpart = map_username_to_mxid_localpart(response.username)
        display_name = None
        if self.config.displayname_attribute:
            values = response.attributes.get(self.config.displayname_attribute) or []
            display_name = values[0] if values and values[0] else None

        async def map_attributes(failures: int) -> UserAttributes:
            # An existing account of that name is taken over (grandfathered), as in Synapse:
            # a CAS user never gets a numbered localpart.
            if failures:
                raise SsoError("mapping_error", f"The username {localpart!r} cannot be used.", 409)
            return UserAttributes(localpart=localpart, display_name=display_name)

        return RemoteIdentity(self.idp_id, response.username, map_attributes,
                              extra_attributes={}, grandfathered_localpart=localpart)

    async def validate_ticket(self, ticket: str, service: str) -> CasResponse:
        path = "/p3/proxyValidate" if self.config.protocol_version == 3 else "/proxyValidate"
        url = self.config.server_url + path
        try:
            async with self._http().get(url, params={"ticket": ticket, "service": service},
                                        allow_redirects=False, timeout=_HTTP_TIMEOUT) as resp:
                if resp.status != 200:
                    log.warning("CAS: %s answered HTTP %s", url, resp.status)
                    raise SsoError("server_error", f"The CAS server answered HTTP {resp.status}.", 502)
                body = b""
                async for chunk in resp.content.iter_chunked(64 * 1024):
                    body += chunk
                    if len(body) > _MAX_BODY:
                        break
        except (aiohttp.ClientError, asyncio.TimeoutError) as e:
            log.warning("CAS: cannot reach %s: %s", url, e)
            raise SsoError("server_error", "Could not reach the CAS server. Please try again in a moment.",
                           503) from None
        if len(body) > _MAX_BODY:
            raise SsoError("invalid_cas_response", "The CAS server's answer is too large.", 502)
        return parse_cas_response(body)
