"""The ``oauth`` section: Gateway as the spec's OAuth 2.0 authorisation server (off by default).

Spec: https://spec.matrix.org/latest/client-server-api/#oauth-20-api. The upstream logins
offered on our pages are the existing ``oidc_providers``, ``saml2_config`` and ``cas_config``
sections; this one only says how the OAuth 2.0 side behaves. docs/oauth.md has an example.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ._values import ConfigError, Section, string_item

__all__ = ["OAuthConfig", "StaticClientConfig", "parse_oauth_config"]


@dataclass(frozen=True)
class StaticClientConfig:
    """A client the operator registers in the config (its ``client_id`` never changes).
    ``metadata`` is client metadata as a client would send it to the registration endpoint,
    checked by the same rules when the server starts."""

    client_id: str
    metadata: dict[str, Any]


@dataclass(frozen=True)
class OAuthConfig:
    enabled: bool = False
    #: How long an access token lives (the client refreshes it with its refresh token).
    access_token_lifetime_ms: int = 5 * 60 * 1000
    #: Offer the password form on the login page (to accounts that have a password).
    enable_password_login: bool = True
    #: Let people create an account on our pages (``prompt=create``, ``action=register``).
    enable_registration: bool = False
    #: Accept ``http://`` on loopback hosts for a web client's ``client_uri`` and redirect
    #: URIs (for development and tests; the spec wants ``https`` there).
    allow_loopback_http_web_clients: bool = False
    #: RFC 8628: how long a device code is valid, and how often a device may poll.
    device_code_lifetime_ms: int = 15 * 60 * 1000
    device_code_poll_interval_ms: int = 5000
    #: How long a browser stays signed in on our pages (login, consent, account page).
    browser_session_lifetime_ms: int = 24 * 3600 * 1000
    static_clients: tuple[StaticClientConfig, ...] = ()


def parse_oauth_config(root: Section) -> tuple[OAuthConfig, list[str]]:
    """The ``oauth`` section (defaults when absent) and warnings about unknown keys."""
    if not root.has("oauth"):
        root.used.add("oauth")
        return OAuthConfig(), []
    s = root.section("oauth")
    enabled = s.bool("enabled", False)
    lifetime = s.duration_ms("access_token_lifetime", 5 * 60 * 1000)
    if lifetime < 1000:
        raise ConfigError(s.key("access_token_lifetime"), "expected at least 1s")
    password, registration = s.bool("enable_password_login", True), s.bool("enable_registration", False)
    loopback = s.bool("allow_loopback_http_web_clients", False)
    device_lifetime = max(60_000, s.duration_ms("device_code_lifetime", 15 * 60 * 1000))
    interval = s.duration_ms("device_code_poll_interval", 5000)
    if interval < 1000 or interval % 1000:
        raise ConfigError(s.key("device_code_poll_interval"), "expected a whole number of seconds, at least 1s")
    config = OAuthConfig(
        enabled=enabled, access_token_lifetime_ms=lifetime, enable_password_login=password,
        enable_registration=registration, allow_loopback_http_web_clients=loopback,
        device_code_lifetime_ms=device_lifetime, device_code_poll_interval_ms=interval,
        browser_session_lifetime_ms=s.duration_ms("browser_session_lifetime", 24 * 3600 * 1000),
        static_clients=tuple(_static_client(item, f"{s.key('static_clients')}[{i}]")
                             for i, item in enumerate(s.list("static_clients", []))),
    )
    ids = [c.client_id for c in config.static_clients]
    if len(set(ids)) != len(ids):
        raise ConfigError(s.key("static_clients"), "two static clients have the same client_id")
    return config, [f"unknown config key {k!r} (ignored)" for k in s.unknown_keys()]


def _static_client(item: Any, path: str) -> StaticClientConfig:
    from gateway.oauth.clients import ClientMetadataError, validate_client_metadata

    s = Section(item, path)
    client_id = s.str("client_id")
    if not client_id or len(client_id) > 255 or not client_id.isprintable() or " " in client_id:
        raise ConfigError(s.key("client_id"), "expected a non-empty string without spaces")
    # The metadata a client would register (typed reads for the reference; the rules below).
    s.str("client_uri")
    s.str("client_name", None)
    s.str("application_type", "web", choices=("web", "native"))
    s.list("redirect_uris", [], of=string_item)
    s.list("grant_types", ["authorization_code"], of=string_item)
    s.list("response_types", ["code"], of=string_item)
    for key in ("logo_uri", "tos_uri", "policy_uri"):
        s.str(key, None)
    s.str("token_endpoint_auth_method", "none", choices=("none",))
    metadata = {k: v for k, v in s.data.items() if k != "client_id"}
    s.used.update(k for k in metadata if "#" in k)  # localised values (client_name#fr...)
    try:
        # Operators may register loopback http clients without the development switch.
        validated = validate_client_metadata(metadata, allow_loopback_http=True)
    except ClientMetadataError as e:
        raise ConfigError(path, f"{e.error}: {e.description}") from None
    return StaticClientConfig(client_id=client_id, metadata=validated)
