"""Mapping providers: what an identity provider says about a user -> a Matrix account.

The default OIDC mapper renders Jinja templates over the IdP's claims, as Synapse's does
(same option names, so pasted ``user_mapping_provider.config`` sections keep working).
Custom mappers are classes named by ``user_mapping_provider.module`` with Synapse's method
names: ``parse_config`` (static), ``get_remote_user_id``, ``map_user_attributes``
(async, with ``failures`` for localpart collisions) and ``get_extra_attributes`` (async).

Docs: https://element-hq.github.io/synapse/latest/sso_mapping_providers.html
User ID grammar: https://spec.matrix.org/latest/appendices/#user-identifiers
"""

from __future__ import annotations

import importlib
import inspect
import re
import string
from dataclasses import dataclass, field
from functools import cache
from typing import TYPE_CHECKING, Any, Mapping

if TYPE_CHECKING:
    import jinja2

__all__ = [
    "MappingError",
    "UserAttributes",
    "JinjaOidcMappingConfig",
    "JinjaOidcMappingProvider",
    "DEFAULT_OIDC_MAPPER",
    "OIDC_MAPPER_ALIASES",
    "load_mapping_provider",
    "DefaultSamlMappingProvider",
    "DEFAULT_SAML_MAPPER",
    "SAML_MAPPER_ALIASES",
    "dot_replace_for_mxid",
    "localpart_from_email",
    "map_username_to_mxid_localpart",
]


class MappingError(Exception):
    """A mapping provider's configuration or output is unusable."""


@dataclass(frozen=True)
class UserAttributes:
    """What a mapping provider decided about a user (Synapse's ``UserAttributes``).

    ``localpart`` None means "let the user pick one" (the username picker page).
    """

    localpart: str | None
    confirm_localpart: bool = False
    display_name: str | None = None
    emails: tuple[str, ...] = ()
    picture: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"localpart": self.localpart, "confirm_localpart": self.confirm_localpart,
                "display_name": self.display_name, "emails": list(self.emails), "picture": self.picture}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "UserAttributes":
        return cls(data.get("localpart"), bool(data.get("confirm_localpart")), data.get("display_name"),
                   tuple(data.get("emails") or ()), data.get("picture"))


# --- helpers --------------------------------------------------------------------------

_ALLOWED = frozenset(string.ascii_lowercase + string.digits + "_-./+")


def map_username_to_mxid_localpart(username: str, case_sensitive: bool = False) -> str:
    """Any string -> a valid localpart, reversibly: other bytes become ``=xx`` (hex).

    The same scheme Synapse uses, so existing mappings stay stable.
    """
    if not case_sensitive:
        username = username.lower()
    out = []
    for byte in username.encode("utf-8"):
        ch = chr(byte)
        if ch in _ALLOWED:
            out.append(ch)
        elif "A" <= ch <= "Z":  # case_sensitive: upper case letters are escaped as _x
            out.append("_" + ch.lower())
        else:
            out.append(f"={byte:02x}")
    result = "".join(out)
    # A leading "_" is reserved for application services.
    return "=5f" + result[1:] if result.startswith("_") else result


def localpart_from_email(address: str) -> str:
    """The part before the ``@``: a Jinja filter for ``localpart_template``."""
    return address.rsplit("@", 1)[0]


def _finalize(value: Any) -> Any:
    return "" if value is None else value


@cache
def _template_env() -> jinja2.Environment:
    """The environment of mapping templates, made (and Jinja imported) when the first one
    is compiled: a server without SSO mapping never needs it."""
    import jinja2

    # Mapping output is data, not HTML: no autoescape; None renders as "".
    env = jinja2.Environment(finalize=_finalize, undefined=jinja2.Undefined)
    env.filters["localpart_from_email"] = localpart_from_email
    return env


def _compile(config: Mapping[str, Any], key: str) -> jinja2.Template | None:
    import jinja2

    source = config.get(key)
    if source is None:
        return None
    if not isinstance(source, str):
        raise MappingError(f"{key}: expected a Jinja template string")
    try:
        return _template_env().from_string(source)
    except jinja2.TemplateSyntaxError as e:
        raise MappingError(f"{key}: invalid Jinja template: {e.message}") from None


# --- the default OIDC mapper ---------------------------------------------------------


@dataclass(frozen=True)
class JinjaOidcMappingConfig:
    subject_template: jinja2.Template
    picture_template: jinja2.Template
    localpart_template: jinja2.Template | None
    display_name_template: jinja2.Template | None
    email_template: jinja2.Template | None
    extra_attributes: dict[str, jinja2.Template] = field(default_factory=dict)
    confirm_localpart: bool = False


class JinjaOidcMappingProvider:
    """The default OIDC mapper: each attribute is a Jinja template over ``user`` (the claims)."""

    def __init__(self, parsed_config: JinjaOidcMappingConfig, module_api: Any = None):
        self.config = parsed_config

    @staticmethod
    def parse_config(config: Mapping[str, Any]) -> JinjaOidcMappingConfig:
        config = dict(config or {})
        known = {"subject_template", "subject_claim", "picture_template", "picture_claim", "localpart_template",
                 "display_name_template", "email_template", "extra_attributes", "confirm_localpart"}
        unknown = sorted(set(config) - known)
        if unknown:
            raise MappingError(f"{unknown[0]}: unknown option of the default OIDC mapping provider")
        subject = _compile(config, "subject_template")
        if subject is None:
            claim = config.get("subject_claim", "sub")
            if not isinstance(claim, str) or not claim:
                raise MappingError("subject_claim: expected a claim name")
            subject = _template_env().from_string("{{ user.%s }}" % claim if claim.isidentifier()
                                               else "{{ user[%r] }}" % claim)
        picture = _compile(config, "picture_template")
        if picture is None:
            claim = config.get("picture_claim", "picture")
            if not isinstance(claim, str) or not claim:
                raise MappingError("picture_claim: expected a claim name")
            picture = _template_env().from_string("{{ user[%r] }}" % claim)
        extra = config.get("extra_attributes") or {}
        if not isinstance(extra, dict):
            raise MappingError("extra_attributes: expected a mapping of names to Jinja templates")
        extra_templates = {}
        for name, source in extra.items():
            if not isinstance(source, str):
                raise MappingError(f"extra_attributes.{name}: expected a Jinja template string")
            extra_templates[str(name)] = _compile({name: source}, name)
        confirm = config.get("confirm_localpart", False)
        if not isinstance(confirm, bool):
            raise MappingError("confirm_localpart: expected true or false")
        return JinjaOidcMappingConfig(
            subject_template=subject,
            picture_template=picture,
            localpart_template=_compile(config, "localpart_template"),
            display_name_template=_compile(config, "display_name_template"),
            email_template=_compile(config, "email_template"),
            extra_attributes=extra_templates,
            confirm_localpart=confirm,
        )

    def get_remote_user_id(self, userinfo: Mapping[str, Any]) -> str:
        return self.config.subject_template.render(user=userinfo).strip()

    async def map_user_attributes(self, userinfo: Mapping[str, Any], token: Mapping[str, Any],
                                  failures: int) -> dict[str, Any]:
        localpart = None
        if self.config.localpart_template is not None:
            rendered = self.config.localpart_template.render(user=userinfo).strip()
            if not rendered:
                raise MappingError("localpart_template rendered an empty localpart for this user")
            localpart = map_username_to_mxid_localpart(rendered) + (str(failures) if failures else "")

        def render_optional(template: jinja2.Template | None) -> str | None:
            if template is None:
                return None
            return template.render(user=userinfo).strip() or None

        email = render_optional(self.config.email_template)
        return {
            "localpart": localpart,
            "confirm_localpart": self.config.confirm_localpart,
            "display_name": render_optional(self.config.display_name_template),
            "emails": [email] if email else [],
            "picture": render_optional(self.config.picture_template),
        }

    async def get_extra_attributes(self, userinfo: Mapping[str, Any], token: Mapping[str, Any]) -> dict[str, Any]:
        return {name: t.render(user=userinfo) for name, t in self.config.extra_attributes.items()}


DEFAULT_OIDC_MAPPER = "sso.mapping.JinjaOidcMappingProvider"

#: Class names found in pasted Synapse configs, accepted as ours.
OIDC_MAPPER_ALIASES = {
    "synapse.handlers.oidc.JinjaOidcMappingProvider": DEFAULT_OIDC_MAPPER,
    "synapse.handlers.oidc_handler.JinjaOidcMappingProvider": DEFAULT_OIDC_MAPPER,
}

# --- the default SAML mapper -------------------------------------------------------------

_DOT_REPLACE = re.compile(r"[^a-z0-9_\-./+]")


def dot_replace_for_mxid(username: str) -> str:
    """``mxid_mapping: dotreplace``: lower case, each character a localpart cannot hold becomes ``.``."""
    username = _DOT_REPLACE.sub(".", username.lower())
    return username[1:] if username.startswith("_") else username  # "_" is for application services


MXID_MAPPERS = {"hexencode": map_username_to_mxid_localpart, "dotreplace": dot_replace_for_mxid}


@dataclass(frozen=True)
class SamlMappingConfig:
    mxid_source_attribute: str
    mxid_mapping: str

    def mxid_mapper(self, value: str) -> str:
        return MXID_MAPPERS[self.mxid_mapping](value)


class DefaultSamlMappingProvider:
    """The default SAML mapper (Synapse's option names and behaviour).

    The remote user ID is the ``uid`` attribute; the localpart comes from
    ``mxid_source_attribute`` through ``mxid_mapping``; ``displayName`` and ``email`` are
    used when present. Methods take pysaml2's ``AuthnResponse`` (its ``ava`` attributes).
    """

    def __init__(self, parsed_config: SamlMappingConfig, module_api: Any = None):
        self.config = parsed_config

    @staticmethod
    def parse_config(config: Mapping[str, Any]) -> SamlMappingConfig:
        config = dict(config or {})
        unknown = sorted(set(config) - {"mxid_source_attribute", "mxid_mapping"})
        if unknown:
            raise MappingError(f"{unknown[0]}: unknown option of the default SAML mapping provider")
        source = config.get("mxid_source_attribute", "uid")
        if not isinstance(source, str) or not source:
            raise MappingError("mxid_source_attribute: expected an attribute name")
        mapping = config.get("mxid_mapping", "hexencode")
        if mapping not in MXID_MAPPERS:
            raise MappingError(f"mxid_mapping: expected one of {', '.join(MXID_MAPPERS)}, got {mapping!r}")
        return SamlMappingConfig(source, mapping)

    @staticmethod
    def get_saml_attributes(config: SamlMappingConfig) -> tuple[set[str], set[str]]:
        """(required, optional) attributes: advertised in our SP metadata."""
        return {"uid", config.mxid_source_attribute}, {"displayName", "email"}

    def get_remote_user_id(self, saml_response: Any, client_redirect_url: str | None) -> str:
        try:
            return saml_response.ava["uid"][0]
        except (KeyError, IndexError):
            raise MappingError("the SAML response has no 'uid' attribute") from None

    def saml_response_to_user_attributes(self, saml_response: Any, failures: int,
                                         client_redirect_url: str | None) -> dict[str, Any]:
        ava = saml_response.ava
        try:
            source = ava[self.config.mxid_source_attribute][0]
        except (KeyError, IndexError):
            raise MappingError(f"the SAML response has no {self.config.mxid_source_attribute!r} attribute") \
                from None
        localpart = self.config.mxid_mapper(source)
        if not localpart:
            raise MappingError(f"{self.config.mxid_source_attribute!r} maps to an empty localpart")
        return {
            "mxid_localpart": localpart + (str(failures) if failures else ""),
            "displayname": (ava.get("displayName") or [None])[0],
            "emails": list(ava.get("email") or []),
        }


DEFAULT_SAML_MAPPER = "sso.mapping.DefaultSamlMappingProvider"

SAML_MAPPER_ALIASES = {
    "synapse.handlers.saml.DefaultSamlMappingProvider": DEFAULT_SAML_MAPPER,
    "synapse.handlers.saml_handler.DefaultSamlMappingProvider": DEFAULT_SAML_MAPPER,
}


_MODULE_PATH = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+$")


@dataclass(frozen=True)
class LoadedMappingProvider:
    """A mapping provider class and its parsed configuration, ready to instantiate."""

    module: str
    cls: type
    parsed_config: Any

    def instantiate(self) -> Any:
        params = [p for p in inspect.signature(self.cls.__init__).parameters.values()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        # Synapse passes (parsed_config, module_api); older mappers take only the config.
        if len(params) >= 3:
            return self.cls(self.parsed_config, None)
        return self.cls(self.parsed_config)


def load_mapping_provider(module: str | None, config: Mapping[str, Any] | None,
                          aliases: Mapping[str, str] = OIDC_MAPPER_ALIASES,
                          default: str = DEFAULT_OIDC_MAPPER,
                          required_methods: tuple[str, ...] = ("get_remote_user_id", "map_user_attributes"),
                          ) -> LoadedMappingProvider:
    """Import the class ``module`` names (``package.module.ClassName``) and parse its config."""
    name = aliases.get(module or default, module or default)
    if not _MODULE_PATH.match(name):
        raise MappingError(f"module: expected a Python class path like package.module.ClassName, got {name!r}")
    mod_name, _, cls_name = name.rpartition(".")
    try:
        mod = importlib.import_module(mod_name)
    except ImportError as e:
        raise MappingError(f"module: cannot import {mod_name!r}: {e}") from None
    cls = getattr(mod, cls_name, None)
    if not isinstance(cls, type):
        raise MappingError(f"module: {mod_name!r} has no class {cls_name!r}")
    missing = [m for m in required_methods if not callable(getattr(cls, m, None))]
    if missing:
        raise MappingError(f"module: {name} lacks the method(s) {', '.join(missing)}")
    parse = getattr(cls, "parse_config", None)
    try:
        parsed = parse(dict(config or {})) if callable(parse) else dict(config or {})
    except MappingError:
        raise
    except Exception as e:  # a third-party parse_config: report whatever it raised
        raise MappingError(f"config: {name}.parse_config rejected it: {e}") from None
    return LoadedMappingProvider(name, cls, parsed)
