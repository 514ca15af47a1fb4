"""Authorisation rules, table-driven, for every room version.

Each case: the room state before the event, the event, and either ``ALLOW`` or a
substring of the expected ``AuthError.reason``. The base room is: create event by
Alice, Alice joined, power levels (Alice 100, Mod 50), join rule as the case says.
"""

from __future__ import annotations

import dataclasses
import itertools
from typing import Any

import nacl.signing
import pytest

from federation import auth_rules
from federation.auth_rules import (
    CREATOR_POWER_LEVEL,
    AuthError,
    auth_types_for_event,
    check_auth_events,
    check_auth_rules,
    check_event_auth,
    get_named_level,
    get_notification_level,
    get_required_level_for_event,
    get_user_power_level,
    parse_power_level,
    redaction_allowed,
    room_creators,
    verify_third_party_invite_signed,
)
from federation.canonical_json import encode_base64, encode_base64_urlsafe, encode_canonical_json
from federation.events import PDU, build_event, compute_event_id
from federation.room_versions import KNOWN_ROOM_VERSIONS, RoomVersion, RoomVersions

ALL = list(KNOWN_ROOM_VERSIONS.values())
ALLOW = "ALLOW"

ALICE = "@alice:a.test"  # creator
MOD = "@mod:b.test"  # power 50
BOB = "@bob:b.test"  # power 0
CAROL = "@carol:c.test"
EVE = "@eve:e.test"

CREATE, MEMBER, PL, JR, TPI = (
    "m.room.create",
    "m.room.member",
    "m.room.power_levels",
    "m.room.join_rules",
    "m.room.third_party_invite",
)


def versions(lo: int = 1, hi: int = 12) -> list[RoomVersion]:
    return [KNOWN_ROOM_VERSIONS[str(n)] for n in range(lo, hi + 1)]


# ---------------------------------------------------------------------------
# Building events: real PDUs (federation.events)
# ---------------------------------------------------------------------------

_counter = itertools.count()


def make_event(rv: RoomVersion, fields: dict[str, Any], *, checked: bool = True) -> PDU:
    """A PDU of room version ``rv`` from wire-like ``fields``.

    ``checked=False`` skips the format checks of ``PDU.from_pdu_json``, for events the
    format step would already refuse (the auth rules must still reject them).
    """
    n = next(_counter)
    sender_domain = fields["sender"].partition(":")[2]
    pdu_json = build_event(
        rv,
        type=fields["type"],
        sender=fields["sender"],
        room_id=fields.get("room_id"),
        content=fields["content"],
        prev_event_ids=fields.get("prev_events", []),
        auth_event_ids=fields.get("auth_events", []),
        depth=fields.get("depth", 1),
        origin_server_ts=fields.get("origin_server_ts", 1_700_000_000_000 + n),
        state_key=fields.get("state_key"),
        redacts=fields.get("redacts"),
        event_id=f"$e{n}:{sender_domain}" if rv.event_id_in_event else None,
    )
    pdu_json["signatures"] = fields.get("signatures", {sender_domain: {"ed25519:1": "c2ln"}})
    if checked:
        return PDU.from_pdu_json(pdu_json, rv)
    return PDU(pdu_json, rv, compute_event_id(pdu_json, rv))


def moved_to(event: PDU, room_id: str) -> PDU:
    """The same event, claimed for another room (a new event ID)."""
    pdu_json = {**event.get_pdu_json(), "room_id": room_id}
    return PDU(pdu_json, event.room_version, compute_event_id(pdu_json, event.room_version))


class Room:
    """A room's state, built event by event."""

    def __init__(
        self,
        rv: RoomVersion,
        *,
        creator: str = ALICE,
        create_content: dict | None = None,
        join_rule: str | None = "invite",
        power_levels: dict | None | str = "default",
        creator_joined: bool = True,
    ):
        self.rv = rv
        content = {} if rv.implicit_room_creator else {"creator": creator}
        content["room_version"] = rv.identifier
        content.update(create_content or {})
        fields: dict[str, Any] = {"type": CREATE, "state_key": "", "sender": creator, "content": content}
        if not rv.room_id_from_create_event:
            fields["room_id"] = "!room:" + creator.partition(":")[2]
        self.create = make_event(rv, fields)
        self.room_id = self.create.room_id
        self.state: dict[tuple[str, str], Any] = {(CREATE, ""): self.create}
        if creator_joined:
            self.add(MEMBER, creator, creator, {"membership": "join"})
        if power_levels == "default":
            users = {MOD: 50} if rv.privileged_creators else {creator: 100, MOD: 50}
            power_levels = {"users": users}
        if power_levels is not None:
            self.add(PL, creator, "", power_levels)
        if join_rule is not None:
            self.add(JR, creator, "", {"join_rule": join_rule})

    def event(self, type: str, sender: str, content: dict, state_key: str | None = None, **extra) -> Any:
        fields = {"type": type, "sender": sender, "content": content, "room_id": self.room_id}
        if state_key is not None:
            fields["state_key"] = state_key
        if "prev_events" not in extra:
            fields["prev_events"] = ["$previous"]
        fields.update(extra)
        return make_event(self.rv, fields)

    def add(self, type: str, sender: str, state_key: str, content: dict, **extra) -> Any:
        event = self.event(type, sender, content, state_key, **extra)
        self.state[(type, state_key)] = event
        return event

    def member(self, user: str, membership: str | None, sender: str | None = None) -> None:
        if membership is None:
            self.state.pop((MEMBER, user), None)
            return
        if sender is None:
            sender = ALICE if membership in ("invite", "ban") else user
        self.add(MEMBER, sender, user, {"membership": membership})

    def check(self, event: Any, **kwargs) -> str:
        """ALLOW, or the AuthError reason."""
        try:
            check_auth_rules(self.rv, event, self.state, **kwargs)
        except AuthError as e:
            assert e.reason and str(e) == e.reason
            return e.reason
        return ALLOW


def assert_outcome(outcome: str, expected: str) -> None:
    if expected == ALLOW:
        assert outcome == ALLOW
    else:
        assert outcome != ALLOW, f"expected rejection ({expected}), was allowed"
        assert expected in outcome, f"expected reason containing {expected!r}, got {outcome!r}"


# ---------------------------------------------------------------------------
# Table: membership transitions (rooms 10+, join rule "knock")
# ---------------------------------------------------------------------------

PRIOR = [None, "join", "invite", "leave", "ban", "knock"]

#: Bob acting on himself; join rule "knock"; Bob has power 0.
SELF_EXPECTED = {
    "join": {None: "not invited", "join": ALLOW, "invite": ALLOW, "leave": "not invited",
             "ban": "banned", "knock": "not invited"},
    "invite": {None: "not joined", "join": "membership is join", "invite": "not joined",
               "leave": "not joined", "ban": "not joined", "knock": "not joined"},
    "leave": {None: "cannot leave", "join": ALLOW, "invite": ALLOW, "leave": "cannot leave",
              "ban": "cannot leave", "knock": ALLOW},
    "ban": {None: "not joined", "join": "below the ban level", "invite": "not joined",
            "leave": "not joined", "ban": "not joined", "knock": "not joined"},
    "knock": {None: ALLOW, "join": "membership is join", "invite": "membership is invite",
              "leave": ALLOW, "ban": "membership is ban", "knock": ALLOW},
}

#: Mod (power 50, joined) acting on Bob (power 0); join rule "knock".
OTHER_EXPECTED = {
    "join": {p: "not the state_key" for p in PRIOR},
    "invite": {None: ALLOW, "join": "membership is join", "invite": ALLOW, "leave": ALLOW,
               "ban": "membership is ban", "knock": ALLOW},
    "leave": {p: ALLOW for p in PRIOR},
    "ban": {p: ALLOW for p in PRIOR},
    "knock": {p: "not the state_key" for p in PRIOR},
}


@pytest.mark.parametrize("rv", versions(10, 12), ids=lambda v: f"v{v.identifier}")
@pytest.mark.parametrize("membership", list(SELF_EXPECTED))
@pytest.mark.parametrize("prior", PRIOR, ids=str)
def test_membership_transition_self(rv, membership, prior):
    room = Room(rv, join_rule="knock")
    room.member(BOB, prior)
    event = room.event(MEMBER, BOB, {"membership": membership}, BOB)
    assert_outcome(room.check(event), SELF_EXPECTED[membership][prior])


@pytest.mark.parametrize("rv", versions(10, 12), ids=lambda v: f"v{v.identifier}")
@pytest.mark.parametrize("membership", list(OTHER_EXPECTED))
@pytest.mark.parametrize("prior", PRIOR, ids=str)
def test_membership_transition_by_moderator(rv, membership, prior):
    room = Room(rv, join_rule="knock")
    room.member(MOD, "join")
    room.member(BOB, prior)
    event = room.event(MEMBER, MOD, {"membership": membership}, BOB)
    assert_outcome(room.check(event), OTHER_EXPECTED[membership][prior])


# ---------------------------------------------------------------------------
# Table: single cases
# ---------------------------------------------------------------------------


@dataclasses.dataclass
class Case:
    name: str
    versions: list[RoomVersion]
    expected: str
    #: ``setup(room)`` adds the prior state; returns the event to check.
    build: Any
    room_kwargs: dict = dataclasses.field(default_factory=dict)


def member_case(sender, target, membership, prior=(), content=None, **extra):
    def build(room: Room):
        for user, m in prior:
            room.member(user, m)
        c = {"membership": membership, **(content or {})}
        return room.event(MEMBER, sender, c, target, **extra)

    return build


def event_case(type, sender, content, state_key=None, prior=(), setup=None, keep_creator=False,
               **extra):
    """A non-membership event; in v12, Alice (a creator) is left out of new power levels."""

    def build(room: Room):
        for user, m in prior:
            room.member(user, m)
        if setup is not None:
            setup(room)
        c = content
        if type == PL and room.rv.privileged_creators and not keep_creator and isinstance(
            c.get("users"), dict
        ):
            c = {**c, "users": {k: v for k, v in c["users"].items() if k != ALICE}}
        return room.event(type, sender, c, state_key, **extra)

    return build


def with_pl(content):
    def setup(room: Room):
        if room.rv.privileged_creators:
            users = {k: v for k, v in content.get("users", {}).items() if k != ALICE}
            room.add(PL, ALICE, "", {**content, "users": users})
        else:
            room.add(PL, ALICE, "", content)

    return setup


CASES: list[Case] = [
    # --- joins
    Case("join public room", ALL, ALLOW, member_case(BOB, BOB, "join"), {"join_rule": "public"}),
    Case("join invite room uninvited", ALL, "not invited", member_case(BOB, BOB, "join")),
    Case("join invite room invited", ALL, ALLOW, member_case(BOB, BOB, "join", [(BOB, "invite")])),
    Case("join invite room already joined", ALL, ALLOW, member_case(BOB, BOB, "join", [(BOB, "join")])),
    Case("join while banned, public", ALL, "banned",
         member_case(BOB, BOB, "join", [(BOB, "ban")]), {"join_rule": "public"}),
    Case("join for someone else", ALL, "not the state_key",
         member_case(BOB, CAROL, "join"), {"join_rule": "public"}),
    Case("join private room", ALL, "does not allow", member_case(BOB, BOB, "join"), {"join_rule": "private"}),
    Case("join with no join rules event = invite", ALL, "not invited",
         member_case(BOB, BOB, "join"), {"join_rule": None}),
    Case("join with no join rules event, invited", ALL, ALLOW,
         member_case(BOB, BOB, "join", [(BOB, "invite")]), {"join_rule": None}),
    Case("join rules without join_rule = invite, invited", ALL, ALLOW,
         lambda room: (room.add(JR, ALICE, "", {}), room.member(BOB, "invite"),
                       room.event(MEMBER, BOB, {"membership": "join"}, BOB))[2],
         {"join_rule": "public"}),
    Case("join rules without join_rule = invite, uninvited", ALL, "not invited",
         lambda room: (room.add(JR, ALICE, "", {}), room.event(MEMBER, BOB, {"membership": "join"}, BOB))[1],
         {"join_rule": "public"}),
    Case("join rule not a string", ALL, "does not allow",
         lambda room: (room.add(JR, ALICE, "", {"join_rule": ["public"]}),
                       room.event(MEMBER, BOB, {"membership": "join"}, BOB))[1]),
    Case("join knock room before v7", versions(1, 6), "does not allow",
         member_case(BOB, BOB, "join", [(BOB, "invite")]), {"join_rule": "knock"}),
    Case("join knock room invited v7+", versions(7), ALLOW,
         member_case(BOB, BOB, "join", [(BOB, "invite")]), {"join_rule": "knock"}),
    Case("join knock room uninvited v7+", versions(7), "not invited",
         member_case(BOB, BOB, "join"), {"join_rule": "knock"}),
    Case("join restricted before v8", versions(1, 7), "does not allow",
         member_case(BOB, BOB, "join", [(BOB, "invite")]), {"join_rule": "restricted"}),
    Case("join knock_restricted before v10", versions(1, 9), "does not allow",
         member_case(BOB, BOB, "join", [(BOB, "invite")]), {"join_rule": "knock_restricted"}),
    Case("join unknown membership value", ALL, "unknown membership", member_case(BOB, BOB, "dance")),
    Case("member without membership", ALL, "no membership",
         event_case(MEMBER, BOB, {}, BOB)),
    Case("member without state_key", ALL, "no state_key", event_case(MEMBER, BOB, {"membership": "join"})),
    Case("non-string membership", ALL, "unknown membership", member_case(BOB, BOB, ["join"])),
    # --- the creator's first join
    Case("creator joins right after create", ALL, ALLOW,
         lambda room: room.event(MEMBER, ALICE, {"membership": "join"}, ALICE,
                                 prev_events=[room.create.event_id]),
         {"creator_joined": False, "join_rule": None, "power_levels": None}),
    Case("non-creator joins right after create", ALL, "not invited",
         lambda room: room.event(MEMBER, BOB, {"membership": "join"}, BOB,
                                 prev_events=[room.create.event_id]),
         {"creator_joined": False, "join_rule": None, "power_levels": None}),
    Case("creator join with other prev events", ALL, "not invited",
         lambda room: room.event(MEMBER, ALICE, {"membership": "join"}, ALICE,
                                 prev_events=[room.create.event_id, "$other"]),
         {"creator_joined": False, "join_rule": None, "power_levels": None}),
    # --- invites
    Case("invite by member with default invite level", ALL, ALLOW,
         member_case(ALICE, BOB, "invite")),
    Case("invite by non-member", ALL, "not joined", member_case(EVE, BOB, "invite")),
    Case("invite of joined user", ALL, "membership is join", member_case(ALICE, BOB, "invite", [(BOB, "join")])),
    Case("invite of banned user", ALL, "membership is ban", member_case(ALICE, BOB, "invite", [(BOB, "ban")])),
    Case("invite below invite level", ALL, "below the invite level",
         event_case(MEMBER, BOB, {"membership": "invite"}, CAROL, prior=[(BOB, "join")],
                    setup=with_pl({"users": {ALICE: 100}, "invite": 10}))),
    Case("invite at invite level", ALL, ALLOW,
         event_case(MEMBER, MOD, {"membership": "invite"}, CAROL, prior=[(MOD, "join")],
                    setup=with_pl({"users": {ALICE: 100, MOD: 50}, "invite": 50}))),
    Case("invite with stringy invite level v1-9", versions(1, 9), "below the invite level",
         event_case(MEMBER, MOD, {"membership": "invite"}, CAROL, prior=[(MOD, "join")],
                    setup=with_pl({"users": {ALICE: 100, MOD: 50}, "invite": " +060 "}))),
    # --- leave / kick / unban
    Case("kick by user without power", ALL, "below the kick level",
         member_case(BOB, CAROL, "leave", [(BOB, "join"), (CAROL, "join")])),
    Case("kick of equal power", ALL, "not above the target",
         event_case(MEMBER, MOD, {"membership": "leave"}, BOB, prior=[(MOD, "join"), (BOB, "join")],
                    setup=with_pl({"users": {ALICE: 100, MOD: 50, BOB: 50}}))),
    Case("kick of higher power", versions(1, 11), "not above the target",
         member_case(MOD, ALICE, "leave", [(MOD, "join")])),
    Case("kick by non-member", ALL, "not joined", member_case(MOD, BOB, "leave", [(BOB, "join")])),
    Case("kick with low kick level", ALL, ALLOW,
         event_case(MEMBER, BOB, {"membership": "leave"}, CAROL, prior=[(BOB, "join"), (CAROL, "join")],
                    setup=with_pl({"users": {ALICE: 100, BOB: 1}, "kick": 1}))),
    Case("unban needs ban level", ALL, "below the ban level",
         event_case(MEMBER, BOB, {"membership": "leave"}, CAROL, prior=[(BOB, "join"), (CAROL, "ban")],
                    setup=with_pl({"users": {ALICE: 100, BOB: 10}, "kick": 5, "ban": 20}))),
    Case("unban with ban and kick level", ALL, ALLOW,
         event_case(MEMBER, BOB, {"membership": "leave"}, CAROL, prior=[(BOB, "join"), (CAROL, "ban")],
                    setup=with_pl({"users": {ALICE: 100, BOB: 20}, "kick": 5, "ban": 20}))),
    Case("unban with ban level but not kick level", ALL, "below the kick level",
         event_case(MEMBER, BOB, {"membership": "leave"}, CAROL, prior=[(BOB, "join"), (CAROL, "ban")],
                    setup=with_pl({"users": {ALICE: 100, BOB: 20}, "kick": 30, "ban": 20}))),
    Case("leave from knock before v7 is not possible", versions(1, 6), "cannot leave",
         lambda room: (room.add(MEMBER, BOB, BOB, {"membership": "knock"}),
                       room.event(MEMBER, BOB, {"membership": "leave"}, BOB))[1]),
    Case("rescind knock v7+", versions(7), ALLOW,
         member_case(BOB, BOB, "leave", [(BOB, "knock")])),
    Case("reject invite", ALL, ALLOW, member_case(BOB, BOB, "leave", [(BOB, "invite")])),
    # --- bans
    Case("ban by mod", ALL, ALLOW, member_case(MOD, BOB, "ban", [(MOD, "join"), (BOB, "join")])),
    Case("ban by user", ALL, "below the ban level", member_case(BOB, CAROL, "ban", [(BOB, "join")])),
    Case("ban of higher power", versions(1, 11), "not above the target",
         member_case(MOD, ALICE, "ban", [(MOD, "join")])),
    Case("ban by non-member", ALL, "not joined", member_case(MOD, BOB, "ban")),
    # --- knocks
    Case("knock before v7 is unknown", versions(1, 6), "unknown membership",
         member_case(BOB, BOB, "knock"), {"join_rule": "knock"}),
    Case("knock v7+", versions(7), ALLOW, member_case(BOB, BOB, "knock"), {"join_rule": "knock"}),
    Case("knock on public room", versions(7), "does not allow knocking",
         member_case(BOB, BOB, "knock"), {"join_rule": "public"}),
    Case("knock on invite room", versions(7), "does not allow knocking", member_case(BOB, BOB, "knock")),
    Case("knock on knock_restricted v7-9", versions(7, 9), "does not allow knocking",
         member_case(BOB, BOB, "knock"), {"join_rule": "knock_restricted"}),
    Case("knock on knock_restricted v10+", versions(10), ALLOW,
         member_case(BOB, BOB, "knock"), {"join_rule": "knock_restricted"}),
    Case("knock when banned", versions(7), "membership is ban",
         member_case(BOB, BOB, "knock", [(BOB, "ban")]), {"join_rule": "knock"}),
    Case("knock for someone else", versions(7), "not the state_key",
         member_case(BOB, CAROL, "knock"), {"join_rule": "knock"}),
    # --- sender must be joined for other events
    Case("message from member", ALL, ALLOW, event_case("m.room.message", BOB, {}, prior=[(BOB, "join")])),
    Case("message from non-member", ALL, "not joined", event_case("m.room.message", BOB, {})),
    Case("message from invited user", ALL, "not joined",
         event_case("m.room.message", BOB, {}, prior=[(BOB, "invite")])),
    Case("message from user who left", ALL, "not joined",
         event_case("m.room.message", BOB, {}, prior=[(BOB, "leave")])),
    Case("message from banned user", ALL, "not joined",
         event_case("m.room.message", BOB, {}, prior=[(BOB, "ban")])),
    # --- required power level
    Case("state event below state_default", ALL, "below the required level",
         event_case("m.room.topic", BOB, {"topic": "x"}, "", prior=[(BOB, "join")])),
    Case("state event by mod at state_default", ALL, ALLOW,
         event_case("m.room.topic", MOD, {"topic": "x"}, "", prior=[(MOD, "join")])),
    Case("event type level in events", ALL, "below the required level",
         event_case("m.room.message", BOB, {}, prior=[(BOB, "join")],
                    setup=with_pl({"users": {ALICE: 100}, "events": {"m.room.message": 1}}))),
    Case("events_default raised", ALL, "below the required level",
         event_case("m.custom", BOB, {}, prior=[(BOB, "join")],
                    setup=with_pl({"users": {ALICE: 100}, "events_default": 5}))),
    Case("state_default lowered", ALL, ALLOW,
         event_case("m.room.topic", BOB, {}, "", prior=[(BOB, "join")],
                    setup=with_pl({"users": {ALICE: 100}, "state_default": 0}))),
    Case("no power levels: creator can send state", versions(1, 11), ALLOW,
         event_case("m.room.name", ALICE, {}, ""), {"power_levels": None}),
    Case("no power levels: others cannot send state", ALL, "below the required level",
         event_case("m.room.name", BOB, {}, "", prior=[(BOB, "join")]), {"power_levels": None}),
    Case("no power levels: others can send messages", ALL, ALLOW,
         event_case("m.room.message", BOB, {}, prior=[(BOB, "join")]), {"power_levels": None}),
    Case("state_key @ of another user", ALL, "starts with '@'",
         event_case("m.custom.state", BOB, {}, CAROL, prior=[(BOB, "join")],
                    setup=with_pl({"users": {ALICE: 100}, "state_default": 0}))),
    Case("state_key @ of the sender", ALL, ALLOW,
         event_case("m.custom.state", BOB, {}, BOB, prior=[(BOB, "join")],
                    setup=with_pl({"users": {ALICE: 100}, "state_default": 0}))),
    # --- third-party invite event type
    Case("m.room.third_party_invite by member", ALL, ALLOW,
         event_case(TPI, BOB, {}, "tok", prior=[(BOB, "join")])),
    Case("m.room.third_party_invite below invite level", ALL, "below the invite level",
         event_case(TPI, BOB, {}, "tok", prior=[(BOB, "join")],
                    setup=with_pl({"users": {ALICE: 100}, "invite": 1}))),
    Case("m.room.third_party_invite ignores state_default", ALL, ALLOW,
         event_case(TPI, BOB, {}, "tok", prior=[(BOB, "join")],
                    setup=with_pl({"users": {ALICE: 100}, "state_default": 99}))),
    # --- aliases
    Case("aliases by non-member from own server v1-5", versions(1, 5), ALLOW,
         event_case("m.room.aliases", EVE, {"aliases": []}, "e.test")),
    Case("aliases for another server v1-5", versions(1, 5), "does not match the sender's server",
         event_case("m.room.aliases", EVE, {"aliases": []}, "a.test")),
    Case("aliases without state_key v1-5", versions(1, 5), "no state_key",
         event_case("m.room.aliases", EVE, {"aliases": []})),
    Case("aliases by non-member v6+", versions(6), "not joined",
         event_case("m.room.aliases", EVE, {"aliases": []}, "e.test")),
    Case("aliases by user below state_default v6+", versions(6), "below the required level",
         event_case("m.room.aliases", BOB, {"aliases": []}, "b.test", prior=[(BOB, "join")])),
    Case("aliases by mod v6+", versions(6), ALLOW,
         event_case("m.room.aliases", MOD, {"aliases": []}, "b.test", prior=[(MOD, "join")])),
    # --- m.federate
    Case("m.federate false blocks other servers", ALL, "not federated",
         member_case(BOB, BOB, "join"), {"join_rule": "public", "create_content": {"m.federate": False}}),
    Case("m.federate false allows the creator's server", ALL, ALLOW,
         member_case("@zed:a.test", "@zed:a.test", "join"),
         {"join_rule": "public", "create_content": {"m.federate": False}}),
    Case("m.federate true", ALL, ALLOW,
         member_case(BOB, BOB, "join"), {"join_rule": "public", "create_content": {"m.federate": True}}),
    # --- redactions
    Case("v1-2 redaction of own server's event", versions(1, 2), ALLOW,
         event_case("m.room.redaction", BOB, {}, prior=[(BOB, "join")], redacts="$x:b.test")),
    Case("v1-2 redaction of another server's event", versions(1, 2), "redaction",
         event_case("m.room.redaction", BOB, {}, prior=[(BOB, "join")], redacts="$x:a.test")),
    Case("v1-2 redaction by redact level", versions(1, 2), ALLOW,
         event_case("m.room.redaction", MOD, {}, prior=[(MOD, "join")], redacts="$x:a.test")),
    Case("v3-10 redaction of another server's event", versions(3, 10), ALLOW,
         event_case("m.room.redaction", BOB, {}, prior=[(BOB, "join")], redacts="$x")),
    Case("v11+ redaction with redacts in content", versions(11), ALLOW,
         event_case("m.room.redaction", BOB, {"redacts": "$x"}, prior=[(BOB, "join")])),
    Case("redaction governed by events level", versions(3), "below the required level",
         event_case("m.room.redaction", BOB, {"redacts": "$x"}, prior=[(BOB, "join")], redacts="$x",
                    setup=with_pl({"users": {ALICE: 100}, "events": {"m.room.redaction": 10}}))),
    # --- auth events from another room
    Case("member event of another room", ALL, "belongs to room",
         lambda room: (room.state.__setitem__((MEMBER, BOB), moved_to(
             room.event(MEMBER, BOB, {"membership": "join"}, BOB), "!elsewhere:x.test")),
             room.event("m.room.message", BOB, {}))[1]),
]

# Power levels.
CASES += [
    Case("initial power levels by creator", ALL, ALLOW,
         lambda room: room.event(PL, ALICE, {"users": {BOB: 100} if room.rv.privileged_creators
                                              else {ALICE: 100}}, ""),
         {"power_levels": None}),
    Case("initial power levels: anything goes", versions(1, 11), ALLOW,
         lambda room: room.event(PL, ALICE, {"users": {ALICE: 100, BOB: 1000}, "ban": 9000}, ""),
         {"power_levels": None}),
    Case("power levels: users not an object", ALL, "users is not an object",
         event_case(PL, ALICE, {"users": []}, "")),
    Case("power levels: invalid user ID", ALL, "not a valid user ID",
         event_case(PL, ALICE, {"users": {"bob": 10}}, "")),
    Case("power levels: user ID with bad server name", ALL, "not a valid user ID",
         event_case(PL, ALICE, {"users": {"@bob:bad_host!": 10}}, "")),
    Case("power levels: user ID over 255 bytes", ALL, "not a valid user ID",
         event_case(PL, ALICE, {"users": {"@" + "b" * 250 + ":b.test": 10}}, "")),
    Case("power levels: historical user ID accepted", ALL, ALLOW,
         event_case(PL, ALICE, {"users": {"@Bob Smith:b.test": 10}}, "")),
    Case("power levels: string user level v1-9", versions(1, 9), ALLOW,
         event_case(PL, ALICE, {"users": {BOB: "10"}}, "")),
    Case("power levels: string user level v10+", versions(10), "not an integer",
         event_case(PL, ALICE, {"users": {BOB: "10"}}, "")),
    Case("power levels: non-numeric string v1-9", versions(1, 9), "not an integer",
         event_case(PL, ALICE, {"users": {BOB: "ten"}}, "")),
    Case("power levels: float user level v1-5", versions(1, 5), ALLOW,
         event_case(PL, ALICE, {"users": {BOB: 50.57}}, "")),
    Case("power levels: boolean user level", ALL, "not an integer",
         event_case(PL, ALICE, {"users": {BOB: True}}, "")),
    Case("power levels: string ban v10+", versions(10), "ban is not an integer",
         event_case(PL, ALICE, {"ban": "50"}, "")),
    Case("power levels: string ban v1-9", versions(1, 9), ALLOW,
         event_case(PL, ALICE, {"ban": "50", "users": {ALICE: 100, MOD: 50}}, "")),
    Case("power levels: events not an object v10+", versions(10), "events is not an object",
         event_case(PL, ALICE, {"events": [1]}, "")),
    Case("power levels: string events value v10+", versions(10), "events is not an object of integers",
         event_case(PL, ALICE, {"events": {"m.room.name": "50"}}, "")),
    Case("power levels: string notifications v10+", versions(10), "notifications is not an object",
         event_case(PL, ALICE, {"notifications": {"room": "50"}}, "")),
    Case("power levels: raise a level above own", ALL, "above the sender's level",
         event_case(PL, MOD, {"users": {ALICE: 100, MOD: 50}, "kick": 60}, "", prior=[(MOD, "join")],
                    setup=with_pl({"users": {ALICE: 100, MOD: 50}, "events": {PL: 50}}))),
    Case("power levels: change level set above own", ALL, "above the sender's level",
         event_case(PL, MOD, {"users": {ALICE: 100, MOD: 50}, "ban": 40}, "", prior=[(MOD, "join")],
                    setup=with_pl({"users": {ALICE: 100, MOD: 50}, "ban": 60, "events": {PL: 50}}))),
    Case("power levels: change level within own", ALL, ALLOW,
         event_case(PL, MOD, {"users": {ALICE: 100, MOD: 50}, "kick": 40}, "", prior=[(MOD, "join")],
                    setup=with_pl({"users": {ALICE: 100, MOD: 50}, "events": {PL: 50}}))),
    Case("power levels: removing a level above own", ALL, "current state_default",
         event_case(PL, MOD, {"users": {ALICE: 100, MOD: 50}}, "", prior=[(MOD, "join")],
                    setup=with_pl({"users": {ALICE: 100, MOD: 50}, "state_default": 60,
                                   "events": {PL: 50}}))),
    Case("power levels: same value as string is no change v1-9", versions(1, 9), ALLOW,
         event_case(PL, MOD, {"users": {ALICE: "100", MOD: 50}, "ban": "60", "events": {PL: 50}}, "",
                    prior=[(MOD, "join")],
                    setup=with_pl({"users": {ALICE: 100, MOD: 50}, "ban": 60, "events": {PL: 50}}))),
    Case("power levels: events entry above own", ALL, "events['m.room.name']",
         event_case(PL, MOD, {"users": {ALICE: 100, MOD: 50}, "events": {PL: 50, "m.room.name": 51}}, "",
                    prior=[(MOD, "join")],
                    setup=with_pl({"users": {ALICE: 100, MOD: 50}, "events": {PL: 50}}))),
    Case("power levels: removing events entry above own", ALL, "current events",
         event_case(PL, MOD, {"users": {ALICE: 100, MOD: 50}, "events": {PL: 50}}, "",
                    prior=[(MOD, "join")],
                    setup=with_pl({"users": {ALICE: 100, MOD: 50}, "events": {PL: 50, "m.x": 70}}))),
    Case("power levels: notifications above own v1-5 unchecked", versions(1, 5), ALLOW,
         event_case(PL, MOD, {"users": {ALICE: 100, MOD: 50}, "events": {PL: 50},
                              "notifications": {"room": 90}}, "",
                    prior=[(MOD, "join")],
                    setup=with_pl({"users": {ALICE: 100, MOD: 50}, "events": {PL: 50}}))),
    Case("power levels: notifications above own v6+", versions(6), "notifications['room']",
         event_case(PL, MOD, {"users": {ALICE: 100, MOD: 50}, "events": {PL: 50},
                              "notifications": {"room": 90}}, "",
                    prior=[(MOD, "join")],
                    setup=with_pl({"users": {ALICE: 100, MOD: 50}, "events": {PL: 50}}))),
    Case("power levels: lowering notifications set above own v6+", versions(6), "current notifications",
         event_case(PL, MOD, {"users": {ALICE: 100, MOD: 50}, "events": {PL: 50},
                              "notifications": {"room": 10}}, "",
                    prior=[(MOD, "join")],
                    setup=with_pl({"users": {ALICE: 100, MOD: 50}, "events": {PL: 50},
                                   "notifications": {"room": 90}}))),
    Case("power levels: promote to own level", ALL, ALLOW,
         event_case(PL, MOD, {"users": {ALICE: 100, MOD: 50, BOB: 50}, "events": {PL: 50}}, "",
                    prior=[(MOD, "join")],
                    setup=with_pl({"users": {ALICE: 100, MOD: 50}, "events": {PL: 50}}))),
    Case("power levels: promote above own level", ALL, "new level 51",
         event_case(PL, MOD, {"users": {ALICE: 100, MOD: 50, BOB: 51}, "events": {PL: 50}}, "",
                    prior=[(MOD, "join")],
                    setup=with_pl({"users": {ALICE: 100, MOD: 50}, "events": {PL: 50}}))),
    Case("power levels: demote a peer", ALL, "cannot change the level of @bob:b.test",
         event_case(PL, MOD, {"users": {ALICE: 100, MOD: 50, BOB: 0}, "events": {PL: 50}}, "",
                    prior=[(MOD, "join")],
                    setup=with_pl({"users": {ALICE: 100, MOD: 50, BOB: 50}, "events": {PL: 50}}))),
    Case("power levels: remove a peer", ALL, "cannot change the level of @bob:b.test",
         event_case(PL, MOD, {"users": {ALICE: 100, MOD: 50}, "events": {PL: 50}}, "",
                    prior=[(MOD, "join")],
                    setup=with_pl({"users": {ALICE: 100, MOD: 50, BOB: 50}, "events": {PL: 50}}))),
    Case("power levels: demote a lower user", ALL, ALLOW,
         event_case(PL, MOD, {"users": {ALICE: 100, MOD: 50, BOB: 0}, "events": {PL: 50}}, "",
                    prior=[(MOD, "join")],
                    setup=with_pl({"users": {ALICE: 100, MOD: 50, BOB: 49}, "events": {PL: 50}}))),
    Case("power levels: demote self", ALL, ALLOW,
         event_case(PL, MOD, {"users": {ALICE: 100, MOD: 10}, "events": {PL: 50}}, "",
                    prior=[(MOD, "join")],
                    setup=with_pl({"users": {ALICE: 100, MOD: 50}, "events": {PL: 50}}))),
    Case("power levels: needs the events level", ALL, "below the required level",
         event_case(PL, MOD, {"users": {ALICE: 100, MOD: 50}}, "", prior=[(MOD, "join")],
                    setup=with_pl({"users": {ALICE: 100, MOD: 50}, "events": {PL: 100}}))),
    Case("power levels: new unparseable ban when changing v1-9", versions(1, 9), "not an integer",
         event_case(PL, ALICE, {"users": {ALICE: 100}, "ban": "lots"}, "")),
]

# Third-party invites (the key pair is made per test run).
SIGNING_KEY = nacl.signing.SigningKey(b"\x07" * 32)
OTHER_KEY = nacl.signing.SigningKey(b"\x09" * 32)


def _signed_block(mxid: str, token: str, key: nacl.signing.SigningKey = SIGNING_KEY, **extra) -> dict:
    block = {"mxid": mxid, "token": token, **extra}
    signature = key.sign(encode_canonical_json(block)).signature
    block["signatures"] = {"id.test": {"ed25519:0": encode_base64(signature)}}
    return block


def tpi_case(signed: Any, *, tpi_sender=ALICE, token="tok", key_field="public_key", prior=(),
             sender=ALICE, target=BOB, with_tpi=True):
    def build(room: Room):
        for user, m in prior:
            room.member(user, m)
        public = encode_base64(SIGNING_KEY.verify_key.encode())
        if with_tpi:
            if key_field == "public_key":
                tpi_content = {"public_key": public, "display_name": "b..."}
            else:
                tpi_content = {"public_keys": [{"public_key": encode_base64(OTHER_KEY.verify_key.encode())},
                                               {"public_key": public}]}
            room.add(TPI, tpi_sender, token, tpi_content)
        content = {"membership": "invite"}
        if signed is not ...:
            content["third_party_invite"] = {"display_name": "b...", **({"signed": signed} if signed else {})}
        return room.event(MEMBER, sender, content, target)

    return build


CASES += [
    Case("3pid invite valid", ALL, ALLOW, tpi_case(_signed_block(BOB, "tok"))),
    Case("3pid invite valid via public_keys", ALL, ALLOW,
         tpi_case(_signed_block(BOB, "tok"), key_field="public_keys")),
    Case("3pid invite by non-member is decided by the signature", ALL, ALLOW,
         tpi_case(_signed_block(BOB, "tok"), sender=EVE, tpi_sender=EVE)),
    Case("3pid invite of banned user", ALL, "target user is banned",
         tpi_case(_signed_block(BOB, "tok"), prior=[(BOB, "ban")])),
    Case("3pid invite without signed", ALL, "no signed block", tpi_case(None)),
    Case("3pid invite signed not an object", ALL, "no signed block", tpi_case("nope")),
    Case("3pid invite signed without token", ALL, "lacks mxid or token",
         tpi_case({"mxid": BOB, "signatures": {}})),
    Case("3pid invite mxid mismatch", ALL, "mxid does not match",
         tpi_case(_signed_block(CAROL, "tok"))),
    Case("3pid invite no matching m.room.third_party_invite", ALL, "no m.room.third_party_invite",
         tpi_case(_signed_block(BOB, "other-token"))),
    Case("3pid invite no m.room.third_party_invite at all", ALL, "no m.room.third_party_invite",
         tpi_case(_signed_block(BOB, "tok"), with_tpi=False)),
    Case("3pid invite sender differs", ALL, "not the sender of the m.room.third_party_invite",
         tpi_case(_signed_block(BOB, "tok"), tpi_sender=MOD)),
    Case("3pid invite signed by another key", ALL, "no signature matches",
         tpi_case(_signed_block(BOB, "tok", key=OTHER_KEY))),
    Case("3pid invite tampered signed block", ALL, "no signature matches",
         tpi_case({**_signed_block(BOB, "tok"), "extra": 1})),
    Case("3pid invite without signatures", ALL, "no signature matches",
         tpi_case({"mxid": BOB, "token": "tok"})),
    Case("plain invite (no third_party_invite) still needs membership", ALL, "not joined",
         tpi_case(..., sender=EVE)),
]


# Restricted joins: v8+ ("restricted"), v10+ ("knock_restricted").
AUTH = "join_authorised_via_users_server"


def restricted_case(authoriser: str | None, *, signed_by: str | None = "a.test", prior=(), pl=None):
    def build(room: Room):
        for user, m in prior:
            room.member(user, m)
        if pl is not None:
            with_pl(pl)(room)
        content = {"membership": "join"}
        if authoriser is not None:
            content[AUTH] = authoriser
        signatures = {"b.test": {"ed25519:1": "sig"}}
        if signed_by is not None:
            signatures[signed_by] = {"ed25519:1": "sig"}
        return room.event(MEMBER, BOB, content, BOB, signatures=signatures)

    return build


for rule, lo in (("restricted", 8), ("knock_restricted", 10)):
    rk = {"join_rule": rule}
    CASES += [
        Case(f"{rule}: join authorised by admin", versions(lo), ALLOW, restricted_case(ALICE), rk),
        Case(f"{rule}: join without authoriser", versions(lo), f"there is no {AUTH}",
             restricted_case(None), rk),
        Case(f"{rule}: invited user needs no authoriser", versions(lo), ALLOW,
             restricted_case(None, prior=[(BOB, "invite")]), rk),
        Case(f"{rule}: rejoin needs no authoriser", versions(lo), ALLOW,
             restricted_case(None, prior=[(BOB, "join")]), rk),
        Case(f"{rule}: banned user", versions(lo), "banned",
             restricted_case(ALICE, prior=[(BOB, "ban")]), rk),
        Case(f"{rule}: authoriser not joined", versions(lo), "not joined",
             restricted_case(CAROL, signed_by="c.test"), rk),
        Case(f"{rule}: authoriser who left", versions(lo), "not joined",
             restricted_case(CAROL, signed_by="c.test", prior=[(CAROL, "leave")]), rk),
        Case(f"{rule}: authoriser cannot invite", versions(lo), "cannot invite",
             restricted_case(CAROL, signed_by="c.test", prior=[(CAROL, "join")],
                             pl={"users": {ALICE: 100}, "invite": 10}), rk),
        Case(f"{rule}: authoriser at invite level", versions(lo), ALLOW,
             restricted_case(CAROL, signed_by="c.test", prior=[(CAROL, "join")],
                             pl={"users": {ALICE: 100, CAROL: 10}, "invite": 10}), rk),
        Case(f"{rule}: not signed by the authoriser's server", versions(lo), "not signed by a.test",
             restricted_case(ALICE, signed_by=None), rk),
        Case(f"{rule}: authoriser is not a user ID", versions(lo), "not a valid user ID",
             restricted_case("alice", signed_by=None), rk),
    ]
CASES += [
    Case("restricted join rule unknown before v8", versions(1, 7), "does not allow",
         restricted_case(ALICE), {"join_rule": "restricted"}),
    Case("knock_restricted unknown v8-9", versions(8, 9), "does not allow",
         restricted_case(ALICE), {"join_rule": "knock_restricted"}),
    Case("authoriser key ignored before v8 on public join", versions(1, 7), ALLOW,
         restricted_case(ALICE, signed_by=None), {"join_rule": "public"}),
    Case("authoriser signature checked on any join v8+", versions(8), "not signed by",
         restricted_case(ALICE, signed_by=None), {"join_rule": "public"}),
    Case("authoriser signature checked on leave v8+", versions(8), "not signed by",
         lambda room: room.event(MEMBER, BOB, {"membership": "leave", AUTH: ALICE}, BOB),
         {"join_rule": "public"}),
]


# Create events.
def create_case(content: dict, *, sender=ALICE, room_id: str | None = "default", prev=()):
    def build(room: Room):
        fields: dict[str, Any] = {"type": CREATE, "state_key": "", "sender": sender,
                                  "content": content, "prev_events": list(prev)}
        if room_id == "default":
            if not room.rv.room_id_from_create_event:
                fields["room_id"] = "!new:" + sender.partition(":")[2]
        elif room_id is not None:
            fields["room_id"] = room_id
        # the format step already refuses a v12 create with room_id or prev_events
        return make_event(room.rv, fields, checked=not room.rv.room_id_from_create_event)

    return build


CASES += [
    Case("create v1-10 with creator", versions(1, 10), ALLOW, create_case({"creator": ALICE})),
    Case("create v1-10 without creator", versions(1, 10), "no creator", create_case({})),
    Case("create v11+ without creator", versions(11), ALLOW, create_case({})),
    Case("create with prev_events", ALL, "has prev_events",
         create_case({"creator": ALICE}, prev=["$x"])),
    Case("create with unknown room_version", ALL, "unknown room_version",
         create_case({"creator": ALICE, "room_version": "999"})),
    Case("create with non-string room_version", ALL, "unknown room_version",
         create_case({"creator": ALICE, "room_version": 9})),
    Case("create with known room_version", ALL, ALLOW,
         create_case({"creator": ALICE, "room_version": "9"})),
    Case("create room_id domain differs v1-11", versions(1, 11), "domain does not match",
         create_case({"creator": ALICE}, room_id="!new:elsewhere.test")),
    Case("create with room_id v12", versions(12), "has a room_id",
         create_case({}, room_id="!new:a.test")),
    Case("create additional_creators valid v12", versions(12), ALLOW,
         create_case({"additional_creators": [BOB, CAROL]})),
    Case("create additional_creators not a list v12", versions(12), "additional_creators",
         create_case({"additional_creators": BOB})),
    Case("create additional_creators invalid ID v12", versions(12), "additional_creators",
         create_case({"additional_creators": ["bob"]})),
    Case("create additional_creators non-string v12", versions(12), "additional_creators",
         create_case({"additional_creators": [5]})),
    Case("create additional_creators too long v12", versions(12), "additional_creators",
         create_case({"additional_creators": ["@" + "b" * 250 + ":b.test"]})),
    Case("create additional_creators ignored before v12", versions(11, 11), ALLOW,
         create_case({"additional_creators": "nonsense"})),
]


# Room v12: creators and room IDs.
V12 = versions(12)
CASES += [
    Case("v12 room_id not derived from create", V12, "not that of the create event",
         lambda room: room.event("m.room.message", ALICE, {}, room_id="!other:a.test")),
    Case("v12 creator cannot be listed in users", V12, "creators cannot be in users",
         event_case(PL, ALICE, {"users": {ALICE: 100}}, "", keep_creator=True)),
    Case("v12 additional creator cannot be listed in users", V12, "creators cannot be in users",
         event_case(PL, ALICE, {"users": {BOB: 100}}, ""),
         {"create_content": {"additional_creators": [BOB]}}),
    Case("v12 creator has infinite power", V12, ALLOW,
         event_case(PL, ALICE, {"users": {MOD: 9_000_000}, "ban": 2**53 - 1}, "")),
    Case("v12 additional creator acts with infinite power", V12, ALLOW,
         event_case(PL, BOB, {"users": {MOD: 1000}}, "", prior=[(BOB, "join")],
                    setup=with_pl({"users": {MOD: 50}, "events": {PL: 10**9}})),
         {"create_content": {"additional_creators": [BOB]}}),
    Case("v12 creator cannot be kicked by anyone", V12, "not above the target",
         event_case(MEMBER, MOD, {"membership": "leave"}, ALICE, prior=[(MOD, "join")],
                    setup=with_pl({"users": {MOD: 10**9}}))),
    Case("v12 creator cannot be banned by another creator", V12, "not above the target",
         member_case(BOB, ALICE, "ban", [(BOB, "join")]),
         {"create_content": {"additional_creators": [BOB]}}),
    Case("v12 creator can ban a high user", V12, ALLOW,
         event_case(MEMBER, ALICE, {"membership": "ban"}, MOD,
                    setup=with_pl({"users": {MOD: 10**9}}))),
    Case("v11 user with higher level can ban the creator", versions(11, 11), ALLOW,
         event_case(MEMBER, MOD, {"membership": "ban"}, ALICE, prior=[(MOD, "join")],
                    setup=with_pl({"users": {ALICE: 100, MOD: 101}}))),
    Case("v12 no power levels: creator can send state", V12, ALLOW,
         event_case("m.room.name", ALICE, {}, ""), {"power_levels": None}),
    Case("v11 creator from sender, not content.creator", versions(11, 11), "below the required level",
         event_case("m.room.name", BOB, {}, "", prior=[(BOB, "join")]),
         {"power_levels": None, "create_content": {"creator": BOB}}),
    Case("v1-10 creator from content.creator", versions(1, 10), ALLOW,
         event_case("m.room.name", BOB, {}, "", prior=[(BOB, "join")]),
         {"power_levels": None, "create_content": {"creator": BOB}}),
]


def _case_params():
    for case in CASES:
        for rv in case.versions:
            yield pytest.param(case, rv, id=f"v{rv.identifier}-{case.name}")


@pytest.mark.parametrize(("case", "rv"), list(_case_params()))
def test_case(case: Case, rv: RoomVersion):
    room = Room(rv, **case.room_kwargs)
    event = case.build(room)
    assert_outcome(room.check(event), case.expected)


def test_case_table_is_large_and_covers_every_version():
    assert len(CASES) >= 150
    covered = {rv.identifier for case in CASES for rv in case.versions}
    assert covered == set(KNOWN_ROOM_VERSIONS)


# ---------------------------------------------------------------------------
# Focused tests
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("rv", versions(8), ids=lambda v: f"v{v.identifier}")
def test_restricted_join_uses_signature_callback(rv):
    room = Room(rv, join_rule="restricted")
    event = restricted_case(ALICE)(room)
    seen = []

    def no(ev, server):
        seen.append((ev.event_id, server))
        return False

    assert "not signed by a.test" in room.check(event, is_signed_by=no)
    assert seen == [(event.event_id, "a.test")]
    assert room.check(event, is_signed_by=lambda ev, server: True) == ALLOW
    unsigned = restricted_case(ALICE, signed_by=None)(room)
    assert room.check(unsigned, is_signed_by=lambda ev, server: server == "a.test") == ALLOW


def test_missing_create_event_is_rejected():
    room = Room(RoomVersions.V10)
    del room.state[(CREATE, "")]
    assert "no m.room.create" in room.check(room.event("m.room.message", ALICE, {}))


def test_create_event_from_another_room_is_rejected():
    room = Room(RoomVersions.V10)
    other = Room(RoomVersions.V10, creator="@zed:z.test")
    room.state[(CREATE, "")] = other.create
    assert "belongs to room" in room.check(room.event("m.room.message", ALICE, {}))


def test_v12_create_event_must_be_the_room_id():
    room = Room(RoomVersions.V12)
    other = Room(RoomVersions.V12)
    room.state[(CREATE, "")] = other.create
    assert "not that of the create event" in room.check(room.event("m.room.message", ALICE, {}))


@pytest.mark.parametrize("rv", ALL, ids=lambda v: f"v{v.identifier}")
def test_auth_types_for_event(rv):
    create = set() if rv.room_id_from_create_event else {(CREATE, "")}
    base = create | {(PL, ""), (MEMBER, BOB)}
    assert auth_types_for_event(rv, CREATE, ALICE, "", {}) == set()
    assert auth_types_for_event(rv, "m.room.message", BOB, None, {}) == base
    assert auth_types_for_event(rv, "m.room.topic", BOB, "", {}) == base
    assert auth_types_for_event(rv, MEMBER, BOB, CAROL, {"membership": "ban"}) == base | {(MEMBER, CAROL)}
    for m in ("join", "invite", "knock"):
        assert auth_types_for_event(rv, MEMBER, BOB, CAROL, {"membership": m}) == base | {
            (MEMBER, CAROL), (JR, "")}
    tpi = {"membership": "invite", "third_party_invite": {"signed": {"token": "t", "mxid": CAROL}}}
    assert auth_types_for_event(rv, MEMBER, BOB, CAROL, tpi) == base | {
        (MEMBER, CAROL), (JR, ""), (TPI, "t")}
    restricted = {"membership": "join", AUTH: ALICE}
    extra = {(MEMBER, ALICE)} if rv.restricted_join_rule else set()
    assert auth_types_for_event(rv, MEMBER, BOB, BOB, restricted) == base | {(JR, "")} | extra
    # malformed content never raises
    assert auth_types_for_event(rv, MEMBER, BOB, CAROL, {"membership": "invite", "third_party_invite": 3})
    assert auth_types_for_event(rv, MEMBER, BOB, BOB, {"membership": "join", AUTH: 7}) == base | {(JR, "")}


def _own_auth_events(room: Room, event) -> list:
    keys = auth_types_for_event(room.rv, event.type, event.sender, event.state_key, event.content)
    return [room.state[k] for k in sorted(keys) if k in room.state]


@pytest.mark.parametrize("rv", ALL, ids=lambda v: f"v{v.identifier}")
def test_check_event_auth_with_own_auth_events(rv):
    room = Room(rv, join_rule="public")
    room.member(BOB, "join")
    event = room.event("m.room.message", BOB, {})
    listed = _own_auth_events(room, event)
    assert all(e.type != CREATE for e in listed) == rv.room_id_from_create_event
    create = room.create if rv.room_id_from_create_event else None
    check_event_auth(rv, event, listed, create_event=create)
    # duplicate (type, state_key)
    twin = room.event(MEMBER, BOB, {"membership": "join"}, BOB)
    with pytest.raises(AuthError, match="duplicate"):
        check_auth_events(rv, event, [*listed, twin])
    # unexpected entry
    with pytest.raises(AuthError, match="selection allows"):
        check_auth_events(rv, event, [*listed, room.state[(JR, "")]])
    # a non-state event
    with pytest.raises(AuthError, match="not a state event"):
        check_auth_events(rv, event, [*listed, room.event("m.room.message", BOB, {})])
    # a rejected entry
    pl = room.state[(PL, "")]
    with pytest.raises(AuthError, match="was rejected"):
        check_auth_events(rv, event, listed, is_rejected=lambda e: e.event_id == pl.event_id)
    # entry from another room
    foreign = moved_to(room.state[(MEMBER, BOB)], "!other:x.test")
    with pytest.raises(AuthError, match="belongs to room"):
        check_auth_events(rv, event, [e if e.type != MEMBER else foreign for e in listed])
    # the create event: required before v12, forbidden in v12
    without_create = [e for e in listed if e.type != CREATE]
    if rv.room_id_from_create_event:
        with pytest.raises(AuthError, match="selection allows"):
            check_auth_events(rv, event, [*listed, room.create])
        with pytest.raises(AuthError, match="no m.room.create"):
            check_event_auth(rv, event, listed)  # create_event not passed
    else:
        with pytest.raises(AuthError, match="no m.room.create"):
            check_auth_events(rv, event, without_create)
    # the create event has no auth events to check
    check_auth_events(rv, room.create, [])
    check_event_auth(rv, room.create, [])


def test_check_event_auth_runs_the_rules():
    rv = RoomVersions.V10
    room = Room(rv)
    room.member(BOB, "join")
    event = room.event("m.room.topic", BOB, {}, "")
    with pytest.raises(AuthError, match="below the required level"):
        check_event_auth(rv, event, _own_auth_events(room, event))


def test_power_level_helpers():
    v1, v6, v10, v11, v12 = (RoomVersions.V1, RoomVersions.V6, RoomVersions.V10, RoomVersions.V11,
                             RoomVersions.V12)
    room10 = Room(v10, creator_joined=False)
    pl = {"users": {BOB: "7", CAROL: 3}, "users_default": "2", "ban": " 70 ", "invite": 5,
          "events": {"m.x": 9}, "state_default": 40, "events_default": 1, "notifications": {"room": 20}}
    assert get_user_power_level(CAROL, pl, room10.create, v10) == 3
    assert get_user_power_level(BOB, pl, room10.create, v1) == 7
    assert get_user_power_level(BOB, pl, room10.create, v10) == 0  # "7" not an int: users_default
    assert get_user_power_level(EVE, pl, room10.create, v1) == 2
    assert get_user_power_level(ALICE, None, room10.create, v10) == 100
    assert get_user_power_level(BOB, None, room10.create, v10) == 0
    assert get_user_power_level(ALICE, {}, room10.create, v10) == 0
    assert auth_rules.get_power_level is get_user_power_level
    assert get_named_level("ban", pl, v1) == 70
    assert get_named_level("ban", pl, v10) == 50
    assert get_named_level("invite", pl, v10) == 5
    assert get_named_level("kick", None, v10) == 50
    assert get_named_level("invite", None, v10) == 0
    with pytest.raises(ValueError):
        get_named_level("admin", pl, v10)
    assert get_required_level_for_event("m.x", False, pl, v10) == 9
    assert get_required_level_for_event("m.y", False, pl, v10) == 1
    assert get_required_level_for_event("m.y", True, pl, v10) == 40
    assert get_required_level_for_event("m.y", True, None, v10) == 50
    assert get_required_level_for_event("m.y", False, None, v10) == 0
    assert get_notification_level("room", pl, v6) == 20
    assert get_notification_level("room", None, v6) == 50
    room12 = Room(v12, create_content={"additional_creators": [BOB]}, creator_joined=False)
    assert get_user_power_level(ALICE, {"users": {}}, room12.create, v12) == CREATOR_POWER_LEVEL
    assert get_user_power_level(BOB, None, room12.create, v12) == CREATOR_POWER_LEVEL
    assert get_user_power_level(CAROL, None, room12.create, v12) == 0
    room11 = Room(v11, creator_joined=False)
    assert room_creators(room11.create, v11) == {ALICE}
    assert room_creators(room12.create, v12) == {ALICE, BOB}
    assert room_creators(room10.create, v10) == {ALICE}
    assert room_creators(None, v10) == frozenset()


@pytest.mark.parametrize(
    ("value", "v1", "v6", "v10"),
    [
        (50, 50, 50, 50),
        ("50", 50, 50, None),
        (" +050 ", 50, 50, None),
        ("-7", -7, -7, None),
        ("\t100\n", 100, 100, None),
        ("1.5", None, None, None),
        ("1e3", None, None, None),
        ("", None, None, None),
        ("+-1", None, None, None),
        ("١٢", None, None, None),  # non-ASCII digits
        (50.97, 50, None, None),
        (-3.5, -3, None, None),
        (float("inf"), None, None, None),
        (True, None, None, None),
        (None, None, None, None),
        ([1], None, None, None),
    ],
)
def test_parse_power_level(value, v1, v6, v10):
    assert parse_power_level(value, RoomVersions.V1) == v1
    assert parse_power_level(value, RoomVersions.V6) == v6
    assert parse_power_level(value, RoomVersions.V10) == v10


def test_third_party_signature_verifies_with_signedjson():
    """An independent signer (signedjson) produces blocks our verifier accepts."""
    import signedjson.key
    import signedjson.sign

    key = signedjson.key.generate_signing_key("abc")
    block = signedjson.sign.sign_json({"mxid": BOB, "token": "t", "unsigned": {"x": 1}}, "id.test", key)
    public = signedjson.key.encode_verify_key_base64(key.verify_key)
    assert verify_third_party_invite_signed(block, [public])
    urlsafe = encode_base64_urlsafe(key.verify_key.encode())
    assert verify_third_party_invite_signed(block, ["not base64!", urlsafe])
    assert not verify_third_party_invite_signed(block, [])
    assert not verify_third_party_invite_signed({**block, "mxid": CAROL}, [public])
    bad_alg = {**block, "signatures": {"id.test": {"curve25519:abc": block["signatures"]["id.test"]["ed25519:abc"]}}}
    assert not verify_third_party_invite_signed(bad_alg, [public])


@pytest.mark.parametrize("rv", ALL, ids=lambda v: f"v{v.identifier}")
def test_redaction_allowed(rv):
    room = Room(rv)
    own = room.event("m.room.message", BOB, {})
    other = room.event("m.room.message", CAROL, {})
    redaction = room.event("m.room.redaction", "@bob2:b.test", {"redacts": own.event_id}, redacts=own.event_id)
    assert redaction_allowed(rv, redaction, own, room.state)
    if rv.event_id_in_event:
        assert redaction_allowed(rv, redaction, other, room.state)  # decided by the auth rules
    else:
        assert not redaction_allowed(rv, redaction, other, room.state)
        by_mod = room.event("m.room.redaction", MOD, {"redacts": other.event_id}, redacts=other.event_id)
        assert redaction_allowed(rv, by_mod, other, room.state)
    foreign = moved_to(own, "!other:x.test")
    assert not redaction_allowed(rv, redaction, foreign, room.state)


def test_state_res_uses_this_module_as_its_rules():
    """state_res duck-types the module: the names it needs exist with the right shape."""
    from federation import state_res

    rules: state_res.AuthRules = auth_rules  # type: ignore[assignment]
    assert issubclass(rules.AuthError, Exception)
    rv = RoomVersions.V12
    room = Room(rv)
    msg = room.event("m.room.message", ALICE, {})
    rules.check_auth_rules(rv, msg, room.state)
    assert set(rules.auth_types_for_event(rv, msg.type, msg.sender, msg.state_key, msg.content)) == {
        (PL, ""), (MEMBER, ALICE)}


@pytest.mark.parametrize("rv", versions(8), ids=lambda v: f"v{v.identifier}")
def test_restricted_join_with_real_signatures(rv):
    """A join signed by the joiner's server and the authorising server (federation.signing)."""
    from federation import signing

    keys = {server: signing.signing_key_from_seed("1", bytes([i]) * 32)
            for i, server in enumerate(("a.test", "b.test", "z.test"), start=1)}

    def keys_for(server, key_id):
        key = keys.get(server)
        return key.verify_key if key is not None and key.key_id == key_id else None

    def is_signed_by(event, server):
        try:
            signing.verify_event_signatures(event.get_pdu_json(), rv, keys_for)
        except signing.SignatureError:
            return False
        return bool(event.signatures.get(server))

    room = Room(rv, join_rule="restricted")
    unsigned = build_event(
        rv, type=MEMBER, sender=BOB, room_id=room.room_id, state_key=BOB,
        content={"membership": "join", AUTH: ALICE}, prev_event_ids=["$previous"],
        auth_event_ids=[], depth=3, origin_server_ts=1_700_000_000_000,
    )
    by_bob = signing.sign_event(unsigned, "b.test", keys["b.test"], room_version=rv)
    both = signing.sign_event(by_bob, "a.test", keys["a.test"], room_version=rv)
    assert room.check(PDU.from_pdu_json(both, rv), is_signed_by=is_signed_by) == ALLOW
    assert "not signed by a.test" in room.check(PDU.from_pdu_json(by_bob, rv), is_signed_by=is_signed_by)
    forged = signing.sign_event(by_bob, "z.test", keys["z.test"], room_version=rv)
    forged["signatures"]["a.test"] = forged["signatures"].pop("z.test")
    assert "not signed by a.test" in room.check(PDU.from_pdu_json(forged, rv), is_signed_by=is_signed_by)
    # without a callback only the presence of a signature is checked (the signature step verifies)
    assert room.check(PDU.from_pdu_json(forged, rv)) == ALLOW
