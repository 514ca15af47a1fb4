"""createRoom bodies for space tests: spaces, and rooms with the join rules and history
visibility that decide who sees them in a hierarchy."""

from __future__ import annotations

from typing import Any


def room_body(*, space: bool = False, join_rule: str | None = None, history: str | None = None,
              allow: list[str] | None = None, version: str | None = None, name: str | None = None) -> dict[str, Any]:
    """A createRoom body: ``public_chat`` with ``join_rule`` (``allow``: the rooms of a
    restricted rule) and ``history`` visibility set by initial state."""
    state = []
    if join_rule:
        content: dict[str, Any] = {"join_rule": join_rule}
        if allow is not None:
            content["allow"] = [{"type": "m.room_membership", "room_id": r} for r in allow]
        state.append({"type": "m.room.join_rules", "content": content})
    if history:
        state.append({"type": "m.room.history_visibility", "content": {"history_visibility": history}})
    body: dict[str, Any] = {"preset": "public_chat", "initial_state": state}
    if space:
        body["creation_content"] = {"type": "m.space"}
    if version:
        body["room_version"] = version
    if name:
        body["name"] = name
    return body
