"""The pure parts of server-side search: the stretches of a room a user may see, the
next_batch tokens, and the request criteria."""

from __future__ import annotations

import pytest

from gateway.http import MatrixError
from gateway.services.search import MAX_RANGES, BatchToken, RoomEventsCriteria, visible_ranges
from gateway.storage.search import SearchHit


def test_joined_history_shows_only_while_joined():
    changes = [(1, "member", None), (3, "hv", "joined"), (10, "member", "join"), (20, "member", "leave"),
               (30, "member", "join")]
    # Currently joined: 'shared' (the default) before position 3 is visible, then only while joined.
    assert visible_ranges(changes, currently_joined=True, until=None) == ((1, 3), (10, 20), (30, None))
    # Left (at 20, never back): nothing after the leave, and 'shared' needs a current join.
    left = changes[:4]
    assert visible_ranges(left, currently_joined=False, until=20) == ((10, 20),)


def test_world_readable_invited_and_unrestricted():
    assert visible_ranges([(1, "member", "join")], currently_joined=True, until=None) is None
    assert visible_ranges([], currently_joined=True, until=None) is None
    changes = [(2, "hv", "world_readable"), (5, "hv", "invited"), (7, "member", "invite"), (9, "member", "join")]
    assert visible_ranges(changes, currently_joined=False, until=None) == ((2, 5), (7, None))
    # Until a leave at 12: up to and including it.
    assert visible_ranges(changes, currently_joined=False, until=12) == ((2, 5), (7, 13))
    # Changes at one position apply together (a federated join writes the whole state at once).
    together = [(4, "hv", "joined"), (4, "member", "join")]
    assert visible_ranges(together, currently_joined=True, until=None) is None
    assert visible_ranges([(4, "hv", None)], currently_joined=False, until=None) == ()


def test_many_stretches_become_one():
    changes = []
    for i in range(MAX_RANGES + 5):
        changes += [(10 * i + 1, "member", "join"), (10 * i + 5, "member", "leave")]
    ranges = visible_ranges([(0, "hv", "joined"), *changes], currently_joined=False, until=None)
    assert ranges == ((1, 10 * (MAX_RANGES + 4) + 5),)


def test_batch_tokens_round_trip_and_refuse_garbage():
    for token in [BatchToken("recent", 42), BatchToken("rank", -7, 0.25, ("room_id", "!r:s")),
                  BatchToken("rank", 3, 1e-7, ("sender", "@u:s"))]:
        assert BatchToken.decode(token.encode()) == token
    hit = SearchHit("$e", "!r:s", 9, 0.5)
    assert BatchToken.after("recent", hit, None) == BatchToken("recent", 9, 0.0)
    assert BatchToken.after("rank", hit, ("room_id", "!r:s")).last == SearchHit("", "", 9, 0.5)
    for garbage in ["", "!!!", "e30", "WzEsMiwzXQ", "WyJyYW5rIiwxLCJOYU4iXQ", "WyJyYW5rIiwxLDEsInR5cGUiLCJ4Il0",
                    "WyJyZWNlbnQiLHRydWUsMF0", "WyJyYW5rIiwxLE5hTl0"]:
        with pytest.raises(MatrixError) as e:
            BatchToken.decode(garbage)
        assert e.value.errcode == "M_INVALID_PARAM", garbage


def test_criteria_defaults_and_limits():
    c = RoomEventsCriteria.parse({"search_term": "x"})
    assert c.order_by == "rank" and c.keys == ("content.body", "content.name", "content.topic")
    assert c.limit == 10 and c.event_context is None and c.group_by == ()
    c = RoomEventsCriteria.parse({"search_term": "x", "filter": {"limit": 100000}, "event_context": {
        "before_limit": 10000, "include_profile": True}, "groupings": {"group_by": [{"key": "sender"}] * 2}})
    assert c.limit == 100 and c.event_context == (100, 5, True) and c.group_by == ("sender",)
    assert RoomEventsCriteria.parse({"search_term": "x", "filter": {"limit": 0}}).limit == 1
