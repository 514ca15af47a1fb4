"""Scope tokens (spec "Scope") and PKCE S256 (RFC 7636)."""

from __future__ import annotations

import pytest

from gateway.oauth import pkce
from gateway.oauth.scopes import ScopeError, parse_scope


def test_stable_and_unstable_scopes():
    s = parse_scope("urn:matrix:client:api:* urn:matrix:client:device:AAABBBCCCDDD")
    assert s.device_id == "AAABBBCCCDDD" and not s.openid
    assert str(s) == "urn:matrix:client:api:* urn:matrix:client:device:AAABBBCCCDDD"
    u = parse_scope("openid urn:matrix:org.matrix.msc2967.client:api:* "
                    "urn:matrix:org.matrix.msc2967.client:device:Dev-1.x_y~z")
    assert u.device_id == "Dev-1.x_y~z" and u.openid
    # The same device in both forms is one device.
    both = parse_scope("urn:matrix:client:api:* urn:matrix:client:device:X1 urn:matrix:org.matrix.msc2967.client:device:X1")
    assert both.device_id == "X1"


@pytest.mark.parametrize("scope", [
    None, "", "urn:matrix:client:api:*",  # no device
    "urn:matrix:client:device:ABC",  # no API access
    "urn:matrix:client:api:* urn:matrix:client:device:A urn:matrix:client:device:B",  # two devices
    "urn:matrix:client:api:* urn:matrix:client:device:bad/id",
    "urn:matrix:client:api:* urn:matrix:client:device:",
    "urn:matrix:client:api:* urn:matrix:client:device:ABC urn:synapse:admin:*",
    'urn:matrix:client:api:* urn:matrix:client:device:ABC "quoted"',
])
def test_refused_scopes(scope):
    with pytest.raises(ScopeError):
        parse_scope(scope)


def test_pkce_s256_rfc7636_appendix_b():
    verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
    assert pkce.s256_challenge(verifier) == "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
    assert pkce.verify(verifier, "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM")
    assert not pkce.verify(verifier[:-1] + "l", "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM")
    assert not pkce.verify("short", pkce.s256_challenge("short"))  # under 43 characters
    assert not pkce.verify(None, "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM")
    assert not pkce.verify("é" * 50, "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM")
    assert pkce.valid_challenge("E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM")
    assert not pkce.valid_challenge("plain-verifier") and not pkce.valid_challenge(None)
