"""User identifiers in login and auth bodies.

Spec: https://spec.matrix.org/latest/client-server-api/#identifier-types
"""

from __future__ import annotations

from typing import Any

from ..http import Codes, MatrixError


def qualify_user_id(user: str, server_name: str) -> str:
    """``alice`` or ``@alice:server`` -> ``@alice:server`` (localparts are lower-cased)."""
    if user.startswith("@"):
        localpart, sep, domain = user[1:].partition(":")
        if not sep:
            raise MatrixError.invalid_param(f"Invalid user ID {user!r}")
        if domain != server_name:
            raise MatrixError(403, Codes.FORBIDDEN, "Invalid username or password")
        return f"@{localpart.lower()}:{domain}"
    return f"@{user.lower()}:{server_name}"


def user_id_from_identifier(body: dict[str, Any], server_name: str) -> str:
    """The user ID from ``identifier`` (``m.id.user``) or the deprecated ``user`` field."""
    ident = body.get("identifier")
    if ident is None:
        user = body.get("user")
        if not isinstance(user, str) or not user:
            raise MatrixError.bad_json("'identifier' is required")
        return qualify_user_id(user, server_name)
    if not isinstance(ident, dict):
        raise MatrixError.bad_json("'identifier' must be an object")
    kind = ident.get("type")
    if kind == "m.id.user":
        user = ident.get("user")
        if not isinstance(user, str) or not user:
            raise MatrixError.bad_json("'identifier.user' must be a non-empty string")
        return qualify_user_id(user, server_name)
    if kind in ("m.id.thirdparty", "m.id.phone"):
        raise MatrixError(403, Codes.FORBIDDEN, "Third-party identifiers cannot be used here")
    raise MatrixError(400, Codes.UNKNOWN, f"Unknown identifier type {kind!r}")


def third_party_identifier(body: dict[str, Any]) -> tuple[str, str] | None:
    """(medium, address) of an ``m.id.thirdparty`` identifier, or of the deprecated top-level
    ``medium`` and ``address`` (e-mail addresses canonical); None for other identifiers.
    ``m.id.phone`` answers ``M_THREEPID_MEDIUM_NOT_SUPPORTED``."""
    ident = body.get("identifier")
    if isinstance(ident, dict):
        if ident.get("type") == "m.id.phone":
            raise MatrixError(400, Codes.THREEPID_MEDIUM_NOT_SUPPORTED, "Phone numbers are not supported here")
        if ident.get("type") != "m.id.thirdparty":
            return None
        medium, address = ident.get("medium"), ident.get("address")
    elif ident is None and "medium" in body:
        medium, address = body.get("medium"), body.get("address")
    else:
        return None
    if not isinstance(medium, str) or not isinstance(address, str):
        raise MatrixError.bad_json("'medium' and 'address' must be strings")
    return medium, address.strip().lower() if medium == "email" else address
