"""The membership handshakes between servers, as pure data: join, leave and invite
events built from templates and checked on receipt.

Spec:
- joining: https://spec.matrix.org/latest/server-server-api/#joining-rooms
  (``make_join`` gives a template, the joining server fills it in, signs it and sends it
  with ``send_join``)
- leaving / rejecting invites: https://spec.matrix.org/latest/server-server-api/#leaving-rooms-rejecting-invites
- invites: https://spec.matrix.org/latest/server-server-api/#inviting-to-a-room
- restricted joins: https://spec.matrix.org/latest/server-server-api/#restricted-rooms
- knocking: https://spec.matrix.org/latest/server-server-api/#knocking-rooms (``make_knock``
  and ``send_knock``, the same handshake as a join)

No I/O here: the gateway fetches templates, sends events and stores them.
"""

from __future__ import annotations

import secrets
import string
from collections.abc import Iterable, Mapping
from typing import Any

from .events import PDU, InvalidEventError, build_event, compute_event_id
from .ids import get_domain_from_id
from .room_versions import KNOWN_ROOM_VERSIONS, EventFormat, RoomVersion, get_room_version
from .signing import ServerSigningKey, add_content_hash, sign_event

__all__ = [
    "MembershipError",
    "supported_room_versions",
    "event_from_template",
    "membership_template",
    "check_membership_event",
    "check_invite_event",
    "check_exchanged_third_party_invite",
    "check_out_of_band_retraction",
    "is_full_pdu",
    "parse_send_join_response",
    "stripped_state_event",
    "room_version_of_template",
    "restricted_allow_room_ids",
]

#: The memberships a template handshake exists for.
HANDSHAKE_MEMBERSHIPS = ("join", "leave", "knock")


class MembershipError(ValueError):
    """A template, event or response does not follow the rules; the message says why."""


def supported_room_versions() -> list[str]:
    """The room versions to advertise in ``make_join``'s ``ver`` parameters."""
    return list(KNOWN_ROOM_VERSIONS)


def room_version_of_template(answer: Any) -> RoomVersion:
    """The room version of a ``make_join``/``make_leave`` answer ("1" when absent, as
    the spec says for old servers). MembershipError if unknown or malformed."""
    if not isinstance(answer, dict) or not isinstance(answer.get("event"), dict):
        raise MembershipError("the answer has no event template")
    version = answer.get("room_version", "1")
    if not isinstance(version, str) or version not in KNOWN_ROOM_VERSIONS:
        raise MembershipError(f"unsupported room version {version!r}")
    return get_room_version(version)


def _random_event_id(server_name: str) -> str:
    opaque = "".join(secrets.choice(string.ascii_letters) for _ in range(18))
    return f"${opaque}:{server_name}"


def event_from_template(
    template: Mapping[str, Any],
    room_version: RoomVersion,
    *,
    membership: str,
    user_id: str,
    room_id: str,
    server_name: str,
    signing_key: ServerSigningKey,
    origin_server_ts: int,
    extra_content: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Fill in and sign a membership event from a ``make_join``/``make_leave``
    template: the template must be an ``m.room.member`` event of ``user_id`` about
    itself in ``room_id`` with the expected membership. We set ``origin`` (before
    rooms 11), ``origin_server_ts``, an event ID for rooms 1 and 2, the content hash and
    our signature; ``extra_content`` (e.g. the profile) is added to the content but
    never overrides ``membership`` or ``join_authorised_via_users_server``."""
    if template.get("type") != "m.room.member":
        raise MembershipError("the template is not an m.room.member event")
    if template.get("sender") != user_id or template.get("state_key") != user_id:
        raise MembershipError("the template's sender and state_key must be the user")
    if "room_id" in template and template.get("room_id") != room_id:
        raise MembershipError("the template is for another room")
    content = template.get("content")
    if not isinstance(content, dict) or content.get("membership") != membership:
        raise MembershipError(f"the template's membership is not {membership!r}")
    for key in ("prev_events", "auth_events"):
        if not isinstance(template.get(key), list):
            raise MembershipError(f"the template has no {key} list")
    depth = template.get("depth")
    if not isinstance(depth, int) or isinstance(depth, bool) or depth < 1:
        raise MembershipError("the template's depth is not a positive integer")
    event = {k: v for k, v in template.items() if k not in ("hashes", "signatures", "unsigned", "event_id")}
    event["content"] = {**(extra_content or {}), **content}
    event["room_id"] = room_id
    event["origin_server_ts"] = origin_server_ts
    if room_version.updated_redaction_rules:
        event.pop("origin", None)
    else:
        event["origin"] = server_name
    if room_version.event_format is EventFormat.V1:
        event["event_id"] = _random_event_id(server_name)
    event["signatures"] = {}
    try:
        signed = sign_event(add_content_hash(event), server_name, signing_key, room_version=room_version)
        PDU.from_pdu_json(signed, room_version)
    except (InvalidEventError, ValueError) as e:
        raise MembershipError(f"the template does not make a valid event: {e}") from None
    return signed


def membership_template(
    room_version: RoomVersion,
    *,
    room_id: str,
    user_id: str,
    content: Mapping[str, Any],
    prev_event_ids: Iterable[str],
    auth_event_ids: Iterable[str],
    depth: int,
    origin: str,
    origin_server_ts: int,
) -> dict[str, Any]:
    """The resident server's answer to ``make_join``/``make_leave``: an unsigned,
    unhashed ``m.room.member`` event the joining server completes."""
    event = build_event(
        room_version, type="m.room.member", sender=user_id, room_id=room_id, content=dict(content),
        prev_event_ids=prev_event_ids, auth_event_ids=auth_event_ids, depth=depth,
        origin_server_ts=origin_server_ts, state_key=user_id, origin=origin,
        event_id=_random_event_id(origin) if room_version.event_format is EventFormat.V1 else None,
    )
    event.pop("hashes", None)
    event.pop("signatures", None)
    if room_version.event_format is EventFormat.V1:
        event.pop("event_id", None)  # the joining server picks its own
    return event


def template_auth_pdu(template: Mapping[str, Any], room_version: RoomVersion) -> PDU:
    """A PDU model of a template (hashed, unsigned) so that auth rules can judge it."""
    event = dict(template)
    event["signatures"] = {}
    if room_version.event_format is EventFormat.V1:
        event["event_id"] = "$template:" + get_domain_from_id(template["sender"])
    event = add_content_hash(event)
    return PDU(event, room_version, compute_event_id(event, room_version))


def check_membership_event(pdu: PDU, *, room_id: str, origin: str, membership: str,
                           event_id: str | None = None) -> None:
    """What ``send_join``/``send_leave``/``send_knock`` must get: the membership event
    of a user of the sending server about itself, in this room."""
    if event_id is not None and pdu.event_id != event_id:
        raise MembershipError("the event ID in the path does not match the event")
    if pdu.room_id != room_id:
        raise MembershipError("the event is for another room")
    if pdu.type != "m.room.member":
        raise MembershipError("the event is not an m.room.member event")
    if pdu.state_key != pdu.sender:
        raise MembershipError("the event's state_key must be its sender")
    if pdu.content.get("membership") != membership:
        raise MembershipError(f"the event's membership is not {membership!r}")
    try:
        domain = get_domain_from_id(pdu.sender)
    except ValueError:
        raise MembershipError("the sender is not a user ID") from None
    if domain != origin:
        raise MembershipError("the event's sender is not a user of the requesting server")


def _target_and_sender_domains(pdu: PDU) -> tuple[str, str]:
    try:
        return get_domain_from_id(pdu.state_key or ""), get_domain_from_id(pdu.sender)
    except ValueError:
        raise MembershipError("the event's sender or target is not a user ID") from None


def check_invite_event(pdu: PDU, *, room_id: str, event_id: str, origin: str, local_server: str) -> None:
    """What ``PUT /invite`` must get: an invite of a user of ours, sent by a user of the
    requesting server, in this room."""
    if pdu.event_id != event_id:
        raise MembershipError("the event ID in the path does not match the event")
    if pdu.room_id != room_id:
        raise MembershipError("the event is for another room")
    if pdu.type != "m.room.member" or pdu.content.get("membership") != "invite":
        raise MembershipError("the event is not an invite")
    if not isinstance(pdu.state_key, str):
        raise MembershipError("the invite has no state_key")
    target_domain, sender_domain = _target_and_sender_domains(pdu)
    if target_domain != local_server:
        raise MembershipError("the invited user is not on this server")
    if sender_domain != origin:
        raise MembershipError("the inviter is not a user of the requesting server")


def check_exchanged_third_party_invite(event: Any, *, room_id: str, origin: str, local_server: str) -> dict[str, Any]:
    """The partial invite event of ``PUT /exchange_third_party_invite/{roomId}``: an invite
    of a user of the requesting server, sent by a user of ours, carrying the identity
    server's ``signed`` block for that user. Its ``content`` (as the event will carry it).

    Spec: https://spec.matrix.org/latest/server-server-api/#put_matrixfederationv1exchange_third_party_inviteroomid"""
    if not isinstance(event, Mapping):
        raise MembershipError("the body must be an event object")
    if event.get("type") != "m.room.member":
        raise MembershipError("the event is not an m.room.member event")
    if event.get("room_id") != room_id:
        raise MembershipError("the event is for another room")
    content, sender, target = event.get("content"), event.get("sender"), event.get("state_key")
    if not isinstance(content, Mapping) or content.get("membership") != "invite":
        raise MembershipError("the event is not an invite")
    if not isinstance(sender, str) or not isinstance(target, str):
        raise MembershipError("the event needs a sender and a state_key")
    try:
        sender_domain, target_domain = get_domain_from_id(sender), get_domain_from_id(target)
    except ValueError:
        raise MembershipError("the event's sender or target is not a user ID") from None
    if sender_domain != local_server:
        raise MembershipError("the inviter is not a user of this server")
    if target_domain != origin:
        raise MembershipError("the invited user is not a user of the requesting server")
    tpi = content.get("third_party_invite")
    signed = tpi.get("signed") if isinstance(tpi, Mapping) else None
    if not isinstance(signed, Mapping) or signed.get("mxid") != target or not isinstance(signed.get("token"), str):
        raise MembershipError("third_party_invite.signed must name the invited user and the invite's token")
    return {"membership": "invite", "third_party_invite": {"display_name": tpi.get("display_name", ""),
                                                           "signed": dict(signed)}}


def check_out_of_band_retraction(pdu: PDU, *, origin: str, local_server: str, current_event_id: str) -> None:
    """What a server that is not in a room can check of a ``leave`` or ``ban`` that ends
    a local user's invite or knock (a rescinded invite, a denied knock), received in a
    transaction: it is about a user of ours and sent by someone else, by a user of the
    sending server, and it names the invite or knock it ends among its auth events
    (only servers in the room know that event). The room's state is unknown here, so
    the auth rules cannot be run."""
    if pdu.type != "m.room.member" or pdu.content.get("membership") not in ("leave", "ban"):
        raise MembershipError("the event is not a leave or ban")
    if not isinstance(pdu.state_key, str) or pdu.state_key == pdu.sender:
        raise MembershipError("the event must be about another user than its sender")
    target_domain, sender_domain = _target_and_sender_domains(pdu)
    if target_domain != local_server:
        raise MembershipError("the event is not about a user of this server")
    if sender_domain != origin:
        raise MembershipError("the event's sender is not a user of the sending server")
    if current_event_id not in pdu.auth_event_ids:
        raise MembershipError("the event does not refer to the membership it ends")


def is_full_pdu(event: Any) -> bool:
    """Whether an ``invite_room_state``/``knock_room_state`` entry is a full PDU (signed,
    with auth events: what servers send since Matrix 1.16) rather than bare stripped
    state (type, state_key, content, sender)."""
    return isinstance(event, dict) and isinstance(event.get("signatures"), dict) \
        and isinstance(event.get("auth_events"), list)


def parse_send_join_response(answer: Any, *, v1: bool) -> tuple[list[Any], list[Any], dict[str, Any] | None]:
    """(state, auth_chain, event) of a ``send_join`` answer; v1 answers are
    ``[200, {...}]``. ``event`` is the resident's copy of the join (restricted joins:
    co-signed), None if absent. Items are not checked here: the caller validates each."""
    if v1:
        if isinstance(answer, list) and len(answer) == 2 and isinstance(answer[1], dict):
            answer = answer[1]
        else:
            raise MembershipError("a send_join v1 answer must be [200, {...}]")
    if not isinstance(answer, dict):
        raise MembershipError("the send_join answer is not an object")
    state, chain = answer.get("state"), answer.get("auth_chain")
    if not isinstance(state, list) or not isinstance(chain, list):
        raise MembershipError("the send_join answer lacks 'state' or 'auth_chain' lists")
    event = answer.get("event")
    return state, chain, event if isinstance(event, dict) else None


def restricted_allow_room_ids(join_rules_content: Mapping[str, Any]) -> list[str]:
    """The rooms of the ``m.room_membership`` conditions in a restricted join rule's
    ``allow`` list, in order. Conditions of other types or not matching the schema
    are skipped; an empty list means no condition can be met.
    https://spec.matrix.org/latest/client-server-api/#restricted-rooms"""
    allow = join_rules_content.get("allow")
    if not isinstance(allow, list):
        return []
    out: list[str] = []
    for cond in allow:
        if isinstance(cond, dict) and cond.get("type") == "m.room_membership":
            room_id = cond.get("room_id")
            if isinstance(room_id, str) and room_id.startswith("!") and room_id not in out:
                out.append(room_id)
    return out


def stripped_state_event(event: Any) -> dict[str, Any] | None:
    """The stripped form (type, state_key, content, sender) of an ``invite_room_state``
    entry, whether it came as stripped state or as a full PDU (rooms 12+); None if it
    is neither."""
    if not isinstance(event, dict):
        return None
    kind, key, content, sender = (event.get("type"), event.get("state_key"), event.get("content"),
                                  event.get("sender"))
    if not isinstance(kind, str) or not isinstance(key, str) or not isinstance(content, dict) \
            or not isinstance(sender, str):
        return None
    return {"type": kind, "state_key": key, "content": content, "sender": sender}


def check_countersigned(ours: Mapping[str, Any], theirs: Any, room_version: RoomVersion, server: str,
                        keys_for) -> dict[str, Any]:
    """The event ``server`` sent back after signing ours (an invite, a restricted join):
    the same event (same event ID), with a valid signature of ``server``. Returns it
    with the signatures of both. ``keys_for(server, key_id)`` as for
    ``signing.verify_event_signatures``. MembershipError otherwise."""
    from .signing import SignatureError, redacted_signing_bytes, _verify_server_signatures

    if not isinstance(theirs, dict):
        raise MembershipError(f"{server} sent back no event")
    try:
        if compute_event_id(theirs, room_version) != compute_event_id(ours, room_version):
            raise MembershipError(f"{server} sent back a different event")
        validity = theirs.get("origin_server_ts") if room_version.enforce_key_validity else None
        _verify_server_signatures(redacted_signing_bytes(theirs, room_version), theirs.get("signatures") or {},
                                  server, keys_for, validity)
    except (SignatureError, ValueError, KeyError, TypeError) as e:
        raise MembershipError(f"the event {server} sent back is not signed properly: {e}") from None
    merged = dict(ours)
    sigs = {s: dict(v) for s, v in (ours.get("signatures") or {}).items()}
    for s, v in (theirs.get("signatures") or {}).items():
        if isinstance(v, dict):
            sigs.setdefault(s, {}).update(v)
    merged["signatures"] = sigs
    return merged
