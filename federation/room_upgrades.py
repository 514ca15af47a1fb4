"""Room upgrades as data: what the replacement room starts with, what the old room is
left with, and how a user's per-room settings move across. Pure functions; the
service (gateway/services/room_upgrades.py) reads the state and sends the events.

Spec: https://spec.matrix.org/latest/client-server-api/#room-upgrades (server
behaviour) and https://spec.matrix.org/latest/rooms/v12/ (creators, ``predecessor``
without ``event_id``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from .auth_rules import parse_power_level
from .room_versions import RoomVersion

StateKey = tuple[str, str]

#: The state the spec recommends carrying over (state key ""), in the order it is sent
#: after the power levels.
TRANSFERABLE_STATE = (
    "m.room.join_rules",
    "m.room.history_visibility",
    "m.room.guest_access",
    "m.room.name",
    "m.room.topic",
    "m.room.avatar",
    "m.room.encryption",
    "m.room.server_acl",
)
#: Carried over for every state key (a space's children, a room's parents); empty
#: contents (removed links) are not.
TRANSFERABLE_KEYED_STATE = ("m.space.child", "m.space.parent")
#: Settings the spec gives a meaning when their event is absent: the new room states
#: them explicitly (the old room's behaviour kept, and every setting visible to clients).
IMPLIED_STATE = {
    "m.room.history_visibility": {"history_visibility": "shared"},
    "m.room.guest_access": {"guest_access": "forbidden"},
}

TOMBSTONE_BODY = "This room has been replaced"

#: The level the old room's ordinary members are raised above (spec: "the greater of 50
#: and users_default + 1").
RESTRICTED_LEVEL = 50

#: The single levels of ``m.room.power_levels`` (besides the ``events``, ``notifications``
#: and ``users`` maps).
LEVEL_KEYS = ("users_default", "events_default", "state_default", "ban", "redact", "kick", "invite")


def upgraded_create_content(
    old_create: Mapping[str, Any], old_room_id: str, new_version: RoomVersion, upgrader: str,
    tombstone_event_id: str | None, additional_creators: Iterable[str] = (),
) -> dict[str, Any]:
    """The replacement room's ``m.room.create`` content: the new version, ``predecessor``
    (its ``event_id`` is left out when the new room's ID depends on this event, rooms
    12+), the room ``type`` and ``m.federate`` of the old room, ``creator`` where the
    version has one and ``additional_creators`` where it has privileged creators (not
    copied from the old room: the caller names them)."""
    predecessor: dict[str, Any] = {"room_id": old_room_id}
    if tombstone_event_id is not None:
        predecessor["event_id"] = tombstone_event_id
    content: dict[str, Any] = {"room_version": new_version.identifier, "predecessor": predecessor}
    if not new_version.implicit_room_creator:
        content["creator"] = upgrader
    extra = [u for u in dict.fromkeys(additional_creators) if u != upgrader]
    if new_version.privileged_creators and extra:
        content["additional_creators"] = extra
    if isinstance(old_create.get("m.federate"), bool):
        content["m.federate"] = old_create["m.federate"]
    if isinstance(old_create.get("type"), str):
        content["type"] = old_create["type"]
    return content


def transferable_state(state: Mapping[StateKey, Mapping[str, Any]]) -> dict[StateKey, dict[str, Any]]:
    """Of the old room's state contents, those the new room copies (power levels aside:
    see ``upgraded_power_levels``), in sending order. A setting the old room leaves to
    its default (``IMPLIED_STATE``) is sent with that default."""
    out: dict[StateKey, dict[str, Any]] = {}
    for event_type in TRANSFERABLE_STATE:
        content = state.get((event_type, ""), IMPLIED_STATE.get(event_type))
        if content is not None:
            out[(event_type, "")] = dict(content)
    for (event_type, state_key), content in sorted(state.items()):
        if event_type in TRANSFERABLE_KEYED_STATE and content:
            out[(event_type, state_key)] = dict(content)
    return out


def normalised_power_levels(content: Mapping[str, Any], version: RoomVersion) -> dict[str, Any]:
    """Power levels with every level as an integer (as rooms 10+ require), read by the
    rules of ``version`` (the old room's: strings and floats count in early versions);
    entries that are not levels at all are dropped."""
    out = dict(content)
    for key in LEVEL_KEYS:
        if key in out:
            value = parse_power_level(out[key], version)
            if value is None:
                del out[key]
            else:
                out[key] = value
    for key in ("events", "notifications", "users"):
        if key not in out:
            continue
        levels = out[key]
        if not isinstance(levels, Mapping):
            del out[key]
            continue
        parsed = {k: parse_power_level(v, version) for k, v in levels.items()}
        out[key] = {k: v for k, v in parsed.items() if v is not None}
    return out


def _needed_to_copy_state(levels: Mapping[str, Any]) -> int:
    """The level that may send every state event and the bans: the largest of
    ``state_default``, ``ban`` and the ``events`` levels."""
    events = levels.get("events") or {}
    return max([levels.get("state_default", 50), levels.get("ban", 50), *events.values()])


def upgraded_power_levels(
    old_levels: Mapping[str, Any], old_version: RoomVersion, new_version: RoomVersion, upgrader: str,
    upgrader_was_creator: bool, new_creators: Iterable[str],
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The replacement room's power levels: (what it starts with, what it ends with).

    It ends with the old room's levels. In rooms 12+ the new room's creators are left out
    of ``users`` (they have unlimited power). Otherwise the upgrader starts with enough
    power to send the copied state and bans and goes back to their old level at the end;
    an upgrader who was a creator of a 12+ room (unlimited power) keeps the highest level
    in the new room."""
    final = normalised_power_levels(old_levels, old_version)
    users = dict(final.get("users") or {})
    if new_version.privileged_creators:
        for creator in new_creators:
            users.pop(creator, None)
        final["users"] = users
        return final, final
    needed = _needed_to_copy_state(final)
    if upgrader_was_creator:
        users[upgrader] = max([100, needed, *users.values()])
        final["users"] = users
        return final, final
    current = users.get(upgrader, final.get("users_default", 0))
    if current >= needed:
        final["users"] = users
        return final, final
    initial = {**final, "users": {**users, upgrader: needed}}
    final["users"] = users
    return initial, final


def restricted_power_levels(levels: Mapping[str, Any], version: RoomVersion) -> dict[str, Any] | None:
    """The old room's power levels after an upgrade: ordinary members may no longer send
    events or invite (``events_default`` and ``invite`` raised to the greater of 50 and
    ``users_default`` + 1). None when they already may not."""
    users_default = parse_power_level(levels.get("users_default", 0), version)
    restricted = max((users_default if users_default is not None else 0) + 1, RESTRICTED_LEVEL)
    defaults = {"events_default": 0, "invite": 0}
    out = dict(levels)
    changed = False
    for key, default in defaults.items():
        current = parse_power_level(levels.get(key, default), version)
        if current is None or current < restricted:
            out[key] = restricted
            changed = True
    return out if changed else None


def split_canonical_alias(
    content: Mapping[str, Any], is_local: Callable[[str], bool]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """``m.room.canonical_alias`` of the old room and of the new one after the local
    aliases moved: this server's aliases go to the new room, the others stay."""
    old: dict[str, Any] = dict(content)
    new: dict[str, Any] = {}
    alias = content.get("alias")
    if isinstance(alias, str) and is_local(alias):
        new["alias"] = alias
        old.pop("alias", None)
    alt = content.get("alt_aliases")
    if isinstance(alt, list):
        moving = [a for a in alt if isinstance(a, str) and is_local(a)]
        staying = [a for a in alt if a not in moving]
        if moving:
            new["alt_aliases"] = moving
        if staying:
            old["alt_aliases"] = staying
        else:
            old.pop("alt_aliases", None)
    return old, new


def direct_with_room(direct: Mapping[str, Any], old_room_id: str, new_room_id: str) -> dict[str, Any] | None:
    """``m.direct`` account data with the new room next to the old one wherever the old
    one is listed; None when nothing changes."""
    out = dict(direct)
    changed = False
    for user_id, rooms in direct.items():
        if isinstance(rooms, list) and old_room_id in rooms and new_room_id not in rooms:
            out[user_id] = [*rooms, new_room_id]
            changed = True
    return out if changed else None


def push_rule_for_room(
    kind: str, rule_id: str, conditions: list[Any] | None, old_room_id: str, new_room_id: str,
) -> tuple[str, list[Any] | None] | None:
    """The copy for the new room of a user's push rule about the old room: a ``room``
    rule named by the old room ID, or an override/underride rule with an ``event_match``
    on ``room_id``. Returns (rule ID, conditions), or None for a rule about other rooms."""
    if kind == "room":
        return (new_room_id, None) if rule_id == old_room_id else None
    if kind not in ("override", "underride") or not conditions:
        return None
    changed = False
    new_conditions = []
    for c in conditions:
        if isinstance(c, Mapping) and c.get("kind") == "event_match" and c.get("key") == "room_id" \
                and c.get("pattern") == old_room_id:
            new_conditions.append({**c, "pattern": new_room_id})
            changed = True
        else:
            new_conditions.append(c)
    if not changed:
        return None
    new_id = rule_id.replace(old_room_id, new_room_id) if old_room_id in rule_id else f"{rule_id}.{new_room_id}"
    return new_id, new_conditions
