"""Identity providers: the Protocol every SSO mechanism implements, and what it returns.

A provider turns a browser's return from the IdP (an OIDC callback, a SAML POST, a CAS
ticket) into a ``RemoteIdentity``. Everything after that — mapping collisions,
registration, the username picker, login tokens, the redirect back to the client — is
shared, in ``sso.handler``.

Client-side flow: https://spec.matrix.org/latest/client-server-api/#client-login-via-sso
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Mapping, Protocol, runtime_checkable

from gateway.storage.sso import SsoLoginSession

from .mapping import UserAttributes

__all__ = ["IdentityProvider", "RemoteIdentity", "SsoError"]


class SsoError(Exception):
    """A login that cannot go on; shown to the user on the ``sso_error.html`` page.

    ``error`` is a short technical code, ``description`` a sentence for humans.
    """

    def __init__(self, error: str, description: str, status: int = 400):
        super().__init__(f"{error}: {description}")
        self.error = error
        self.description = description
        self.status = status


@dataclass(frozen=True)
class RemoteIdentity:
    """Who the IdP says the user is.

    ``map_attributes(failures)`` asks the mapping provider for the Matrix attributes; it is
    called again with ``failures + 1`` when the localpart it gave is taken.
    """

    idp_id: str
    remote_user_id: str
    map_attributes: Callable[[int], Awaitable[UserAttributes]]
    extra_attributes: dict[str, Any] = field(default_factory=dict)
    auth_provider_session_id: str | None = None
    #: An existing account that was this user before IdP links were stored (Synapse's
    #: "grandfathered" users: SAML's ``grandfathered_mxid_source_attribute``, CAS usernames):
    #: if ``@<localpart>:<server>`` exists, the identity is linked to it.
    grandfathered_localpart: str | None = None


@runtime_checkable
class IdentityProvider(Protocol):
    """One configured IdP (an OIDC provider, a SAML IdP, a CAS server)."""

    idp_id: str
    idp_name: str
    idp_icon: str | None
    idp_brand: str | None
    # Optional attributes, read with getattr: ``cookie_path`` (where the IdP sends the browser
    # back, default /_synapse/client/), ``cookie_samesite`` ("None" when the IdP POSTs back from
    # its own site), ``session_lifetime_ms``, ``allow_existing_users``, ``enable_registration``.

    async def authorization_url(self, session: SsoLoginSession,
                                request_params: Mapping[str, str] | None = None) -> str:
        """Where to send the browser to log in; ``request_params``: the query of the client's
        ``/login/sso/redirect`` (OIDC passes some on). Raises SsoError if the IdP is unreachable."""
        ...

    async def complete(self, session: SsoLoginSession, params: Mapping[str, str]) -> RemoteIdentity:
        """Check the IdP's answer (query or form ``params``) for ``session``. Raises SsoError."""
        ...
