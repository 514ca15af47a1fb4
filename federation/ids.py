"""Server names and the identifiers built on them: user IDs, room IDs, aliases, event IDs.

Spec: appendices, "Identifier Grammar".
https://spec.matrix.org/latest/appendices/#identifier-grammar

Parsing is strict where the spec says MUST and tolerant where it says servers must
accept old data (historical user IDs over federation). Everything is case-sensitive.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from dataclasses import dataclass

from .room_versions import EventFormat, RoomVersion

__all__ = [
    "MAX_ID_LENGTH",
    "InvalidIdentifierError",
    "parse_server_name",
    "is_valid_server_name",
    "is_valid_localpart",
    "is_historical_localpart",
    "UserID",
    "RoomID",
    "RoomAlias",
    "EventID",
    "is_valid_user_id",
    "is_valid_room_id",
    "is_valid_room_alias",
    "is_valid_event_id",
    "get_domain_from_id",
]

#: User IDs, room IDs, aliases and event IDs are at most 255 bytes (UTF-8), sigil included.
MAX_ID_LENGTH = 255


class InvalidIdentifierError(ValueError):
    """An identifier does not follow the grammar; the message says which rule."""


# --- Server names: https://spec.matrix.org/latest/appendices/#server-name

_DNS_NAME = re.compile(r"[A-Za-z0-9.\-]{1,255}")
_DOTTED_QUAD = re.compile(r"[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}")
_IPV6_CHARS = re.compile(r"[0-9A-Fa-f:.]{2,45}")
_PORT = re.compile(r"[0-9]{1,5}")


def parse_server_name(server_name: str) -> tuple[str, int | None]:
    """Split ``server_name`` into ``(hostname, port or None)``, validating both.

    The hostname is returned as written: IPv6 literals keep their brackets
    (``"[::1]"``), which is also how they appear in a ``Host`` header.
    Raises InvalidIdentifierError.
    """
    if not isinstance(server_name, str) or not server_name:
        raise InvalidIdentifierError("server name is empty")
    return _parse_server_name(server_name)


# The same few server names come back in every event of a room (senders, IDs): a
# valid name is parsed once (errors are not cached, so they are raised every time).
@functools.lru_cache(maxsize=16384)
def _parse_server_name(server_name: str) -> tuple[str, int | None]:
    if server_name.startswith("["):
        end = server_name.find("]")
        if end < 0:
            raise InvalidIdentifierError("IPv6 literal has no closing ']'")
        host, rest = server_name[: end + 1], server_name[end + 1 :]
        literal = host[1:-1]
        if not _IPV6_CHARS.fullmatch(literal):
            raise InvalidIdentifierError(f"{host!r} is not an IPv6 literal")
        try:
            ipaddress.IPv6Address(literal)
        except ValueError:
            raise InvalidIdentifierError(f"{host!r} is not a valid IPv6 address") from None
        if rest and not rest.startswith(":"):
            raise InvalidIdentifierError("unexpected characters after the IPv6 literal")
        port_text = rest[1:] if rest else None
    else:
        host, sep, port_text_ = server_name.partition(":")
        port_text = port_text_ if sep else None
        if not host:
            raise InvalidIdentifierError("server name has an empty hostname")
        if _DOTTED_QUAD.fullmatch(host):
            try:
                ipaddress.IPv4Address(host)
            except ValueError:
                raise InvalidIdentifierError(
                    f"{host!r}: IPv4 literals are four numbers from 0 to 255"
                ) from None
        elif not _DNS_NAME.fullmatch(host):
            if len(host) > 255:
                raise InvalidIdentifierError("DNS name is longer than 255 characters")
            raise InvalidIdentifierError(
                f"{host!r} is not a DNS name (only A-Z, a-z, 0-9, '-' and '.' are allowed)"
            )
    port: int | None = None
    if port_text is not None:
        if not _PORT.fullmatch(port_text):
            raise InvalidIdentifierError(f"port {port_text!r} is not 1 to 5 digits")
        port = int(port_text)
        if not 1 <= port <= 65535:
            raise InvalidIdentifierError(f"port {port} is not in 1-65535")
    return host, port


def is_valid_server_name(server_name: str) -> bool:
    """Whether ``server_name`` follows the server name grammar."""
    try:
        parse_server_name(server_name)
    except InvalidIdentifierError:
        return False
    return True


# --- Localparts


_CURRENT_LOCALPART = re.compile(r"[a-z0-9._=\-/+]+")


def is_valid_localpart(localpart: str) -> bool:
    """The current user ID localpart grammar (spec v1.8+): ``[a-z0-9._=\\-/+]+``.

    What we require of user IDs we create.
    """
    return isinstance(localpart, str) and _CURRENT_LOCALPART.fullmatch(localpart) is not None


def _has_surrogate(s: str) -> bool:
    return not s.isascii() and any(0xD800 <= ord(ch) <= 0xDFFF for ch in s)


def is_historical_localpart(localpart: str) -> bool:
    """What servers must still accept from others: any code points but ``:`` and NUL.

    https://spec.matrix.org/latest/appendices/#historical-user-ids
    (The empty string is allowed too.)
    """
    return (
        isinstance(localpart, str)
        and ":" not in localpart
        and "\x00" not in localpart
        and not _has_surrogate(localpart)
    )


def _check_length(identifier: str, what: str) -> None:
    if identifier.isascii() and len(identifier) <= MAX_ID_LENGTH:
        return
    if len(identifier.encode("utf-8", "surrogatepass")) > MAX_ID_LENGTH:
        raise InvalidIdentifierError(f"{what} is longer than {MAX_ID_LENGTH} bytes")


def _split_sigil(identifier: str, sigil: str, what: str) -> tuple[str, str]:
    """``&local:domain`` -> (local, domain); the localpart ends at the first ':'."""
    if not isinstance(identifier, str):
        raise InvalidIdentifierError(f"{what} must be a string")
    if not identifier.startswith(sigil):
        raise InvalidIdentifierError(f"{what} must start with {sigil!r}")
    local, sep, domain = identifier[1:].partition(":")
    if not sep:
        raise InvalidIdentifierError(f"{what} has no ':domain' part")
    try:
        parse_server_name(domain)
    except InvalidIdentifierError as e:
        raise InvalidIdentifierError(f"{what} has an invalid server name: {e}") from None
    return local, domain


# --- User IDs: https://spec.matrix.org/latest/appendices/#user-identifiers


@dataclass(frozen=True, slots=True)
class UserID:
    localpart: str
    server_name: str

    @classmethod
    def parse(cls, user_id: str, *, strict: bool = False) -> "UserID":
        """Parse ``@localpart:server``.

        ``strict=True`` applies the current localpart grammar (for users we create or
        accept from clients); the default accepts historical localparts, as servers
        must for remote users. Both enforce the 255-byte limit and the server grammar.
        """
        localpart, server = _split_sigil(user_id, "@", "user ID")
        _check_length(user_id, "user ID")
        if strict:
            if not is_valid_localpart(localpart):
                raise InvalidIdentifierError(
                    f"user ID localpart {localpart!r} may only contain a-z, 0-9 and ._=-/+"
                )
        elif not is_historical_localpart(localpart):
            raise InvalidIdentifierError("user ID localpart contains NUL or a surrogate")
        return cls(localpart, server)

    @property
    def is_compliant(self) -> bool:
        """False for historical IDs (characters outside U+0021-U+007E, or empty)."""
        return bool(self.localpart) and all("\x21" <= ch <= "\x7e" for ch in self.localpart)

    def __str__(self) -> str:
        return f"@{self.localpart}:{self.server_name}"


# --- Room IDs: https://spec.matrix.org/latest/appendices/#room-ids

#: An unpadded base64 SHA-256 (32 bytes) is 43 characters.
_HASH_LENGTH = 43
_B64_STANDARD = re.compile(r"[A-Za-z0-9+/]{43}")
_B64_URLSAFE = re.compile(r"[A-Za-z0-9\-_]{43}")


def _check_opaque(opaque: str, what: str) -> None:
    if "\x00" in opaque or _has_surrogate(opaque):
        raise InvalidIdentifierError(f"{what} contains NUL or a surrogate")


@dataclass(frozen=True, slots=True)
class RoomID:
    #: The opaque part (for v12-style IDs, the URL-safe base64 hash).
    opaque_id: str
    #: None for room versions 12+ where the room ID is the create event's hash.
    server_name: str | None

    @classmethod
    def parse(cls, room_id: str, room_version: RoomVersion | None = None) -> "RoomID":
        """Parse ``!opaque:domain`` or (room v12+) ``!<43 url-safe base64 chars>``.

        Without ``room_version`` both forms are accepted: an ID with a ':' must have
        a valid domain, one without must be a v12-style hash.
        """
        if not isinstance(room_id, str) or not room_id.startswith("!"):
            raise InvalidIdentifierError("room ID must start with '!'")
        _check_length(room_id, "room ID")
        hashed = (
            room_version.room_id_from_create_event
            if room_version is not None
            else ":" not in room_id
        )
        if hashed:
            opaque = room_id[1:]
            if not _B64_URLSAFE.fullmatch(opaque):
                raise InvalidIdentifierError(
                    "room ID must be '!' and 43 URL-safe base64 characters (room version 12+)"
                )
            return cls(opaque, None)
        opaque, server = _split_sigil(room_id, "!", "room ID")
        _check_opaque(opaque, "room ID")
        return cls(opaque, server)

    def __str__(self) -> str:
        if self.server_name is None:
            return f"!{self.opaque_id}"
        return f"!{self.opaque_id}:{self.server_name}"


# --- Room aliases: https://spec.matrix.org/latest/appendices/#room-aliases


@dataclass(frozen=True, slots=True)
class RoomAlias:
    localpart: str
    server_name: str

    @classmethod
    def parse(cls, alias: str) -> "RoomAlias":
        """Parse ``#localpart:server`` (localpart: anything but ':' and NUL)."""
        localpart, server = _split_sigil(alias, "#", "room alias")
        _check_length(alias, "room alias")
        _check_opaque(localpart, "room alias")
        return cls(localpart, server)

    def __str__(self) -> str:
        return f"#{self.localpart}:{self.server_name}"


# --- Event IDs: https://spec.matrix.org/latest/appendices/#event-ids


@dataclass(frozen=True, slots=True)
class EventID:
    opaque_id: str
    #: Only v1/v2 event IDs have a domain.
    server_name: str | None

    @classmethod
    def parse(cls, event_id: str, room_version: RoomVersion | None = None) -> "EventID":
        """Parse an event ID, by the format of ``room_version`` when given.

        v1/v2: ``$opaque:domain``; v3: ``$`` + 43 standard base64 characters;
        v4+: ``$`` + 43 URL-safe base64 characters. Without a room version any of
        these is accepted (an ID with ':' must have a valid domain).
        """
        if not isinstance(event_id, str) or not event_id.startswith("$"):
            raise InvalidIdentifierError("event ID must start with '$'")
        _check_length(event_id, "event ID")
        fmt = room_version.event_format if room_version is not None else None
        if fmt is EventFormat.V1 or (fmt is None and ":" in event_id):
            opaque, server = _split_sigil(event_id, "$", "event ID")
            _check_opaque(opaque, "event ID")
            return cls(opaque, server)
        opaque = event_id[1:]
        if fmt is EventFormat.V2:
            if not _B64_STANDARD.fullmatch(opaque):
                raise InvalidIdentifierError(
                    "event ID must be '$' and 43 unpadded base64 characters (room version 3)"
                )
        elif fmt is EventFormat.V3:
            if not _B64_URLSAFE.fullmatch(opaque):
                raise InvalidIdentifierError(
                    "event ID must be '$' and 43 URL-safe base64 characters (room version 4+)"
                )
        elif not (_B64_STANDARD.fullmatch(opaque) or _B64_URLSAFE.fullmatch(opaque)):
            raise InvalidIdentifierError("event ID is neither '$opaque:domain' nor a base64 hash")
        return cls(opaque, None)

    def __str__(self) -> str:
        if self.server_name is None:
            return f"${self.opaque_id}"
        return f"${self.opaque_id}:{self.server_name}"


def _is_valid(parse, *args, **kwargs) -> bool:
    try:
        parse(*args, **kwargs)
    except InvalidIdentifierError:
        return False
    return True


def is_valid_user_id(user_id: str, *, strict: bool = False) -> bool:
    return _is_valid(UserID.parse, user_id, strict=strict)


def is_valid_room_id(room_id: str, room_version: RoomVersion | None = None) -> bool:
    return _is_valid(RoomID.parse, room_id, room_version)


def is_valid_room_alias(alias: str) -> bool:
    return _is_valid(RoomAlias.parse, alias)


def is_valid_event_id(event_id: str, room_version: RoomVersion | None = None) -> bool:
    return _is_valid(EventID.parse, event_id, room_version)


def get_domain_from_id(identifier: str) -> str:
    """The server name of a ``@user``, ``!room``, ``#alias`` or v1/v2 ``$event`` ID.

    Raises InvalidIdentifierError for IDs that have no domain (v3+ event IDs, v12 room
    IDs) or whose domain is not a valid server name.
    """
    if not isinstance(identifier, str) or not identifier:
        raise InvalidIdentifierError("identifier is empty")
    sigil = identifier[0]
    if sigil not in "@!#$":
        raise InvalidIdentifierError(f"unknown sigil {sigil!r}")
    _, sep, domain = identifier[1:].partition(":")
    if not sep:
        raise InvalidIdentifierError(f"{identifier!r} has no domain")
    try:
        parse_server_name(domain)
    except InvalidIdentifierError as e:
        raise InvalidIdentifierError(f"{identifier!r} has an invalid server name: {e}") from None
    return domain
