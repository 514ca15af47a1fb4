"""Third-party identifiers (3PIDs: e-mail addresses) on accounts: Synapse's top-level keys.

Spec: https://spec.matrix.org/latest/client-server-api/#adding-account-administrative-contact-information.
Only the ``email`` medium is handled here (phone numbers need an SMS sender we do not have:
``msisdn`` answers ``M_THREEPID_MEDIUM_NOT_SUPPORTED``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ._values import ConfigError, Section, string_item


@dataclass(frozen=True)
class AllowedThreepid:
    medium: str
    pattern: re.Pattern


@dataclass(frozen=True)
class ThreepidConfig:
    #: ``registrations_require_3pid``: mediums a registration must validate (only ``email`` works).
    registrations_require_3pid: tuple[str, ...] = ()
    #: ``allowed_local_3pids``: when set, only matching addresses may be added or registered.
    allowed_local_3pids: tuple[AllowedThreepid, ...] | None = None
    disable_msisdn_registration: bool = False
    #: ``request_token_inhibit_3pid_errors``: requestToken never says whether an address is in use.
    request_token_inhibit_3pid_errors: bool = False
    #: ``enable_3pid_changes``: users may add and remove their addresses.
    enable_3pid_changes: bool = True
    #: ``next_link_domain_whitelist``: hosts ``next_link`` may point at (None: see docs/accounts.md).
    next_link_domain_whitelist: frozenset[str] | None = None
    #: ``enable_3pid_lookup``: third-party invites may ask identity servers.
    enable_3pid_lookup: bool = True

    def allowed(self, medium: str, address: str) -> bool:
        if self.allowed_local_3pids is None:
            return True
        return any(a.medium == medium and a.pattern.search(address) for a in self.allowed_local_3pids)


def parse_threepid_config(root: Section) -> ThreepidConfig:
    required = root.list("registrations_require_3pid", [], of=string_item)
    disable_msisdn = root.bool("disable_msisdn_registration", False)
    for i, medium in enumerate(required):
        if medium not in ("email", "msisdn"):
            raise ConfigError(f"registrations_require_3pid[{i}]", f"expected email or msisdn, got {medium!r}")
    if "msisdn" in required and not disable_msisdn:
        raise ConfigError("registrations_require_3pid", "msisdn cannot be validated here (no SMS sending): "
                          "drop it, or set disable_msisdn_registration: true")
    items = root.list("allowed_local_3pids", None)
    allowed = None if items is None else []
    for i, item in enumerate(items or []):
        s = Section(item, f"allowed_local_3pids[{i}]")
        medium = s.str("medium", choices=("email", "msisdn"))
        pattern = s.str("pattern")
        try:
            allowed.append(AllowedThreepid(medium, re.compile(pattern)))
        except re.error as e:
            raise ConfigError(s.key("pattern"), f"not a regular expression: {e}") from None
    whitelist = root.list("next_link_domain_whitelist", None, of=string_item)
    return ThreepidConfig(
        registrations_require_3pid=tuple(m for m in required if m == "email"),
        allowed_local_3pids=tuple(allowed) if allowed is not None else None,
        disable_msisdn_registration=disable_msisdn,
        request_token_inhibit_3pid_errors=root.bool("request_token_inhibit_3pid_errors", False),
        enable_3pid_changes=root.bool("enable_3pid_changes", True),
        next_link_domain_whitelist=frozenset(h.lower() for h in whitelist) if whitelist is not None else None,
        enable_3pid_lookup=root.bool("enable_3pid_lookup", True),
    )
