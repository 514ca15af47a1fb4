"""Single sign-on sections of homeserver.yaml: ``oidc_providers`` (and the legacy
``oidc_config``), ``saml2_config``, ``cas_config``, ``jwt_config`` and ``sso``, with
Synapse's key names.

Docs: https://element-hq.github.io/synapse/latest/usage/configuration/config_documentation.html#oidc_providers
"""

from __future__ import annotations

import re
import urllib.parse
from dataclasses import dataclass
from typing import Any, Callable

from ._values import ConfigError, Section, string_item

__all__ = [
    "AttributeRequirement",
    "ClientSecretJwtKey",
    "OidcProviderConfig",
    "SamlConfig",
    "CasConfig",
    "JwtConfig",
    "SsoConfig",
    "SsoSections",
    "parse_sso_sections",
    "JWT_ALGORITHMS",
]

#: JWS algorithms we accept for ``jwt_config.algorithm`` (never "none").
JWT_ALGORITHMS = ("HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "ES256", "ES384", "ES512",
                  "PS256", "PS384", "PS512", "EdDSA")

_IDP_ID = re.compile(r"^[A-Za-z0-9._~-]{1,200}$")


@dataclass(frozen=True)
class AttributeRequirement:
    """A claim that must equal ``value`` (or contain it, for a list claim), or be one of ``one_of``."""

    attribute: str
    value: str | None = None
    one_of: tuple[str, ...] | None = None

    def matches(self, claims: dict[str, Any]) -> bool:
        if self.attribute not in claims:
            return False
        actual = claims[self.attribute]
        if self.value is None and self.one_of is None:  # CAS: the attribute only has to be there
            return True
        values = actual if isinstance(actual, list) else [actual]
        wanted = set(self.one_of) if self.one_of is not None else {self.value}
        return any(v in wanted for v in values)


@dataclass(frozen=True)
class ClientSecretJwtKey:
    key: str  # PEM
    jwt_header: dict[str, Any]
    jwt_payload: dict[str, Any]


@dataclass(frozen=True)
class OidcProviderConfig:
    idp_id: str  # with Synapse's "oidc-" prefix (except the legacy "oidc")
    idp_name: str
    idp_icon: str | None
    idp_brand: str | None
    discover: bool
    issuer: str
    client_id: str
    client_secret: str | None
    client_secret_jwt_key: ClientSecretJwtKey | None
    client_auth_method: str
    pkce_method: str
    scopes: tuple[str, ...]
    authorization_endpoint: str | None
    token_endpoint: str | None
    userinfo_endpoint: str | None
    jwks_uri: str | None
    skip_verification: bool
    user_profile_method: str
    allow_existing_users: bool
    enable_registration: bool
    attribute_requirements: tuple[AttributeRequirement, ...]
    user_mapping_provider: Any  # sso.mapping.LoadedMappingProvider
    backchannel_logout_enabled: bool
    backchannel_logout_ignore_sub: bool
    additional_authorization_parameters: dict[str, str]
    passthrough_authorization_parameters: tuple[str, ...]

    @property
    def uses_userinfo(self) -> bool:
        """Claims come from the userinfo endpoint (else from the id_token)."""
        return self.user_profile_method == "userinfo_endpoint" or "openid" not in self.scopes


@dataclass(frozen=True)
class JwtConfig:
    secret: str
    algorithm: str
    subject_claim: str
    display_name_claim: str | None
    issuer: str | None
    audiences: tuple[str, ...] | None
    #: With the OAuth 2.0 API on: the page of the service that issues the tokens, which our
    #: sign-in page offers as a button ``idp_name``; it sends the browser back to the
    #: ``redirect_uri`` it was given with ``token=<JWT>`` (docs/oauth.md).
    login_url: str | None = None
    idp_name: str = "Single sign-on"


@dataclass(frozen=True)
class SsoConfig:
    client_whitelist: tuple[str, ...] = ()
    update_profile_information: bool = False


@dataclass(frozen=True)
class SamlConfig:
    """``saml2_config``. ``sp_config`` is the whole pysaml2 SP configuration: our defaults
    (entity ID, ACS, required attributes) merged with the operator's ``sp_config`` and the
    ``CONFIG`` of ``config_path``, as Synapse builds it."""

    sp_config: dict[str, Any]
    session_lifetime_ms: int
    user_mapping_provider: Any  # sso.mapping.LoadedMappingProvider
    grandfathered_mxid_source_attribute: str
    attribute_requirements: tuple[AttributeRequirement, ...]
    idp_entityid: str | None
    idp_name: str = "SAML"
    idp_icon: str | None = None
    idp_brand: str | None = None
    enable_registration: bool = True

    idp_id = "saml"


@dataclass(frozen=True)
class CasConfig:
    """``cas_config``."""

    server_url: str
    protocol_version: int
    displayname_attribute: str | None
    required_attributes: tuple[AttributeRequirement, ...]
    idp_name: str = "CAS"
    idp_icon: str | None = None
    idp_brand: str | None = None
    enable_registration: bool = True

    idp_id = "cas"


@dataclass(frozen=True)
class SsoSections:
    oidc_providers: tuple[OidcProviderConfig, ...] = ()
    saml2_config: SamlConfig | None = None
    cas_config: CasConfig | None = None
    jwt_config: JwtConfig | None = None
    sso: SsoConfig = SsoConfig()
    warnings: tuple[str, ...] = ()


def parse_sso_sections(root: Section, resolve_path: Callable[[str], str],
                       public_baseurl: str = "https://localhost/") -> SsoSections:
    """Parse ``oidc_providers``, ``oidc_config``, ``saml2_config``, ``cas_config``, ``jwt_config``
    and ``sso`` from the root section."""
    warnings: list[str] = []
    providers: list[OidcProviderConfig] = []
    for i, item in enumerate(root.list("oidc_providers", [])):
        s = Section(item, f"oidc_providers[{i}]")
        providers.append(_parse_oidc_provider(s, resolve_path, legacy=False))
        warnings += [f"unknown config key {k!r} (ignored)" for k in s.unknown_keys()]
    legacy = root.section("oidc_config")
    if legacy.data and legacy.bool("enabled", False):
        providers.append(_parse_oidc_provider(legacy, resolve_path, legacy=True))
        warnings.append("oidc_config is deprecated: move it to oidc_providers with idp_id: oidc")
    seen: set[str] = set()
    for i, p in enumerate(providers):
        if p.idp_id in seen:
            raise ConfigError(f"oidc_providers[{i}].idp_id", f"duplicate idp_id {p.idp_id!r}")
        seen.add(p.idp_id)

    jwt = _parse_jwt(root.section("jwt_config"), resolve_path)
    from .cas import parse_cas_config
    from .saml2 import parse_saml2_config

    saml = parse_saml2_config(root.section("saml2_config"), resolve_path, public_baseurl, warnings)
    cas = parse_cas_config(root.section("cas_config"), warnings)

    sso = root.section("sso")
    sso_config = SsoConfig(
        client_whitelist=tuple(sso.list("client_whitelist", [], of=string_item)),
        update_profile_information=sso.bool("update_profile_information", False),
    )
    for i, url in enumerate(sso_config.client_whitelist):
        if not re.match(r"^[A-Za-z][A-Za-z0-9+.-]*:", url):
            raise ConfigError(f"sso.client_whitelist[{i}]", f"expected an absolute URL prefix, got {url!r}")
    return SsoSections(tuple(providers), saml, cas, jwt, sso_config, tuple(warnings))


#: The authorization request's own parameters (RFC 6749 section 4.1.1, OpenID Connect Core
#: 3.1.2.1, RFC 7636): neither ``additional_authorization_parameters`` nor a client's query
#: through ``passthrough_authorization_parameters`` may replace them.
OIDC_REQUEST_PARAMETERS = frozenset({"response_type", "client_id", "redirect_uri", "scope", "state", "nonce",
                                     "code_challenge", "code_challenge_method"})


def _parse_oidc_provider(s: Section, resolve_path, *, legacy: bool) -> OidcProviderConfig:
    from sso.mapping import MappingError, load_mapping_provider

    if legacy:
        s.bool("enabled", False)
        idp_id = "oidc"
        idp_name = s.str("idp_name", "OIDC")
    else:
        raw_id = s.str("idp_id", "oidc")
        if not _IDP_ID.match(raw_id):
            raise ConfigError(s.key("idp_id"), "expected 1-200 characters of A-Z, a-z, 0-9, '.', '_', '~' or '-'")
        # Synapse namespaces OIDC providers ("oidc-github"), except the legacy "oidc": the
        # prefixed ID is what clients and user_external_ids already know.
        idp_id = raw_id if raw_id == "oidc" else f"oidc-{raw_id}"
        idp_name = s.str("idp_name", "OIDC")
    idp_icon = parse_idp_icon(s)
    idp_brand = s.str("idp_brand", None)

    discover = s.bool("discover", True)
    issuer = s.str("issuer")
    if not issuer.startswith(("https://", "http://")):
        raise ConfigError(s.key("issuer"), f"expected an http(s) URL, got {issuer!r}")
    client_id = s.str("client_id")
    client_secret = s.str("client_secret", None)
    if client_secret is None and s.has("client_secret_path"):
        path = resolve_path(s.str("client_secret_path"))
        try:
            with open(path, encoding="utf-8") as f:
                client_secret = f.read().strip()
        except OSError as e:
            raise ConfigError(s.key("client_secret_path"), f"cannot read {path}: {e.strerror}") from None
    jwt_key = _parse_client_secret_jwt_key(s, resolve_path)
    auth_method = s.str("client_auth_method", "client_secret_basic",
                        choices=("client_secret_basic", "client_secret_post", "none"))
    if auth_method != "none" and client_secret is None and jwt_key is None:
        raise ConfigError(s.key("client_secret"),
                          "is required unless client_secret_jwt_key is given or client_auth_method is none")
    pkce = s.str("pkce_method", "auto", choices=("auto", "always", "never"))
    scopes = tuple(s.list("scopes", ["openid"], of=string_item))

    endpoints = {k: s.str(k, None) for k in ("authorization_endpoint", "token_endpoint", "userinfo_endpoint",
                                              "jwks_uri")}
    for k, v in endpoints.items():
        if v is not None and not v.startswith(("https://", "http://")):
            raise ConfigError(s.key(k), f"expected an http(s) URL, got {v!r}")
    profile_method = s.str("user_profile_method", "auto", choices=("auto", "userinfo_endpoint"))
    if not discover:
        for k in ("authorization_endpoint", "token_endpoint"):
            if endpoints[k] is None:
                raise ConfigError(s.key(k), "is required when discover is false")
        uses_userinfo = profile_method == "userinfo_endpoint" or "openid" not in scopes
        if uses_userinfo and endpoints["userinfo_endpoint"] is None:
            raise ConfigError(s.key("userinfo_endpoint"),
                              "is required when discover is false and claims come from the userinfo endpoint")
        if "openid" in scopes and endpoints["jwks_uri"] is None:
            raise ConfigError(s.key("jwks_uri"), "is required when discover is false and the openid scope is used")

    requirements = parse_attribute_requirements(s)

    ump = s.section("user_mapping_provider")
    module = ump.str("module", None)
    ump_config = ump.raw("config", {})
    if not isinstance(ump_config, dict):
        raise ConfigError(ump.key("config"), "expected a mapping")
    try:
        mapper = load_mapping_provider(module, ump_config)
    except MappingError as e:
        where = str(e).split(":", 1)[0]
        key = ump.key("module") if where == "module" else ump.key("config")
        if where not in ("module", "config"):
            key = f"{ump.key('config')}.{where}"
        raise ConfigError(key, str(e).split(": ", 1)[-1]) from None

    extra_params = s.section("additional_authorization_parameters")
    additional = {k: extra_params.str(k) for k in list(extra_params.data)}
    passthrough = tuple(s.list("passthrough_authorization_parameters", [], of=string_item))
    for key, names in (("additional_authorization_parameters", additional),
                       ("passthrough_authorization_parameters", passthrough)):
        for name in names:
            if name in OIDC_REQUEST_PARAMETERS:
                raise ConfigError(s.key(key), f"{name!r} is a parameter of the authorization request we make "
                                              "ourselves; it cannot be set or passed through")
    return OidcProviderConfig(
        idp_id=idp_id,
        idp_name=idp_name,
        idp_icon=idp_icon,
        idp_brand=idp_brand,
        discover=discover,
        issuer=issuer,
        client_id=client_id,
        client_secret=client_secret,
        client_secret_jwt_key=jwt_key,
        client_auth_method=auth_method,
        pkce_method=pkce,
        scopes=scopes,
        skip_verification=s.bool("skip_verification", False),
        user_profile_method=profile_method,
        allow_existing_users=s.bool("allow_existing_users", False),
        enable_registration=s.bool("enable_registration", True),
        attribute_requirements=tuple(requirements),
        user_mapping_provider=mapper,
        backchannel_logout_enabled=s.bool("backchannel_logout_enabled", False),
        backchannel_logout_ignore_sub=s.bool("backchannel_logout_ignore_sub", False),
        additional_authorization_parameters=additional,
        passthrough_authorization_parameters=passthrough,
        **endpoints,
    )


def parse_attribute_requirements(s: Section) -> tuple[AttributeRequirement, ...]:
    """``attribute_requirements``: a list of ``{attribute, value}`` or ``{attribute, one_of}``."""
    requirements = []
    for i, item in enumerate(s.list("attribute_requirements", [])):
        rs = Section(item, s.key(f"attribute_requirements[{i}]"))
        attribute = rs.str("attribute")
        value = rs.raw("value")
        one_of = rs.list("one_of", None, of=string_item)
        if (value is None) == (one_of is None):
            raise ConfigError(rs.path, "give exactly one of value or one_of")
        if value is not None and not isinstance(value, str):
            raise ConfigError(rs.key("value"), "expected a string")
        requirements.append(AttributeRequirement(attribute, value, tuple(one_of) if one_of is not None else None))
    return tuple(requirements)


def parse_idp_icon(s: Section) -> str | None:
    idp_icon = s.str("idp_icon", None)
    if idp_icon is not None and not re.match(r"^mxc://[^/]+/[^/]+$", idp_icon):
        raise ConfigError(s.key("idp_icon"), f"expected an mxc://server/media_id URI, got {idp_icon!r}")
    return idp_icon


def _parse_client_secret_jwt_key(s: Section, resolve_path) -> ClientSecretJwtKey | None:
    if not s.has("client_secret_jwt_key"):
        s.used.add("client_secret_jwt_key")
        return None
    k = s.section("client_secret_jwt_key")
    key = k.str("key", None)
    key_file = k.str("key_file", None)
    if (key is None) == (key_file is None):
        raise ConfigError(k.path, "give exactly one of key or key_file")
    if key_file is not None:
        path = resolve_path(key_file)
        try:
            with open(path, encoding="utf-8") as f:
                key = f.read()
        except OSError as e:
            raise ConfigError(k.key("key_file"), f"cannot read {path}: {e.strerror}") from None
    header = k.raw("jwt_header")
    if not isinstance(header, dict) or not isinstance(header.get("alg"), str):
        raise ConfigError(k.key("jwt_header"), "expected a mapping with at least alg (for example ES256)")
    if header["alg"] not in JWT_ALGORITHMS:
        raise ConfigError(k.key("jwt_header"), f"unsupported alg {header['alg']!r}")
    payload = k.raw("jwt_payload", {})
    if not isinstance(payload, dict):
        raise ConfigError(k.key("jwt_payload"), "expected a mapping")
    return ClientSecretJwtKey(key, dict(header), dict(payload))


def _parse_jwt(s: Section, resolve_path: Callable[[str], str]) -> JwtConfig | None:
    if not s.data:
        return None
    if not s.bool("enabled", False):
        for k in list(s.data):
            s.used.add(k)
        return None
    secret = s.str("secret", None)
    if secret is None and s.has("secret_path"):
        try:
            with open(resolve_path(s.str("secret_path")), encoding="utf-8") as f:
                secret = f.read().strip()
        except OSError as e:
            raise ConfigError(s.key("secret_path"), f"cannot read it: {e.strerror}") from None
    if not secret:
        raise ConfigError(s.key("secret"), "is required when jwt_config is enabled")
    algorithm = s.str("algorithm")
    if algorithm not in JWT_ALGORITHMS:
        raise ConfigError(s.key("algorithm"), f"expected one of {', '.join(JWT_ALGORITHMS)}, got {algorithm!r}")
    audiences = s.list("audiences", None, of=string_item)
    return JwtConfig(
        secret=secret,
        algorithm=algorithm,
        subject_claim=s.str("subject_claim", "sub"),
        display_name_claim=s.str("display_name_claim", None),
        issuer=s.str("issuer", None),
        audiences=tuple(audiences) if audiences is not None else None,
        login_url=_jwt_login_url(s),
        idp_name=s.str("idp_name", "Single sign-on"),
    )


def _jwt_login_url(s: Section) -> str | None:
    url = s.str("login_url", None)
    if url is None:
        return None
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname or parts.fragment:
        raise ConfigError(s.key("login_url"), "expected an http(s) URL without a fragment")
    return url
