"""Scopes: the Matrix scope tokens a client may ask for. Pure.

Spec: https://spec.matrix.org/latest/client-server-api/#scope (RFC 6749 section 3.3 for the
syntax). The unstable ``urn:matrix:org.matrix.msc2967.client:`` forms are what shipped
clients (Element X) still send; they mean the same.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["ScopeError", "RequestedScope", "parse_scope"]

API_SCOPES = ("urn:matrix:client:api:*", "urn:matrix:org.matrix.msc2967.client:api:*")
DEVICE_PREFIXES = ("urn:matrix:client:device:", "urn:matrix:org.matrix.msc2967.client:device:")
OPENID = "openid"
#: RFC 6749 section 3.3: scope-token = 1*( %x21 / %x23-5B / %x5D-7E )
_TOKEN = re.compile(r"^[\x21\x23-\x5B\x5D-\x7E]+$")
#: What we accept as a device ID: RFC 3986 unreserved characters.
_DEVICE_ID = re.compile(r"^[A-Za-z0-9._~-]{1,255}$")


class ScopeError(ValueError):
    """RFC 6749 ``invalid_scope``."""


@dataclass(frozen=True)
class RequestedScope:
    tokens: tuple[str, ...]  # as asked (deduplicated, in order): the token response repeats them
    device_id: str
    openid: bool

    def __str__(self) -> str:
        return " ".join(self.tokens)


def parse_scope(raw: str | None) -> RequestedScope:
    """A login scope: full API access and exactly one device ID (and maybe ``openid``)."""
    if not raw or not raw.strip():
        raise ScopeError("a scope is required")
    tokens = tuple(dict.fromkeys(t for t in raw.split(" ") if t))
    device_ids: set[str] = set()
    has_api = False
    for token in tokens:
        if not _TOKEN.match(token):
            raise ScopeError(f"invalid scope token {token[:50]!r}")
        if token in API_SCOPES:
            has_api = True
        elif token == OPENID:
            pass
        elif token.startswith(DEVICE_PREFIXES):
            device_id = token.split(":device:", 1)[1]
            if not _DEVICE_ID.match(device_id):
                raise ScopeError("a device ID must be 1 to 255 of the characters A-Z a-z 0-9 - . _ ~")
            device_ids.add(device_id)
        else:
            raise ScopeError(f"unknown scope {token[:80]!r}")
    if not has_api:
        raise ScopeError("the scope must include urn:matrix:client:api:*")
    if len(device_ids) != 1:
        raise ScopeError("the scope must include exactly one urn:matrix:client:device:<device_id>")
    return RequestedScope(tokens, device_ids.pop(), OPENID in tokens)
