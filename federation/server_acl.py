"""Server access control lists (``m.room.server_acl``): is a server allowed in a room?

Spec: https://spec.matrix.org/latest/client-server-api/#server-access-control-lists-acls-for-rooms
(the event's rules) and https://spec.matrix.org/latest/server-server-api/#server-access-control-lists-acls
(which requests they apply to). Pure: the caller passes the ACL event's content.

Rules, in order: no ACL event -> allow; an IP literal while ``allow_ip_literals`` is
``false`` -> deny; a ``deny`` glob matches -> deny; an ``allow`` glob matches -> allow;
otherwise deny. Globs (``*``, ``?``) match the server name without its port,
case-insensitively.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

__all__ = ["ServerACL", "server_acl_from_content", "server_is_allowed", "glob_to_regex"]


@lru_cache(maxsize=4096)
def glob_to_regex(glob: str) -> re.Pattern[str]:
    """A compiled, anchored, case-insensitive regex for a Matrix glob (``*`` and ``?``)."""
    parts = []
    for ch in glob:
        if ch == "*":
            parts.append(".*")
        elif ch == "?":
            parts.append(".")
        else:
            parts.append(re.escape(ch))
    return re.compile("".join(parts), re.IGNORECASE | re.DOTALL)


def _host_without_port(server_name: str) -> str:
    if server_name.startswith("["):  # [IPv6]:port
        end = server_name.find("]")
        return server_name[: end + 1] if end != -1 else server_name
    host, sep, port = server_name.rpartition(":")
    if sep and port.isdigit():
        return host
    return server_name


def _is_ip_literal(host: str) -> bool:
    literal = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        ipaddress.ip_address(literal)
    except ValueError:
        return False
    return True


@dataclass(frozen=True)
class ServerACL:
    """A parsed ACL: invalid entries (non-strings) are ignored, as the spec's defaults say."""

    allow: tuple[str, ...]
    deny: tuple[str, ...]
    allow_ip_literals: bool

    def is_allowed(self, server_name: str) -> bool:
        host = _host_without_port(server_name)
        if not self.allow_ip_literals and _is_ip_literal(host):
            return False
        if any(glob_to_regex(g).fullmatch(host) for g in self.deny):
            return False
        return any(glob_to_regex(g).fullmatch(host) for g in self.allow)


def server_acl_from_content(content: Mapping[str, Any]) -> ServerACL:
    """Parse an ``m.room.server_acl`` content (``allow`` defaults to nothing)."""
    def globs(key: str) -> tuple[str, ...]:
        value = content.get(key)
        if not isinstance(value, list):
            return ()
        return tuple(v for v in value if isinstance(v, str))

    allow_ip = content.get("allow_ip_literals")
    return ServerACL(globs("allow"), globs("deny"), allow_ip if isinstance(allow_ip, bool) else True)


def server_is_allowed(acl_content: Mapping[str, Any] | None, server_name: str) -> bool:
    """Whether ``server_name`` may take part in a room whose ACL content is given
    (None: the room has no ``m.room.server_acl`` event)."""
    if acl_content is None:
        return True
    return server_acl_from_content(acl_content).is_allowed(server_name)
