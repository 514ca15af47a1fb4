"""Room versions as data.

Spec: https://spec.matrix.org/latest/rooms/
Each version is a frozen record of named rules; each later version is written as
the changes it makes to the one before. Code asks ``room_version.knock_join_rule``,
never ``if version in ("7", "8", ...)``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace

__all__ = [
    "EventFormat",
    "StateResAlgorithm",
    "RoomVersion",
    "RoomVersions",
    "KNOWN_ROOM_VERSIONS",
    "DEFAULT_ROOM_VERSION",
    "UnsupportedRoomVersion",
    "get_room_version",
]


class EventFormat(enum.Enum):
    """How event IDs (and references to other events) are written."""

    #: v1, v2: ``event_id`` is part of the event, ``$opaque:server``; prev/auth
    #: events are ``[event_id, {"sha256": hash}]`` pairs.
    V1 = 1
    #: v3: event ID is ``$`` + standard unpadded base64 of the reference hash;
    #: prev/auth events are plain lists of IDs.
    V2 = 2
    #: v4 and later: as V2 with URL-safe unpadded base64.
    V3 = 3


class StateResAlgorithm(enum.Enum):
    V1 = "v1"
    V2 = "v2"
    #: Room version 12: v2 with the empty state set as the starting point for
    #: the conflicted state subgraph and creators handled specially.
    V2_1 = "v2.1"


@dataclass(frozen=True, slots=True)
class RoomVersion:
    identifier: str
    stable: bool
    event_format: EventFormat
    state_res: StateResAlgorithm
    #: v5+: a signing key must be valid at the event's origin_server_ts.
    enforce_key_validity: bool
    #: v1-5: ``m.room.aliases`` has its own auth rule (state_key must be the
    #: sender's server) and its ``aliases`` survive redaction.
    special_case_aliases_auth: bool
    #: v6+: events must be canonical JSON with integers in range, no floats.
    strict_canonicaljson: bool
    #: v6+: the ``notifications`` key of power levels is checked by auth rules.
    limit_notifications_power_levels: bool
    #: v7+: the ``knock`` join rule and membership.
    knock_join_rule: bool
    #: v8+: the ``restricted`` join rule and ``join_authorised_via_users_server``;
    #: redaction keeps ``allow`` in ``m.room.join_rules``.
    restricted_join_rule: bool
    #: v9+: redaction keeps ``join_authorised_via_users_server`` in member events.
    restricted_join_rule_fix: bool
    #: v10+: the ``knock_restricted`` join rule.
    knock_restricted_join_rule: bool
    #: v10+: power level values must be integers (not strings).
    enforce_int_power_levels: bool
    #: v11+: the create event's ``sender`` is the creator; no ``creator`` key.
    implicit_room_creator: bool
    #: v11+: redaction algorithm changes (create keeps all content, power levels
    #: keep ``invite``, top-level ``origin``/``membership``/``prev_state`` dropped,
    #: member keeps ``third_party_invite.signed``).
    updated_redaction_rules: bool
    #: v11+: ``redacts`` lives in ``content`` of ``m.room.redaction`` events.
    redacts_in_content: bool
    #: v12+: room ID is ``!`` + URL-safe base64 reference hash of the create event;
    #: the create event has no ``room_id`` and is never listed in ``auth_events``.
    room_id_from_create_event: bool
    #: v12+: creators (create sender + ``additional_creators``) have infinite power
    #: and may not appear in ``m.room.power_levels`` ``users``.
    privileged_creators: bool

    @property
    def event_id_in_event(self) -> bool:
        """Whether ``event_id`` is a field of the PDU itself (v1 and v2)."""
        return self.event_format is EventFormat.V1


_V1 = RoomVersion(
    identifier="1",
    stable=True,
    event_format=EventFormat.V1,
    state_res=StateResAlgorithm.V1,
    enforce_key_validity=False,
    special_case_aliases_auth=True,
    strict_canonicaljson=False,
    limit_notifications_power_levels=False,
    knock_join_rule=False,
    restricted_join_rule=False,
    restricted_join_rule_fix=False,
    knock_restricted_join_rule=False,
    enforce_int_power_levels=False,
    implicit_room_creator=False,
    updated_redaction_rules=False,
    redacts_in_content=False,
    room_id_from_create_event=False,
    privileged_creators=False,
)
_V2 = replace(_V1, identifier="2", state_res=StateResAlgorithm.V2)
_V3 = replace(_V2, identifier="3", event_format=EventFormat.V2)
_V4 = replace(_V3, identifier="4", event_format=EventFormat.V3)
_V5 = replace(_V4, identifier="5", enforce_key_validity=True)
_V6 = replace(
    _V5,
    identifier="6",
    special_case_aliases_auth=False,
    strict_canonicaljson=True,
    limit_notifications_power_levels=True,
)
_V7 = replace(_V6, identifier="7", knock_join_rule=True)
_V8 = replace(_V7, identifier="8", restricted_join_rule=True)
_V9 = replace(_V8, identifier="9", restricted_join_rule_fix=True)
_V10 = replace(
    _V9, identifier="10", knock_restricted_join_rule=True, enforce_int_power_levels=True
)
_V11 = replace(
    _V10,
    identifier="11",
    implicit_room_creator=True,
    updated_redaction_rules=True,
    redacts_in_content=True,
)
_V12 = replace(
    _V11,
    identifier="12",
    state_res=StateResAlgorithm.V2_1,
    room_id_from_create_event=True,
    privileged_creators=True,
)


class RoomVersions:
    V1 = _V1
    V2 = _V2
    V3 = _V3
    V4 = _V4
    V5 = _V5
    V6 = _V6
    V7 = _V7
    V8 = _V8
    V9 = _V9
    V10 = _V10
    V11 = _V11
    V12 = _V12


KNOWN_ROOM_VERSIONS: dict[str, RoomVersion] = {
    v.identifier: v for v in (_V1, _V2, _V3, _V4, _V5, _V6, _V7, _V8, _V9, _V10, _V11, _V12)
}

DEFAULT_ROOM_VERSION = "12"


class UnsupportedRoomVersion(ValueError):
    """A room version this server does not implement (``M_UNSUPPORTED_ROOM_VERSION``)."""

    def __init__(self, identifier: object):
        super().__init__(f"unsupported room version {identifier!r}")
        self.identifier = identifier


def get_room_version(identifier: object) -> RoomVersion:
    """The rules of room version ``identifier``; raises UnsupportedRoomVersion."""
    if not isinstance(identifier, str) or identifier not in KNOWN_ROOM_VERSIONS:
        raise UnsupportedRoomVersion(identifier)
    return KNOWN_ROOM_VERSIONS[identifier]
