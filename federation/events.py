"""Persistent data units (PDUs): the event model, format checks, hashes and event IDs.

Spec: server-server API "PDUs" and "Signing Events"
(https://spec.matrix.org/latest/server-server-api/#pdus), the event format of each
room version (rooms v1 and v3/v4 event IDs, v12 room IDs).
"""

from __future__ import annotations

import hashlib
from typing import Any, Iterable, Mapping

from .canonical_json import (
    MAX_SAFE_INTEGER,
    MIN_SAFE_INTEGER,
    CanonicalJSONError,
    check_strict_values,
    encode_base64,
    encode_base64_urlsafe,
    encode_canonical_json,
)
from .redaction import prune_event_for_client
from .signing import (
    SignatureError,
    add_content_hash,
    check_content_hash,
    compute_content_hash,
    redacted_signing_bytes,
)
from .room_versions import EventFormat, RoomVersion

__all__ = [
    "InvalidEventError",
    "PDU",
    "MAX_PDU_SIZE",
    "build_event",
    "compute_content_hash",
    "add_content_hash",
    "check_content_hash",
    "compute_reference_hash",
    "compute_event_id",
    "check_pdu_format",
    "parse_pdu",
]

#: Spec "Size limits": the whole PDU as canonical JSON, and some of its fields.
MAX_PDU_SIZE = 65536
MAX_ID_BYTES = 255
#: Spec PDU schemas: "Must contain less than or equal to 20 (prev) / 10 (auth) events".
MAX_PREV_EVENTS = 20
MAX_AUTH_EVENTS = 10
#: Spec PDU schemas: depth below 2^63 - 1 (rooms 1-5), 2^53 - 1 from room version 6
#: (canonical JSON integers). Synapse caps every version at 2^53 - 1.
MAX_DEPTH = 2**63 - 1
MAX_DEPTH_V6 = MAX_SAFE_INTEGER

_REQUIRED = ("auth_events", "content", "depth", "hashes", "origin_server_ts", "prev_events", "sender",
             "signatures", "type")


class InvalidEventError(ValueError):
    """A PDU that does not follow the event format of its room version."""


# --- hashes ------------------------------------------------------------------------


def compute_reference_hash(pdu_json: Mapping[str, Any], room_version: RoomVersion) -> bytes:
    """SHA-256 over the redacted event without ``signatures`` and ``unsigned``: the
    bytes its signatures cover (``signing.redacted_signing_bytes``).

    https://spec.matrix.org/latest/server-server-api/#calculating-the-reference-hash-for-an-event
    """
    try:
        data = redacted_signing_bytes(pdu_json, room_version)
    except SignatureError as e:  # not encodable as canonical JSON
        raise CanonicalJSONError(str(e)) from None
    return hashlib.sha256(data).digest()


def compute_event_id(pdu_json: Mapping[str, Any], room_version: RoomVersion, *,
                     signed_bytes: bytes | None = None) -> str:
    """The event ID: given in the event for v1/v2, derived from the reference hash after.
    ``signed_bytes``: ``signing.redacted_signing_bytes`` of this event, if already known."""
    fmt = room_version.event_format
    if fmt is EventFormat.V1:
        event_id = pdu_json.get("event_id")
        if not isinstance(event_id, str):
            raise InvalidEventError("event_id is required in room versions 1 and 2")
        return event_id
    if signed_bytes is None:
        digest = compute_reference_hash(pdu_json, room_version)
    else:
        digest = hashlib.sha256(signed_bytes).digest()
    if fmt is EventFormat.V2:
        return "$" + encode_base64(digest)
    return "$" + encode_base64_urlsafe(digest)


def parse_pdu(pdu_json: dict[str, Any], room_version: RoomVersion) -> tuple["PDU", bytes]:
    """``PDU.from_pdu_json``, also returning the bytes the event's signatures cover
    (``signing.redacted_signing_bytes``): a received event is redacted and encoded once
    for its event ID and its signature check. InvalidEventError on a malformed event."""
    check_pdu_format(pdu_json, room_version)
    try:
        signed = redacted_signing_bytes(pdu_json, room_version)
    except SignatureError as e:
        raise InvalidEventError(str(e)) from None
    return PDU(pdu_json, room_version, compute_event_id(pdu_json, room_version, signed_bytes=signed)), signed


# --- format ------------------------------------------------------------------------


def _check_id_length(pdu_json: Mapping[str, Any], key: str) -> None:
    value = pdu_json.get(key)
    if isinstance(value, str) and len(value.encode("utf-8")) > MAX_ID_BYTES:
        raise InvalidEventError(f"{key} is longer than {MAX_ID_BYTES} bytes")


def _references(pdu_json: Mapping[str, Any], key: str, room_version: RoomVersion, limit: int) -> tuple[str, ...]:
    refs = pdu_json.get(key)
    if not isinstance(refs, list):
        raise InvalidEventError(f"{key} must be a list")
    if len(refs) > limit:
        raise InvalidEventError(f"{key} has {len(refs)} entries; at most {limit} are allowed")
    ids: list[str] = []
    for ref in refs:
        if room_version.event_format is EventFormat.V1:
            if not (isinstance(ref, list) and len(ref) == 2 and isinstance(ref[0], str) and isinstance(ref[1], dict)):
                raise InvalidEventError(f"{key} entries must be [event_id, {{hashes}}] pairs in this room version")
            ids.append(ref[0])
        else:
            if not isinstance(ref, str) or not ref.startswith("$"):
                raise InvalidEventError(f"{key} entries must be event IDs")
            ids.append(ref)
    return tuple(ids)


def _only_strict_values(value: Any) -> bool:
    """Fast yes/no form of ``check_strict_values`` (no paths, no recursion): every
    number an integer in the canonical JSON range, every value a JSON type."""
    stack = [value]
    pop, extend = stack.pop, stack.extend
    while stack:
        v = pop()
        t = type(v)
        if t is str:
            continue
        if t is dict:
            extend(v.values())
        elif t is list:
            extend(v)
        elif t is int:
            if not MIN_SAFE_INTEGER <= v <= MAX_SAFE_INTEGER:
                return False
        elif v is None or t is bool:
            continue
        else:
            return False
    return True


def check_pdu_format(pdu_json: Any, room_version: RoomVersion) -> None:
    """Raise InvalidEventError unless ``pdu_json`` is a well-formed PDU of this version."""
    if not isinstance(pdu_json, dict):
        raise InvalidEventError("a PDU must be a JSON object")
    for key in _REQUIRED:
        if key not in pdu_json:
            raise InvalidEventError(f"missing required key {key!r}")
    is_create = pdu_json.get("type") == "m.room.create" and pdu_json.get("state_key") == ""
    if room_version.room_id_from_create_event and is_create:
        if "room_id" in pdu_json:
            raise InvalidEventError("a room v12 create event must not have a room_id")
        if pdu_json.get("auth_events") or pdu_json.get("prev_events"):
            raise InvalidEventError("a create event has no auth_events or prev_events")
    else:
        room_id = pdu_json.get("room_id")
        if not isinstance(room_id, str) or not room_id.startswith("!"):
            raise InvalidEventError("room_id must be a room ID")
    if room_version.event_id_in_event and not isinstance(pdu_json.get("event_id"), str):
        raise InvalidEventError("event_id is required in room versions 1 and 2")
    for key in ("type", "sender"):
        if not isinstance(pdu_json[key], str):
            raise InvalidEventError(f"{key} must be a string")
    if not pdu_json["sender"].startswith("@") or ":" not in pdu_json["sender"]:
        raise InvalidEventError("sender must be a user ID")
    if "state_key" in pdu_json and not isinstance(pdu_json["state_key"], str):
        raise InvalidEventError("state_key must be a string")
    if not isinstance(pdu_json["content"], dict):
        raise InvalidEventError("content must be an object")
    depth = pdu_json["depth"]
    max_depth = MAX_DEPTH_V6 if room_version.strict_canonicaljson else MAX_DEPTH
    if isinstance(depth, bool) or not isinstance(depth, int) or not 0 <= depth <= max_depth:
        limit = "2^53 - 1, the canonical JSON integer range" if room_version.strict_canonicaljson else "2^63 - 1"
        raise InvalidEventError(f"depth must be an integer from 0 to {limit}")
    ts = pdu_json["origin_server_ts"]
    if isinstance(ts, bool) or not isinstance(ts, int):
        raise InvalidEventError("origin_server_ts must be an integer")
    hashes = pdu_json["hashes"]
    if not isinstance(hashes, dict) or not isinstance(hashes.get("sha256"), str):
        raise InvalidEventError("hashes.sha256 must be a string")
    sigs = pdu_json["signatures"]
    if not isinstance(sigs, dict) or not all(
        isinstance(v, dict) and all(isinstance(s, str) for s in v.values()) for v in sigs.values()
    ):
        raise InvalidEventError("signatures must map server names to {key ID: signature}")
    if "unsigned" in pdu_json and not isinstance(pdu_json["unsigned"], dict):
        raise InvalidEventError("unsigned must be an object")
    for key in ("sender", "room_id", "state_key", "type", "event_id"):
        _check_id_length(pdu_json, key)
    _references(pdu_json, "prev_events", room_version, MAX_PREV_EVENTS)
    _references(pdu_json, "auth_events", room_version, MAX_AUTH_EVENTS)
    if pdu_json["type"] == "m.room.redaction":
        redacts = pdu_json["content"].get("redacts") if room_version.redacts_in_content else pdu_json.get("redacts")
        if redacts is not None and not isinstance(redacts, str):
            raise InvalidEventError("redacts must be an event ID")
    try:
        if room_version.strict_canonicaljson:
            if not _only_strict_values(pdu_json):
                check_strict_values(pdu_json)  # finds the offending path for the message
            size = len(encode_canonical_json(pdu_json, assume_no_floats=True))
        else:
            size = len(encode_canonical_json(pdu_json))
    except CanonicalJSONError as e:
        raise InvalidEventError(f"not valid canonical JSON for this room version: {e}") from None
    if size > MAX_PDU_SIZE:
        raise InvalidEventError(f"event is {size} bytes; the limit is {MAX_PDU_SIZE}")


# --- the model ---------------------------------------------------------------------


class PDU:
    """A parsed PDU. Read-only attributes; ``get_pdu_json()`` gives the wire form.

    ``content``, ``hashes``, ``signatures`` and ``unsigned`` are the parsed JSON's own
    dicts (no copies, for speed): treat them as read-only too.
    """

    __slots__ = (
        "_json", "room_version", "event_id", "room_id", "type", "state_key", "sender", "content",
        "origin_server_ts", "depth", "prev_event_ids", "auth_event_ids", "redacts", "hashes",
        "signatures", "unsigned",
    )

    def __init__(self, pdu_json: dict[str, Any], room_version: RoomVersion, event_id: str):
        """Wrap already checked JSON; most callers want :meth:`from_pdu_json`.

        The PDU keeps ``pdu_json`` (no copy): the caller must not change it afterwards.
        """
        set_ = object.__setattr__
        set_(self, "_json", pdu_json)
        set_(self, "room_version", room_version)
        set_(self, "event_id", event_id)
        type_ = pdu_json["type"]
        content = pdu_json["content"]
        set_(self, "type", type_)
        set_(self, "state_key", pdu_json.get("state_key"))
        set_(self, "sender", pdu_json["sender"])
        set_(self, "content", content)
        set_(self, "origin_server_ts", pdu_json["origin_server_ts"])
        set_(self, "depth", pdu_json["depth"])
        set_(self, "hashes", pdu_json["hashes"])
        set_(self, "signatures", pdu_json["signatures"])
        set_(self, "unsigned", pdu_json.get("unsigned") or {})
        if room_version.event_format is EventFormat.V1:
            set_(self, "prev_event_ids", tuple(r[0] for r in pdu_json["prev_events"]))
            set_(self, "auth_event_ids", tuple(r[0] for r in pdu_json["auth_events"]))
        else:
            set_(self, "prev_event_ids", tuple(pdu_json["prev_events"]))
            set_(self, "auth_event_ids", tuple(pdu_json["auth_events"]))
        if room_version.room_id_from_create_event and "room_id" not in pdu_json:
            set_(self, "room_id", "!" + event_id[1:])
        else:
            set_(self, "room_id", pdu_json["room_id"])
        redacts = None
        if type_ == "m.room.redaction":
            # Rooms 11+: only content.redacts counts (a top-level copy is not covered
            # by the signatures once redacted, so it is never trusted).
            r = content.get("redacts") if room_version.redacts_in_content else pdu_json.get("redacts")
            redacts = r if isinstance(r, str) else None
        set_(self, "redacts", redacts)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"PDU attributes are read-only ({name})")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"PDU attributes are read-only ({name})")

    @classmethod
    def from_pdu_json(cls, pdu_json: dict[str, Any], room_version: RoomVersion) -> "PDU":
        """Check the format and build the model; InvalidEventError on a malformed event."""
        check_pdu_format(pdu_json, room_version)
        return cls(pdu_json, room_version, compute_event_id(pdu_json, room_version))

    @property
    def is_state(self) -> bool:
        return self.state_key is not None

    def get_pdu_json(self) -> dict[str, Any]:
        """The event as sent over federation (a shallow copy)."""
        return dict(self._json)

    def redacted(self, redacted_because: dict[str, Any] | None = None) -> "PDU":
        """This event after redaction, with the same event ID (no rehashing).

        For a received event whose content hash fails (keep the redacted copy) and for
        events a redaction applies to. ``redacted_because`` (the redaction event, as
        clients will see it) goes in ``unsigned.redacted_because``; ``unsigned.age_ts``
        is kept. https://spec.matrix.org/latest/client-server-api/#redactions
        """
        pruned = prune_event_for_client(self._json, self.room_version, redacted_because)
        return PDU(pruned, self.room_version, self.event_id)

    def __repr__(self) -> str:
        return f"<PDU {self.event_id} {self.type} state_key={self.state_key!r} sender={self.sender}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PDU) and other.event_id == self.event_id

    def __hash__(self) -> int:
        return hash(self.event_id)


# --- building ----------------------------------------------------------------------


def build_event(
    room_version: RoomVersion,
    *,
    type: str,
    sender: str,
    room_id: str | None,
    content: dict[str, Any],
    prev_event_ids: Iterable[str],
    auth_event_ids: Iterable[str],
    depth: int,
    origin_server_ts: int,
    state_key: str | None = None,
    redacts: str | None = None,
    origin: str | None = None,
    event_id: str | None = None,
    reference_hashes: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The unsigned PDU JSON of a new event, with its content hash.

    ``room_id`` is None only for a room v12 create event. Rooms 1 and 2 need
    ``event_id`` (``$opaque:server``) and take ``reference_hashes`` (event ID ->
    ``encode_base64(compute_reference_hash(referenced_event, room_version))``) for the
    ``[id, {"sha256": ...}]`` references; an ID without one gets ``""`` (the schema's
    shape; receivers, Synapse included, do not check these hashes). ``origin`` is written only before room version 11.
    Sign the result with ``federation.signing.sign_event``.
    """
    pdu: dict[str, Any] = {
        "type": type,
        "sender": sender,
        "content": dict(content),
        "depth": depth,
        "origin_server_ts": origin_server_ts,
        "signatures": {},
    }
    if room_id is not None:
        pdu["room_id"] = room_id
    elif not room_version.room_id_from_create_event or type != "m.room.create":
        raise InvalidEventError("room_id is required")
    if state_key is not None:
        pdu["state_key"] = state_key
    if redacts is not None:
        if room_version.redacts_in_content:
            pdu["content"]["redacts"] = redacts
        else:
            pdu["redacts"] = redacts
    if room_version.event_format is EventFormat.V1:
        if event_id is None:
            raise InvalidEventError("room versions 1 and 2 need an event_id")
        pdu["event_id"] = event_id
        hashes = reference_hashes or {}

        def ref(e: str) -> list[Any]:
            return [e, {"sha256": hashes.get(e, "")}]

        pdu["prev_events"] = [ref(e) for e in prev_event_ids]
        pdu["auth_events"] = [ref(e) for e in auth_event_ids]
    else:
        pdu["prev_events"] = list(prev_event_ids)
        pdu["auth_events"] = list(auth_event_ids)
    if origin is not None and not room_version.updated_redaction_rules:
        pdu["origin"] = origin
    return add_content_hash(pdu)
