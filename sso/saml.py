"""SAML 2.0 Web Browser SSO (pysaml2): an ``IdentityProvider`` next to OIDC and CAS.

The browser goes to the IdP with an ``AuthnRequest`` (HTTP-Redirect binding) whose ID is
derived from our login session, and comes back with a signed ``Response`` POSTed to the
assertion consumer service (``/_synapse/client/saml2/authn_response``). The outstanding
request *is* the login session row in the database: the response's ``InResponseTo`` must
name a session started in this browser that is neither used nor expired, so a restart
does not turn a login into an "unsolicited response", and a response is accepted once.

pysaml2 checks the XML signatures (through xmlsec1), the audience, the destination, the
validity window and ``InResponseTo``; we require signed assertions. Loading the IdP
metadata (possibly remote) and checking signatures block, so they run in a thread. Nothing
is fetched at startup in a way that could stop the server.

Specs: SAML 2.0 core and bindings (OASIS saml-core-2.0-os, saml-bindings-2.0-os).
Config: Synapse's ``saml2_config``.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import inspect
import logging
from typing import Any, Mapping

from defusedxml import ElementTree as SafeElementTree

from gateway.config.sso import SamlConfig
from gateway.storage.sso import SsoLoginSession

from .mapping import MappingError, UserAttributes, map_username_to_mxid_localpart
from .provider import RemoteIdentity, SsoError

__all__ = ["SamlProvider", "request_id_for_session", "session_id_from_response"]

log = logging.getLogger(__name__)

_REQUEST_ID_PREFIX = "id-"  # SAML IDs are xsd:ID (an NCName): they must start with a letter or "_"
#: A SAMLResponse larger than this is not a login (base64 characters).
MAX_RESPONSE_SIZE = 512 * 1024


def request_id_for_session(session_id: str) -> str:
    """The ``AuthnRequest`` ID for a login session: its ``InResponseTo`` leads back to the session."""
    return _REQUEST_ID_PREFIX + session_id


def session_id_from_response(saml_response: str) -> str | None:
    """The login session a (not yet verified) response claims to answer, from its
    ``InResponseTo``; only used to find the session, pysaml2 then checks everything."""
    try:
        xml = base64.b64decode(saml_response, validate=False)
        root = SafeElementTree.fromstring(xml)
    except Exception:  # noqa: BLE001 - junk, entity bombs, DTDs: all just "no session"
        return None
    in_response_to = root.get("InResponseTo") or ""
    if not in_response_to.startswith(_REQUEST_ID_PREFIX):
        return None
    return in_response_to[len(_REQUEST_ID_PREFIX):]


class SamlProvider:
    """``saml2_config``; implements ``sso.provider.IdentityProvider``."""

    #: The IdP POSTs back from its own site: the browser cookie must travel on a cross-site POST.
    cookie_samesite = "None"

    def __init__(self, config: SamlConfig):
        self.config = config
        self.idp_id = config.idp_id
        self.idp_name = config.idp_name
        self.idp_icon = config.idp_icon
        self.idp_brand = config.idp_brand
        self.enable_registration = config.enable_registration
        self.allow_existing_users = False
        self.session_lifetime_ms = config.session_lifetime_ms
        self.mapper = config.user_mapping_provider.instantiate()
        self._sp_config: Any = None
        self._metadata_xml: bytes | None = None
        self._lock = asyncio.Lock()

    # --- configuration (lazy: remote IdP metadata may be down at startup) -----------------

    async def load_metadata(self) -> Any:
        """The loaded pysaml2 ``SPConfig`` with the IdP's metadata; cached after the first success."""
        if self._sp_config is not None:
            return self._sp_config
        async with self._lock:
            if self._sp_config is None:
                self._sp_config = await asyncio.to_thread(self._load_config, self.config.sp_config)
        return self._sp_config

    def _load_config(self, data: dict[str, Any]) -> Any:
        from saml2.config import SPConfig

        try:
            config = SPConfig().load(copy.deepcopy(data))
        except Exception as e:  # noqa: BLE001 - e.g. remote metadata unreachable
            log.warning("SAML: cannot load the SP configuration / IdP metadata: %s", e)
            raise SsoError("server_error", "The SAML identity provider's metadata could not be loaded. "
                           "Please try again in a moment.", 503) from None
        if "metadata" in data and not (config.metadata and list(config.metadata.identity_providers())):
            # Not cached: the next login tries to load the (remote) metadata again.
            log.warning("SAML: no identity provider in the metadata (remote metadata unreachable?)")
            raise SsoError("server_error", "The SAML identity provider's metadata could not be loaded. "
                           "Please try again in a moment.", 503)
        return config

    def sp_metadata_xml(self) -> bytes:
        """Our SP metadata (entity ID, ACS, certificates): what an IdP administrator imports."""
        if self._metadata_xml is None:
            from saml2.metadata import create_metadata_string

            data = copy.deepcopy(self.config.sp_config)
            data.pop("metadata", None)  # ours does not depend on the IdP's
            xml = create_metadata_string(None, config=self._load_config(data))
            self._metadata_xml = xml if isinstance(xml, bytes) else xml.encode("utf-8")
        return self._metadata_xml

    def _client(self, sp_config: Any) -> Any:
        from saml2.client import Saml2Client

        return Saml2Client(sp_config)  # cheap; a fresh one keeps no per-user cache across logins

    def _idp_entity_id(self, sp_config: Any) -> str:
        if self.config.idp_entityid:
            return self.config.idp_entityid
        idps = list(sp_config.metadata.identity_providers()) if sp_config.metadata else []
        if len(idps) == 1:
            return idps[0]
        if not idps:
            raise SsoError("server_error", "No SAML identity provider is known (metadata missing).", 503)
        raise SsoError("server_error", "Several SAML identity providers are known: the administrator must set "
                       "saml2_config.idp_entityid.", 503)

    # --- the two halves of the flow -------------------------------------------------------

    async def authorization_url(self, session: SsoLoginSession,
                                request_params: Mapping[str, str] | None = None) -> str:
        sp_config = await self.load_metadata()

        def prepare() -> str:
            client = self._client(sp_config)
            _, info = client.prepare_for_authenticate(
                entityid=self._idp_entity_id(sp_config), relay_state=session.session_id,
                message_id=request_id_for_session(session.session_id),
            )
            for name, value in info["headers"]:
                if name.lower() == "location":
                    return value
            raise SsoError("server_error", "The SAML identity provider has no HTTP-Redirect login endpoint.", 503)

        return await asyncio.to_thread(prepare)

    async def complete(self, session: SsoLoginSession, params: Mapping[str, str]) -> RemoteIdentity:
        raw = params.get("SAMLResponse")
        if not raw:
            raise SsoError("invalid_request", "The identity provider sent no SAML response.")
        if len(raw) > MAX_RESPONSE_SIZE:
            raise SsoError("invalid_response", "The SAML response is too large.", 413)
        sp_config = await self.load_metadata()
        expected = request_id_for_session(session.session_id)

        def parse() -> Any:
            from saml2 import BINDING_HTTP_POST

            return self._client(sp_config).parse_authn_request_response(
                raw, BINDING_HTTP_POST, outstanding={expected: session.client_redirect_url})

        try:
            response = await asyncio.to_thread(parse)
        except SsoError:
            raise
        except Exception as e:  # noqa: BLE001 - pysaml2 raises many kinds; each becomes a clear page
            raise _explain(e) from None
        if response is None or not getattr(response, "assertion", None):
            raise SsoError("invalid_response", "The identity provider's SAML response could not be read.")
        if response.in_response_to != expected:  # pysaml2 checked it too; never accept another login's
            raise SsoError("unsolicited_response", "This SAML response answers another login.", 403)
        return await self._identity(response, session)

    async def _identity(self, response: Any, session: SsoLoginSession) -> RemoteIdentity:
        ava: dict[str, list[Any]] = dict(response.ava or {})
        for req in self.config.attribute_requirements:
            if not req.matches(ava):
                log.info("SAML: login refused, attribute requirement %s not met", req.attribute)
                raise SsoError("unauthorised", "You are not authorised to log in here.", 403)
        try:
            remote_user_id = await _maybe_await(self.mapper.get_remote_user_id(response, session.client_redirect_url))
        except Exception as e:  # noqa: BLE001 - a third-party mapper may raise anything
            log.warning("SAML: mapping provider failed on get_remote_user_id: %s", e)
            raise SsoError("mapping_error", f"Could not work out who you are from the SAML response: {e}",
                           400) from None
        if not remote_user_id:
            raise SsoError("mapping_error", "The SAML response names no user.", 400)

        async def map_attributes(failures: int) -> UserAttributes:
            try:
                raw = await _maybe_await(self.mapper.saml_response_to_user_attributes(
                    response, failures, session.client_redirect_url))
            except MappingError as e:
                raise SsoError("mapping_error", f"Could not map your identity to a Matrix account: {e}",
                               400) from None
            except Exception as e:  # noqa: BLE001
                log.warning("SAML: mapping provider failed on saml_response_to_user_attributes: %s", e)
                raise SsoError("mapping_error", "Could not map your identity to a Matrix account.", 500) from None
            emails = raw.get("emails") or []
            return UserAttributes(localpart=raw.get("mxid_localpart") or None,
                                  display_name=raw.get("displayname") or None,
                                  emails=tuple(e for e in emails if isinstance(e, str) and e))

        grandfathered = None
        values = ava.get(self.config.grandfathered_mxid_source_attribute) or []
        if values and isinstance(values[0], str) and values[0]:
            grandfathered = map_username_to_mxid_localpart(values[0])
        return RemoteIdentity(self.idp_id, str(remote_user_id), map_attributes,
                              auth_provider_session_id=getattr(response, "session_index", None) or None,
                              grandfathered_localpart=grandfathered)


async def _maybe_await(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value


def _explain(e: Exception) -> SsoError:
    """pysaml2's exception -> a page a person can act on (the details go to the log)."""
    from saml2.response import IncorrectlySigned, StatusError, UnsolicitedResponse
    from saml2.sigver import SigverError
    from saml2.validate import ResponseLifetimeExceed, ToEarly

    log.info("SAML response refused: %s: %s", type(e).__name__, e)
    if isinstance(e, UnsolicitedResponse):
        return SsoError("unsolicited_response", "This SAML response does not answer a login started here.", 403)
    if isinstance(e, (IncorrectlySigned, SigverError)) or "signature" in str(e).lower():
        return SsoError("invalid_signature", "The SAML response is not signed correctly by the identity provider.",
                        403)
    if isinstance(e, ResponseLifetimeExceed):
        return SsoError("expired_response", "The SAML response has expired. Please log in again.", 403)
    if isinstance(e, ToEarly):
        return SsoError("invalid_response", "The SAML response is not valid yet (check the clocks).", 403)
    if isinstance(e, StatusError):
        return SsoError("idp_refused", "The identity provider did not log you in.", 403)
    if "audience" in str(e).lower() or "not for me" in str(e).lower():
        return SsoError("wrong_audience", "The SAML response is meant for another service.", 403)
    return SsoError("invalid_response", "The identity provider's SAML response was refused.", 400)
