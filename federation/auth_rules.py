"""Event authorisation rules, for every room version (1 to 12).

Spec:
- rules per room version: https://spec.matrix.org/latest/rooms/v1/#authorisation-rules
  (v1), https://spec.matrix.org/latest/rooms/v3/#authorisation-rules (v3: no
  redaction rule), .../rooms/v6/ (no aliases rule, ``notifications``), .../rooms/v7/
  (knock), .../rooms/v8/ (restricted joins), .../rooms/v10/ (knock_restricted,
  integer power levels), .../rooms/v11/ (implicit creator), .../rooms/v12/
  (room ID from the create event, privileged creators).
- definitions and auth events selection:
  https://spec.matrix.org/latest/server-server-api/#authorisation-rules

Pure: events are duck-typed objects with the attributes of ``federation.events.PDU``
(``event_id``, ``room_id``, ``type``, ``state_key``, ``sender``, ``content``,
``prev_event_ids``, ``auth_event_ids``, ``redacts``, ``signatures``). Nothing here
fetches keys or events; what cannot be decided from the arguments is asked of a
callback (signature checks of ``join_authorised_via_users_server``, whether an auth
event was rejected).

Readings of the spec where it is silent, chosen to agree with deployed servers:
- no ``m.room.join_rules`` event (or no ``join_rule`` in it) means the join rule
  ``invite``;
- power level values that cannot be parsed count as absent (the key's default)
  when read from the room state; in a new ``m.room.power_levels`` event they make
  the event fail the rules that compare them;
- string power levels (rooms 1-9) follow the "stringy power levels" grammar
  (ASCII digits, one optional sign, surrounding whitespace); floats (rooms 1-5)
  are truncated toward zero; booleans are never integers.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol

import nacl.exceptions
import nacl.signing

from federation.canonical_json import CanonicalJSONError, decode_base64, encode_canonical_json
from federation.ids import is_valid_user_id
from federation.room_versions import KNOWN_ROOM_VERSIONS, RoomVersion

__all__ = [
    "AuthError",
    "AuthEvent",
    "StateKey",
    "CREATOR_POWER_LEVEL",
    "check_auth_rules",
    "check_auth_events",
    "check_event_auth",
    "auth_types_for_event",
    "room_creators",
    "get_power_level",
    "get_user_power_level",
    "get_named_level",
    "get_required_level_for_event",
    "get_notification_level",
    "parse_power_level",
    "get_membership",
    "get_join_rule",
    "redaction_allowed",
    "third_party_invite_public_keys",
    "verify_third_party_invite_signed",
]

# Event types, memberships and join rules the rules talk about.
CREATE = "m.room.create"
MEMBER = "m.room.member"
JOIN_RULES = "m.room.join_rules"
POWER_LEVELS = "m.room.power_levels"
THIRD_PARTY_INVITE = "m.room.third_party_invite"
ALIASES = "m.room.aliases"
REDACTION = "m.room.redaction"

JOIN, INVITE, LEAVE, BAN, KNOCK = "join", "invite", "leave", "ban", "knock"
PUBLIC, RESTRICTED, KNOCK_RESTRICTED = "public", "restricted", "knock_restricted"

#: ``content`` key naming the user who authorised a restricted join (rooms 8+).
AUTHORISER_KEY = "join_authorised_via_users_server"

#: The power level of a room creator in room versions with privileged creators (12+).
CREATOR_POWER_LEVEL: float = math.inf

StateKey = tuple[str, str]
PowerLevel = int | float  # float only for CREATOR_POWER_LEVEL
#: ``(event, server_name) -> bool``: is ``event`` validly signed by ``server_name``?
SignatureCheck = Callable[[Any, str], bool]

_LEVEL_KEYS = ("users_default", "events_default", "state_default", "ban", "redact", "kick", "invite")
_NAMED_DEFAULTS = {"invite": 0, "kick": 50, "ban": 50, "redact": 50}


class AuthEvent(Protocol):
    """The attributes of an event the rules read (``federation.events.PDU`` has them)."""

    @property
    def event_id(self) -> str: ...
    @property
    def room_id(self) -> str: ...
    @property
    def type(self) -> str: ...
    @property
    def state_key(self) -> str | None: ...
    @property
    def sender(self) -> str: ...
    @property
    def content(self) -> dict: ...
    @property
    def prev_event_ids(self) -> tuple[str, ...]: ...
    @property
    def redacts(self) -> str | None: ...
    @property
    def signatures(self) -> dict: ...


class AuthError(Exception):
    """The event is not allowed; ``reason`` says which rule failed."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


# ---------------------------------------------------------------------------
# Identifiers
# ---------------------------------------------------------------------------


def _domain(identifier: object) -> str | None:
    """The part after the first ``:`` of a user, room or (v1/v2) event ID."""
    if not isinstance(identifier, str):
        return None
    _, sep, domain = identifier.partition(":")
    return domain if sep else None


# ---------------------------------------------------------------------------
# Power levels
# ---------------------------------------------------------------------------

_STRINGY_INT_RE = re.compile(r"[ \t\n\r\f\v]*([+-]?[0-9]+)[ \t\n\r\f\v]*", re.ASCII)


def parse_power_level(value: object, room_version: RoomVersion) -> int | None:
    """The integer a power level value stands for, or None if it is not one.

    Integers always; in rooms 1-9 also strings such as ``" +050 "``
    (https://spec.matrix.org/latest/rooms/v1/#mroompower_levels-events-accept-values-as-strings);
    in rooms 1-5 also finite floats, truncated
    (https://spec.matrix.org/latest/rooms/v1/#mroompower_levels-events-accept-values-as-floats).
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if room_version.enforce_int_power_levels:
        return None
    if isinstance(value, str):
        m = _STRINGY_INT_RE.fullmatch(value)
        return int(m.group(1)) if m else None
    if isinstance(value, float) and not room_version.strict_canonicaljson:
        return int(value) if math.isfinite(value) else None
    return None


def _level(content: Mapping[str, Any], key: str, default: int, room_version: RoomVersion) -> int:
    if key not in content:
        return default
    parsed = parse_power_level(content[key], room_version)
    return default if parsed is None else parsed


def room_creators(create_event: AuthEvent | None, room_version: RoomVersion) -> frozenset[str]:
    """The room's creators.

    Rooms 1-10: ``content.creator``; 11: the create event's ``sender``; 12+: the sender
    plus ``content.additional_creators``
    (https://spec.matrix.org/latest/rooms/v12/#authorisation-rules).
    """
    if create_event is None:
        return frozenset()
    if not room_version.implicit_room_creator:
        creator = create_event.content.get("creator")
        return frozenset((creator,)) if isinstance(creator, str) else frozenset()
    creators = {create_event.sender}
    if room_version.privileged_creators:
        extra = create_event.content.get("additional_creators")
        if isinstance(extra, list):
            creators.update(u for u in extra if isinstance(u, str))
    return frozenset(creators)


def get_user_power_level(
    user_id: str,
    power_levels_content: Mapping[str, Any] | None,
    create_event: AuthEvent | None,
    room_version: RoomVersion,
) -> PowerLevel:
    """A user's power level.

    ``users[user_id]``, else ``users_default`` (0). Without a power levels event the
    creator has 100 (rooms 1-11). In rooms 12+ creators have ``CREATOR_POWER_LEVEL``
    (infinity) whatever the power levels say.
    https://spec.matrix.org/latest/client-server-api/#mroompower_levels
    """
    if room_version.privileged_creators and user_id in room_creators(create_event, room_version):
        return CREATOR_POWER_LEVEL
    if power_levels_content is not None:
        users = power_levels_content.get("users")
        if isinstance(users, dict) and user_id in users:
            parsed = parse_power_level(users[user_id], room_version)
            if parsed is not None:
                return parsed
        return _level(power_levels_content, "users_default", 0, room_version)
    if not room_version.privileged_creators and user_id in room_creators(
        create_event, room_version
    ):
        return 100
    return 0


#: The name the task and other services use for ``get_user_power_level``.
get_power_level = get_user_power_level


def get_named_level(
    name: str, power_levels_content: Mapping[str, Any] | None, room_version: RoomVersion
) -> int:
    """The invite (default 0), kick, ban or redact (default 50) level.

    https://spec.matrix.org/latest/server-server-api/#definitions
    """
    if name not in _NAMED_DEFAULTS:
        raise ValueError(f"unknown power level name {name!r}")
    default = _NAMED_DEFAULTS[name]
    if power_levels_content is None:
        return default
    return _level(power_levels_content, name, default, room_version)


def get_required_level_for_event(
    event_type: str,
    is_state: bool,
    power_levels_content: Mapping[str, Any] | None,
    room_version: RoomVersion,
) -> int:
    """The *required power level* to send an event of ``event_type``.

    ``events[event_type]``, else ``state_default`` (50) for state events and
    ``events_default`` (0) for others.
    https://spec.matrix.org/latest/server-server-api/#definitions
    """
    content = power_levels_content or {}
    events = content.get("events")
    if isinstance(events, dict) and event_type in events:
        parsed = parse_power_level(events[event_type], room_version)
        if parsed is not None:
            return parsed
    if is_state:
        return _level(content, "state_default", 50, room_version)
    return _level(content, "events_default", 0, room_version)


def get_notification_level(
    key: str, power_levels_content: Mapping[str, Any] | None, room_version: RoomVersion
) -> int:
    """The level for a ``notifications`` key (``room``: default 50)."""
    content = power_levels_content or {}
    notifications = content.get("notifications")
    if isinstance(notifications, dict) and key in notifications:
        parsed = parse_power_level(notifications[key], room_version)
        if parsed is not None:
            return parsed
    return 50


# ---------------------------------------------------------------------------
# Reading the state
# ---------------------------------------------------------------------------


def get_membership(auth_events: Mapping[StateKey, AuthEvent], user_id: str) -> str | None:
    """The user's current membership, or None if they have no member event."""
    event = auth_events.get((MEMBER, user_id))
    if event is None:
        return None
    membership = event.content.get("membership")
    return membership if isinstance(membership, str) else None


def get_join_rule(auth_events: Mapping[StateKey, AuthEvent]) -> str:
    """The room's join rule: ``invite`` when there is no ``m.room.join_rules`` event or
    it has no ``join_rule`` (as deployed servers read it); "" when it is not a string."""
    event = auth_events.get((JOIN_RULES, ""))
    if event is None:
        return INVITE
    rule = event.content.get("join_rule", INVITE)
    return rule if isinstance(rule, str) else ""


class _Room:
    """The parts of the state one check reads, with the room ID rule applied."""

    __slots__ = ("version", "events", "room_id", "create", "power_levels", "creators")

    def __init__(
        self,
        version: RoomVersion,
        auth_events: Mapping[StateKey, AuthEvent],
        room_id: str,
        create: AuthEvent,
    ):
        self.version = version
        self.events = auth_events
        self.room_id = room_id
        self.create = create
        pl = self.get(POWER_LEVELS, "")
        self.power_levels: Mapping[str, Any] | None = pl.content if pl is not None else None
        self.creators = room_creators(create, version)

    def get(self, event_type: str, state_key: str) -> AuthEvent | None:
        event = self.events.get((event_type, state_key))
        if event is not None and event.room_id != self.room_id:
            raise AuthError(
                f"auth event {event.event_id} ({event_type}, {state_key!r}) "
                f"belongs to room {event.room_id}, not {self.room_id}"
            )
        return event

    def membership(self, user_id: str) -> str | None:
        event = self.get(MEMBER, user_id)
        if event is None:
            return None
        membership = event.content.get("membership")
        return membership if isinstance(membership, str) else None

    def join_rule(self) -> str:
        self.get(JOIN_RULES, "")  # room check
        return get_join_rule(self.events)

    def user_level(self, user_id: str) -> PowerLevel:
        if self.version.privileged_creators and user_id in self.creators:
            return CREATOR_POWER_LEVEL
        return get_user_power_level(user_id, self.power_levels, self.create, self.version)

    def named_level(self, name: str) -> int:
        return get_named_level(name, self.power_levels, self.version)


# ---------------------------------------------------------------------------
# Auth events selection
# ---------------------------------------------------------------------------


def auth_types_for_event(
    room_version: RoomVersion,
    event_type: str,
    sender: str,
    state_key: str | None,
    content: Mapping[str, Any],
) -> set[StateKey]:
    """The ``(type, state_key)`` pairs an event's ``auth_events`` may reference.

    https://spec.matrix.org/latest/server-server-api/#auth-events-selection
    Empty for ``m.room.create``; the create event itself is not selected in rooms 12+.
    """
    if event_type == CREATE:
        return set()
    keys: set[StateKey] = {(POWER_LEVELS, ""), (MEMBER, sender)}
    if not room_version.room_id_from_create_event:
        keys.add((CREATE, ""))
    if event_type == MEMBER and state_key is not None:
        keys.add((MEMBER, state_key))
        membership = content.get("membership")
        if membership in (JOIN, INVITE, KNOCK):
            keys.add((JOIN_RULES, ""))
        if membership == INVITE:
            tpi = content.get("third_party_invite")
            if isinstance(tpi, dict):
                signed = tpi.get("signed")
                if isinstance(signed, dict) and isinstance(signed.get("token"), str):
                    keys.add((THIRD_PARTY_INVITE, signed["token"]))
        if membership == JOIN and room_version.restricted_join_rule:
            authoriser = content.get(AUTHORISER_KEY)
            if isinstance(authoriser, str):
                keys.add((MEMBER, authoriser))
    return keys


def check_auth_events(
    room_version: RoomVersion,
    event: AuthEvent,
    auth_events: Iterable[AuthEvent],
    *,
    is_rejected: Callable[[AuthEvent], bool] | None = None,
) -> None:
    """The rules about an event's own ``auth_events`` list (rule 2; rule 3 in v12).

    ``auth_events`` are the events named by ``event.auth_event_ids``, in order.
    Rejects duplicates of a ``(type, state_key)``, entries the auth events selection
    does not allow (in v12 this includes the create event), rejected entries (as told
    by ``is_rejected``), a missing create event (rooms 1-11), and entries from
    another room. The create event itself has no auth events to check.
    """
    if event.type == CREATE:
        return
    allowed = auth_types_for_event(
        room_version, event.type, event.sender, event.state_key, event.content
    )
    seen: set[StateKey] = set()
    for auth_event in auth_events:
        if auth_event.state_key is None:
            raise AuthError(f"auth event {auth_event.event_id} is not a state event")
        key = (auth_event.type, auth_event.state_key)
        if key in seen:
            raise AuthError(f"duplicate auth events for {key}")
        seen.add(key)
        if key not in allowed:
            raise AuthError(f"auth event {auth_event.event_id} {key} is not one the selection allows")
        if is_rejected is not None and is_rejected(auth_event):
            raise AuthError(f"auth event {auth_event.event_id} was rejected")
        if auth_event.room_id != event.room_id:
            raise AuthError(
                f"auth event {auth_event.event_id} belongs to room {auth_event.room_id}, "
                f"not {event.room_id}"
            )
    if not room_version.room_id_from_create_event and (CREATE, "") not in seen:
        raise AuthError("no m.room.create event among the auth events")


# ---------------------------------------------------------------------------
# The rules
# ---------------------------------------------------------------------------


def check_event_auth(
    room_version: RoomVersion,
    event: AuthEvent,
    auth_events: Iterable[AuthEvent],
    *,
    create_event: AuthEvent | None = None,
    is_rejected: Callable[[AuthEvent], bool] | None = None,
    is_signed_by: SignatureCheck | None = None,
) -> None:
    """Authorise an event against its own auth events (a step of PDU receipt).

    ``check_auth_events`` then ``check_auth_rules`` over the map of those events.
    Rooms 12+ do not list the create event: pass it as ``create_event``.
    https://spec.matrix.org/latest/server-server-api/#checks-performed-on-receipt-of-a-pdu
    """
    listed = list(auth_events)
    check_auth_events(room_version, event, listed, is_rejected=is_rejected)
    state: dict[StateKey, AuthEvent] = {}
    for auth_event in listed:
        state[(auth_event.type, auth_event.state_key)] = auth_event  # type: ignore[index]
    if create_event is not None:
        state.setdefault((CREATE, ""), create_event)
    check_auth_rules(room_version, event, state, is_signed_by=is_signed_by)


def check_auth_rules(
    room_version: RoomVersion,
    event: AuthEvent,
    auth_events: Mapping[StateKey, AuthEvent],
    *,
    is_signed_by: SignatureCheck | None = None,
) -> None:
    """Raise AuthError unless the room version's authorisation rules allow ``event``.

    ``auth_events`` maps ``(type, state_key)`` to the events the rules read: the
    event's auth events or the room state before it, as the caller decides. It must
    hold the create event, also in rooms 12+ (where events do not list it). Extra
    entries are ignored. Rejected events must not be in it (the caller knows which
    were rejected; v12 rule 2 wants an accepted create event).

    ``is_signed_by(event, server_name)`` checks that ``event`` carries a valid
    signature of ``server_name`` (rule "join_authorised_via_users_server", rooms 8+).
    Without it, a signature entry for that server must be present; verifying it is
    then the signature step's job.
    """
    if event.type == CREATE:
        _check_create(room_version, event)
        return

    create = auth_events.get((CREATE, ""))
    if create is None:
        raise AuthError("no m.room.create event in the auth events")
    if room_version.room_id_from_create_event:
        expected_room_id = "!" + create.event_id[1:]
        if event.room_id != expected_room_id:
            raise AuthError(
                f"room ID {event.room_id} is not that of the create event {create.event_id}"
            )
    elif create.room_id != event.room_id:
        raise AuthError(
            f"create event {create.event_id} belongs to room {create.room_id}, not {event.room_id}"
        )
    room = _Room(room_version, auth_events, event.room_id, create)

    if create.content.get("m.federate", True) is False and _domain(event.sender) != _domain(
        create.sender
    ):
        raise AuthError("room is not federated (m.federate is false) and sender is from another server")

    if room_version.special_case_aliases_auth and event.type == ALIASES:
        if event.state_key is None:
            raise AuthError("m.room.aliases event has no state_key")
        if _domain(event.sender) != event.state_key:
            raise AuthError("m.room.aliases state_key does not match the sender's server")
        return

    if event.type == MEMBER:
        _check_member(room, event, is_signed_by)
        return

    sender_membership = room.membership(event.sender)
    if sender_membership != JOIN:
        raise AuthError(f"sender is not joined to the room (membership {sender_membership})")

    sender_level = room.user_level(event.sender)

    if event.type == THIRD_PARTY_INVITE:
        invite_level = room.named_level("invite")
        if sender_level < invite_level:
            raise AuthError(
                f"sender power level {sender_level} is below the invite level {invite_level}"
            )
        return

    required = get_required_level_for_event(
        event.type, event.state_key is not None, room.power_levels, room_version
    )
    if required > sender_level:
        raise AuthError(
            f"sender power level {sender_level} is below the required level {required} "
            f"for {event.type}"
        )

    if (
        event.state_key is not None
        and event.state_key.startswith("@")
        and event.state_key != event.sender
    ):
        raise AuthError("state_key starts with '@' and is not the sender")

    if event.type == POWER_LEVELS:
        _check_power_levels(room, event, sender_level)
        return

    if event.type == REDACTION and room_version.event_id_in_event:
        # Rooms 1 and 2 (event IDs carry a domain): rule 11.
        if sender_level >= room.named_level("redact"):
            return
        redacted_domain = _domain(event.redacts)
        if redacted_domain is not None and redacted_domain == _domain(event.event_id):
            return
        raise AuthError(
            "redaction: sender is below the redact level and the redacted event "
            "is from another server"
        )


def _check_create(room_version: RoomVersion, event: AuthEvent) -> None:
    """Rule 1: the create event."""
    if event.prev_event_ids:
        raise AuthError("create event has prev_events")
    if room_version.room_id_from_create_event:
        if _has_room_id_field(event):
            raise AuthError("create event has a room_id (room v12: it is derived)")
    elif _domain(event.room_id) != _domain(event.sender):
        raise AuthError("create event: room_id domain does not match the sender's")
    content = event.content
    if "room_version" in content:
        version = content["room_version"]
        if not isinstance(version, str) or version not in KNOWN_ROOM_VERSIONS:
            raise AuthError(f"create event: unknown room_version {version!r}")
    if not room_version.implicit_room_creator and "creator" not in content:
        raise AuthError("create event has no creator")
    if room_version.privileged_creators and "additional_creators" in content:
        extra = content["additional_creators"]
        if not isinstance(extra, list) or not all(
            is_valid_user_id(u) for u in extra
        ):
            raise AuthError("create event: additional_creators is not a list of valid user IDs")


def _has_room_id_field(event: AuthEvent) -> bool:
    get_json = getattr(event, "get_pdu_json", None)
    if get_json is None:
        return False
    return "room_id" in get_json()


# --- m.room.member ----------------------------------------------------------


def _check_member(room: _Room, event: AuthEvent, is_signed_by: SignatureCheck | None) -> None:
    version = room.version
    target = event.state_key
    if target is None:
        raise AuthError("member event has no state_key")
    content = event.content
    if "membership" not in content:
        raise AuthError("member event has no membership")
    membership = content["membership"]

    if version.restricted_join_rule and AUTHORISER_KEY in content:
        authoriser = content[AUTHORISER_KEY]
        if not is_valid_user_id(authoriser):
            raise AuthError(f"{AUTHORISER_KEY} is not a valid user ID")
        server = _domain(authoriser)
        assert server is not None
        if is_signed_by is not None:
            signed = is_signed_by(event, server)
        else:
            signed = isinstance(event.signatures, dict) and bool(event.signatures.get(server))
        if not signed:
            raise AuthError(f"event is not signed by {server}, the server of {AUTHORISER_KEY}")

    if membership == JOIN:
        _check_join(room, event, target)
    elif membership == INVITE:
        _check_invite(room, event, target)
    elif membership == LEAVE:
        _check_leave(room, event, target)
    elif membership == BAN:
        _check_ban(room, event, target)
    elif membership == KNOCK and version.knock_join_rule:
        _check_knock(room, event, target)
    else:
        raise AuthError(f"unknown membership {membership!r}")


def _check_join(room: _Room, event: AuthEvent, target: str) -> None:
    version = room.version
    create = room.create
    # The creator's own first join, right after the create event.
    if tuple(event.prev_event_ids) == (create.event_id,):
        creator = create.sender if version.implicit_room_creator else create.content.get("creator")
        if target == creator:
            return
    if event.sender != target:
        raise AuthError("join: sender is not the state_key")
    current = room.membership(target)
    if current == BAN:
        raise AuthError("join: sender is banned")
    join_rule = room.join_rule()
    if join_rule == INVITE or (join_rule == KNOCK and version.knock_join_rule):
        if current in (INVITE, JOIN):
            return
        raise AuthError(f"join: join rule is {join_rule} and sender is not invited")
    if (join_rule == RESTRICTED and version.restricted_join_rule) or (
        join_rule == KNOCK_RESTRICTED and version.knock_restricted_join_rule
    ):
        if current in (INVITE, JOIN):
            return
        authoriser = event.content.get(AUTHORISER_KEY)
        if not isinstance(authoriser, str):
            raise AuthError(f"join: join rule is {join_rule} and there is no {AUTHORISER_KEY}")
        if room.membership(authoriser) != JOIN:
            raise AuthError(f"join: {AUTHORISER_KEY} user is not joined to the room")
        if room.user_level(authoriser) < room.named_level("invite"):
            raise AuthError(f"join: {AUTHORISER_KEY} user cannot invite (power level too low)")
        return
    if join_rule == PUBLIC:
        return
    raise AuthError(f"join: join rule {join_rule!r} does not allow joining")


def _check_invite(room: _Room, event: AuthEvent, target: str) -> None:
    content = event.content
    target_membership = room.membership(target)
    if "third_party_invite" in content:
        if target_membership == BAN:
            raise AuthError("invite: target user is banned")
        tpi = content["third_party_invite"]
        signed = tpi.get("signed") if isinstance(tpi, dict) else None
        if not isinstance(signed, dict):
            raise AuthError("third-party invite: no signed block")
        if "mxid" not in signed or "token" not in signed:
            raise AuthError("third-party invite: signed block lacks mxid or token")
        if signed["mxid"] != target:
            raise AuthError("third-party invite: mxid does not match the state_key")
        token = signed["token"]
        invite_event = room.get(THIRD_PARTY_INVITE, token) if isinstance(token, str) else None
        if invite_event is None:
            raise AuthError("third-party invite: no m.room.third_party_invite event for the token")
        if invite_event.sender != event.sender:
            raise AuthError("third-party invite: sender is not the sender of the m.room.third_party_invite")
        if verify_third_party_invite_signed(
            signed, third_party_invite_public_keys(invite_event.content)
        ):
            return
        raise AuthError("third-party invite: no signature matches the invite's public keys")

    if room.membership(event.sender) != JOIN:
        raise AuthError("invite: sender is not joined to the room")
    if target_membership in (JOIN, BAN):
        raise AuthError(f"invite: target user's membership is {target_membership}")
    sender_level = room.user_level(event.sender)
    invite_level = room.named_level("invite")
    if sender_level >= invite_level:
        return
    raise AuthError(f"invite: sender power level {sender_level} is below the invite level {invite_level}")


def _check_leave(room: _Room, event: AuthEvent, target: str) -> None:
    if event.sender == target:
        current = room.membership(target)
        allowed = (INVITE, JOIN, KNOCK) if room.version.knock_join_rule else (INVITE, JOIN)
        if current in allowed:
            return
        raise AuthError(f"leave: cannot leave with membership {current}")
    if room.membership(event.sender) != JOIN:
        raise AuthError("leave (kick): sender is not joined to the room")
    sender_level = room.user_level(event.sender)
    if room.membership(target) == BAN and sender_level < room.named_level("ban"):
        raise AuthError("leave (unban): sender power level is below the ban level")
    if sender_level >= room.named_level("kick") and room.user_level(target) < sender_level:
        return
    raise AuthError("leave (kick): sender power level is below the kick level or not above the target's")


def _check_ban(room: _Room, event: AuthEvent, target: str) -> None:
    if room.membership(event.sender) != JOIN:
        raise AuthError("ban: sender is not joined to the room")
    sender_level = room.user_level(event.sender)
    if sender_level >= room.named_level("ban") and room.user_level(target) < sender_level:
        return
    raise AuthError("ban: sender power level is below the ban level or not above the target's")


def _check_knock(room: _Room, event: AuthEvent, target: str) -> None:
    join_rule = room.join_rule()
    knockable = (KNOCK, KNOCK_RESTRICTED) if room.version.knock_restricted_join_rule else (KNOCK,)
    if join_rule not in knockable:
        raise AuthError(f"knock: join rule {join_rule!r} does not allow knocking")
    if event.sender != target:
        raise AuthError("knock: sender is not the state_key")
    current = room.membership(event.sender)
    if current not in (BAN, INVITE, JOIN):
        return
    raise AuthError(f"knock: sender's membership is {current}")


# --- m.room.power_levels ------------------------------------------------------


def _check_power_levels(room: _Room, event: AuthEvent, sender_level: PowerLevel) -> None:
    version = room.version
    content = event.content

    if version.enforce_int_power_levels:
        for key in _LEVEL_KEYS:
            if key in content and parse_power_level(content[key], version) is None:
                raise AuthError(f"power levels: {key} is not an integer")
        for key in ("events", "notifications"):
            if key in content:
                value = content[key]
                if not isinstance(value, dict) or any(
                    parse_power_level(v, version) is None for v in value.values()
                ):
                    raise AuthError(f"power levels: {key} is not an object of integers")

    users = content.get("users", {})
    if not isinstance(users, dict):
        raise AuthError("power levels: users is not an object")
    for user_id, value in users.items():
        if not is_valid_user_id(user_id):
            raise AuthError(f"power levels: users key {user_id!r} is not a valid user ID")
        if parse_power_level(value, version) is None:
            raise AuthError(f"power levels: users value for {user_id} is not an integer")

    if version.privileged_creators:
        listed = room.creators.intersection(users)
        if listed:
            raise AuthError(f"power levels: room creators cannot be in users: {sorted(listed)}")

    current_event = room.get(POWER_LEVELS, "")
    if current_event is None:
        return
    current = current_event.content

    def changes(old: Any, new: Any, what: str) -> list[tuple[str, int | None, int | None]]:
        old = old if isinstance(old, dict) else {}
        new = new if isinstance(new, dict) else {}
        out = []
        for key in set(old) | set(new):
            old_value = parse_power_level(old[key], version) if key in old else None
            if key in new:
                new_value = parse_power_level(new[key], version)
                if new_value is None:
                    raise AuthError(f"power levels: {what} {key!r} is not an integer")
            else:
                new_value = None
            if old_value != new_value:
                out.append((key, old_value, new_value))
        return out

    top = changes({k: current[k] for k in _LEVEL_KEYS if k in current},
                  {k: content[k] for k in _LEVEL_KEYS if k in content}, "level")
    for key, old_value, new_value in top:
        if old_value is not None and old_value > sender_level:
            raise AuthError(f"power levels: current {key} {old_value} is above the sender's level")
        if new_value is not None and new_value > sender_level:
            raise AuthError(f"power levels: new {key} {new_value} is above the sender's level")

    maps = ["events"]
    if version.limit_notifications_power_levels:
        maps.append("notifications")
    for name in maps:
        for key, old_value, new_value in changes(current.get(name), content.get(name), name):
            if old_value is not None and old_value > sender_level:
                raise AuthError(
                    f"power levels: current {name}[{key!r}] {old_value} is above the sender's level"
                )
            if new_value is not None and new_value > sender_level:
                raise AuthError(
                    f"power levels: new {name}[{key!r}] {new_value} is above the sender's level"
                )

    for user_id, old_value, new_value in changes(current.get("users"), users, "users"):
        if user_id != event.sender and old_value is not None and old_value >= sender_level:
            raise AuthError(
                f"power levels: cannot change the level of {user_id} ({old_value}), "
                "which is not below the sender's"
            )
        if new_value is not None and new_value > sender_level:
            raise AuthError(
                f"power levels: new level {new_value} of {user_id} is above the sender's level"
            )


# ---------------------------------------------------------------------------
# Third-party invites
# ---------------------------------------------------------------------------


def third_party_invite_public_keys(content: Mapping[str, Any]) -> list[str]:
    """The public keys of an ``m.room.third_party_invite`` event.

    ``public_key`` and each ``public_keys[].public_key``
    (https://spec.matrix.org/latest/client-server-api/#mroomthird_party_invite).
    """
    keys: list[str] = []
    single = content.get("public_key")
    if isinstance(single, str):
        keys.append(single)
    listed = content.get("public_keys")
    if isinstance(listed, list):
        for entry in listed:
            if isinstance(entry, dict) and isinstance(entry.get("public_key"), str):
                keys.append(entry["public_key"])
    return keys


def verify_third_party_invite_signed(signed: Mapping[str, Any], public_keys: Iterable[str]) -> bool:
    """Whether any ed25519 signature in ``signed`` verifies with any of ``public_keys``.

    The signed bytes are the canonical JSON of ``signed`` without ``signatures`` and
    ``unsigned`` (https://spec.matrix.org/latest/appendices/#signing-json). Keys and
    signatures are unpadded base64 (standard or URL-safe).
    """
    signatures = signed.get("signatures")
    if not isinstance(signatures, dict):
        return False
    verify_keys = []
    for key in public_keys:
        try:
            verify_keys.append(nacl.signing.VerifyKey(decode_base64(key)))
        except (ValueError, TypeError, nacl.exceptions.CryptoError):
            continue
    if not verify_keys:
        return False
    unsigned = {k: v for k, v in signed.items() if k not in ("signatures", "unsigned")}
    try:
        message = encode_canonical_json(unsigned)
    except CanonicalJSONError:
        return False
    for by_key in signatures.values():
        if not isinstance(by_key, dict):
            continue
        for key_id, signature in by_key.items():
            if not isinstance(key_id, str) or not key_id.startswith("ed25519:"):
                continue
            try:
                raw = decode_base64(signature)
            except ValueError:
                continue
            for verify_key in verify_keys:
                try:
                    verify_key.verify(message, raw)
                    return True
                except (nacl.exceptions.BadSignatureError, ValueError, TypeError):
                    continue
    return False


# ---------------------------------------------------------------------------
# Handling redactions (rooms 3+)
# ---------------------------------------------------------------------------


def redaction_allowed(
    room_version: RoomVersion,
    redaction: AuthEvent,
    redacted: AuthEvent,
    auth_events: Mapping[StateKey, AuthEvent],
) -> bool:
    """Whether a (valid) redaction should be applied to ``redacted``.

    Rooms 3+: the redaction's sender has the redact level, or is on the same server
    as the redacted event's sender
    (https://spec.matrix.org/latest/rooms/v3/#handling-redactions). Rooms 1-2: the
    auth rules already decided, so only the room must match.
    ``auth_events`` is the state at the redaction (power levels and create event).
    """
    if redacted.room_id != redaction.room_id:
        return False
    if room_version.event_id_in_event:
        return True
    if _domain(redaction.sender) == _domain(redacted.sender):
        return True
    create = auth_events.get((CREATE, ""))
    pl = auth_events.get((POWER_LEVELS, ""))
    content = pl.content if pl is not None else None
    level = get_user_power_level(redaction.sender, content, create, room_version)
    return level >= get_named_level("redact", content, room_version)
