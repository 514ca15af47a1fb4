"""Filters for /sync: which rooms, event types and senders a client wants, timeline
limits and lazy-loading of members.

Spec: https://spec.matrix.org/latest/client-server-api/#filtering and the ``Filter``
schema of ``POST /user/{userId}/filter``. Types may use ``*`` as a wildcard.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from federation.ids import is_valid_room_id, is_valid_user_id
from federation.push_rules import split_path

from ..http import MatrixError

#: Timeline limit when the filter gives none (as Synapse).
DEFAULT_TIMELINE_LIMIT = 10
MAX_TIMELINE_LIMIT = 1000


@lru_cache(maxsize=1024)
def _type_pattern(pattern: str) -> re.Pattern[str]:
    return re.compile("^" + ".*".join(re.escape(p) for p in pattern.split("*")) + "$")


def type_matches(event_type: str, patterns: tuple[str, ...]) -> bool:
    return any(p == event_type or ("*" in p and _type_pattern(p).match(event_type)) for p in patterns)


def _strings(obj: Mapping[str, Any], key: str, where: str) -> tuple[str, ...] | None:
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise MatrixError.bad_json(f"filter '{where}{key}' must be a list of strings")
    return tuple(value)


def _ids(obj: Mapping[str, Any], key: str, where: str, valid: Callable[[str], bool],
         what: str) -> tuple[str, ...] | None:
    """A list of room or user IDs (a filter naming something else would match nothing)."""
    value = _strings(obj, key, where)
    for v in value or ():
        if not valid(v):
            raise MatrixError.bad_json(f"filter '{where}{key}' holds {v[:64]!r}, which is not a {what}")
    return value


def _bool(obj: Mapping[str, Any], key: str, where: str, default: bool = False) -> bool:
    value = obj.get(key, default)
    if not isinstance(value, bool):
        raise MatrixError.bad_json(f"filter '{where}{key}' must be a boolean")
    return value


def _object(obj: Mapping[str, Any], key: str, where: str) -> Mapping[str, Any]:
    value = obj.get(key, {})
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise MatrixError.bad_json(f"filter '{where}{key}' must be an object")
    return value


@dataclass(frozen=True)
class EventFilter:
    """``EventFilter`` / ``RoomEventFilter`` / ``StateFilter`` (one shape: unused keys stay None)."""

    limit: int | None = None
    types: tuple[str, ...] | None = None
    not_types: tuple[str, ...] = ()
    senders: tuple[str, ...] | None = None
    not_senders: tuple[str, ...] = ()
    rooms: tuple[str, ...] | None = None
    not_rooms: tuple[str, ...] = ()
    lazy_load_members: bool = False
    include_redundant_members: bool = False
    contains_url: bool | None = None
    unread_thread_notifications: bool = False

    @classmethod
    def parse(cls, obj: Mapping[str, Any], where: str) -> "EventFilter":
        limit = obj.get("limit")
        if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 0):
            raise MatrixError.bad_json(f"filter '{where}limit' must be a non-negative integer")
        contains_url = obj.get("contains_url")
        if contains_url is not None and not isinstance(contains_url, bool):
            raise MatrixError.bad_json(f"filter '{where}contains_url' must be a boolean")
        return cls(
            limit=limit,
            types=_strings(obj, "types", where),
            not_types=_strings(obj, "not_types", where) or (),
            senders=_ids(obj, "senders", where, is_valid_user_id, "user ID"),
            not_senders=_ids(obj, "not_senders", where, is_valid_user_id, "user ID") or (),
            rooms=_ids(obj, "rooms", where, is_valid_room_id, "room ID"),
            not_rooms=_ids(obj, "not_rooms", where, is_valid_room_id, "room ID") or (),
            lazy_load_members=_bool(obj, "lazy_load_members", where),
            include_redundant_members=_bool(obj, "include_redundant_members", where),
            contains_url=contains_url,
            unread_thread_notifications=_bool(obj, "unread_thread_notifications", where),
        )

    @property
    def is_unrestricted(self) -> bool:
        """No type, sender or URL condition (every event of a room passes)."""
        return (self.types is None and not self.not_types and self.senders is None and not self.not_senders
                and self.contains_url is None)

    def allows_room(self, room_id: str) -> bool:
        return (self.rooms is None or room_id in self.rooms) and room_id not in self.not_rooms

    def allows_type(self, event_type: str) -> bool:
        if self.not_types and type_matches(event_type, self.not_types):
            return False
        return self.types is None or type_matches(event_type, self.types)

    def allows(self, event_type: str, sender: str | None = None, content: Mapping[str, Any] | None = None) -> bool:
        if not self.allows_type(event_type):
            return False
        if sender is not None:
            if sender in self.not_senders or (self.senders is not None and sender not in self.senders):
                return False
        if self.contains_url is not None and content is not None:
            if isinstance(content.get("url"), str) != self.contains_url:
                return False
        return True


@dataclass(frozen=True)
class SyncFilter:
    """A whole ``Filter`` as /sync uses it."""

    presence: EventFilter = field(default_factory=EventFilter)
    account_data: EventFilter = field(default_factory=EventFilter)
    rooms: tuple[str, ...] | None = None
    not_rooms: tuple[str, ...] = ()
    include_leave: bool = False
    timeline: EventFilter = field(default_factory=EventFilter)
    state: EventFilter = field(default_factory=EventFilter)
    ephemeral: EventFilter = field(default_factory=EventFilter)
    room_account_data: EventFilter = field(default_factory=EventFilter)
    #: Dot-separated paths of the event fields to return (None: all of them).
    event_fields: tuple[str, ...] | None = None
    #: "client", or "federation" for events as other servers see them.
    event_format: str = "client"

    @classmethod
    def parse(cls, obj: Any) -> "SyncFilter":
        if not isinstance(obj, dict):
            raise MatrixError.bad_json("A filter must be a JSON object")
        room = _object(obj, "room", "")
        event_format = obj.get("event_format", "client")
        if event_format not in ("client", "federation"):
            raise MatrixError.bad_json("filter 'event_format' must be 'client' or 'federation'")
        return cls(
            event_fields=_strings(obj, "event_fields", ""),
            event_format=event_format,
            presence=EventFilter.parse(_object(obj, "presence", ""), "presence."),
            account_data=EventFilter.parse(_object(obj, "account_data", ""), "account_data."),
            rooms=_ids(room, "rooms", "room.", is_valid_room_id, "room ID"),
            not_rooms=_ids(room, "not_rooms", "room.", is_valid_room_id, "room ID") or (),
            include_leave=_bool(room, "include_leave", "room."),
            timeline=EventFilter.parse(_object(room, "timeline", "room."), "room.timeline."),
            state=EventFilter.parse(_object(room, "state", "room."), "room.state."),
            ephemeral=EventFilter.parse(_object(room, "ephemeral", "room."), "room.ephemeral."),
            room_account_data=EventFilter.parse(_object(room, "account_data", "room."), "room.account_data."),
        )

    def allows_room(self, room_id: str) -> bool:
        return (self.rooms is None or room_id in self.rooms) and room_id not in self.not_rooms

    @property
    def timeline_limit(self) -> int:
        limit = self.timeline.limit if self.timeline.limit is not None else DEFAULT_TIMELINE_LIMIT
        return min(limit, MAX_TIMELINE_LIMIT)

    @property
    def lazy_load_members(self) -> bool:
        return self.state.lazy_load_members or self.timeline.lazy_load_members


def only_fields(event: Mapping[str, Any], paths: tuple[str, ...]) -> dict[str, Any]:
    """The parts of ``event`` named by dot-separated property paths (``content.body``;
    ``\\.`` for a dot in a name), nested as in the event; paths that lead nowhere
    are skipped.
    https://spec.matrix.org/latest/appendices/#dot-separated-property-paths"""
    out: dict[str, Any] = {}
    for path in paths:
        names = split_path(path)
        source: Any = event
        for name in names:
            if not isinstance(source, Mapping) or name not in source:
                break
            source = source[name]
        else:
            target = out
            for name in names[:-1]:
                nxt = target.get(name)
                if not isinstance(nxt, dict):
                    nxt = target[name] = {}
                target = nxt
            target[names[-1]] = source
    return out
