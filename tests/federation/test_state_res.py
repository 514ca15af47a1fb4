"""State resolution v1, v2 and v2.1, on small event DAGs.

The classic scenarios are built as DAGs: every event's auth events are chosen
from the state before it (which is itself resolved where branches merge), and
the test asserts the state resolved at the END node.
"""

from __future__ import annotations

import dataclasses
import itertools
import random
from collections.abc import Mapping, Sequence
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from federation import auth_rules, state_res
from federation.events import PDU, build_event
from federation.room_versions import RoomVersion, RoomVersions, StateResAlgorithm

CREATE, MEMBER, PL, JR, TOPIC, MESSAGE = (
    "m.room.create",
    "m.room.member",
    "m.room.power_levels",
    "m.room.join_rules",
    "m.room.topic",
    "m.room.message",
)

AUTH = auth_rules


def make_pdu(room_version: RoomVersion, name: str, fields: dict) -> PDU:
    """Build a real PDU. Rooms 1 and 2 take ``name`` as the event ID (``$name:example.com``
    unless it already starts with ``$``); later rooms hash the event for its ID."""
    event_id = None
    if room_version.event_id_in_event:
        event_id = name if name.startswith("$") else f"${name}:example.com"
    v12_create = room_version.room_id_from_create_event and fields["type"] == CREATE
    pdu_json = build_event(
        room_version,
        type=fields["type"],
        sender=fields["sender"],
        room_id=None if v12_create else fields["room_id"],
        content=fields["content"],
        prev_event_ids=fields["prev_event_ids"],
        auth_event_ids=fields["auth_event_ids"],
        depth=fields["depth"],
        origin_server_ts=fields["origin_server_ts"],
        state_key=fields["state_key"],
        event_id=event_id,
    )
    return PDU.from_pdu_json(pdu_json, room_version)


def resolve(room_version, state_sets, event_map, **kwargs):
    return state_res.resolve_state(room_version, state_sets, event_map, auth_rules=AUTH, **kwargs)


# ---------------------------------------------------------------------------
# DAG harness
# ---------------------------------------------------------------------------

ALICE = "@alice:example.com"
BOB = "@bob:example.com"
CHARLIE = "@charlie:example.com"
EVELYN = "@evelyn:example.com"
ZARA = "@zara:example.com"
ROOM_ID = "!room:example.com"


@dataclasses.dataclass
class Spec:
    name: str
    sender: str
    type: str
    state_key: str | None = None
    content: dict = dataclasses.field(default_factory=dict)
    ts: int | None = None


def join(name: str, user: str) -> Spec:
    return Spec(name, user, MEMBER, user, {"membership": "join"})


def initial_specs(room_version: RoomVersion) -> list[Spec]:
    create_content = {"room_version": room_version.identifier}
    if not room_version.implicit_room_creator:
        create_content["creator"] = ALICE
    users = {} if room_version.privileged_creators else {ALICE: 100}
    return [
        Spec("CREATE", ALICE, CREATE, "", create_content),
        join("IMA", ALICE),
        Spec("IPOWER", ALICE, PL, "", {"users": users}),
        Spec("IJR", ALICE, JR, "", {"join_rule": "public"}),
        join("IMB", BOB),
        join("IMC", CHARLIE),
        join("IMZ", ZARA),
        Spec("START", ZARA, MESSAGE, None, {"body": "start"}),
        Spec("END", ZARA, MESSAGE, None, {"body": "end"}),
    ]


INITIAL_EDGES = ["START", "IMZ", "IMC", "IMB", "IJR", "IPOWER", "IMA", "CREATE"]


class Dag:
    """Builds the events of a scenario in topological order, resolving state at merges."""

    def __init__(self, room_version: RoomVersion, specs: Sequence[Spec], edges: Sequence[Sequence[str]]):
        self.room_version = room_version
        self.specs = {s.name: s for s in specs}
        prevs: dict[str, list[str]] = {s.name: [] for s in specs}
        for chain in [INITIAL_EDGES, *edges]:
            for newer, older in itertools.pairwise(chain):
                if older not in prevs[newer]:
                    prevs[newer].append(older)
        self.ids: dict[str, str] = {}
        self.events: dict[str, Any] = {}
        self.state_before: dict[str, dict] = {}
        self.state_after: dict[str, dict] = {}
        creation = {s.name: i for i, s in enumerate(specs)}
        for name in self._topological(prevs, creation):
            self._add(name, prevs[name], creation[name])

    @staticmethod
    def _topological(prevs, creation) -> list[str]:
        done: list[str] = []
        pending = set(prevs)
        while pending:
            ready = [n for n in pending if all(p in done for p in prevs[n])]
            nxt = min(ready, key=creation.__getitem__)
            done.append(nxt)
            pending.remove(nxt)
        return done

    def _add(self, name: str, prevs: list[str], creation_index: int) -> None:
        spec = self.specs[name]
        rv = self.room_version
        prev_states = [self.state_after[p] for p in prevs]
        if not prev_states:
            before: dict = {}
        elif len(prev_states) == 1:
            before = dict(prev_states[0])
        else:
            before = resolve(rv, prev_states, self.events)
        keys = AUTH.auth_types_for_event(rv, spec.type, spec.sender, spec.state_key, spec.content)
        auth_ids = tuple(dict.fromkeys(before[k] for k in keys if k in before))
        depth = 1 + max((self.events[self.ids[p]].depth for p in prevs), default=0)
        if rv.room_id_from_create_event:
            room_id = "!" + (self.ids["CREATE"] if name != "CREATE" else "$CREATE")[1:]
        else:
            room_id = ROOM_ID
        fields = {
            "room_id": room_id,
            "type": spec.type,
            "state_key": spec.state_key,
            "sender": spec.sender,
            "content": spec.content,
            "origin_server_ts": spec.ts if spec.ts is not None else creation_index,
            "depth": depth,
            "prev_event_ids": tuple(self.ids[p] for p in prevs),
            "auth_event_ids": auth_ids,
        }
        event = make_pdu(rv, name, fields)
        self.ids[name] = event.event_id
        self.events[event.event_id] = event
        self.state_before[name] = before
        after = dict(before)
        if spec.state_key is not None:
            after[(spec.type, spec.state_key)] = event.event_id
        self.state_after[name] = after

    def names(self, state: Mapping) -> dict:
        by_id = {v: k for k, v in self.ids.items()}
        return {key: by_id[event_id] for key, event_id in state.items()}


def run_scenario(room_version, specs, edges, expected_names, removed_keys=()):
    dag = Dag(room_version, initial_specs(room_version) + specs, edges)
    expected = dag.names(dag.state_after["IMZ"])
    for name in expected_names:
        spec = dag.specs[name]
        expected[(spec.type, spec.state_key)] = name
    for key in removed_keys:
        expected.pop(key, None)
    assert dag.names(dag.state_before["END"]) == expected
    return dag


V2_VERSIONS = [RoomVersions.V2, RoomVersions.V11]

# ---------------------------------------------------------------------------
# The classic v2 scenarios
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("rv", V2_VERSIONS, ids=lambda v: f"v{v.identifier}")
def test_ban_vs_power_levels(rv):
    # Bob (50) re-sends power levels while Alice bans him: the ban wins, Bob's PL is dropped.
    run_scenario(
        rv,
        [
            Spec("PA", ALICE, PL, "", {"users": {ALICE: 100, BOB: 50}}),
            Spec("MA", ALICE, MEMBER, ALICE, {"membership": "join"}),
            Spec("MB", ALICE, MEMBER, BOB, {"membership": "ban"}),
            Spec("PB", BOB, PL, "", {"users": {ALICE: 100, BOB: 50}}),
        ],
        [["END", "MB", "MA", "PA", "START"], ["END", "PB", "PA"]],
        ["PA", "MA", "MB"],
    )


@pytest.mark.parametrize("rv", V2_VERSIONS, ids=lambda v: f"v{v.identifier}")
def test_join_rule_evasion(rv):
    # Evelyn joins concurrently with the room going private: her join is dropped.
    run_scenario(
        rv,
        [
            Spec("JR", ALICE, JR, "", {"join_rule": "private"}),
            join("ME", EVELYN),
        ],
        [["END", "JR", "START"], ["END", "ME", "START"]],
        ["JR"],
    )


@pytest.mark.parametrize("rv", V2_VERSIONS, ids=lambda v: f"v{v.identifier}")
def test_offtopic_power_levels(rv):
    run_scenario(
        rv,
        [
            Spec("PA", ALICE, PL, "", {"users": {ALICE: 100, BOB: 50}}),
            Spec("PB", BOB, PL, "", {"users": {ALICE: 100, BOB: 50, CHARLIE: 50}}),
            Spec("PC", CHARLIE, PL, "", {"users": {ALICE: 100, BOB: 50, CHARLIE: 0}}),
        ],
        [["END", "PC", "PB", "PA", "START"], ["END", "PA"]],
        ["PC"],
    )


@pytest.mark.parametrize("rv", V2_VERSIONS, ids=lambda v: f"v{v.identifier}")
def test_topic_basic(rv):
    run_scenario(
        rv,
        [
            Spec("T1", ALICE, TOPIC, "", {}),
            Spec("PA1", ALICE, PL, "", {"users": {ALICE: 100, BOB: 50}}),
            Spec("T2", ALICE, TOPIC, "", {}),
            Spec("PA2", ALICE, PL, "", {"users": {ALICE: 100, BOB: 0}}),
            Spec("PB", BOB, PL, "", {"users": {ALICE: 100, BOB: 50}}),
            Spec("T3", BOB, TOPIC, "", {}),
        ],
        [["END", "PA2", "T2", "PA1", "T1", "START"], ["END", "T3", "PB", "PA1"]],
        ["PA2", "T2"],
    )


@pytest.mark.parametrize("rv", V2_VERSIONS, ids=lambda v: f"v{v.identifier}")
def test_topic_reset(rv):
    run_scenario(
        rv,
        [
            Spec("T1", ALICE, TOPIC, "", {}),
            Spec("PA", ALICE, PL, "", {"users": {ALICE: 100, BOB: 50}}),
            Spec("T2", BOB, TOPIC, "", {}),
            Spec("MB", ALICE, MEMBER, BOB, {"membership": "ban"}),
        ],
        [["END", "MB", "T2", "PA", "T1", "START"], ["END", "T1"]],
        ["T1", "MB", "PA"],
    )


@pytest.mark.parametrize("rv", V2_VERSIONS, ids=lambda v: f"v{v.identifier}")
def test_topic(rv):
    run_scenario(
        rv,
        [
            Spec("T1", ALICE, TOPIC, "", {}),
            Spec("PA1", ALICE, PL, "", {"users": {ALICE: 100, BOB: 50}}),
            Spec("T2", ALICE, TOPIC, "", {}),
            Spec("PA2", ALICE, PL, "", {"users": {ALICE: 100, BOB: 0}}),
            Spec("PB", BOB, PL, "", {"users": {ALICE: 100, BOB: 50}}),
            Spec("T3", BOB, TOPIC, "", {}),
            Spec("MZ1", ZARA, MESSAGE, None, {}),
            Spec("T4", ALICE, TOPIC, "", {}),
        ],
        [
            ["END", "T4", "MZ1", "PA2", "T2", "PA1", "T1", "START"],
            ["END", "MZ1", "T3", "PB", "PA1"],
        ],
        ["T4", "PA2"],
    )


@pytest.mark.parametrize("rv", V2_VERSIONS, ids=lambda v: f"v{v.identifier}")
def test_mainline_sort(rv):
    # T3 is based on a later power levels event of the mainline than T4: T3 wins
    # although T4 is newer.
    run_scenario(
        rv,
        [
            Spec("T1", ALICE, TOPIC, "", {}),
            Spec("PA1", ALICE, PL, "", {"users": {ALICE: 100, BOB: 50}}),
            Spec("T2", ALICE, TOPIC, "", {}),
            Spec("PA2", ALICE, PL, "", {"users": {ALICE: 100, BOB: 50}, "events": {PL: 100}}),
            Spec("PB", BOB, PL, "", {"users": {ALICE: 100, BOB: 50}}),
            Spec("T3", BOB, TOPIC, "", {}),
            Spec("T4", ALICE, TOPIC, "", {}),
        ],
        [["END", "T3", "PA2", "T2", "PA1", "T1", "START"], ["END", "T4", "PB", "PA1"]],
        ["T3", "PA2"],
    )


@pytest.mark.parametrize("rv", V2_VERSIONS, ids=lambda v: f"v{v.identifier}")
def test_concurrent_joins_both_survive(rv):
    run_scenario(
        rv,
        [join("ME", EVELYN), join("MF", "@frank:example.com")],
        [["END", "ME", "START"], ["END", "MF", "START"]],
        ["ME", "MF"],
    )


@pytest.mark.parametrize("rv", V2_VERSIONS, ids=lambda v: f"v{v.identifier}")
def test_kick_beats_concurrent_topic_by_kicked_user(rv):
    run_scenario(
        rv,
        [
            Spec("PA", ALICE, PL, "", {"users": {ALICE: 100, BOB: 50}}),
            Spec("KB", ALICE, MEMBER, BOB, {"membership": "leave"}),
            Spec("TB", BOB, TOPIC, "", {"topic": "mine"}),
        ],
        [["END", "KB", "PA", "START"], ["END", "TB", "PA"]],
        ["PA", "KB"],
    )


@pytest.mark.parametrize("rv", V2_VERSIONS, ids=lambda v: f"v{v.identifier}")
@pytest.mark.parametrize("later", ["TA", "TB"])
def test_origin_server_ts_breaks_mainline_ties(rv, later):
    # Same mainline position (both cite IPOWER): the later timestamp is applied last.
    ts = {"TA": 100, "TB": 101} if later == "TB" else {"TA": 101, "TB": 100}
    run_scenario(
        rv,
        [
            Spec("TA", ALICE, TOPIC, "", {"topic": "a"}, ts=ts["TA"]),
            Spec("TB", ALICE, TOPIC, "", {"topic": "b"}, ts=ts["TB"]),
        ],
        [["END", "TA", "START"], ["END", "TB", "START"]],
        [later],
    )


@pytest.mark.parametrize("rv", V2_VERSIONS, ids=lambda v: f"v{v.identifier}")
def test_event_id_breaks_timestamp_ties(rv):
    dag = Dag(
        rv,
        initial_specs(rv)
        + [
            Spec("TA", ALICE, TOPIC, "", {"topic": "a"}, ts=100),
            Spec("TB", ALICE, TOPIC, "", {"topic": "b"}, ts=100),
        ],
        [["END", "TA", "START"], ["END", "TB", "START"]],
    )
    winner = max(dag.ids["TA"], dag.ids["TB"])
    assert dag.state_before["END"][(TOPIC, "")] == winner


# ---------------------------------------------------------------------------
# Orderings and helpers, directly
# ---------------------------------------------------------------------------


def test_separate_state_v2_treats_missing_keys_as_conflicted():
    a, b = {("t", ""): "$1", ("u", ""): "$2"}, {("t", ""): "$1", ("u", ""): "$3", ("v", ""): "$4"}
    unconflicted, conflicted = state_res.separate_state(RoomVersions.V10, [a, b])
    assert unconflicted == {("t", ""): "$1"}
    assert conflicted == {("u", ""): frozenset({"$2", "$3"}), ("v", ""): frozenset({"$4"})}


def test_separate_state_v1_only_different_values_conflict():
    a, b = {("t", ""): "$1", ("u", ""): "$2"}, {("t", ""): "$1", ("u", ""): "$3", ("v", ""): "$4"}
    unconflicted, conflicted = state_res.separate_state(RoomVersions.V1, [a, b])
    assert unconflicted == {("t", ""): "$1", ("v", ""): "$4"}
    assert conflicted == {("u", ""): frozenset({"$2", "$3"})}


def test_no_conflict_returns_the_common_state():
    state = {("t", ""): "$1"}
    for rv in (RoomVersions.V1, RoomVersions.V10, RoomVersions.V12):
        assert resolve(rv, [state, dict(state)], {}) == state
    assert resolve(RoomVersions.V10, [], {}) == {}


def _bare(event_id, auth=(), ts=0, sender=ALICE, type_=TOPIC, state_key="", content=None, room_id=ROOM_ID):
    """An event with a chosen ID (room version 2 format), for graph-only tests."""
    return make_pdu(
        RoomVersions.V2,
        event_id,
        {
            "room_id": room_id,
            "type": type_,
            "state_key": state_key,
            "sender": sender,
            "content": content or {},
            "origin_server_ts": ts,
            "depth": 1,
            "prev_event_ids": (),
            "auth_event_ids": tuple(auth),
        },
    )


def test_auth_difference_counts_state_events_themselves():
    # chain: A <- B <- C. S1 = {C}, S2 = {B}: C only in S1's full chain.
    events = {e.event_id: e for e in [_bare("$A"), _bare("$B", ["$A"]), _bare("$C", ["$B"])]}
    s1, s2 = {("x", ""): "$C"}, {("x", ""): "$B"}
    assert state_res.auth_difference([s1, s2], events) == {"$C"}
    chains = state_res.AuthChains(events)
    assert chains("$C") == {"$A", "$B"}
    assert state_res.auth_difference([s1, s2], events, chains) == {"$C"}
    assert state_res.auth_difference([s1, s2], events, lambda e: chains(e)) == {"$C"}


def test_auth_difference_with_branches():
    #      A
    #    /   \
    #   B     C
    #   |     |
    #   D     E
    events = {
        e.event_id: e
        for e in [
            _bare("$A"), _bare("$B", ["$A"]), _bare("$C", ["$A"]),
            _bare("$D", ["$B"]), _bare("$E", ["$C"]),
        ]
    }
    sets = [{("x", ""): "$D", ("y", ""): "$A"}, {("x", ""): "$E", ("y", ""): "$A"}]
    expected = {"$B", "$C", "$D", "$E"}
    assert state_res.auth_difference(sets, events) == expected
    assert state_res.auth_difference(sets, events, state_res.AuthChains(events)) == expected


def test_conflicted_state_subgraph_keeps_paths_between_conflicted_events():
    # A <- B <- C <- D, and B <- X (a side branch). Conflicted: {D, B}.
    events = {
        e.event_id: e
        for e in [
            _bare("$A"), _bare("$B", ["$A"]), _bare("$C", ["$B"]),
            _bare("$D", ["$C"]), _bare("$X", ["$B"]),
        ]
    }
    expected = {"$B", "$C", "$D"}
    assert state_res.conflicted_state_subgraph({"$D", "$B"}, events) == expected
    with_provider = state_res.conflicted_state_subgraph(
        {"$D", "$B"}, events, state_res.AuthChains(events).__call__
    )
    assert with_provider == expected
    assert state_res.conflicted_state_subgraph({"$D", "$X"}, events) == {"$D", "$X"}


def test_reverse_topological_power_order_prefers_power_then_ts_then_id():
    # Alice (100 via PL) and Bob (50) events, all citing the PL event P.
    rv = RoomVersions.V10
    create = _bare("$create", type_=CREATE, content={})
    p = _bare("$P", ["$create"], type_=PL, content={"users": {ALICE: 100, BOB: 50}}, ts=1)
    a1 = _bare("$a1", ["$create", "$P"], ts=30, sender=ALICE)
    b1 = _bare("$b1", ["$create", "$P"], ts=10, sender=BOB)
    b2 = _bare("$b2", ["$create", "$P"], ts=10, sender=BOB)
    b3 = _bare("$b0", ["$create", "$P"], ts=20, sender=BOB)
    events = {e.event_id: e for e in [create, p, a1, b1, b2, b3]}
    within = {"$P", "$a1", "$b1", "$b2", "$b0"}
    order = state_res.reverse_topological_power_order(
        rv, ["$b0", "$b2", "$a1", "$b1"], events, within
    )
    # $P is reached through the auth edges and must come first.
    assert order == ["$P", "$a1", "$b1", "$b2", "$b0"]


def test_reverse_topological_power_order_rejects_cycles():
    events = {e.event_id: e for e in [_bare("$A", ["$B"]), _bare("$B", ["$A"])]}
    with pytest.raises(state_res.StateResolutionError):
        state_res.reverse_topological_power_order(RoomVersions.V10, ["$A"], events, {"$A", "$B"})


def test_sender_power_level_defaults_and_creators():
    rv = RoomVersions.V10
    create = _bare("$create", type_=CREATE, content={"creator": ALICE}, sender=ALICE)
    lone = _bare("$e", ["$create"], sender=ALICE)
    other = _bare("$f", ["$create"], sender=BOB)
    pl = _bare("$P", ["$create"], type_=PL, content={"users": {ALICE: "75"}, "users_default": 3})
    with_pl = _bare("$g", ["$create", "$P"], sender=ALICE)
    with_pl_bob = _bare("$h", ["$create", "$P"], sender=BOB)
    events = {e.event_id: e for e in [create, lone, other, pl, with_pl, with_pl_bob]}
    assert state_res.sender_power_level(rv, lone, events) == 100
    assert state_res.sender_power_level(rv, other, events) == 0
    # v10 rejects stringy power levels: "75" counts as absent, so users_default.
    assert state_res.sender_power_level(rv, with_pl, events) == 3
    assert state_res.sender_power_level(RoomVersions.V9, with_pl, events) == 75
    assert state_res.sender_power_level(rv, with_pl_bob, events) == 3


def test_sender_power_level_v12_creators_are_infinite():
    rv = RoomVersions.V12
    # The create event is found through the room ID ("!" + its ID without "$").
    room_id = "!create"
    create = _bare("$create", type_=CREATE, sender=ALICE, content={"additional_creators": [BOB]}, room_id=room_id)
    pl = _bare("$P", [], type_=PL, content={"users": {CHARLIE: 100}}, room_id=room_id)
    evs = [
        _bare(f"${n}", ["$P"], sender=u, room_id=room_id)
        for n, u in (("a", ALICE), ("b", BOB), ("c", CHARLIE))
    ]
    events = {e.event_id: e for e in [create, pl, *evs]}
    assert state_res.sender_power_level(rv, evs[0], events) == float("inf")
    assert state_res.sender_power_level(rv, evs[1], events) == float("inf")
    assert state_res.sender_power_level(rv, evs[2], events) == 100


def test_mainline_order():
    # P1 <- P2 <- P3 is the mainline of P3; Q is a PL off the mainline based on P1.
    evs = [
        _bare("$P1", [], type_=PL),
        _bare("$P2", ["$P1"], type_=PL),
        _bare("$P3", ["$P2"], type_=PL),
        _bare("$Q", ["$P1"], type_=PL),
        _bare("$t_p3", ["$P3"], ts=1),
        _bare("$t_p2", ["$P2"], ts=2),
        _bare("$t_q", ["$Q"], ts=3),  # meets the mainline at P1
        _bare("$t_none", [], ts=9),  # never meets it: sorts first
        _bare("$t_p2b", ["$P2"], ts=2),
    ]
    events = {e.event_id: e for e in evs}
    order = state_res.mainline_order(["$t_p3", "$t_p2b", "$t_q", "$t_none", "$t_p2"], "$P3", events)
    assert order == ["$t_none", "$t_q", "$t_p2", "$t_p2b", "$t_p3"]
    assert state_res.mainline_order([], "$P3", events) == []
    # Without a resolved power levels event, only timestamps and IDs count.
    assert state_res.mainline_order(["$t_q", "$t_p3"], None, events) == ["$t_p3", "$t_q"]


def test_is_power_event():
    assert state_res.is_power_event(_bare("$a", type_=PL))
    assert state_res.is_power_event(_bare("$a", type_=JR))
    assert not state_res.is_power_event(_bare("$a", type_=TOPIC))
    kick = _bare("$a", type_=MEMBER, state_key=BOB, sender=ALICE, content={"membership": "leave"})
    leave = _bare("$a", type_=MEMBER, state_key=BOB, sender=BOB, content={"membership": "leave"})
    ban = _bare("$a", type_=MEMBER, state_key=BOB, sender=ALICE, content={"membership": "ban"})
    joined = _bare("$a", type_=MEMBER, state_key=BOB, sender=BOB, content={"membership": "join"})
    assert state_res.is_power_event(kick) and state_res.is_power_event(ban)
    assert not state_res.is_power_event(leave) and not state_res.is_power_event(joined)


def test_rejected_events_are_not_used_as_auth_events():
    # Alice's topic is allowed only through her join (not in the state passed in,
    # so taken from the topic's auth events); if that join was rejected, the
    # topic fails the iterative auth checks.
    rv = RoomVersions.V10
    dag = Dag(rv, initial_specs(rv) + [Spec("TB", ALICE, TOPIC, "", {"topic": "b"})], [["END", "TB", "START"]])
    tb = dag.ids["TB"]
    base = dict(dag.state_after["START"])
    del base[(MEMBER, ALICE)]
    kwargs = dict(auth_rules=AUTH)
    ok = state_res.iterative_auth_checks(rv, base, [tb], dag.events, **kwargs)
    assert ok[(TOPIC, "")] == tb
    rejected = state_res.iterative_auth_checks(
        rv, base, [tb], dag.events, rejected_event_ids={dag.ids["IMA"]}, **kwargs
    )
    assert (TOPIC, "") not in rejected


def test_missing_event_ids_walks_to_a_fixed_point():
    rv = RoomVersions.V10
    dag = Dag(
        rv,
        initial_specs(rv) + [Spec("TA", ALICE, TOPIC, "", {}), Spec("TB", BOB, TOPIC, "", {})],
        [["END", "TA", "START"], ["END", "TB", "START"]],
    )
    sets = [dag.state_after["TA"], dag.state_after["TB"]]
    full = dict(dag.events)
    loaded: dict = {}
    rounds = 0
    while missing := state_res.missing_event_ids(rv, sets, loaded, auth_rules=AUTH):
        assert missing <= set(full)
        loaded.update({e: full[e] for e in missing})
        rounds += 1
    assert rounds >= 1
    assert dag.ids["START"] not in loaded  # messages are never needed
    assert resolve(rv, sets, loaded) == resolve(rv, sets, full)
    # With an auth chain provider only the conflicted part and its auth chains are needed.
    chains = state_res.AuthChains(full)
    loaded = {}
    while missing := state_res.missing_event_ids(rv, sets, loaded, chains, auth_rules=AUTH):
        loaded.update({e: full[e] for e in missing})
    assert len(loaded) < len(full)
    assert resolve(rv, sets, loaded, auth_chains=chains) == resolve(rv, sets, full)


# ---------------------------------------------------------------------------
# v1
# ---------------------------------------------------------------------------

V1 = RoomVersions.V1


def test_v1_power_levels_conflict_keeps_chain_of_allowed_changes():
    # Concurrent PL changes by Alice (demotes Bob to 0) and Bob (keeps 50):
    # sorted by ascending depth; the later one applies only if it passes auth.
    run_v1 = Dag(
        V1,
        initial_specs(V1)
        + [
            Spec("PA", ALICE, PL, "", {"users": {ALICE: 100, BOB: 50}}),
            Spec("PA2", ALICE, PL, "", {"users": {ALICE: 100, BOB: 0}}),
            Spec("PB", BOB, PL, "", {"users": {ALICE: 100, BOB: 50, CHARLIE: 10}}),
        ],
        [["END", "PA2", "PA", "START"], ["END", "PB", "PA"]],
    )
    # PA2 and PB have the same depth, so sha1(event_id) decides which is tried
    # first. Either way Alice's PA2 wins: after PB it passes (Alice outranks Bob),
    # and after PA2, Bob (now 0) cannot apply PB.
    assert run_v1.names(run_v1.state_before["END"])[(PL, "")] == "PA2"


def test_v1_normal_conflict_picks_highest_depth_that_passes():
    dag = Dag(
        V1,
        initial_specs(V1)
        + [
            Spec("T1", ALICE, TOPIC, "", {"topic": "1"}),
            Spec("T2", ALICE, TOPIC, "", {"topic": "2"}),
            Spec("T3", BOB, TOPIC, "", {"topic": "3"}),
        ],
        [["END", "T2", "T1", "START"], ["END", "T3", "START"]],
    )
    # T2 (depth higher) passes auth: it wins over T3.
    assert dag.names(dag.state_before["END"])[(TOPIC, "")] == "T2"


def test_v1_normal_conflict_where_nothing_passes_keeps_the_least_deep():
    # Bob (0) may not set the topic (state_default 50): both candidates fail.
    dag = Dag(
        V1,
        initial_specs(V1)
        + [
            Spec("T1", ALICE, TOPIC, "", {"topic": "1"}),
            Spec("TB1", BOB, TOPIC, "", {"topic": "b1"}),
            Spec("TB2", BOB, TOPIC, "", {"topic": "b2"}),
        ],
        [["END", "TB2", "T1", "START"], ["END", "TB1", "START"]],
    )
    assert dag.names(dag.state_before["END"])[(TOPIC, "")] == "TB1"


def test_v1_deeper_power_levels_apply_when_allowed():
    dag = Dag(
        V1,
        initial_specs(V1)
        + [
            Spec("PA1", ALICE, PL, "", {"users": {ALICE: 100, BOB: 10}}),
            Spec("PA2", ALICE, PL, "", {"users": {ALICE: 100, BOB: 20}}),
            Spec("PA3", ALICE, PL, "", {"users": {ALICE: 100, BOB: 30}}),
        ],
        [["END", "PA3", "PA2", "START"], ["END", "PA1", "START"]],
    )
    assert dag.names(dag.state_before["END"])[(PL, "")] == "PA3"


def test_v1_ban_beats_join_and_unconflicted_keys_survive():
    dag = Dag(
        V1,
        initial_specs(V1)
        + [
            Spec("PA", ALICE, PL, "", {"users": {ALICE: 100}}),
            Spec("BE", ALICE, MEMBER, EVELYN, {"membership": "ban"}),
            join("ME", EVELYN),
            Spec("TZ", ZARA, TOPIC, "", {}),
        ],
        [["END", "BE", "PA", "START"], ["END", "TZ", "ME", "START"]],
    )
    state = dag.names(dag.state_before["END"])
    assert state[(MEMBER, EVELYN)] in ("BE", "ME")
    # Unconflicted in v1: keys set on one side only.
    assert state[(PL, "")] == "PA" and state[(TOPIC, "")] == "TZ"


def test_v1_single_state_set_is_returned_as_is():
    state = {("t", ""): "$x"}
    assert resolve(V1, [state], {}) == state


# ---------------------------------------------------------------------------
# v2.1 (room version 12)
# ---------------------------------------------------------------------------

V12 = RoomVersions.V12
#: Room version 12 rules with the v2 algorithm, to show what v2.1 changes.
V12_WITH_V2 = dataclasses.replace(V12, state_res=StateResAlgorithm.V2)


def test_v12_scenarios_still_resolve():
    # Alice is the creator: infinite power; no Alice in users.
    run_scenario(
        V12,
        [
            Spec("JR", ALICE, JR, "", {"join_rule": "private"}),
            join("ME", EVELYN),
        ],
        [["END", "JR", "START"], ["END", "ME", "START"]],
        ["JR"],
    )
    run_scenario(
        V12,
        [
            Spec("PA", ALICE, PL, "", {"users": {BOB: 50}}),
            Spec("MB", ALICE, MEMBER, BOB, {"membership": "ban"}),
            Spec("PB", BOB, PL, "", {"users": {BOB: 50}}),
        ],
        [["END", "MB", "PA", "START"], ["END", "PB", "PA"]],
        ["PA", "MB"],
    )


def _v12_subgraph_case():
    """A state reset v2 gets wrong: an intermediate PL that only the subgraph includes.

    PA1 gives Bob 50; PA2 (Alice) raises Bob to 100; PB3 (Bob, at 100) raises
    the ban level to 100, which needs Bob at 100. S1 has PB3, S2 (a reset state)
    still has PA1 although its Charlie join cites PA2. PA2 is in both full auth
    chains, so v2 never replays it and PB3 fails against PA1.
    """
    specs = initial_specs(V12) + [
        Spec("PA1", ALICE, PL, "", {"users": {BOB: 50}}),
        Spec("PA2", ALICE, PL, "", {"users": {BOB: 100}}),
        Spec("PB3", BOB, PL, "", {"users": {BOB: 100}, "ban": 100}),
        join("MX", "@xavier:example.com"),
    ]
    dag = Dag(V12, specs, [["END", "PB3", "PA2", "PA1", "START"], ["MX", "PA2"]])
    s1 = dict(dag.state_after["PB3"])
    s1[(MEMBER, "@xavier:example.com")] = dag.ids["MX"]
    s2 = dict(dag.state_after["MX"])
    s2[(PL, "")] = dag.ids["PA1"]
    return dag, [s1, s2]


def test_v21_replays_the_conflicted_state_subgraph():
    dag, sets = _v12_subgraph_case()
    sub = state_res.conflicted_state_subgraph(
        {dag.ids["PB3"], dag.ids["PA1"]}, dag.events
    )
    assert sub == {dag.ids[n] for n in ("PA1", "PA2", "PB3")}
    v21 = dag.names(resolve(V12, sets, dag.events))
    v2 = dag.names(resolve(V12_WITH_V2, sets, dag.events))
    assert v21[(PL, "")] == "PB3"
    assert v2[(PL, "")] == "PA1"  # the reset that v2.1 fixes


def test_v21_starts_the_power_pass_from_the_empty_state():
    """Bob (50) changes the join rules on one side; on both sides Alice's PA2
    (Bob demoted to 0) is in state. v2 checks Bob's change against PA2 (from
    the unconflicted state) and drops it; v2.1 checks it against the state it
    was sent in and keeps it.
    """
    specs = initial_specs(V12) + [
        Spec("PA1", ALICE, PL, "", {"users": {BOB: 50}}),
        Spec("JB", BOB, JR, "", {"join_rule": "invite"}),
        Spec("PA2", ALICE, PL, "", {"users": {BOB: 0}}),
    ]
    dag = Dag(V12, specs, [["END", "JB", "PA1", "START"], ["PA2", "PA1"]])
    s1 = dict(dag.state_after["JB"])
    s1[(PL, "")] = dag.ids["PA2"]
    s2 = dict(dag.state_after["PA2"])
    assert s1[(JR, "")] != s2[(JR, "")]
    v21 = dag.names(resolve(V12, sets := [s1, s2], dag.events))
    v2 = dag.names(resolve(V12_WITH_V2, sets, dag.events))
    assert v21[(JR, "")] == "JB"
    assert v2[(JR, "")] == "IJR"
    assert v21[(PL, "")] == v2[(PL, "")] == "PA2"  # unconflicted wins in the end


def test_v21_creator_outranks_everyone_in_power_ordering():
    # Bob is given 100 (the most a user entry can hold); Alice, the creator, still
    # sorts first, so her ban of Bob is applied before Bob's PL change.
    run_scenario(
        V12,
        [
            Spec("PA", ALICE, PL, "", {"users": {BOB: 100}}),
            Spec("MB", ALICE, MEMBER, BOB, {"membership": "ban"}),
            Spec("PB", BOB, PL, "", {"users": {BOB: 100, CHARLIE: 100}}),
        ],
        [["END", "MB", "PA", "START"], ["END", "PB", "PA"]],
        ["PA", "MB"],
    )


# ---------------------------------------------------------------------------
# Properties
# ---------------------------------------------------------------------------

USERS = [ALICE, BOB, CHARLIE, ZARA, EVELYN]


def _random_fork_specs(rng: random.Random, rv: RoomVersion, fork: int, length: int) -> list[Spec]:
    specs = []
    for i in range(length):
        name = f"F{fork}_{i}"
        sender = rng.choice(USERS)
        kind = rng.randrange(6)
        if kind == 0:
            users = {u: rng.choice([0, 50, 100]) for u in USERS[1:] if rng.random() < 0.6}
            if not rv.privileged_creators:
                users[ALICE] = 100
            specs.append(Spec(name, rng.choice([ALICE, sender]), PL, "", {"users": users}))
        elif kind == 1:
            specs.append(Spec(name, sender, TOPIC, "", {"topic": name}))
        elif kind == 2:
            specs.append(Spec(name, sender, JR, "", {"join_rule": rng.choice(["public", "invite"])}))
        elif kind == 3:
            target = rng.choice(USERS)
            membership = rng.choice(["ban", "leave"])
            specs.append(Spec(name, sender, MEMBER, target, {"membership": membership}))
        else:
            specs.append(join(name, sender))
        specs[-1].ts = rng.randrange(20, 40)  # collisions exercise the ID tiebreak
    return specs


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**32 - 1),
    rv=st.sampled_from([RoomVersions.V1, RoomVersions.V6, RoomVersions.V11, RoomVersions.V12]),
    forks=st.integers(2, 3),
)
def test_result_does_not_depend_on_input_order(seed, rv, forks):
    rng = random.Random(seed)
    specs = initial_specs(rv)
    edges = []
    tips = []
    for fork in range(forks):
        fork_specs = _random_fork_specs(rng, rv, fork, rng.randrange(1, 6))
        specs += fork_specs
        chain = [s.name for s in reversed(fork_specs)] + ["START"]
        edges.append(chain)
        tips.append(chain[0])
    dag = Dag(rv, specs, edges)
    sets = [dag.state_after[t] for t in tips]
    expected = resolve(rv, sets, dag.events)
    for perm in itertools.permutations(range(forks)):
        items = list(dag.events.items())
        rng.shuffle(items)
        shuffled_sets = [dict(sorted(sets[i].items(), key=lambda _: rng.random())) for i in perm]
        assert resolve(rv, shuffled_sets, dict(items)) == expected
    # An auth chain provider (here: memoised walks, used as a black box) gives the same answer.
    chains = state_res.AuthChains(dag.events)
    assert resolve(rv, sets, dag.events, auth_chains=lambda e: chains(e)) == expected
    assert resolve(rv, sets, dag.events, auth_chains=chains) == expected
    # Resolving the same set twice changes nothing; a set resolved with itself is itself.
    assert resolve(rv, [expected, expected], dag.events) == expected
