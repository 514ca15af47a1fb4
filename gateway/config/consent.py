"""The ``user_consent`` section (Synapse's keys), as far as registration needs it: the policy
documents in ``template_dir`` (``<lang>/<version>.html``), the current ``version``,
``require_at_registration`` (new users accept the policy: the ``m.login.terms`` stage of
``/register`` and the SSO consent page) and ``policy_name``.

https://element-hq.github.io/synapse/latest/usage/configuration/config_documentation.html#user_consent
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Callable

from ._values import ConfigError, Section

#: Synapse keys we accept but do not act on yet (server notices about consent, event blocking).
_NOT_SUPPORTED = ("server_notice_content", "send_server_notice_to_guests", "block_events_error")
VERSION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


@dataclass(frozen=True)
class UserConsentConfig:
    template_dir: str
    version: str
    require_at_registration: bool = False
    policy_name: str = "Privacy Policy"


def parse_user_consent(root: Section, resolve_path: Callable[[str], str]) -> tuple[UserConsentConfig | None, list[str]]:
    """The config (None when the section is absent) and warnings."""
    if not root.has("user_consent"):
        root.used.add("user_consent")
        return None, []
    s = root.section("user_consent")
    template_dir = resolve_path(s.str("template_dir"))
    if not os.path.isdir(template_dir):
        raise ConfigError(s.key("template_dir"), f"{template_dir} is not a directory")
    raw_version = s.raw("version")  # YAML reads ``version: 1.0`` as a number
    version = str(raw_version) if isinstance(raw_version, (int, float)) and not isinstance(raw_version, bool) \
        else s.str("version")
    if not VERSION_RE.match(version):
        raise ConfigError(s.key("version"), "expected letters, digits, '.', '_' or '-' (it names a file)")
    if not os.path.isfile(os.path.join(template_dir, "en", f"{version}.html")):
        raise ConfigError(s.key("version"), f"no policy document {template_dir}/en/{version}.html")
    config = UserConsentConfig(
        template_dir=template_dir,
        version=version,
        require_at_registration=s.bool("require_at_registration", False),
        policy_name=s.str("policy_name", "Privacy Policy"),
    )
    warnings = []
    for key in _NOT_SUPPORTED:
        if s.has(key):
            s.ignore(key)
            warnings.append(f"{s.key(key)} is not supported yet (ignored)")
    return config, warnings + [f"unknown config key {k!r} (ignored)" for k in s.unknown_keys()]
