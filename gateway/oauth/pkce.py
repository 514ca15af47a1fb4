"""Proof Key for Code Exchange, ``S256`` only. Pure.

RFC 7636: https://datatracker.ietf.org/doc/html/rfc7636 (section 4.1 the verifier, 4.2 the
challenge, 4.6 the check).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re

__all__ = ["s256_challenge", "valid_challenge", "verify"]

#: code-verifier = 43*128unreserved (section 4.1)
_VERIFIER = re.compile(r"^[A-Za-z0-9._~-]{43,128}$")
#: The S256 challenge: 32 bytes in unpadded base64url, 43 characters.
_CHALLENGE = re.compile(r"^[A-Za-z0-9_-]{43}$")


def s256_challenge(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def valid_challenge(challenge: str | None) -> bool:
    return bool(challenge) and _CHALLENGE.match(challenge) is not None


def verify(verifier: str | None, challenge: str) -> bool:
    """Whether ``verifier`` is well formed and hashes to ``challenge``."""
    if not verifier or not _VERIFIER.match(verifier):
        return False
    return hmac.compare_digest(s256_challenge(verifier), challenge)
