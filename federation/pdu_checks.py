"""The checks performed on receipt of a PDU, one pure function per step.

Spec: server-server API, "Checks performed on receipt of a PDU", "Rejection",
"Soft failure", "Validating Policy Server signatures".
https://spec.matrix.org/latest/server-server-api/#checks-performed-on-receipt-of-a-pdu

Each step returns a decision; the caller (``gateway/services``) fetches what a step
needs (keys, auth events, state) and runs them in order:

1. :func:`check_format`: the room version's event format -> ``Accept(pdu)`` or ``Drop``;
2. :func:`check_signatures_and_hashes`: ``Drop`` on a bad or missing signature,
   ``Redacted(pdu)`` on a hash mismatch (continue with that copy);
3. :func:`check_auth_against_auth_events` -> ``Reject``;
4. :func:`check_auth_against_state_before` -> ``Reject``;
5. :func:`check_soft_fail_against_current_state` -> ``SoftFail``;
6. :func:`check_policy_server_signature` -> ``SoftFail`` (rooms using a policy server).

Every decision has ``ok``: whether processing continues (``Accept`` and ``Redacted``).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Union

from .auth_rules import AuthError, check_auth_rules, check_event_auth
from .events import PDU, InvalidEventError, parse_pdu
from .ids import EventID, InvalidIdentifierError, RoomID, UserID, get_domain_from_id
from .redaction import redact
from .room_versions import RoomVersion
from .signing import (
    KeyLookup,
    SignatureError,
    check_content_hash,
    verify_event_signatures,
    verify_policy_server_signature,
)

__all__ = [
    "Accept",
    "Drop",
    "Reject",
    "SoftFail",
    "Redacted",
    "Decision",
    "PolicyServer",
    "check_format",
    "check_signatures_and_hashes",
    "check_auth_against_auth_events",
    "check_auth_against_state_before",
    "check_soft_fail_against_current_state",
    "policy_server_for_room",
    "check_policy_server_signature",
]

StateKey = tuple[str, str]
SignatureCheck = Callable[[Any, str], bool]


# --- decisions


@dataclass(frozen=True, slots=True)
class Accept:
    """The step passed. ``pdu`` is set by steps that produce one (``check_format``),
    with ``signed_bytes``: what its signatures cover, to hand to
    :func:`check_signatures_and_hashes` (computed once, with the event ID)."""

    pdu: Any = None
    signed_bytes: bytes | None = field(default=None, compare=False, repr=False)

    @property
    def ok(self) -> bool:
        return True


@dataclass(frozen=True, slots=True)
class Drop:
    """Not a valid event, or bad signatures: ignore it entirely (not stored)."""

    reason: str

    @property
    def ok(self) -> bool:
        return False


@dataclass(frozen=True, slots=True)
class Reject:
    """Fails the authorisation rules: store as rejected, never relay or reference it."""

    reason: str

    @property
    def ok(self) -> bool:
        return False


@dataclass(frozen=True, slots=True)
class SoftFail:
    """Valid, but not against the current state (or the policy server): keep it out of
    clients' timelines and of our forward extremities."""

    reason: str

    @property
    def ok(self) -> bool:
        return False


@dataclass(frozen=True, slots=True)
class Redacted:
    """The content hash does not match: continue with this redacted copy."""

    pdu: Any
    pdu_json: dict
    reason: str = "content hash mismatch"

    @property
    def ok(self) -> bool:
        return True


Decision = Union[Accept, Drop, Reject, SoftFail, Redacted]

_ACCEPT = Accept()


def _as_json(event: Any) -> Mapping[str, Any]:
    if isinstance(event, Mapping):
        return event
    return event.get_pdu_json()


# --- 1. format


def check_format(pdu_json: Any, room_version: RoomVersion) -> Accept | Drop:
    """Step 1: the event follows the room version's event format, else it is dropped.

    ``PDU.from_pdu_json`` checks the structure, the size limits and (rooms 6+)
    strict canonical JSON; this adds the identifier grammar: ``sender`` (historical
    localparts allowed), ``room_id`` and the referenced event IDs, by room version.
    Returns ``Accept(pdu, signed_bytes)``.
    """
    if not isinstance(pdu_json, dict):
        return Drop("PDU is not a JSON object")
    try:
        pdu, signed_bytes = parse_pdu(pdu_json, room_version)
    except InvalidEventError as e:
        return Drop(f"invalid event: {e}")
    try:
        UserID.parse(pdu.sender)
    except InvalidIdentifierError as e:
        return Drop(f"sender: {e}")
    if "room_id" in pdu_json:
        problem = _id_problem(RoomID, pdu_json["room_id"], room_version)
        if problem is not None:
            return Drop(f"room_id: {problem}")
    for name, ids in (("prev_events", pdu.prev_event_ids), ("auth_events", pdu.auth_event_ids)):
        for event_id in ids:
            problem = _id_problem(EventID, event_id, room_version)
            if problem is not None:
                return Drop(f"{name}: {problem}")
    return Accept(pdu, signed_bytes)


# The events of a room name the same room ID and mostly the same few auth events (a
# join's state has thousands of events pointing at one create event): each ID is
# checked once per room version (a bounded memo; errors are kept too, they are as pure).
_ID_PROBLEMS: dict[tuple, str | None] = {}


def _id_problem(kind: type, value: str, room_version: RoomVersion) -> str | None:
    """Why ``value`` is not a valid ``kind`` (RoomID or EventID) ID, or None."""
    key = (kind, value, room_version.identifier)  # a str: hashed once, unlike the format enum
    try:
        return _ID_PROBLEMS[key]
    except KeyError:
        pass
    try:
        kind.parse(value, room_version)
        problem = None
    except InvalidIdentifierError as e:
        problem = str(e)
    if len(_ID_PROBLEMS) >= 65536:
        _ID_PROBLEMS.clear()
    _ID_PROBLEMS[key] = problem
    return problem


# --- 2, 3. signatures, then hashes


def check_signatures_and_hashes(
    event: Any,
    room_version: RoomVersion,
    keys_for: KeyLookup,
    *,
    origin: str | None = None,
    signed_bytes: bytes | None = None,
) -> Accept | Drop | Redacted:
    """Steps 2 and 3: required signatures (else drop), then the content hash.

    ``event`` is a PDU or its JSON; ``keys_for(server, key_id)`` returns the keys
    the caller fetched for :func:`federation.signing.servers_that_must_sign`;
    ``origin`` is the server that sent us the event (used for third-party invites).
    On a hash mismatch returns ``Redacted`` with the redacted copy to use instead.
    ``signed_bytes``: those ``check_format`` returned for this event (saves redacting
    and encoding it again).
    """
    pdu_json = _as_json(event)
    try:
        verify_event_signatures(pdu_json, room_version, keys_for, origin=origin, signed_bytes=signed_bytes)
    except SignatureError as e:
        return Drop(f"signature check failed: {e}")
    if check_content_hash(pdu_json, room_version):
        return _ACCEPT
    redacted_json = redact(dict(pdu_json), room_version)
    try:
        redacted = PDU.from_pdu_json(redacted_json, room_version)
    except InvalidEventError as e:
        return Drop(f"content hash mismatch and the redacted copy is invalid: {e}")
    return Redacted(redacted, redacted_json)


# --- 4, 5, 6. authorisation


def _create_event_for(event: Any, by_id: Mapping[str, Any], create_event: Any) -> Any:
    if create_event is not None:
        return create_event
    # Rooms 12+: the create event is not listed; its ID is the room ID with '$'.
    room_id = getattr(event, "room_id", None)
    if isinstance(room_id, str) and room_id.startswith("!"):
        return by_id.get("$" + room_id[1:])
    return None


def check_auth_against_auth_events(
    room_version: RoomVersion,
    event: Any,
    auth_events: Mapping[str, Any] | Iterable[Any],
    *,
    create_event: Any = None,
    is_rejected: Callable[[Any], bool] | None = None,
    is_signed_by: SignatureCheck | None = None,
) -> Accept | Reject:
    """Step 4: the authorisation rules with the event's own ``auth_events`` as state.

    ``auth_events``: the events named by ``event.auth_event_ids`` (a map by event ID,
    or an iterable); all must be there. In rooms 12+ the create event is not listed:
    pass it as ``create_event`` or include it in ``auth_events``.
    ``is_rejected(auth_event)`` tells whether an auth event was itself rejected.
    """
    if isinstance(auth_events, Mapping):
        by_id = auth_events
    else:
        by_id = {e.event_id: e for e in auth_events}
    missing = [i for i in event.auth_event_ids if i not in by_id]
    if missing:
        return Reject(f"auth events not available: {', '.join(missing)}")
    listed = [by_id[i] for i in event.auth_event_ids]
    create = None
    if room_version.room_id_from_create_event and event.type != "m.room.create":
        create = _create_event_for(event, by_id, create_event)
        if create is None:
            return Reject("the room's create event is not available")
    try:
        check_event_auth(
            room_version,
            event,
            listed,
            create_event=create,
            is_rejected=is_rejected,
            is_signed_by=is_signed_by,
        )
    except AuthError as e:
        return Reject(f"not allowed by its auth events: {e.reason}")
    return _ACCEPT


def check_auth_against_state_before(
    room_version: RoomVersion,
    event: Any,
    state_before: Mapping[StateKey, Any],
    *,
    is_signed_by: SignatureCheck | None = None,
) -> Accept | Reject:
    """Step 5: the authorisation rules against the room state before the event.

    ``state_before`` maps ``(type, state_key)`` to events (resolved from the state
    after each of ``prev_events``); it holds the create event in every room version.
    """
    try:
        check_auth_rules(room_version, event, state_before, is_signed_by=is_signed_by)
    except AuthError as e:
        return Reject(f"not allowed by the state before the event: {e.reason}")
    return _ACCEPT


def check_soft_fail_against_current_state(
    room_version: RoomVersion,
    event: Any,
    current_state: Mapping[StateKey, Any],
    *,
    is_signed_by: SignatureCheck | None = None,
) -> Accept | SoftFail:
    """Step 6: the authorisation rules against the room's current state (soft failure).

    https://spec.matrix.org/latest/server-server-api/#soft-failure
    """
    try:
        check_auth_rules(room_version, event, current_state, is_signed_by=is_signed_by)
    except AuthError as e:
        return SoftFail(f"not allowed by the current state: {e.reason}")
    return _ACCEPT


# --- 7. policy servers


@dataclass(frozen=True, slots=True)
class PolicyServer:
    """The room's policy server: ``via`` and its ``ed25519`` public key (base64)."""

    server_name: str
    ed25519_key: str


def _has_joined_user(current_state: Mapping[StateKey, Any], server_name: str) -> bool:
    for (etype, state_key), ev in current_state.items():
        if etype != "m.room.member" or not isinstance(state_key, str):
            continue
        content = getattr(ev, "content", None)
        if not isinstance(content, dict) or content.get("membership") != "join":
            continue
        try:
            if get_domain_from_id(state_key) == server_name:
                return True
        except InvalidIdentifierError:
            continue
    return False


def policy_server_for_room(
    current_state: Mapping[StateKey, Any],
    *,
    joined_servers: Collection[str] | None = None,
) -> PolicyServer | None:
    """The policy server the room uses, or None.

    A room uses one when its current state has a valid ``m.room.policy`` (state key
    ``""``, string ``via``, object ``public_keys`` with a string ``ed25519``) and the
    ``via`` server has a joined user. ``joined_servers`` (servers with a joined
    member, if the caller tracks them) saves a scan of the membership.
    https://spec.matrix.org/latest/server-server-api/#determining-if-a-policy-server-is-enabled-in-a-room
    """
    policy = current_state.get(("m.room.policy", ""))
    if policy is None:
        return None
    content = getattr(policy, "content", None)
    if not isinstance(content, dict):
        return None
    via = content.get("via")
    keys = content.get("public_keys")
    if not isinstance(via, str) or not isinstance(keys, dict):
        return None
    ed25519 = keys.get("ed25519")
    if not isinstance(ed25519, str):
        return None
    if joined_servers is not None:
        if via not in joined_servers:
            return None
    elif not _has_joined_user(current_state, via):
        return None
    return PolicyServer(via, ed25519)


def check_policy_server_signature(
    event: Any,
    room_version: RoomVersion,
    current_state: Mapping[StateKey, Any],
    *,
    joined_servers: Collection[str] | None = None,
) -> Accept | SoftFail:
    """Step 7: in a room using a policy server, the event needs its signature.

    ``m.room.policy`` state events with an empty state key are exempt. On a missing
    or invalid signature the spec says to ask the policy server again first
    (``POST /_matrix/policy/v1/sign``); this function is the check to run before and
    after that request, and ``SoftFail`` is the final answer.
    https://spec.matrix.org/latest/server-server-api/#validating-policy-server-signatures
    """
    policy = policy_server_for_room(current_state, joined_servers=joined_servers)
    if policy is None:
        return _ACCEPT
    pdu_json = _as_json(event)
    if pdu_json.get("type") == "m.room.policy" and pdu_json.get("state_key") == "":
        return _ACCEPT
    try:
        verify_policy_server_signature(pdu_json, room_version, policy.server_name, policy.ed25519_key)
    except SignatureError as e:
        return SoftFail(f"no valid policy server signature: {e}")
    return _ACCEPT
