"""Where everything is: our endpoints, the server metadata and OpenID discovery. Pure.

Spec: https://spec.matrix.org/latest/client-server-api/#server-metadata-discovery
(``GET /_matrix/client/v1/auth_metadata``, RFC 8414 fields) and the account management
extension; OpenID Connect Discovery 1.0 for ``/.well-known/openid-configuration``.
"""

from __future__ import annotations

from typing import Any

from .clients import DEVICE_CODE_GRANT

__all__ = ["Paths", "ACCOUNT_ACTIONS", "server_metadata", "openid_configuration"]

ACCOUNT_ACTIONS = ("org.matrix.profile", "org.matrix.devices_list", "org.matrix.device_view",
                   "org.matrix.device_delete", "org.matrix.account_deactivate", "org.matrix.cross_signing_reset")


class Paths:
    """Our OAuth 2.0 endpoints and pages, on ``client`` listeners (cookies cover PAGES)."""

    PAGES = "/_gateway/"
    AUTHORIZE = "/_gateway/oauth2/authorize"
    TOKEN = "/_gateway/oauth2/token"
    REGISTER = "/_gateway/oauth2/register"
    REVOKE = "/_gateway/oauth2/revoke"
    DEVICE_AUTHORIZATION = "/_gateway/oauth2/device"
    JWKS = "/_gateway/oauth2/keys.json"
    USERINFO = "/_gateway/oauth2/userinfo"
    CONSENT = "/_gateway/oauth2/consent"
    LINK = "/_gateway/link"  # the device grant's verification URI: short, to be typed
    LOGIN = "/_gateway/login"
    LOGIN_UPSTREAM = "/_gateway/login/upstream"
    LOGIN_UPSTREAM_DONE = "/_gateway/login/upstream_done"
    LOGIN_JWT = "/_gateway/login/jwt"  # jwt_config.login_url: out to the token service
    LOGIN_JWT_DONE = "/_gateway/login/jwt_done"  # and back with token=<JWT>
    SIGN_UP = "/_gateway/register"
    LOGOUT = "/_gateway/logout"
    SSO_CONTINUE = "/_gateway/login/sso_continue"
    ACCOUNT = "/_gateway/account/"


def _url(baseurl: str, path: str) -> str:
    return baseurl.rstrip("/") + path


def server_metadata(baseurl: str) -> dict[str, Any]:
    """The body of ``auth_metadata`` (RFC 8414 names; ``baseurl`` is ``public_baseurl``)."""
    return {
        "issuer": baseurl,
        "authorization_endpoint": _url(baseurl, Paths.AUTHORIZE),
        "token_endpoint": _url(baseurl, Paths.TOKEN),
        "registration_endpoint": _url(baseurl, Paths.REGISTER),
        "revocation_endpoint": _url(baseurl, Paths.REVOKE),
        "device_authorization_endpoint": _url(baseurl, Paths.DEVICE_AUTHORIZATION),
        "response_types_supported": ["code"],
        "response_modes_supported": ["query", "fragment"],
        "grant_types_supported": ["authorization_code", "refresh_token", DEVICE_CODE_GRANT],
        "code_challenge_methods_supported": ["S256"],
        "token_endpoint_auth_methods_supported": ["none"],
        "revocation_endpoint_auth_methods_supported": ["none"],
        "prompt_values_supported": ["create", "login", "consent", "none"],
        "scopes_supported": ["openid", "urn:matrix:client:api:*", "urn:matrix:client:device:*"],
        "account_management_uri": _url(baseurl, Paths.ACCOUNT),
        "account_management_actions_supported": list(ACCOUNT_ACTIONS),
    }


def openid_configuration(baseurl: str) -> dict[str, Any]:
    """The server metadata plus what OpenID Connect Discovery requires."""
    return {
        **server_metadata(baseurl),
        "jwks_uri": _url(baseurl, Paths.JWKS),
        "userinfo_endpoint": _url(baseurl, Paths.USERINFO),
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "claims_supported": ["iss", "sub", "aud", "iat", "exp", "nonce", "auth_time", "at_hash", "device_id"],
    }
