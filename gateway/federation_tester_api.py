"""/_gateway/federation-tester/api: the federation tester as a JSON API.

``GET .../api/report?server_name=X`` returns the full report (matrix-federation-tester's
field names); ``GET .../api/federation-ok?server_name=X`` answers ``GOOD`` or ``BAD``.
Results are cached briefly and requests rate-limited; probes obey the server's outbound
IP range rules, exactly as federation does.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from aiohttp import web

from federation.server_discovery import ServerDiscoveryError
from federation.tester_outbound import not_applicable, outbound, outbound_verdict
from sso.pages import lazy_environment

from .appkeys import HS
from .config import RateLimit
from .http import MatrixError, json_response
from .server import HomeServer
from .services.ratelimit import RateLimiter
from .services.tester_self_check import build_tester

if TYPE_CHECKING:
    import jinja2

    from federation.net.tester import FederationTester

CACHE_SECONDS = 60.0
MAX_CACHE = 1000


class LazyTester:
    """The federation tester, built at the first test (its TLS contexts with the trust
    store, 0.6 MiB each, its resolver and modules): most servers never run one."""

    def __init__(self, hs: HomeServer):
        self._hs = hs
        self._tester: FederationTester | None = None

    def get(self) -> FederationTester:
        if self._tester is None:
            self._tester = build_tester(self._hs.config, self._hs.clock_ms)
        return self._tester

    async def close(self) -> None:
        if self._tester is not None:
            await self._tester.resolver.close()


TESTER = web.AppKey("federation_tester", LazyTester)
CACHE = web.AppKey("federation_tester_cache", dict)
LIMITER = web.AppKey("federation_tester_limiter", RateLimiter)
PAGES: web.AppKey[jinja2.Environment] = web.AppKey("federation_tester_pages")


async def _report(request: web.Request) -> dict[str, Any]:
    server_name = request.query.get("server_name", "").strip()
    if not server_name:
        raise MatrixError.missing_param("server_name is required")
    if len(server_name) > 255:
        raise MatrixError.invalid_param("server_name is too long")
    cache = request.app[CACHE]
    hit = cache.get(server_name.lower())
    now = time.monotonic()
    if hit is not None and now - hit[0] < CACHE_SECONDS:
        return hit[1]
    request.app[LIMITER].ratelimit(request.remote or "")
    report = await request.app[TESTER].get().run(server_name)
    if report["ConnectionReports"]:
        hs = request.app[HS]
        report["NotaryChecks"] = await notary_checks(hs, server_name, report)
        for notary, result in report["NotaryChecks"].items():
            if result["OK"] is False:
                report["FederationOK"] = False
                report["Explanations"].append(
                    f"The notary {notary} serves different keys for {server_name} than {server_name} serves itself: "
                    "if the server changed its key just now, wait; otherwise something is intercepting traffic."
                )
        # Outbound first: a target that fetches our keys for it has them for the next request.
        report["Outbound"] = await outbound_check(hs, server_name, report)
        report["SignedRequest"] = await signed_request_check(hs, server_name)
        if report["Outbound"]["CanReachUs"] is False:
            # It cannot check anyone's signature either: no server can send to it.
            report["FederationOK"] = False
            report["Explanations"].append(report["Outbound"]["Explanation"])
        elif not report["SignedRequest"]["OK"]:
            report["FederationOK"] = False
            report["Explanations"].append(
                f"{server_name} refused a request signed by {request.app[HS].server_name}: "
                f"{report['SignedRequest']['Error']}. Other servers will see the same when they talk to it; "
                "check that it can reach this server's keys (outbound network, DNS, firewall)."
            )
    else:
        report["Outbound"] = outbound(None, f"Not checked: no address of {server_name} answered.")
    from federation.tester_summary import diagnose_report  # with the tester, at the first test

    report["Diagnosis"] = diagnose_report(report, server_name)
    if len(cache) >= MAX_CACHE:
        cache.clear()
    cache[server_name.lower()] = (now, report)
    return report


async def notary_checks(hs: HomeServer, server_name: str, report: dict[str, Any]) -> dict[str, Any]:
    """For each configured ``trusted_key_servers`` entry: does it serve the same keys for
    ``server_name`` as the server does directly? (``OK`` None: the notary did not answer.)"""
    from federation.net.client import FederationRequestError

    direct: dict[str, str] = {}
    for conn in report["ConnectionReports"].values():
        direct.update(conn["Ed25519VerifyKeys"])
    results: dict[str, Any] = {}
    for notary in hs.config.federation.trusted_key_servers:
        query = {"server_keys": {server_name: {k: {"minimum_valid_until_ts": hs.clock_ms()} for k in direct}}}
        try:
            answer = await hs.federation_client.request(
                "POST", notary.server_name, "/_matrix/key/v2/query", content=query, signed=False
            )
        except FederationRequestError as e:
            results[notary.server_name] = {"OK": None, "Error": str(e)}
            continue
        served: dict[str, str] = {}
        for doc in answer.get("server_keys", []) if isinstance(answer, dict) else []:
            if isinstance(doc, dict) and doc.get("server_name") == server_name:
                for key_id, entry in (doc.get("verify_keys") or {}).items():
                    if isinstance(entry, dict):
                        served[key_id] = entry.get("key")
        same = bool(served) and all(served.get(k) == v for k, v in direct.items())
        results[notary.server_name] = {"OK": same, "NotaryKeys": served}
    return results


def _ips_of(labels) -> list[str]:
    """``1.2.3.4:8448`` / ``[::1]:8448`` -> the address."""
    return [label.rsplit(":", 1)[0].strip("[]") for label in labels]


async def _our_addresses(hs: HomeServer) -> list[str]:
    """Where other servers would connect to reach us (empty when our name does not resolve)."""
    try:
        resolved = await hs.federation_client.resolver.resolve(hs.server_name)
    except (ServerDiscoveryError, OSError, ValueError):
        return []
    return [ip for ip, _ in resolved.candidates]


async def outbound_check(hs: HomeServer, server_name: str, report: dict[str, Any]) -> dict[str, Any]:
    """Can ``server_name`` reach us back? A request signed with a key published for this run
    only (gateway/services/tester_keys.py): the fetch of that key proves it can."""
    from federation.net.client import FederationRequestError

    reason = not_applicable(hs.server_name, server_name, await _our_addresses(hs),
                            _ips_of(report["DNSResult"]["Addrs"]))
    if reason is not None:
        return outbound(None, reason)
    if hs.tester_keys.full():
        return outbound(None, "Not checked: too many tests are running at once; try again in a minute.")
    status: int | None = 200
    error: str | None = None
    with hs.tester_keys.run() as run:
        try:
            await hs.federation_client.request(
                "GET", server_name, "/_matrix/federation/v1/query/profile",
                query={"user_id": f"@federation-tester:{server_name}", "field": "displayname"},
                signing_key=run.key, timeout=20)
        except FederationRequestError as e:
            status, error = e.status, str(e)
    return outbound_verdict(hs.server_name, server_name, status, error, run.fetches)


async def signed_request_check(hs: HomeServer, server_name: str) -> dict[str, Any]:
    """Does ``server_name`` accept a request signed by us on an endpoint that needs
    authentication? (``/version`` needs none, so it would prove nothing.) Any answer but
    401/403 means our signature was accepted: a 404 for the made-up user is fine."""
    from federation.net.client import FederationRequestError

    try:
        await hs.federation_client.request(
            "GET", server_name, "/_matrix/federation/v1/query/profile",
            query={"user_id": f"@federation-tester:{server_name}", "field": "displayname"},
        )
        return {"OK": True, "Status": 200}
    except FederationRequestError as e:
        errcode = e.body.get("errcode") if isinstance(e.body, dict) else None
        ok = e.status is not None and e.status not in (401, 403)
        return {"OK": ok, "Status": e.status, "Error": None if ok else f"{errcode or 'error'}: {e}"}


async def get_report(request: web.Request) -> web.Response:
    return json_response(await _report(request))


CHECK_LABELS = (
    ("ValidCertificates", "TLS certificate valid for the server name"),
    ("MatchingServerName", "Key response names the right server"),
    ("FutureValidUntilTS", "Keys are valid (valid_until_ts in the future)"),
    ("HasEd25519Key", "Publishes an ed25519 key"),
    ("AllEd25519ChecksOK", "Key response correctly signed"),
)


async def get_page(request: web.Request) -> web.Response:
    """The tester's web page: a form and, for ``?server_name=``, the readable report."""
    server_name = request.query.get("server_name", "").strip()
    report, error = None, None
    if server_name:
        try:
            report = await _report(request)
        except MatrixError as e:
            error = e.error
    json_url = None
    if server_name:
        base = request.app[HS].config.public_baseurl.rstrip("/")
        json_url = f"{base}/_gateway/federation-tester/api/report?{urlencode({'server_name': server_name})}"
    html = request.app[PAGES].get_template("federation_tester.html").render(
        server_name=server_name, report=report, error=error, checks=CHECK_LABELS, json_url=json_url,
        self_check=_self_check_summary(request.app[HS]),
    )
    return web.Response(text=html, content_type="text/html")


def _self_check_summary(hs: HomeServer) -> dict[str, Any] | None:
    """The last scheduled test of our own name, for the page (None: not configured or not run yet)."""
    check = hs.tester_self_check
    if check is None or check.last_run_ts is None:
        return None
    return {"ServerName": check.server_name, "OK": check.last_ok, "Minutes": int((check.clock() - check.last_run_ts) // 60),
            "EveryMinutes": int(check.interval_s // 60), "Diagnosis": (check.last_report or {}).get("Diagnosis", [])}


async def get_self(request: web.Request) -> web.Response:
    """The last scheduled test of our own server name (``federation_tester.self_check_interval``)
    and its age; waits for the first one."""
    check = request.app[HS].tester_self_check
    if check is None:
        raise MatrixError.not_found("federation_tester.self_check_interval is not set")
    report, age = await check.latest()
    return json_response({"ServerName": check.server_name, "AgeSeconds": round(age, 1), "Report": report})


async def get_federation_ok(request: web.Request) -> web.Response:
    report = await _report(request)
    return web.Response(text="GOOD" if report["FederationOK"] else "BAD")


def build_app(hs: HomeServer) -> web.Application:
    app = web.Application()
    app[HS] = hs
    app[TESTER] = LazyTester(hs)
    app[CACHE] = {}
    app[PAGES] = lazy_environment(hs.config.custom_template_directory)
    app[LIMITER] = RateLimiter(RateLimit(per_second=0.5, burst_count=10))

    async def close_resolver(app: web.Application):
        yield
        await app[TESTER].close()

    app.cleanup_ctx.append(close_resolver)
    app.router.add_get("/", get_page)
    app.router.add_get("/api/report", get_report)
    app.router.add_get("/api/federation-ok", get_federation_ok)
    app.router.add_get("/api/self", get_self)
    return app
