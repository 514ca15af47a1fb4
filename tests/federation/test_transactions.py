"""Outgoing transactions, pure: body shape and limits, /send response errors, the retry
schedule, the EDU queue (keyed EDUs coalesce, failed ones return in order)."""

from __future__ import annotations

import pytest

from federation.transactions import EduQueue, RetryPolicy, build_transaction, pdu_errors


def test_transaction_body_and_limits():
    body = build_transaction("hs.test", 5, [{"type": "x"}], [])
    assert body == {"origin": "hs.test", "origin_server_ts": 5, "pdus": [{"type": "x"}]}
    assert build_transaction("hs.test", 5, [], [{"edu_type": "m.typing", "content": {}}])["edus"]
    with pytest.raises(ValueError):
        build_transaction("hs.test", 5, [{}] * 51, [])
    with pytest.raises(ValueError):
        build_transaction("hs.test", 5, [], [{}] * 101)


def test_pdu_errors_from_responses():
    assert pdu_errors({"pdus": {"$a": {}, "$b": {"error": "bad"}}}) == {"$b": "bad"}
    assert pdu_errors({"pdus": []}) == {} and pdu_errors(None) == {} and pdu_errors({}) == {}


def test_retry_schedule_grows_to_the_max():
    policy = RetryPolicy(min_interval_ms=100, max_interval_ms=1000, multiplier=2)
    steps, current = [], 0
    for _ in range(6):
        current = policy.next_interval(current)
        steps.append(current)
    assert steps == [100, 200, 400, 800, 1000, 1000]
    assert policy.next_interval(400, jitter=1.2) == 960
    assert policy.next_interval(0, jitter=0.8) == 80


def test_edu_queue_coalesces_keyed_and_keeps_order():
    q = EduQueue()
    q.add("m.receipt", {"n": 1})
    q.add("m.typing", {"room": "a", "n": 1}, key="a")
    q.add("m.typing", {"room": "b", "n": 1}, key="b")
    q.add("m.typing", {"room": "a", "n": 2}, key="a")
    assert len(q) == 3
    taken = q.take(2)
    assert [e["content"] for _, e in taken] == [{"n": 1}, {"room": "b", "n": 1}]
    q.add("m.typing", {"room": "b", "n": 2}, key="b")  # newer than the taken one
    q.put_back(taken)  # the receipt returns to the front; the typing is stale and dropped
    assert [e["content"] for _, e in q.take()] == [{"n": 1}, {"room": "a", "n": 2}, {"room": "b", "n": 2}]
    assert len(q) == 0


def test_edu_queue_is_bounded_and_drops_ephemeral_on_failure():
    q = EduQueue(max_size=3)
    for i in range(5):
        q.add("m.direct_to_device", {"i": i})
    assert [e["content"]["i"] for _, e in q.take()] == [2, 3, 4] and q.dropped == 2
    q.add("m.presence", {}, key="p")
    q.add("m.receipt", {})
    q.drop_ephemeral()
    assert [e["edu_type"] for _, e in q.take()] == ["m.receipt"]
