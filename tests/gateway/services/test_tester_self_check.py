"""The scheduled federation self-check: metrics of the last result and its age, a warning
when it turns bad (once), a note when it recovers."""

from __future__ import annotations

import logging

from prometheus_client import REGISTRY, generate_latest

from gateway.services.tester_self_check import SelfCheck

GOOD = {"FederationOK": True, "Explanations": [], "Diagnosis": []}
BAD = {"FederationOK": False, "Explanations": ["a", "b"],
       "Diagnosis": [{"Area": "Federation", "OK": False, "Words": "the certificate expired"},
                     {"Area": "Support contacts", "OK": None, "Words": "optional"}]}


def _metric(name: str, server: str) -> str | None:
    for line in generate_latest(REGISTRY).decode().splitlines():
        if line.startswith(f'{name}{{server_name="{server}"}} '):
            return line.rsplit(" ", 1)[1]
    return None


def ours(caplog) -> list[logging.LogRecord]:
    """The self-check's own log records: the garbage collector may log another test's
    leftovers (asyncio's "Unclosed connector") in the middle of this one."""
    return [r for r in caplog.records if r.name == "gateway.services.tester_self_check"]


async def test_turning_bad_warns_once_and_metrics_follow(caplog):
    answers = [GOOD, BAD, BAD, GOOD]
    now = [1000.0]

    async def run(server_name: str) -> dict:
        assert server_name == "self.test"
        return answers.pop(0)

    check = SelfCheck(server_name="self.test", run=run, interval_s=3600, clock=lambda: now[0])
    try:
        assert _metric("gateway_federation_tester_self_ok", "self.test") is None  # not run yet
        caplog.set_level(logging.INFO, logger="gateway.services.tester_self_check")
        await check.run_once()
        assert _metric("gateway_federation_tester_self_ok", "self.test") == "1.0"
        assert not [r for r in ours(caplog) if r.levelno >= logging.WARNING]
        await check.run_once()
        now[0] += 90
        assert _metric("gateway_federation_tester_self_ok", "self.test") == "0.0"
        assert _metric("gateway_federation_tester_self_age_seconds", "self.test") == "90.0"
        assert _metric("gateway_federation_tester_self_problems", "self.test") == "2.0"
        assert _metric("gateway_federation_tester_self_last_run_timestamp_seconds", "self.test") == "1000.0"
        await check.run_once()  # still bad: no second warning
        warnings = [r.getMessage() for r in ours(caplog) if r.levelno == logging.WARNING]
        assert len(warnings) == 1 and "self.test FAILED" in warnings[0]
        assert "Federation: the certificate expired" in warnings[0] and "optional" not in warnings[0]
        await check.run_once()
        assert "passes again" in ours(caplog)[-1].getMessage()
        report, age = await check.latest()
        assert report is GOOD and age == 0 and check.runs == 4
    finally:
        await check.close()
    assert _metric("gateway_federation_tester_self_ok", "self.test") is None  # gone with the server


async def test_a_crashing_probe_is_a_failed_check(caplog):
    async def run(server_name: str) -> dict:
        raise RuntimeError("boom")

    check = SelfCheck(server_name="crash.test", run=run, interval_s=3600)
    try:
        report = await check.run_once()
    finally:
        await check.close()
    assert report["FederationOK"] is False and "boom" in report["Explanations"][0]
