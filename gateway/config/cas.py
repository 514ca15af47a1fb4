"""``cas_config``: Central Authentication Service login, with Synapse's key names.

Docs: https://element-hq.github.io/synapse/latest/usage/configuration/config_documentation.html#cas_config
Protocol: https://apereo.github.io/cas/7.0.x/protocol/CAS-Protocol-Specification.html
"""

from __future__ import annotations

from ._values import ConfigError, Section
from .sso import AttributeRequirement, CasConfig, parse_idp_icon

__all__ = ["parse_cas_config"]


def parse_cas_config(s: Section, warnings: list[str]) -> CasConfig | None:
    if not s.data:
        return None
    if not s.bool("enabled", False):
        s.used.update(s.data)
        return None
    server_url = s.str("server_url")
    if not server_url.startswith(("https://", "http://")):
        raise ConfigError(s.key("server_url"), f"expected an http(s) URL, got {server_url!r}")
    version = s.raw("protocol_version", 2)
    if version not in (2, 3, "2", "3"):
        raise ConfigError(s.key("protocol_version"), f"expected 2 or 3, got {version!r}")
    required = s.raw("required_attributes", {})
    if not isinstance(required, dict):
        raise ConfigError(s.key("required_attributes"), "expected a mapping of attribute names to values")
    requirements = []
    for name, value in required.items():
        # null (and the "None" of Synapse's documented example): the attribute must only be present.
        if value is None or value == "None":
            requirements.append(AttributeRequirement(str(name)))
        elif isinstance(value, (str, int, float)) and not isinstance(value, bool):
            requirements.append(AttributeRequirement(str(name), str(value)))
        else:
            raise ConfigError(f"{s.key('required_attributes')}.{name}", "expected a string or null")
    config = CasConfig(
        server_url=server_url.rstrip("/"),
        protocol_version=int(version),
        displayname_attribute=s.str("displayname_attribute", None),
        required_attributes=tuple(requirements),
        idp_name=s.str("idp_name", "CAS"),
        idp_icon=parse_idp_icon(s),
        idp_brand=s.str("idp_brand", None),
        enable_registration=s.bool("enable_registration", True),
    )
    warnings += [f"unknown config key {k!r} (ignored)" for k in s.unknown_keys()]
    return config
