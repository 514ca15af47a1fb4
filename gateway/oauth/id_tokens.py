"""The RS256 key that signs ``id_token``\\ s, its JWKS, and the tokens themselves.

OpenID Connect Core 1.0 section 2 (ID Token) and 3.1.3.6/3.1.3.7 (what a client checks):
https://openid.net/specs/openid-connect-core-1_0.html. Clients of the Matrix OAuth 2.0 API
do not need this; older matrix-js-sdk releases and generic OIDC libraries do. The key is
made on first use and kept in the database, so every process signs with the same one.
PyJWT and ``cryptography`` are imported at first use: most servers never sign one, and the
two weigh several MiB of memory per process (docs/performance.md, "Memory").
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
from typing import Any, Callable

from ..storage.oauth import OAuthStore

__all__ = ["IdTokenSigner", "at_hash"]


def at_hash(access_token: str) -> str:
    """The left half of the token's SHA-256, base64url (OIDC Core 3.1.3.6)."""
    digest = hashlib.sha256(access_token.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest[:16]).rstrip(b"=").decode("ascii")


class IdTokenSigner:
    def __init__(self, store: OAuthStore, issuer: str, clock_ms: Callable[[], int]):
        self.store, self.issuer, self.clock_ms = store, issuer, clock_ms
        self._key: tuple[str, Any] | None = None

    async def _signing_key(self) -> tuple[str, Any]:
        if self._key is None:
            from cryptography.hazmat.primitives import serialization
            from cryptography.hazmat.primitives.asymmetric import rsa

            fresh = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            pem = fresh.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()).decode("ascii")
            kid, stored = await self.store.get_or_create_signing_key(secrets.token_urlsafe(8), pem, self.clock_ms())
            self._key = (kid, serialization.load_pem_private_key(stored.encode("ascii"), password=None))
        return self._key

    async def jwks(self) -> dict[str, Any]:
        import jwt

        kid, key = await self._signing_key()
        jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
        return {"keys": [{**jwk, "kid": kid, "use": "sig", "alg": "RS256"}]}

    async def id_token(self, *, user_id: str, client_id: str, nonce: str | None, auth_time: int | None,
                       access_token: str, device_id: str, lifetime_s: int = 3600) -> str:
        kid, key = await self._signing_key()
        now = self.clock_ms() // 1000
        claims: dict[str, Any] = {"iss": self.issuer, "sub": user_id, "aud": client_id, "iat": now,
                                  "exp": now + lifetime_s, "at_hash": at_hash(access_token),
                                  "device_id": device_id}
        if nonce:
            claims["nonce"] = nonce
        if auth_time is not None:
            claims["auth_time"] = auth_time // 1000
        import jwt

        return jwt.encode(claims, key, algorithm="RS256", headers={"kid": kid})
