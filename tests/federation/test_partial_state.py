"""The pure parts of partial-state joins: the send_join answer's fields, the resync's
server order and pauses, /state_ids answers, state maps, the recompute order and the
forward extremities afterwards."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from federation.partial_state import (
    BadStateAnswer,
    auth_event_ids_of,
    forward_extremities,
    parse_state_ids_answer,
    partial_join_servers,
    dependency_order,
    resync_servers,
    retry_delay,
    state_map_of,
)


@dataclass
class Ev:
    event_id: str
    type: str
    state_key: str | None


def test_a_full_answer_is_not_partial():
    for answer in ({"state": [], "auth_chain": []}, {"members_omitted": False}, {"members_omitted": "true"},
                   [200, {"members_omitted": True}], None):
        assert partial_join_servers(answer, joined_via="a.example", own_server="us.example") is None


def test_servers_in_room_with_the_resident_first_and_junk_left_out():
    answer = {"members_omitted": True,
              "servers_in_room": ["b.example", "us.example", "a.example", 7, "bad name!", "", "b.example",
                                  "c.example:8448"]}
    assert partial_join_servers(answer, joined_via="a.example", own_server="us.example") == \
        ["a.example", "b.example", "c.example:8448"]


@pytest.mark.parametrize("listed", [None, "a.example", {"x": 1}, []])
def test_missing_or_bad_servers_in_room_falls_back_to_the_resident(listed):
    answer = {"members_omitted": True}
    if listed is not None:
        answer["servers_in_room"] = listed
    assert partial_join_servers(answer, joined_via="a.example", own_server="us.example") == ["a.example"]


def test_resync_servers_in_order_once_never_ourselves():
    assert resync_servers(["a", "b", "us", "a", "", "c"], "us") == ["a", "b", "c"]


def test_retry_delay_doubles_up_to_the_cap():
    delays = [retry_delay(n, base_s=2, cap_s=30) for n in range(0, 7)]
    assert delays == [0.0, 2, 4, 8, 16, 30, 30]
    assert retry_delay(10_000, base_s=2, cap_s=600) == 600


def test_state_ids_answer():
    assert parse_state_ids_answer({"pdu_ids": ["$a", "$b", "$a"], "auth_chain_ids": ["$c"]}) == (["$a", "$b"], ["$c"])
    for bad in (None, [], {"pdu_ids": []}, {"pdu_ids": "x", "auth_chain_ids": []},
                {"pdu_ids": [1], "auth_chain_ids": []}, {"pdu_ids": [], "auth_chain_ids": [None]}):
        with pytest.raises(BadStateAnswer):
            parse_state_ids_answer(bad)


def test_state_map_of():
    events = [Ev("$c", "m.room.create", ""), Ev("$m", "m.room.member", "@u:x"), Ev("$m", "m.room.member", "@u:x")]
    assert state_map_of(events) == {("m.room.create", ""): "$c", ("m.room.member", "@u:x"): "$m"}
    with pytest.raises(BadStateAnswer, match="two events"):
        state_map_of([Ev("$c", "m.room.create", ""), Ev("$1", "m.room.name", ""), Ev("$2", "m.room.name", "")])
    with pytest.raises(BadStateAnswer, match="not a state event"):
        state_map_of([Ev("$c", "m.room.create", ""), Ev("$msg", "m.room.message", None)])
    with pytest.raises(BadStateAnswer, match="create"):
        state_map_of([Ev("$n", "m.room.name", "")])


def test_dependency_order_follows_the_dag_not_the_depths():
    # J <- a <- c, J <- b <- c; b claims a lower depth than J (depths are not trusted).
    prevs = {"J": ["$outside"], "a": ["J"], "b": ["J"], "c": ["a", "b"], "d": ["c", "$outside"]}
    key = {"J": (10, 1), "a": (11, 2), "b": (1, 3), "c": (12, 4), "d": (13, 5)}
    order = dependency_order(prevs, key)
    assert order[0] == "J" and order[-2:] == ["c", "d"] and set(order[1:3]) == {"a", "b"}
    assert order.index("b") < order.index("a")  # ties by the sort key


def test_dependency_order_puts_a_cycle_last():
    order = dependency_order({"J": [], "x": ["y"], "y": ["x"]}, {"J": (1, 1), "x": (2, 2), "y": (2, 3)})
    assert order == ["J", "x", "y"]


def test_forward_extremities_skip_refused_events():
    prevs = {"J": [], "a": ["J"], "b": ["a"], "c": ["J"]}
    # b is now rejected: a is a leaf of the timeline again; c is soft-failed.
    assert forward_extremities(prevs, {"J": True, "a": True, "b": False, "c": False}) == {"a"}
    assert forward_extremities(prevs, {"J": True, "a": True, "b": True, "c": True}) == {"b", "c"}


def test_auth_event_ids_of_both_formats_and_junk():
    assert auth_event_ids_of({"auth_events": ["$a", "$b"]}) == ["$a", "$b"]
    assert auth_event_ids_of({"auth_events": [["$a:x", {"sha256": "h"}], ["$b:x", {}]]}) == ["$a:x", "$b:x"]
    assert auth_event_ids_of({"auth_events": ["$a", 3, [], [None], {"x": 1}]}) == ["$a"]
    for junk in (None, [], {"auth_events": "nope"}, {}):
        assert auth_event_ids_of(junk) == []
