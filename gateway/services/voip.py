"""TURN credentials for calls.

Spec: https://spec.matrix.org/latest/client-server-api/#get_matrixclientv3voipturnserver.
With a shared secret these are the credentials of coturn's "TURN REST API" (use-auth-secret):
the username is ``<expiry, seconds since 1970>:<user ID>`` and the password the base64
HMAC-SHA1 of the username keyed by the secret; the TURN server checks both and the expiry.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from typing import Any

from ..config.voip import TurnConfig


def turn_credentials(config: TurnConfig, user_id: str, now_ms: int) -> dict[str, Any]:
    """The answer of ``GET /voip/turnServer``: ``{}`` when no TURN server is configured
    (as Synapse answers)."""
    if not config.enabled:
        return {}
    ttl = config.user_lifetime_ms // 1000
    if config.shared_secret is not None:
        username = f"{now_ms // 1000 + ttl}:{user_id}"
        digest = hmac.new(config.shared_secret.encode(), username.encode(), hashlib.sha1).digest()
        password = base64.b64encode(digest).decode("ascii")
    else:
        username, password = config.username, config.password
    return {"username": username, "password": password, "uris": list(config.uris), "ttl": ttl}
