"""The PDU receipt pipeline: each step's decisions, on real signed events."""

from __future__ import annotations

from typing import Any

import pytest

from federation.events import MAX_PDU_SIZE, PDU
from federation.pdu_checks import (
    Accept,
    Drop,
    PolicyServer,
    Redacted,
    Reject,
    SoftFail,
    check_auth_against_auth_events,
    check_auth_against_state_before,
    check_format,
    check_policy_server_signature,
    check_signatures_and_hashes,
    check_soft_fail_against_current_state,
    policy_server_for_room,
)
from federation.room_versions import RoomVersion, RoomVersions
from federation.signing import KnownKey, ServerSigningKey, sign_event, signing_key_from_seed

A_KEY = signing_key_from_seed("a1", bytes([1]) * 32)
B_KEY = signing_key_from_seed("b1", bytes([2]) * 32)
C_KEY = signing_key_from_seed("c1", bytes([3]) * 32)
POLICY_KEY = signing_key_from_seed("policy_server", bytes([4]) * 32)
KEYS = {"a.org": A_KEY, "b.org": B_KEY, "c.org": C_KEY}

ALICE, BOB, CAROL = "@alice:a.org", "@bob:b.org", "@carol:c.org"
TS = 1_700_000_000_000


def keys_for(server: str, key_id: str):
    key = KEYS.get(server)
    if key is not None and key.key_id == key_id:
        return key.verify_key
    return None


class Room:
    """Builds a linear room of signed events and tracks its state."""

    def __init__(self, version: RoomVersion, room_id: str = "!room:a.org"):
        self.v = version
        self.room_id = room_id
        self.state: dict[tuple[str, str], PDU] = {}
        self.events: dict[str, PDU] = {}
        self.last: list[str] = []
        self.depth = 0
        self.counter = 0

    def auth_ids(self, ev_type: str, sender: str, state_key: str | None, content: dict) -> list[str]:
        if ev_type == "m.room.create":
            return []
        keys = [("m.room.power_levels", ""), ("m.room.member", sender)]
        if not self.v.room_id_from_create_event:
            keys.append(("m.room.create", ""))
        if ev_type == "m.room.member":
            keys.append(("m.room.member", state_key))
            if content.get("membership") in ("join", "invite", "knock"):
                keys.append(("m.room.join_rules", ""))
            authoriser = content.get("join_authorised_via_users_server")
            if authoriser:
                keys.append(("m.room.member", authoriser))
        ids = []
        for k in keys:
            ev = self.state.get(k)
            if ev is not None and ev.event_id not in ids:
                ids.append(ev.event_id)
        return ids

    def build(
        self,
        ev_type: str,
        sender: str,
        content: dict,
        state_key: str | None = None,
        *,
        signers: tuple[str, ...] | None = None,
        prev: list[str] | None = None,
        extra: dict | None = None,
    ) -> dict[str, Any]:
        """The signed JSON of a new event (not added to the room)."""
        self.counter += 1
        ev: dict[str, Any] = {
            "type": ev_type,
            "sender": sender,
            "content": content,
            "origin_server_ts": TS + self.counter,
            "depth": self.depth + 1,
            "prev_events": list(self.last if prev is None else prev),
            "auth_events": self.auth_ids(ev_type, sender, state_key, content),
            "hashes": {},
            "signatures": {},
        }
        if not (self.v.room_id_from_create_event and ev_type == "m.room.create"):
            ev["room_id"] = self.room_id
        if state_key is not None:
            ev["state_key"] = state_key
        if self.v.event_id_in_event:
            ev["event_id"] = f"${self.counter}:{sender.split(':', 1)[1]}"
            ev["prev_events"] = [[e, {}] for e in ev["prev_events"]]
            ev["auth_events"] = [[e, {}] for e in ev["auth_events"]]
        if extra:
            ev.update(extra)
        origin = sender.split(":", 1)[1]
        for server in signers or (origin,):
            ev = sign_event(ev, server, KEYS[server], room_version=self.v)
        return ev

    def add(self, ev_json: dict[str, Any]) -> PDU:
        pdu = PDU.from_pdu_json(ev_json, self.v)
        if pdu.type == "m.room.create" and self.v.room_id_from_create_event:
            self.room_id = "!" + pdu.event_id[1:]
        self.events[pdu.event_id] = pdu
        if pdu.state_key is not None:
            self.state[(pdu.type, pdu.state_key)] = pdu
        self.last = [pdu.event_id]
        self.depth = pdu.depth
        return pdu

    def send(self, *args, **kwargs) -> PDU:
        return self.add(self.build(*args, **kwargs))


def new_room(version: RoomVersion = RoomVersions.V10, join_rule: str = "public") -> Room:
    room = Room(version)
    create_content: dict[str, Any] = {"room_version": version.identifier}
    if not version.implicit_room_creator:
        create_content["creator"] = ALICE
    room.send("m.room.create", ALICE, create_content, "")
    room.send("m.room.member", ALICE, {"membership": "join"}, ALICE)
    users = {} if version.privileged_creators else {ALICE: 100}
    room.send("m.room.power_levels", ALICE, {"users": users, "users_default": 0, "invite": 0}, "")
    room.send("m.room.join_rules", ALICE, {"join_rule": join_rule}, "")
    return room


# --- decisions


def test_decisions_say_whether_to_continue():
    assert Accept().ok and Redacted(None, {}).ok
    assert not Drop("x").ok and not Reject("x").ok and not SoftFail("x").ok


# --- step 1: format


@pytest.mark.parametrize("version", [RoomVersions.V1, RoomVersions.V3, RoomVersions.V10, RoomVersions.V12])
def test_format_accepts_valid_events(version):
    room = new_room(version)
    ev = room.build("m.room.message", ALICE, {"body": "hi", "msgtype": "m.text"})
    decision = check_format(ev, version)
    assert isinstance(decision, Accept)
    assert decision.pdu.type == "m.room.message"
    assert decision.pdu.room_id == room.room_id


def test_format_v12_create_event_without_room_id():
    room = Room(RoomVersions.V12)
    ev = room.build("m.room.create", ALICE, {"room_version": "12"}, "")
    assert "room_id" not in ev
    decision = check_format(ev, RoomVersions.V12)
    assert isinstance(decision, Accept)
    assert decision.pdu.room_id == "!" + decision.pdu.event_id[1:]


@pytest.mark.parametrize(
    "mutate, fragment",
    [
        (lambda e: e.update(content={"body": "x" * MAX_PDU_SIZE}), "65536"),
        (lambda e: e.update(type="t" * 256), "type is longer than 255"),
        (lambda e: e.update(type="m.room.topic", state_key="s" * 256), "state_key is longer"),
        (lambda e: e.update(sender="alice"), "sender"),
        (lambda e: e.update(sender="@" + "a" * 250 + ":a.org"), "sender"),
        (lambda e: e.pop("sender"), "sender"),
        (lambda e: e.pop("room_id"), "room_id"),
        (lambda e: e.update(room_id="!" + "A" * 43), "room_id: "),  # v12 style in a v10 room
        (lambda e: e.update(sender="@a:bad_host"), "sender: "),  # server name grammar
        (lambda e: e.update(prev_events=["$" + "A" * 43 + "/"]), "prev_events: "),  # not v4+ format
        (lambda e: e.update(auth_events=["$abc:a.org"]), "auth_events: "),  # a v1 ID in a v10 room
        (lambda e: e.update(content={"n": 1.5}), "canonical JSON"),  # floats: v6+
        (lambda e: e.update(depth=2**53), "canonical JSON"),  # integer range: v6+
        (lambda e: e.pop("depth"), "invalid event"),  # caught by the event model
        (lambda e: e.update(content="nope"), "invalid event"),
    ],
)
def test_format_drops(mutate, fragment):
    room = new_room(RoomVersions.V10)
    ev = room.build("m.room.message", ALICE, {"body": "hi"})
    mutate(ev)
    decision = check_format(ev, RoomVersions.V10)
    assert isinstance(decision, Drop)
    assert fragment in decision.reason


def test_format_v12_only_the_create_event_lacks_room_id():
    room = new_room(RoomVersions.V12)
    ev = room.build("m.room.message", ALICE, {"body": "hi"})
    ev.pop("room_id")
    decision = check_format(ev, RoomVersions.V12)
    assert isinstance(decision, Drop) and "room_id" in decision.reason


def test_format_allows_floats_before_v6():
    room = new_room(RoomVersions.V5)
    ev = room.build("m.room.message", ALICE, {"body": "hi", "n": 1.5})
    assert isinstance(check_format(ev, RoomVersions.V5), Accept)


def test_format_rejects_non_objects():
    assert isinstance(check_format([1, 2], RoomVersions.V10), Drop)


# --- steps 2 and 3: signatures and hashes


def test_signatures_and_hashes_accept_good_event():
    room = new_room()
    ev = room.build("m.room.message", ALICE, {"body": "hi"})
    assert check_signatures_and_hashes(ev, RoomVersions.V10, keys_for) == Accept()
    # a PDU works as well as its JSON
    pdu = PDU.from_pdu_json(ev, RoomVersions.V10)
    assert check_signatures_and_hashes(pdu, RoomVersions.V10, keys_for) == Accept()


def test_format_check_hands_the_signed_bytes_to_the_signature_check():
    """check_format redacts and encodes the event once, for its ID and for step 2: the
    bytes it returns are what the signatures cover, and step 2 checks the signatures
    against exactly them (bytes of another event fail, as a forgery would)."""
    from federation.signing import redacted_signing_bytes

    room = new_room()
    ev = room.build("m.room.message", ALICE, {"body": "hi"})
    other = room.build("m.room.message", ALICE, {"body": "other"})
    decision = check_format(ev, RoomVersions.V10)
    assert isinstance(decision, Accept)
    assert decision.signed_bytes == redacted_signing_bytes(ev, RoomVersions.V10)
    assert decision.pdu.event_id == PDU.from_pdu_json(ev, RoomVersions.V10).event_id
    assert check_signatures_and_hashes(ev, RoomVersions.V10, keys_for, signed_bytes=decision.signed_bytes) == Accept()
    wrong = check_format(other, RoomVersions.V10).signed_bytes
    assert isinstance(check_signatures_and_hashes(ev, RoomVersions.V10, keys_for, signed_bytes=wrong), Drop)


def test_hash_mismatch_gives_the_redacted_copy():
    room = new_room()
    ev = room.build("m.room.message", ALICE, {"body": "hi", "msgtype": "m.text"})
    ev["content"]["body"] = "tampered"  # not covered by the signature, only by the hash
    decision = check_signatures_and_hashes(ev, RoomVersions.V10, keys_for)
    assert isinstance(decision, Redacted)
    assert decision.pdu.content == {}
    assert decision.pdu_json["content"] == {}
    assert decision.pdu.event_id == PDU.from_pdu_json(ev, RoomVersions.V10).event_id


def test_an_already_redacted_copy_passes_signatures():
    room = new_room()
    ev = room.build("m.room.member", BOB, {"membership": "join", "displayname": "Bob"}, BOB)
    ev["content"] = {"membership": "join"}  # what redaction leaves of a member event
    decision = check_signatures_and_hashes(ev, RoomVersions.V10, keys_for)
    assert isinstance(decision, Redacted)
    assert decision.pdu.content == {"membership": "join"}


@pytest.mark.parametrize(
    "mutate, fragment",
    [
        (lambda e: e.update(depth=e["depth"] + 1), "bad signature"),  # essential field
        (lambda e: e.update(signatures={}), "not signed by a.org"),
        (lambda e: e.update(signatures={"a.org": {"ed25519:unknown": "A" * 86}}), "no known, valid key"),
        (lambda e: e["signatures"]["a.org"].update({"ed25519:a1": "A" * 86}), "bad signature"),
        (lambda e: e["signatures"]["a.org"].update({"ed25519:a1": "%%%"}), "base64"),
        (lambda e: e.update(signatures={"b.org": e["signatures"]["a.org"]}), "not signed by a.org"),
    ],
)
def test_bad_signatures_drop(mutate, fragment):
    room = new_room()
    ev = room.build("m.room.message", ALICE, {"body": "hi"})
    mutate(ev)
    decision = check_signatures_and_hashes(ev, RoomVersions.V10, keys_for)
    assert isinstance(decision, Drop)
    assert fragment in decision.reason


def test_signed_by_the_wrong_server_key_drops():
    room = new_room()
    ev = room.build("m.room.message", BOB, {"body": "hi"}, signers=("a.org",))
    decision = check_signatures_and_hashes(ev, RoomVersions.V10, keys_for)
    assert isinstance(decision, Drop) and "b.org" in decision.reason


def test_v1_needs_the_event_id_server_too():
    room = new_room(RoomVersions.V1)
    ev = room.build("m.room.message", ALICE, {"body": "hi"}, extra={"event_id": "$x:b.org"})
    decision = check_signatures_and_hashes(ev, RoomVersions.V1, keys_for)
    assert isinstance(decision, Drop) and "b.org" in decision.reason
    both = room.build("m.room.message", ALICE, {"body": "hi"}, extra={"event_id": "$y:b.org"},
                      signers=("a.org", "b.org"))
    assert check_signatures_and_hashes(both, RoomVersions.V1, keys_for) == Accept()


def test_restricted_join_needs_the_authorising_server():
    room = new_room(RoomVersions.V10, join_rule="restricted")
    content = {"membership": "join", "join_authorised_via_users_server": ALICE}
    only_bob = room.build("m.room.member", BOB, content, BOB)
    decision = check_signatures_and_hashes(only_bob, RoomVersions.V10, keys_for)
    assert isinstance(decision, Drop) and "a.org" in decision.reason
    both = room.build("m.room.member", BOB, content, BOB, signers=("b.org", "a.org"))
    assert check_signatures_and_hashes(both, RoomVersions.V10, keys_for) == Accept()


def test_third_party_invite_may_come_from_another_server():
    room = new_room()
    content = {"membership": "invite", "third_party_invite": {"display_name": "c...", "signed": {
        "mxid": CAROL, "token": "tok", "signatures": {}}}}
    # Sent on ALICE's behalf, signed only by c.org (the server that exchanged the invite).
    ev = room.build("m.room.member", ALICE, content, CAROL, signers=("c.org",))
    assert check_signatures_and_hashes(ev, RoomVersions.V10, keys_for, origin="c.org") == Accept()
    decision = check_signatures_and_hashes(ev, RoomVersions.V10, keys_for, origin="b.org")
    assert isinstance(decision, Drop)
    # without a known origin, the sender's server must have signed
    assert isinstance(check_signatures_and_hashes(ev, RoomVersions.V10, keys_for), Drop)
    by_sender = room.build("m.room.member", ALICE, content, CAROL)
    assert check_signatures_and_hashes(by_sender, RoomVersions.V10, keys_for) == Accept()
    assert check_signatures_and_hashes(by_sender, RoomVersions.V10, keys_for, origin="b.org") == Accept()


def test_key_validity_is_enforced_from_v5():
    for version, expect_ok in [(RoomVersions.V4, True), (RoomVersions.V5, False), (RoomVersions.V10, False)]:
        room = new_room(version)
        ev = room.build("m.room.message", ALICE, {"body": "hi"})
        expired = KnownKey(A_KEY.verify_key, valid_until_ts=ev["origin_server_ts"] - 1)
        decision = check_signatures_and_hashes(ev, version, lambda s, k: expired if s == "a.org" else None)
        assert (decision == Accept()) is expect_ok, version.identifier
        if not expect_ok:
            assert "no known, valid key" in decision.reason


def test_key_validity_capped_at_seven_days_after_fetch():
    room = new_room()
    ev = room.build("m.room.message", ALICE, {"body": "hi"})
    far = 10**15
    fresh = KnownKey(A_KEY.verify_key, valid_until_ts=far, fetched_ts=ev["origin_server_ts"] - 1000)
    stale = KnownKey(A_KEY.verify_key, valid_until_ts=far, fetched_ts=ev["origin_server_ts"] - 8 * 86400_000)
    assert check_signatures_and_hashes(ev, RoomVersions.V10, lambda s, k: fresh) == Accept()
    assert isinstance(check_signatures_and_hashes(ev, RoomVersions.V10, lambda s, k: stale), Drop)


# --- step 4: auth events


def test_auth_events_accept():
    room = new_room()
    msg = room.add(room.build("m.room.message", ALICE, {"body": "hi"}))
    assert check_auth_against_auth_events(RoomVersions.V10, msg, room.events) == Accept()
    # an iterable of events works too
    assert check_auth_against_auth_events(RoomVersions.V10, msg, list(room.events.values())) == Accept()


def test_auth_events_reject_non_member():
    room = new_room()
    msg = PDU.from_pdu_json(room.build("m.room.message", BOB, {"body": "hi"}), RoomVersions.V10)
    decision = check_auth_against_auth_events(RoomVersions.V10, msg, room.events)
    assert isinstance(decision, Reject)
    assert "not allowed by its auth events" in decision.reason


def test_auth_events_missing():
    room = new_room()
    msg = room.add(room.build("m.room.message", ALICE, {"body": "hi"}))
    some = {k: v for k, v in room.events.items() if v.type != "m.room.power_levels"}
    decision = check_auth_against_auth_events(RoomVersions.V10, msg, some)
    assert isinstance(decision, Reject) and "not available" in decision.reason


def test_auth_events_rejected_auth_event():
    room = new_room()
    msg = room.add(room.build("m.room.message", ALICE, {"body": "hi"}))
    pl = room.state[("m.room.power_levels", "")]
    decision = check_auth_against_auth_events(
        RoomVersions.V10, msg, room.events, is_rejected=lambda e: e.event_id == pl.event_id
    )
    assert isinstance(decision, Reject) and "rejected" in decision.reason


def test_auth_events_v12_create_event_found_or_given():
    room = new_room(RoomVersions.V12)
    msg = room.add(room.build("m.room.message", ALICE, {"body": "hi"}))
    create = room.state[("m.room.create", "")]
    assert create.event_id not in msg.auth_event_ids
    assert check_auth_against_auth_events(RoomVersions.V12, msg, room.events) == Accept()
    without_create = {k: v for k, v in room.events.items() if k != create.event_id}
    decision = check_auth_against_auth_events(RoomVersions.V12, msg, without_create)
    assert isinstance(decision, Reject) and "create event" in decision.reason
    assert check_auth_against_auth_events(
        RoomVersions.V12, msg, without_create, create_event=create
    ) == Accept()


def test_auth_events_create_event_itself():
    room = Room(RoomVersions.V10)
    create = room.send("m.room.create", ALICE, {"room_version": "10", "creator": ALICE}, "")
    assert check_auth_against_auth_events(RoomVersions.V10, create, {}) == Accept()


# --- steps 5 and 6: state before, current state (the spec's ban evasion example)


def ban_evasion():
    """A: bob joined; B: bob banned; C: bob's topic change referencing A."""
    room = new_room()
    room.send("m.room.member", BOB, {"membership": "join"}, BOB)
    room.send("m.room.power_levels", ALICE, {"users": {ALICE: 100}, "users_default": 0, "state_default": 0}, "")
    state_a = dict(room.state)
    a_id = room.last
    room.send("m.room.member", ALICE, {"membership": "ban"}, BOB)
    state_b = dict(room.state)
    room.state = state_a  # C is built on A: its auth events come from A's state
    c = room.add(room.build("m.room.topic", BOB, {"topic": "evading"}, "", prev=a_id))
    room.state = state_b
    return room, state_a, state_b, c


def test_state_before_accepts_and_rejects():
    room, state_a, state_b, c = ban_evasion()
    assert check_auth_against_state_before(RoomVersions.V10, c, state_a) == Accept()
    decision = check_auth_against_state_before(RoomVersions.V10, c, state_b)
    assert isinstance(decision, Reject) and "state before" in decision.reason


def test_soft_fail_against_current_state():
    room, state_a, state_b, c = ban_evasion()
    assert check_auth_against_auth_events(RoomVersions.V10, c, room.events) == Accept()
    assert check_auth_against_state_before(RoomVersions.V10, c, state_a) == Accept()
    decision = check_soft_fail_against_current_state(RoomVersions.V10, c, state_b)
    assert isinstance(decision, SoftFail)
    assert "current state" in decision.reason
    assert check_soft_fail_against_current_state(RoomVersions.V10, c, state_a) == Accept()


# --- step 7: policy servers


def policy_room(via: str = "c.org", joined: bool = True, content: dict | None = None) -> Room:
    room = new_room()
    if joined:
        room.send("m.room.member", CAROL, {"membership": "join"}, CAROL)
    from federation.signing import encode_verify_key

    policy_content = content if content is not None else {
        "via": via, "public_keys": {"ed25519": encode_verify_key(POLICY_KEY.verify_key)}}
    room.send("m.room.policy", ALICE, policy_content, "")
    return room


def policy_sign(room: Room, ev: dict, key: ServerSigningKey = POLICY_KEY, via: str = "c.org") -> dict:
    return sign_event(ev, via, key, room_version=room.v)


def test_policy_server_for_room():
    room = policy_room()
    ps = policy_server_for_room(room.state)
    assert isinstance(ps, PolicyServer) and ps.server_name == "c.org"
    assert policy_server_for_room(policy_room(joined=False).state) is None
    assert policy_server_for_room(new_room().state) is None
    assert policy_server_for_room(policy_room(content={"via": "c.org", "public_keys": {}}).state) is None
    assert policy_server_for_room(policy_room(content={"via": 5, "public_keys": {"ed25519": "x"}}).state) is None
    # joined_servers replaces the membership scan
    unjoined = policy_room(joined=False)
    assert policy_server_for_room(unjoined.state, joined_servers={"c.org"}) is not None
    assert policy_server_for_room(room.state, joined_servers={"a.org"}) is None


def test_policy_signature_required_when_enabled():
    room = policy_room()
    ev = room.build("m.room.message", ALICE, {"body": "hi"})
    decision = check_policy_server_signature(ev, room.v, room.state)
    assert isinstance(decision, SoftFail) and "policy server" in decision.reason
    signed = policy_sign(room, ev)
    assert check_policy_server_signature(signed, room.v, room.state) == Accept()
    wrong = policy_sign(room, ev, key=signing_key_from_seed("policy_server", bytes([9]) * 32))
    assert isinstance(check_policy_server_signature(wrong, room.v, room.state), SoftFail)
    # the policy server's signature does not count as the sender's, and vice versa
    assert check_signatures_and_hashes(signed, room.v, keys_for) == Accept()


def test_policy_signature_not_needed_when_disabled_or_exempt():
    room = policy_room(joined=False)
    ev = room.build("m.room.message", ALICE, {"body": "hi"})
    assert check_policy_server_signature(ev, room.v, room.state) == Accept()
    enabled = policy_room()
    change = enabled.build("m.room.policy", ALICE, {}, "")
    assert check_policy_server_signature(change, enabled.v, enabled.state) == Accept()
    # non-state m.room.policy and other state keys are not exempt
    other = enabled.build("m.room.policy", ALICE, {}, "x")
    assert isinstance(check_policy_server_signature(other, enabled.v, enabled.state), SoftFail)
