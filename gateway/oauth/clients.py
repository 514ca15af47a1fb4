"""Client metadata and redirect URIs: pure rules, no I/O.

Spec: https://spec.matrix.org/latest/client-server-api/#client-registration ("Client
metadata", "Redirect URI validation") on top of RFC 7591 (dynamic registration) and
RFC 8252 section 7 (native apps' redirect URIs).
"""

from __future__ import annotations

import ipaddress
import re
import urllib.parse
from dataclasses import dataclass
from typing import Any

__all__ = ["ClientMetadataError", "validate_client_metadata", "redirect_uri_allowed", "SUPPORTED_GRANT_TYPES",
           "DEVICE_CODE_GRANT", "LOCALISABLE", "localised"]

DEVICE_CODE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
SUPPORTED_GRANT_TYPES = ("authorization_code", "refresh_token", DEVICE_CODE_GRANT)
#: Human-readable values that may come in ``name#lang`` variants (RFC 7591 section 2.2).
LOCALISABLE = ("client_name", "logo_uri", "tos_uri", "policy_uri")
_URI_FIELDS = ("logo_uri", "tos_uri", "policy_uri")
_LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")
#: A loopback redirect URI's authority at use: a loopback host and a port, nothing else.
_LOOPBACK_AUTHORITY = re.compile(r"^(localhost|127\.0\.0\.1|\[::1\]):[0-9]{1,5}$")
#: A host name browsers read as we do: letters, digits, ``-`` and ``_`` in dot-separated labels.
_HOST_NAME = re.compile(r"^[a-z0-9_-]+(\.[a-z0-9_-]+)*\.?$")
MAX_REDIRECT_URIS = 20
MAX_VALUE_LENGTH = 2048


@dataclass
class ClientMetadataError(Exception):
    """RFC 7591 section 3.2.2: ``invalid_redirect_uri`` or ``invalid_client_metadata``."""

    error: str
    description: str

    def __str__(self) -> str:
        return f"{self.error}: {self.description}"


def _bad(description: str) -> ClientMetadataError:
    return ClientMetadataError("invalid_client_metadata", description)


def _bad_redirect(uri: str, why: str) -> ClientMetadataError:
    return ClientMetadataError("invalid_redirect_uri", f"{uri!r}: {why}")


def _is_loopback(host: str | None) -> bool:
    if not host:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _split(uri: Any, field: str) -> urllib.parse.SplitResult:
    if not isinstance(uri, str) or not uri or len(uri) > MAX_VALUE_LENGTH:
        raise _bad(f"{field} must be a URL of at most {MAX_VALUE_LENGTH} characters")
    if any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F for c in uri):
        raise _bad(f"{field} must not contain spaces or control characters")
    if not _plain(uri):
        # Browsers read "https://evil.example\.app.example.org/" as a URL on evil.example;
        # Python's parser sees a host ending in app.example.org. RFC 3986 URIs are ASCII.
        raise _bad(f"{field} must be ASCII without backslashes (percent-encode other characters)")
    try:
        parts = urllib.parse.urlsplit(uri)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        raise _bad(f"{field} is not a valid URL") from None
    return parts


def _plain(uri: str) -> bool:
    """Printable ASCII without ``\\``: a URI that browsers and ``urllib`` split the same way."""
    return all(0x21 <= ord(c) <= 0x7E for c in uri) and "\\" not in uri


def _host_ok(host: str) -> bool:
    """A DNS name or an IP address: no percent-encoding or other characters a browser would
    decode or refuse (and so read as another host than the one we checked)."""
    if _HOST_NAME.match(host):
        return True
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return False


def _on_host(parts: urllib.parse.SplitResult, base_host: str) -> bool:
    """Same host as the client URI, or a subdomain of it."""
    host = (parts.hostname or "").lower()
    return host == base_host or host.endswith("." + base_host)


def _check_web_uri(parts: urllib.parse.SplitResult, field: str, base_host: str | None, allow_loopback_http: bool,
                   error=_bad) -> None:
    """``https``, no user or password, on the client URI's host (or a subdomain)."""
    if parts.scheme == "http" and allow_loopback_http and _is_loopback(parts.hostname):
        pass
    elif parts.scheme != "https":
        raise error(f"{field} must use https")
    if not parts.hostname or not _host_ok(parts.hostname):
        raise error(f"{field} must have a host name or an IP address")
    if parts.username is not None or parts.password is not None:
        raise error(f"{field} must not contain a user or password")
    if base_host is not None and not _on_host(parts, base_host):
        raise error(f"{field} must be on the host of client_uri ({base_host}) or a subdomain of it")


def _check_redirect_uri(uri: Any, application_type: str, client: urllib.parse.SplitResult,
                        allow_loopback_http: bool) -> None:
    if not isinstance(uri, str):
        raise ClientMetadataError("invalid_redirect_uri", "redirect_uris must be strings")
    try:
        parts = _split(uri, "redirect_uri")
    except ClientMetadataError as e:
        raise _bad_redirect(uri, e.description) from None
    if "#" in uri:
        raise _bad_redirect(uri, "a redirect URI must not have a fragment")
    base_host = (client.hostname or "").lower()

    def error(why: str) -> ClientMetadataError:
        return _bad_redirect(uri, why)

    if application_type == "web":
        _check_web_uri(parts, "a web client's redirect URI", base_host, allow_loopback_http, error)
        return
    # Native clients (RFC 8252 section 7).
    if parts.scheme == "https":  # a claimed https URI: the web rules
        _check_web_uri(parts, "a claimed https redirect URI", base_host, False, error)
        return
    if parts.scheme == "http":
        if parts.hostname not in _LOOPBACK_HOSTS:
            raise error("a native client's http redirect URI must be on localhost, 127.0.0.1 or [::1]")
        if parts.port is not None:
            raise error("a loopback redirect URI is registered without a port (any port is accepted at use)")
        if parts.username is not None or parts.password is not None:
            raise error("a redirect URI must not contain a user or password")
        return
    # A private-use scheme: the reverse of the client URI's host, with no authority.
    reversed_host = ".".join(reversed(base_host.split(".")))
    scheme = parts.scheme.lower()
    if not scheme or not (scheme == reversed_host or scheme.startswith(reversed_host + ".")):
        raise error(f"a private-use scheme must start with {reversed_host} (client_uri's host reversed)")
    if "." not in scheme:
        # RFC 8252 7.1: a reversed domain name. A one-label client_uri host ("https://javascript/")
        # would otherwise make javascript: or data: a "private-use scheme".
        raise error("a private-use scheme must be a reversed domain name (with a dot), e.g. com.example.app")
    if uri[len(parts.scheme) + 1:].startswith("//"):
        raise error("a private-use scheme redirect URI must not have an authority (use scheme:/path)")


def validate_client_metadata(body: Any, *, allow_loopback_http: bool = False) -> dict[str, Any]:
    """The metadata to register (the fields we understand, with defaults applied), or
    ClientMetadataError. Unknown grant and response types are dropped, as RFC 7591 says."""
    if not isinstance(body, dict):
        raise _bad("the body must be a JSON object")
    application_type = body.get("application_type", "web")
    if application_type not in ("web", "native"):
        raise _bad("application_type must be 'web' or 'native'")
    if "client_uri" not in body:
        raise _bad("client_uri is required")
    client = _split(body["client_uri"], "client_uri")
    _check_web_uri(client, "client_uri", None, allow_loopback_http)
    base_host = client.hostname.lower()
    out: dict[str, Any] = {"application_type": application_type, "client_uri": body["client_uri"]}

    method = body.get("token_endpoint_auth_method", "none")
    if method != "none":
        raise _bad("token_endpoint_auth_method must be 'none': clients are public (no secret)")
    out["token_endpoint_auth_method"] = "none"

    grant_types = body.get("grant_types", ["authorization_code"])
    if not isinstance(grant_types, list) or not all(isinstance(g, str) for g in grant_types):
        raise _bad("grant_types must be a list of strings")
    out["grant_types"] = [g for g in SUPPORTED_GRANT_TYPES if g in grant_types]
    response_types = body.get("response_types", ["code"])
    if not isinstance(response_types, list) or not all(isinstance(r, str) for r in response_types):
        raise _bad("response_types must be a list of strings")
    out["response_types"] = ["code"] if "code" in response_types else []
    if "authorization_code" in out["grant_types"] and not out["response_types"]:
        raise _bad("the authorization_code grant needs the 'code' response type")

    redirect_uris = body.get("redirect_uris", [])
    if not isinstance(redirect_uris, list):
        raise ClientMetadataError("invalid_redirect_uri", "redirect_uris must be a list")
    if len(redirect_uris) > MAX_REDIRECT_URIS:
        raise ClientMetadataError("invalid_redirect_uri", f"at most {MAX_REDIRECT_URIS} redirect URIs")
    for uri in redirect_uris:
        _check_redirect_uri(uri, application_type, client, allow_loopback_http)
    if "authorization_code" in out["grant_types"] and not redirect_uris:
        raise ClientMetadataError("invalid_redirect_uri", "the authorization_code grant needs redirect_uris")
    out["redirect_uris"] = list(dict.fromkeys(redirect_uris))

    for key, value in body.items():
        name, _, lang = key.partition("#")
        if name not in LOCALISABLE:
            continue
        if lang and (len(lang) > 35 or not all(c.isalnum() or c == "-" for c in lang)):
            raise _bad(f"{key}: not a language tag")
        if name == "client_name":
            if not isinstance(value, str) or len(value) > 255:
                raise _bad(f"{key} must be a string of at most 255 characters")
        else:
            _check_web_uri(_split(value, key), key, base_host, allow_loopback_http)
        out[key] = value
    return out


def localised(metadata: dict[str, Any], name: str, languages: list[str]) -> Any:
    """``name`` in the first of ``languages`` the client gave a variant for (``fr-FR`` also
    takes ``fr``), else the plain value."""
    variants = {key.partition("#")[2].lower(): value for key, value in metadata.items()
                if key.partition("#")[0] == name and "#" in key}
    for lang in languages:
        lang = lang.lower()
        for candidate in (lang, lang.split("-")[0]):
            if candidate in variants:
                return variants[candidate]
    return metadata.get(name)


def redirect_uri_allowed(uri: str, registered: list[str]) -> bool:
    """An exact match, or, for a loopback ``http`` URI registered without a port, the same
    URI with any port (RFC 8252 section 7.3)."""
    if uri in registered:
        return True
    if not uri.startswith("http://") or not _plain(uri):
        return False
    try:
        parts = urllib.parse.urlsplit(uri)
    except ValueError:
        return False
    # Only "host:port" as the authority: "http://evil.example\@127.0.0.1:1234/cb" is on
    # 127.0.0.1 for urllib but on evil.example for a browser.
    authority = _LOOPBACK_AUTHORITY.match(parts.netloc)
    if authority is None:
        return False
    without_port = urllib.parse.urlunsplit(parts._replace(netloc=authority.group(1)))
    return without_port in registered
