"""Spaces: which ``m.space.child`` events count, in which order, and what a room summary
from another server may hold. Pure: events and answers in, plain data out.

Spec: https://spec.matrix.org/latest/client-server-api/#spaces (children, their
ordering), https://spec.matrix.org/latest/client-server-api/#get_matrixclientv1roomsroomidhierarchy
(the walk, who sees what) and
https://spec.matrix.org/latest/server-server-api/#get_matrixfederationv1hierarchyroomid
(the federation answer: ``room`` with its ``children_state``, ``children``,
``inaccessible_children``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "SPACE_ROOM_TYPE", "CHILD_EVENT_TYPE", "HierarchyAnswer", "child_via", "is_valid_order",
    "space_children", "stripped_child", "open_to_anyone", "sanitise_summary", "parse_hierarchy_answer",
]

SPACE_ROOM_TYPE = "m.space"
CHILD_EVENT_TYPE = "m.space.child"
#: The join rules that let anyone see a room's summary (``knock_restricted`` and
#: ``knock`` need a room version that has them: the caller checks that).
OPEN_JOIN_RULES = ("public", "knock", "knock_restricted")

#: What a room summary may hold, with the type each field must have.
_SUMMARY_FIELDS: dict[str, type] = {
    "name": str, "topic": str, "canonical_alias": str, "avatar_url": str, "join_rule": str,
    "room_type": str, "encryption": str, "room_version": str, "world_readable": bool, "guest_can_join": bool,
}
#: A remote answer's lists are read up to these lengths.
MAX_CHILDREN_STATE = 1000
MAX_CHILDREN = 1000


def child_via(content: Mapping[str, Any]) -> list[str] | None:
    """The ``via`` servers of an ``m.space.child`` content; None when the child does not
    count (no ``via``, an empty one, or one with a non-string entry: a redacted or
    cleared event removes the child)."""
    via = content.get("via")
    if not isinstance(via, list) or not via or not all(isinstance(v, str) and v for v in via):
        return None
    return list(via)


def is_valid_order(value: Any) -> bool:
    """An ``order``: a string of at most 50 characters between U+0020 and U+007E."""
    return isinstance(value, str) and len(value) <= 50 and all("\x20" <= ch <= "\x7e" for ch in value)


def _order_key(child: Mapping[str, Any]) -> tuple:
    """Children with a valid ``order`` first (by it), then the others; ties by the
    event's ``origin_server_ts``, then by room ID."""
    order = child["content"].get("order")
    ts = child.get("origin_server_ts")
    ts = ts if isinstance(ts, int) and not isinstance(ts, bool) else 0
    if is_valid_order(order):
        return (0, order, ts, child["state_key"])
    return (1, "", ts, child["state_key"])


def stripped_child(event_type: str, state_key: Any, content: Any, sender: Any, origin_server_ts: Any
                   ) -> dict[str, Any] | None:
    """A ``StrippedChildStateEvent`` (stripped state plus ``origin_server_ts``), or None
    if it is not a well-formed ``m.space.child`` event naming a room."""
    if event_type != CHILD_EVENT_TYPE or not isinstance(state_key, str) or not state_key.startswith("!"):
        return None
    if not isinstance(content, Mapping) or not isinstance(sender, str):
        return None
    if not isinstance(origin_server_ts, int) or isinstance(origin_server_ts, bool):
        return None
    return {"type": CHILD_EVENT_TYPE, "state_key": state_key, "content": dict(content), "sender": sender,
            "origin_server_ts": origin_server_ts}


def space_children(children: Iterable[Mapping[str, Any]], *, suggested_only: bool) -> list[dict[str, Any]]:
    """Of stripped ``m.space.child`` events, those that count (a valid ``via``; with
    ``suggested_only``, ``suggested: true``), in the spec's order."""
    out = []
    for child in children:
        content = child.get("content")
        if not isinstance(content, Mapping) or child_via(content) is None:
            continue
        if suggested_only and content.get("suggested") is not True:
            continue
        out.append(dict(child))
    out.sort(key=_order_key)
    return out


def open_to_anyone(summary: Mapping[str, Any]) -> bool:
    """Whether a summary's room shows to anyone: an open join rule (``public``,
    ``knock``, ``knock_restricted``) or ``world_readable`` history."""
    return summary.get("join_rule") in OPEN_JOIN_RULES or summary.get("world_readable") is True


def sanitise_summary(value: Any) -> dict[str, Any] | None:
    """A room summary from another server, with only the fields of the spec's
    ``RoomSummary`` that have the right types; None without a ``room_id`` or a
    ``num_joined_members`` count."""
    if not isinstance(value, Mapping):
        return None
    room_id = value.get("room_id")
    members = value.get("num_joined_members")
    if not isinstance(room_id, str) or not room_id.startswith("!"):
        return None
    if not isinstance(members, int) or isinstance(members, bool) or members < 0:
        return None
    out: dict[str, Any] = {"room_id": room_id, "num_joined_members": members,
                           "world_readable": False, "guest_can_join": False}
    for key, kind in _SUMMARY_FIELDS.items():
        field = value.get(key)
        if isinstance(field, kind):
            out[key] = field
    allowed = value.get("allowed_room_ids")
    if isinstance(allowed, list):
        rooms = [r for r in allowed if isinstance(r, str) and r.startswith("!")]
        if rooms:
            out["allowed_room_ids"] = rooms
    return out


@dataclass(frozen=True)
class HierarchyAnswer:
    """Another server's answer to ``GET /hierarchy/{roomId}``, checked."""

    room: dict[str, Any]
    #: The room's stripped ``m.space.child`` events that count, in order.
    children_state: list[dict[str, Any]]
    #: Summaries of the children the answering server could give, by room ID.
    children: dict[str, dict[str, Any]]
    #: Children the asking server has no way to see.
    inaccessible: frozenset[str]


def parse_hierarchy_answer(answer: Any, room_id: str, *, suggested_only: bool) -> HierarchyAnswer:
    """Check an answer to ``GET /_matrix/federation/v1/hierarchy/{room_id}``: ValueError
    when its ``room`` is missing, malformed or another room; malformed children and
    child events are left out."""
    if not isinstance(answer, Mapping):
        raise ValueError("the answer is not a JSON object")
    raw_room = answer.get("room")
    room = sanitise_summary(raw_room)
    if room is None:
        raise ValueError("the answer has no valid 'room'")
    if room["room_id"] != room_id:
        raise ValueError(f"the answer describes {room['room_id']}, not {room_id}")
    raw_state = raw_room.get("children_state")
    events = []
    if isinstance(raw_state, list):
        for e in raw_state[:MAX_CHILDREN_STATE]:
            if isinstance(e, Mapping):
                child = stripped_child(e.get("type"), e.get("state_key"), e.get("content"), e.get("sender"),
                                       e.get("origin_server_ts"))
                if child is not None:
                    events.append(child)
    children: dict[str, dict[str, Any]] = {}
    raw_children = answer.get("children")
    if isinstance(raw_children, list):
        for c in raw_children[:MAX_CHILDREN]:
            summary = sanitise_summary(c)
            if summary is not None:
                children.setdefault(summary["room_id"], summary)
    raw_inaccessible = answer.get("inaccessible_children")
    inaccessible = frozenset(r for r in raw_inaccessible if isinstance(r, str)) \
        if isinstance(raw_inaccessible, list) else frozenset()
    return HierarchyAnswer(room, space_children(events, suggested_only=suggested_only), children, inaccessible)
