"""The redaction algorithm, for every room version.

Spec: https://spec.matrix.org/latest/client-server-api/#redactions and the
"Redactions" section of each room version (rooms v1, v6, v8, v9, v11).

Which keys survive is decided by the RoomVersion flags, never by version strings.
Pure: returns new dicts, never changes its input.
"""

from __future__ import annotations

from typing import Any

from .room_versions import RoomVersion

__all__ = ["redact", "prune_event_for_client"]

# Top-level keys kept by every version.
_BASE_TOP_LEVEL = frozenset(
    {
        "event_id", "type", "room_id", "sender", "state_key", "content", "hashes",
        "signatures", "depth", "prev_events", "auth_events", "origin_server_ts",
    }
)
# Dropped from the kept list in room version 11.
_PRE_V11_TOP_LEVEL = frozenset({"origin", "membership", "prev_state"})

_POWER_LEVEL_KEYS = (
    "ban", "events", "events_default", "kick", "redact", "state_default", "users", "users_default",
)


def _kept_content(event_type: str, content: dict[str, Any], rv: RoomVersion) -> dict[str, Any]:
    def keep(*keys: str) -> dict[str, Any]:
        return {k: content[k] for k in keys if k in content}

    if event_type == "m.room.member":
        out = keep("membership")
        if rv.restricted_join_rule_fix:
            out.update(keep("join_authorised_via_users_server"))
        if rv.updated_redaction_rules:
            # An object keeps only ``signed`` (an object without it stays, empty: the
            # spec is silent there, and Synapse and ruma both keep ``{}``).
            tpi = content.get("third_party_invite")
            if isinstance(tpi, dict):
                out["third_party_invite"] = {"signed": tpi["signed"]} if "signed" in tpi else {}
        return out
    if event_type == "m.room.create":
        return dict(content) if rv.updated_redaction_rules else keep("creator")
    if event_type == "m.room.join_rules":
        return keep("join_rule", "allow") if rv.restricted_join_rule else keep("join_rule")
    if event_type == "m.room.power_levels":
        if rv.updated_redaction_rules:
            return keep(*_POWER_LEVEL_KEYS, "invite")
        return keep(*_POWER_LEVEL_KEYS)
    if event_type == "m.room.history_visibility":
        return keep("history_visibility")
    if event_type == "m.room.aliases" and rv.special_case_aliases_auth:
        return keep("aliases")
    if event_type == "m.room.redaction" and rv.updated_redaction_rules:
        return keep("redacts")
    return {}


def redact(pdu_json: dict[str, Any], room_version: RoomVersion) -> dict[str, Any]:
    """The redacted form of an event: what hashes and signatures are computed over.

    ``unsigned`` is dropped along with every other key the version does not keep.
    """
    kept_top = _BASE_TOP_LEVEL if room_version.updated_redaction_rules else _BASE_TOP_LEVEL | _PRE_V11_TOP_LEVEL
    out = {k: v for k, v in pdu_json.items() if k in kept_top}
    content = pdu_json.get("content")
    out["content"] = _kept_content(pdu_json.get("type"), content, room_version) if isinstance(content, dict) else {}
    return out


def prune_event_for_client(
    pdu_json: dict[str, Any], room_version: RoomVersion, redacted_because: dict[str, Any] | None = None
) -> dict[str, Any]:
    """A redacted event as clients see it: the redacted form, keeping ``unsigned``'s
    ``age_ts`` and recording ``redacted_because``."""
    out = redact(pdu_json, room_version)
    unsigned: dict[str, Any] = {}
    old = pdu_json.get("unsigned")
    if isinstance(old, dict) and "age_ts" in old:
        unsigned["age_ts"] = old["age_ts"]
    if redacted_because is not None:
        unsigned["redacted_because"] = redacted_because
    if unsigned:
        out["unsigned"] = unsigned
    return out
