"""The "both directions" verdict of the federation tester (pure)."""

from __future__ import annotations

from federation.tester_outbound import not_applicable, outbound_verdict

FETCH = {"From": "203.0.113.7", "UserAgent": "Synapse/1", "KeyID": None, "At": 0}


def test_a_private_tester_says_it_cannot_check_a_public_server():
    reason = not_applicable("tester.lan", "matrix.org", ["192.168.1.5"], ["104.20.1.1"])
    assert reason is not None and "not reachable from the internet" in reason and "192.168.1.5" in reason
    # Same private network (or loopback): the check means something.
    assert not_applicable("127.0.0.1:1", "127.0.0.1:2", ["127.0.0.1"], ["127.0.0.1"]) is None
    assert not_applicable("us.example", "them.example", ["151.101.1.1"], ["104.20.1.1"]) is None
    assert "does not resolve" in not_applicable("us.example", "them.example", [], ["104.20.1.1"])
    assert "running this tester" in not_applicable("Us.example", "us.example", ["1.1.1.1"], ["1.1.1.1"])


def test_verdicts():
    ok = outbound_verdict("us", "them", 404, "HTTP 404", [FETCH])
    assert ok["CanReachUs"] is True and "203.0.113.7" in ok["Explanation"]
    blocked = outbound_verdict("us", "them", 401, "HTTP 401", [])
    assert blocked["CanReachUs"] is False and "can receive but not send" in blocked["Explanation"]
    refused_after_fetch = outbound_verdict("us", "them", 403, "HTTP 403", [FETCH])
    assert refused_after_fetch["CanReachUs"] is True and "still refused" in refused_after_fetch["Explanation"]
    unchecked = outbound_verdict("us", "them", 200, None, [])
    assert unchecked["CanReachUs"] is None and "does not seem to check signatures" in unchecked["Explanation"]
    silent = outbound_verdict("us", "them", None, "timed out", [])
    assert silent["CanReachUs"] is None and "did not answer" in silent["Explanation"]
