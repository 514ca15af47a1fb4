"""The federation tester run on our own server name on a schedule
(``federation_tester.self_check_interval``): the last result and its age as Prometheus
metrics, and a warning in the log when it turns bad. Issue 22, "History and alerts".
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from typing import TYPE_CHECKING, Any, Awaitable, Callable

from prometheus_client import REGISTRY
from prometheus_client.core import GaugeMetricFamily

if TYPE_CHECKING:
    from federation.net.tester import FederationTester

log = logging.getLogger(__name__)


def build_tester(config, clock_ms: Callable[[], int]) -> FederationTester:
    """A tester under the server's outbound IP rules and trust store (always verifying).
    Its modules are imported here, by the first tester built: most servers never run one."""
    from federation.net.resolver import ServerResolver
    from federation.net.tester import FederationTester

    from ..outbound import outbound_ip_policy, outbound_ssl_context

    fed = config.federation
    policy, ctx = outbound_ip_policy(fed), outbound_ssl_context(fed, always_verify=True)
    resolver = ServerResolver(nameservers=list(fed.dns_nameservers) or None, ip_policy=policy, ssl_context=ctx)
    return FederationTester(resolver=resolver, ssl_context=ctx, ip_policy=policy, clock_ms=clock_ms)


class SelfCheck:
    """``run``: the report for a server name (``FederationTester.run``); ``cleanup``: what
    to release on close (the tester's resolver)."""

    def __init__(self, *, server_name: str, run: Callable[[str], Awaitable[dict[str, Any]]], interval_s: float,
                 clock: Callable[[], float] = time.time, cleanup: Callable[[], Awaitable[None]] | None = None):
        self.server_name = server_name
        self._run = run
        self._cleanup = cleanup
        self.interval_s = interval_s
        self.clock = clock
        self.last_report: dict[str, Any] | None = None
        self.last_ok: bool | None = None
        self.last_run_ts: float | None = None
        self.runs = 0
        self._ran = asyncio.Event()
        self._stop = asyncio.Event()
        self._task: asyncio.Task | None = None
        _CHECKS.add(self)

    async def run_once(self) -> dict[str, Any]:
        try:
            report = await self._run(self.server_name)
        except Exception as e:  # a bug in a probe must not stop the schedule
            log.exception("federation self-check of %s crashed", self.server_name)
            report = {"FederationOK": False, "Explanations": [f"the tester crashed: {e}"], "Diagnosis": []}
        ok = bool(report.get("FederationOK"))
        if not ok and self.last_ok is not False:
            problems = [f"{a['Area']}: {a['Words']}" for a in report.get("Diagnosis", []) if a.get("OK") is False]
            log.warning("Federation self-check of %s FAILED (other servers may not reach it): %s", self.server_name,
                        " | ".join(problems or report.get("Explanations") or ["no details"]))
        elif ok and self.last_ok is False:
            log.info("Federation self-check of %s passes again", self.server_name)
        self.last_report, self.last_ok, self.last_run_ts = report, ok, self.clock()
        self.runs += 1
        self._ran.set()
        return report

    async def latest(self) -> tuple[dict[str, Any], float]:
        """The last report and its age in seconds (waits for the first run)."""
        await self._ran.wait()
        assert self.last_report is not None and self.last_run_ts is not None
        return self.last_report, max(0.0, self.clock() - self.last_run_ts)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="federation self-check")

    async def _loop(self) -> None:
        while not self._stop.is_set():
            await self.run_once()
            try:
                await asyncio.wait_for(self._stop.wait(), self.interval_s)
            except TimeoutError:
                pass

    async def close(self) -> None:
        self._stop.set()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        _CHECKS.discard(self)
        if self._cleanup is not None:
            await self._cleanup()


_CHECKS: "weakref.WeakSet[SelfCheck]" = weakref.WeakSet()


class _Collector:
    """``gateway_federation_tester_self_*`` for every self-check of this process."""

    def collect(self):
        ok = GaugeMetricFamily("gateway_federation_tester_self_ok",
                               "1 when the last federation self-check passed, 0 when it failed", labels=["server_name"])
        age = GaugeMetricFamily("gateway_federation_tester_self_age_seconds",
                                "Seconds since the last federation self-check finished", labels=["server_name"])
        last = GaugeMetricFamily("gateway_federation_tester_self_last_run_timestamp_seconds",
                                 "When the last federation self-check finished (Unix time)", labels=["server_name"])
        problems = GaugeMetricFamily("gateway_federation_tester_self_problems",
                                     "Problems the last federation self-check explained", labels=["server_name"])
        for check in list(_CHECKS):
            if check.last_run_ts is None:
                continue
            labels = [check.server_name]
            ok.add_metric(labels, 1.0 if check.last_ok else 0.0)
            age.add_metric(labels, max(0.0, check.clock() - check.last_run_ts))
            last.add_metric(labels, check.last_run_ts)
            problems.add_metric(labels, float(len((check.last_report or {}).get("Explanations") or [])))
        yield from (ok, age, last, problems)


REGISTRY.register(_Collector())
