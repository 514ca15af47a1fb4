"""The outbound rules shared by federation and the federation tester: which CAs to
trust and which IP ranges may be contacted (Synapse's config keys)."""

from __future__ import annotations

import ssl

from federation.net.ip_ranges import IPRangePolicy

from .config import FederationConfig


def outbound_ip_policy(fed: FederationConfig) -> IPRangePolicy:
    return IPRangePolicy(blacklist=fed.federation_ip_range_blacklist, whitelist=fed.ip_range_whitelist)


def outbound_ssl_context(fed: FederationConfig, *, always_verify: bool = False) -> ssl.SSLContext:
    """Trusts the system CAs plus ``federation_custom_ca_list``; skips verification when
    ``federation_verify_certificates`` is false, unless ``always_verify`` (the tester,
    whose job is to report certificate problems)."""
    ctx = ssl.create_default_context()
    for ca in fed.federation_custom_ca_list:
        ctx.load_verify_locations(cafile=ca)
    if not fed.federation_verify_certificates and not always_verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx
