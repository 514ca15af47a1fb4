"""Relationships between events: the ``m.relates_to`` of an event's content, which
edits are valid, and which events get bundled aggregations. Plain data in, answers out.

Spec:
- https://spec.matrix.org/latest/client-server-api/#forming-relationships-between-events
- https://spec.matrix.org/latest/client-server-api/#validity-of-replacement-events
- https://spec.matrix.org/latest/client-server-api/#aggregations-of-child-events
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

REPLACE = "m.replace"
ANNOTATION = "m.annotation"
THREAD = "m.thread"
REFERENCE = "m.reference"

#: Longest ``rel_type`` and parent event ID kept (both are indexed; longer ones are
#: not relationships any spec type would produce, and are ignored).
MAX_REL_TYPE_BYTES = 255
MAX_EVENT_ID_BYTES = 255
#: Longest annotation key kept (a reaction is an emoji or a short text).
MAX_KEY_BYTES = 1024


@dataclass(frozen=True, slots=True)
class Relation:
    """An event's relationship to its parent."""

    rel_type: str
    #: The parent's event ID.
    event_id: str
    #: The annotation key (``m.annotation`` only).
    key: str | None = None


def _storable(value: Any, max_bytes: int) -> bool:
    """A string a database can hold and index: no NUL, no lone surrogate, bounded."""
    if not isinstance(value, str) or not value or "\x00" in value:
        return False
    try:
        return len(value.encode("utf-8")) <= max_bytes
    except UnicodeEncodeError:  # a lone surrogate from JSON "\ud800"
        return False


def relation_of(content: Mapping[str, Any]) -> Relation | None:
    """The relationship an event's (cleartext) content declares, or None when it has
    none or it does not follow the ``m.relates_to`` schema (such ones are ignored).
    Rich replies (``m.in_reply_to`` without ``rel_type``) are not relationships here."""
    rel = content.get("m.relates_to") if isinstance(content, Mapping) else None
    if not isinstance(rel, Mapping):
        return None
    rel_type, parent = rel.get("rel_type"), rel.get("event_id")
    if not _storable(rel_type, MAX_REL_TYPE_BYTES) or not _storable(parent, MAX_EVENT_ID_BYTES) \
            or not parent.startswith("$"):
        return None
    key = None
    if rel_type == ANNOTATION:
        key = rel.get("key")
        if not _storable(key, MAX_KEY_BYTES):
            key = None
    return Relation(rel_type, parent, key)


def is_valid_edit(original: Mapping[str, Any], edit: Mapping[str, Any]) -> bool:
    """Whether ``edit`` (client- or federation-format event) validly replaces
    ``original``: same room, same sender, same type, neither a state event, the original
    not itself an edit, and the replacement carries ``m.new_content`` (an encrypted
    edit keeps it in its ciphertext, so it is taken on trust)."""
    if original.get("room_id") != edit.get("room_id") or original.get("sender") != edit.get("sender"):
        return False
    if original.get("type") != edit.get("type"):
        return False
    if "state_key" in original or "state_key" in edit:
        return False
    original_rel = relation_of(original.get("content") or {})
    if original_rel is not None and original_rel.rel_type == REPLACE:
        return False
    edit_rel = relation_of(edit.get("content") or {})
    if edit_rel is None or edit_rel.rel_type != REPLACE or edit_rel.event_id != original.get("event_id"):
        return False
    if edit.get("type") == "m.room.encrypted":
        return True
    return isinstance((edit.get("content") or {}).get("m.new_content"), Mapping)


def edit_order(edit: Mapping[str, Any]) -> tuple[int, str]:
    """Sort key of edits: the most recent is the largest (``origin_server_ts``, then
    the lexicographically largest event ID)."""
    ts = edit.get("origin_server_ts")
    return (ts if isinstance(ts, int) else 0, str(edit.get("event_id", "")))


def gets_bundled_aggregations(event: Mapping[str, Any]) -> bool:
    """State events get no bundled aggregations (spec), nor do edits and annotations:
    nothing meaningful relates to them."""
    if "state_key" in event:
        return False
    rel = relation_of(event.get("content") or {})
    return rel is None or rel.rel_type not in (REPLACE, ANNOTATION)


def can_start_thread_from(parent_content: Mapping[str, Any]) -> bool:
    """A thread can not start from an event that is itself the child of a relationship
    (spec "Validation of m.thread relationships")."""
    return relation_of(parent_content) is None
