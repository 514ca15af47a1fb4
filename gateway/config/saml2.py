"""``saml2_config``: SAML 2.0 login through pysaml2, with Synapse's key names.

The pysaml2 SP configuration is built as Synapse builds it: our defaults (entity ID
``<public_baseurl>_synapse/client/saml2/metadata.xml``, the HTTP-POST assertion consumer
service, the attributes the mapping provider needs), then the operator's ``sp_config``,
then the ``CONFIG`` dict of the Python file ``config_path``. Nested mappings are merged
key by key (so ``service.sp.allow_unknown_attributes`` does not drop our ACS endpoint).
Signed assertions are always required.

Docs: https://element-hq.github.io/synapse/latest/usage/configuration/config_documentation.html#saml2_config
"""

from __future__ import annotations

import copy
import runpy
from typing import Any, Callable

from ._values import ConfigError, Section
from .sso import SamlConfig, parse_attribute_requirements, parse_idp_icon

__all__ = ["parse_saml2_config", "merge_config", "check_pysaml2_config", "ACS_PATH", "METADATA_PATH"]

ACS_PATH = "_synapse/client/saml2/authn_response"
METADATA_PATH = "_synapse/client/saml2/metadata.xml"
DEFAULT_SESSION_LIFETIME_MS = 15 * 60 * 1000


def merge_config(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """``extra`` over ``base``; mappings are merged recursively, anything else replaced."""
    out = dict(base)
    for k, v in extra.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge_config(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def parse_saml2_config(s: Section, resolve_path: Callable[[str], str], public_baseurl: str,
                       warnings: list[str]) -> SamlConfig | None:
    if not s.data:
        return None
    if not s.bool("enabled", True):
        s.used.update(s.data)
        return None
    sp_config = s.raw("sp_config")
    config_path = s.str("config_path", None)
    if sp_config is None and config_path is None:
        s.used.update(s.data)
        warnings.append("saml2_config has neither sp_config nor config_path: SAML login stays off")
        return None
    if sp_config is not None and not isinstance(sp_config, dict):
        raise ConfigError(s.key("sp_config"), "expected a mapping (a pysaml2 SP configuration)")

    from sso.mapping import (
        DEFAULT_SAML_MAPPER,
        SAML_MAPPER_ALIASES,
        MappingError,
        load_mapping_provider,
    )

    ump = s.section("user_mapping_provider")
    module = ump.str("module", None)
    ump_config = ump.raw("config", {})
    if not isinstance(ump_config, dict):
        raise ConfigError(ump.key("config"), "expected a mapping")
    ump_config = dict(ump_config)
    # Old homeservers had these two at the top level; there they win, as in Synapse.
    for legacy in ("mxid_source_attribute", "mxid_mapping"):
        if s.has(legacy):
            ump_config[legacy] = s.str(legacy)
            warnings.append(f"saml2_config.{legacy} is deprecated: move it to user_mapping_provider.config")
    try:
        mapper = load_mapping_provider(module, ump_config, aliases=SAML_MAPPER_ALIASES, default=DEFAULT_SAML_MAPPER,
                                       required_methods=("get_remote_user_id", "saml_response_to_user_attributes"))
    except MappingError as e:
        where, _, message = str(e).partition(": ")
        key = ump.key("module") if where == "module" else ump.key("config")
        if where not in ("module", "config"):
            key = f"{ump.key('config')}.{where}"
        raise ConfigError(key, message or str(e)) from None

    requirements = parse_attribute_requirements(s)
    required: set[str] = set()
    optional: set[str] = set()
    get_attributes = getattr(mapper.cls, "get_saml_attributes", None)
    if callable(get_attributes):
        try:
            required, optional = (set(x) for x in get_attributes(mapper.parsed_config))
        except Exception as e:  # a third-party mapper
            raise ConfigError(ump.key("module"), f"get_saml_attributes failed: {e}") from None
    required |= {r.attribute for r in requirements}
    optional -= required

    defaults: dict[str, Any] = {
        "entityid": public_baseurl + METADATA_PATH,
        # Remote metadata is fetched in a thread: never let a silent IdP hold it (and logins) forever.
        "http_client_timeout": 15,
        "service": {"sp": {
            "endpoints": {"assertion_consumer_service": [
                (public_baseurl + ACS_PATH, "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST")]},
            "required_attributes": sorted(required),
            "optional_attributes": sorted(optional),
        }},
    }
    merged = merge_config(defaults, sp_config or {})
    if config_path is not None:
        path = resolve_path(config_path)
        try:
            module_globals = runpy.run_path(path)
        except Exception as e:  # noqa: BLE001 - report any failure of the operator's file
            raise ConfigError(s.key("config_path"), f"cannot load {path}: {e}") from None
        if not isinstance(module_globals.get("CONFIG"), dict):
            raise ConfigError(s.key("config_path"), f"{path} must define a dict named CONFIG")
        merged = merge_config(merged, module_globals["CONFIG"])
    sp = merged.setdefault("service", {}).setdefault("sp", {})
    if sp.get("want_assertions_signed") is False:
        warnings.append("saml2_config: want_assertions_signed is always on (unsigned assertions are refused)")
    sp["want_assertions_signed"] = True
    if sp.get("allow_unsolicited"):
        warnings.append("saml2_config: allow_unsolicited is ignored: every response must answer a login "
                        "started in the same browser")
    sp["allow_unsolicited"] = False
    check_pysaml2_config(merged, s.key("sp_config") if sp_config is not None else s.key("config_path"))

    idp_entityid = s.str("idp_entityid", None)
    config = SamlConfig(
        sp_config=merged,
        session_lifetime_ms=s.duration_ms("saml_session_lifetime", DEFAULT_SESSION_LIFETIME_MS),
        user_mapping_provider=mapper,
        grandfathered_mxid_source_attribute=s.str("grandfathered_mxid_source_attribute", "uid"),
        attribute_requirements=requirements,
        idp_entityid=idp_entityid,
        idp_name=s.str("idp_name", "SAML"),
        idp_icon=parse_idp_icon(s),
        idp_brand=s.str("idp_brand", None),
        enable_registration=s.bool("enable_registration", True),
    )
    warnings += [f"unknown config key {k!r} (ignored)" for k in s.unknown_keys()]
    return config


def check_pysaml2_config(config: dict[str, Any], key: str) -> None:
    """Let pysaml2 load the configuration (local metadata included, remote metadata not: an
    IdP that is down must not stop the server), so mistakes are reported at startup."""
    from saml2.config import SPConfig

    offline = copy.deepcopy(config)
    metadata = offline.get("metadata")
    if isinstance(metadata, dict):
        metadata.pop("remote", None)
        metadata.pop("mdq", None)
    try:
        SPConfig().load(offline)
    except Exception as e:  # noqa: BLE001 - pysaml2 raises many kinds
        raise ConfigError(key, f"pysaml2 cannot use this configuration: {type(e).__name__}: {e}") from None
