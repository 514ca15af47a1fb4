"""The federation tester's probe: resolve a server as federation would, then connect to
every address it resolves to and check TLS, keys and version; fetch ``.well-known`` from
every address of the server name.

The report's field names follow matrix-federation-tester's ``/api/report``, plus our own
(``WellKnownPerAddress``, ``TLSDiagnosis``, ``Explanations``...; docs/reverse-proxy.md
lists them). The checks themselves are pure: ``federation.tester_checks`` and
``federation.tester_tls``. Every connection goes through the IP range policy.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from typing import Any, Callable

import aiohttp
from yarl import URL

from ..canonical_json import parse_json
from ..server_discovery import (
    WELL_KNOWN_MAX_BODY_BYTES,
    WELL_KNOWN_PATH,
    InvalidWellKnown,
    ServerAddress,
    ServerDiscoveryError,
    cache_lifetime,
    parse_well_known,
    split_server_name,
)
from ..tester_checks import check_server_keys, compare_well_known, explain_well_known_timeout, federation_ok
from ..tester_summary import diagnose_report
from ..tester_tls import diagnose_tls
from .ip_ranges import IPRangePolicy
from .resolver import DnsLookupError, ServerResolver, WellKnownFetch, create_connector
from .tester_client import ClientSideProbe
from .tester_tls import TesterTimeouts, TLSProber, address_label, insecure_context

MAX_KEY_RESPONSE = 256 * 1024
#: At most this many addresses are probed (per name for .well-known, in all for federation).
MAX_ADDRESSES = 16
MAX_CLOCK_SKEW_S = 60
_REDIRECTS = frozenset({301, 302, 303, 307, 308})

__all__ = ["FederationTester", "TesterTimeouts", "empty_report"]


def _clock_skew_seconds(date_header: str | None, now_ms: int) -> float | None:
    """How far the server's ``Date`` is ahead of our clock (None without a usable header)."""
    if not date_header:
        return None
    from email.utils import parsedate_to_datetime

    try:
        return parsedate_to_datetime(date_header).timestamp() - now_ms / 1000
    except (TypeError, ValueError):
        return None


def _report_certificate(cert: dict[str, Any]) -> dict[str, Any]:
    """matrix-federation-tester's certificate fields."""
    return {k: cert[k] for k in ("SubjectCommonName", "IssuerCommonName", "SHA256Fingerprint", "DNSNames",
                                 "NotAfter")}


def empty_report() -> dict[str, Any]:
    """Every field a report has, before anything was tested."""
    return {
        "WellKnownResult": {"m.server": "", "CacheExpiresAt": 0},
        "WellKnownPerAddress": {},
        "DNSResult": {"SRVSkipped": False, "SRVCName": "", "SRVRecords": None, "SRVError": None,
                      "Hosts": {}, "Addrs": []},
        "ConnectionReports": {},
        "ConnectionErrors": {},
        "TLSDiagnosis": {},
        "Version": {},
        "FederationOK": False,
        "Explanations": [],
        "Diagnosis": [],
        "ClientWellKnown": None,
        "SupportWellKnown": None,
        "Login": None,
        "Outbound": {"CanReachUs": None, "Explanation": (
            "Not checked: only a running Gateway can check that the server reaches it back (it publishes a "
            "key for the test on its key server)."), "KeyFetches": []},
    }


def _add(report: dict[str, Any], texts: list[str]) -> None:
    report["Explanations"] += [t for t in texts if t not in report["Explanations"]]


class FederationTester:
    """Runs one test per call; safe to share.

    ``timeouts``: seconds per step (connect, TLS handshake, one HTTP request); the
    ``.well-known`` fetch that federation would make uses the resolver's own timeout.
    """

    def __init__(
        self,
        *,
        resolver: ServerResolver,
        ssl_context: ssl.SSLContext | None = None,
        ip_policy: IPRangePolicy | None = None,
        clock_ms: Callable[[], int] = lambda: int(time.time() * 1000),
        timeouts: TesterTimeouts = TesterTimeouts(),
    ):
        self.resolver = resolver
        self.verify_context = ssl_context or ssl.create_default_context()
        self.insecure_context = insecure_context()
        self.ip_policy = ip_policy
        self.clock_ms = clock_ms
        self.timeouts = timeouts
        self.tls = TLSProber(verify_context=self.verify_context, ip_policy=ip_policy, timeouts=timeouts,
                             insecure=self.insecure_context)
        self.client_side = ClientSideProbe(well_known_port=resolver.well_known_port, timeout=timeouts.request)

    def _session(self) -> aiohttp.ClientSession:
        """A session for one run: the IP policy on every connection, our trust store."""
        connector = create_connector(policy=self.ip_policy, dns_resolver=self.resolver.dns,
                                     ssl_context=self.verify_context, force_close=True)
        return aiohttp.ClientSession(
            connector=connector, cookie_jar=aiohttp.DummyCookieJar(), trust_env=False,
            timeout=aiohttp.ClientTimeout(total=self.timeouts.request, connect=self.timeouts.connect),
            headers={"User-Agent": "Gateway federation tester"},
        )

    async def run(self, server_name: str) -> dict[str, Any]:
        report = empty_report()
        try:
            address = split_server_name(server_name)
        except ServerDiscoveryError as e:
            report["Error"] = f"{server_name!r} is not a valid server name: {e}"
            report["Explanations"].append(report["Error"])
            report["Diagnosis"] = diagnose_report(report, server_name)
            return report
        async with self._session() as session:
            _, client = await asyncio.gather(self._federation(report, server_name, address, session),
                                             self.client_side.run(address, session))
        report.update(client)
        report["Diagnosis"] = diagnose_report(report, server_name)
        return report

    async def _federation(self, report: dict[str, Any], server_name: str, address: ServerAddress,
                          session: aiohttp.ClientSession) -> None:
        fetch: WellKnownFetch | None = None
        if address.ip is None and address.port is None:
            fetch, per_address = await asyncio.gather(
                self.resolver.fetch_well_known(address), self._well_known_per_address(address, session))
            report["WellKnownPerAddress"] = per_address
            self._well_known_result(report, address, fetch)
            _add(report, compare_well_known(address.host, report["WellKnownResult"], per_address))
        try:
            resolved = await self.resolver.resolve(server_name, well_known=fetch)
        except (ServerDiscoveryError, OSError) as e:
            report["DNSResult"]["SRVError"] = {"Message": str(e)}
            if fetch is not None and fetch.error and fetch.error.startswith("timed out"):
                _add(report, [explain_well_known_timeout(address.host, fetch.error, addresses_found=False)])
            _add(report, [f"Could not find where to connect: {e}. Check the .well-known file, the "
                          "_matrix-fed._tcp SRV record and the A/AAAA records of the server name."])
            return
        if fetch is not None and fetch.error and fetch.error.startswith("timed out"):
            _add(report, [explain_well_known_timeout(address.host, fetch.error, addresses_found=True)])
        await self._dns(report, resolved)
        candidates = list(resolved.candidates)
        if len(candidates) > MAX_ADDRESSES:
            _add(report, [f"{server_name} resolves to {len(candidates)} addresses; only the first {MAX_ADDRESSES} "
                          "were tested."])
            candidates = candidates[:MAX_ADDRESSES]
        report["DNSResult"]["Addrs"] = [address_label(ip, port) for ip, port in candidates]
        reports = await asyncio.gather(*(self._probe_address(server_name, resolved, c, session) for c in candidates))
        for (label, diagnosis, conn, error) in reports:
            report["TLSDiagnosis"][label] = diagnosis
            _add(report, [f"{label}: {p['Words']} {p['Fix']}" for p in diagnosis["Problems"]])
            if conn is not None:
                report["ConnectionReports"][label] = conn
                _add(report, conn.pop("Explanations"))
            else:
                report["ConnectionErrors"][label] = error
                if error["Code"] != diagnosis["Code"]:
                    _add(report, [f"{label}: {error['Message']} {error.get('Fix', '')}".strip()])
        reachable = [c for c, (label, _, conn, _) in zip(candidates, reports) if conn is not None]
        report["Version"] = await self._version(resolved, reachable)
        report["FederationOK"] = federation_ok(report["ConnectionReports"], report["ConnectionErrors"])

    def _well_known_result(self, report: dict[str, Any], address: ServerAddress, fetch: WellKnownFetch) -> None:
        if fetch.delegated is not None:
            report["WellKnownResult"] = {
                "m.server": fetch.delegated.text,
                "CacheExpiresAt": int(time.time() + fetch.lifetime),
            }
            if fetch.lifetime <= 300:
                _add(report, ["The .well-known answer may only be cached for 5 minutes or less (Cache-Control / "
                              "Expires): every server will fetch it again and again. Allow caching for hours."])
        elif fetch.error:
            report["WellKnownResult"]["error"] = {"Error": fetch.error}
            if fetch.error != "HTTP 404" and not fetch.error.startswith("timed out"):
                _add(report, [
                    f"https://{address.host}/.well-known/matrix/server is not usable ({fetch.error}), so other "
                    "servers ignore it. Serve a JSON object like {\"m.server\": \"matrix.example.com:443\"} "
                    "with status 200, or remove it."])

    # -- every address of the server name: .well-known ---------------------------------

    async def _well_known_per_address(self, address: ServerAddress,
                                      session: aiohttp.ClientSession) -> dict[str, dict[str, Any]]:
        try:
            ips = await self.resolver.dns.lookup_addresses(address.host)
        except OSError:
            return {}  # no address at all: the DNS result says so
        port = self.resolver.well_known_port
        ips = ips[:MAX_ADDRESSES]
        results = await asyncio.gather(*(self._well_known_at(address, ip, port, session) for ip in ips))
        return {address_label(ip, port): result for ip, result in zip(ips, results)}

    async def _well_known_at(self, address: ServerAddress, ip: str, port: int,
                             session: aiohttp.ClientSession) -> dict[str, Any]:
        """``/.well-known/matrix/server`` from one address (redirects followed as federation does)."""
        entry: dict[str, Any] = {"m.server": "", "Code": "ok", "Status": None, "Error": None, "Seconds": 0.0}
        if self.ip_policy is not None and not self.ip_policy.is_allowed(ip):
            return {**entry, "Code": "blocked", "Error": f"{ip} is in a blocked IP range"}
        host = f"[{ip}]" if ":" in ip else ip
        host_header = address.host if port == 443 else f"{address.host}:{port}"
        start = time.monotonic()

        def done(**fields: Any) -> dict[str, Any]:
            return {**entry, **fields, "Seconds": round(time.monotonic() - start, 3)}

        try:
            async with asyncio.timeout(self.timeouts.request):
                async with session.get(f"https://{host}:{port}{WELL_KNOWN_PATH}", headers={"Host": host_header},
                                       server_hostname=address.host, allow_redirects=False) as resp:
                    status = resp.status
                    location = resp.headers.get("Location")
                    body = await resp.content.read(WELL_KNOWN_MAX_BODY_BYTES + 1) if status == 200 else b""
                    headers = resp.headers
        except aiohttp.ConnectionTimeoutError:
            return done(Code="timeout", Error=f"connecting (TCP and TLS) timed out after {self.timeouts.connect} s")
        except TimeoutError:
            return done(Code="timeout", Error=f"no answer: timed out after {self.timeouts.request} s")
        except aiohttp.ClientConnectorCertificateError as e:
            return done(Code="tls", Error=f"certificate: {e.certificate_error}")
        except aiohttp.ClientConnectorError as e:
            refused = isinstance(e.os_error, ConnectionRefusedError)
            return done(Code="refused" if refused else "error", Error=str(e.os_error or e))
        except (aiohttp.ClientError, OSError) as e:
            return done(Code="error", Error=f"{type(e).__name__}: {e}")
        if status in _REDIRECTS and location:
            base = URL.build(scheme="https", host=address.host, port=port, path=WELL_KNOWN_PATH)
            try:
                target = base.join(URL(location))
            except ValueError as e:
                return done(Code="invalid", Status=status, Error=f"bad redirect: {e}")
            if target.scheme != "https":
                return done(Code="invalid", Status=status, Error=f"redirect to non-https URL {target}")
            followed = await self.resolver.fetch_well_known_url(target)
            if followed.delegated is not None:
                return done(Status=status, **{"m.server": followed.delegated.text})
            code = "not_found" if followed.error == "HTTP 404" else "invalid"
            return done(Code=code, Status=status, Error=f"after a redirect to {target}: {followed.error}")
        if status != 200:
            return done(Code="not_found" if status == 404 else "http_error", Status=status, Error=f"HTTP {status}")
        if len(body) > WELL_KNOWN_MAX_BODY_BYTES:
            return done(Code="invalid", Status=status, Error=f"body over {WELL_KNOWN_MAX_BODY_BYTES} bytes")
        try:
            delegated = parse_well_known(body)
        except InvalidWellKnown as e:
            return done(Code="invalid", Status=status, Error=str(e))
        if delegated is None:
            return done(Code="invalid", Status=status, Error="no m.server")
        return done(Status=status, CacheSeconds=cache_lifetime(headers, time.time()), **{"m.server": delegated.text})

    # -- DNS ------------------------------------------------------------------------------

    async def _dns(self, report: dict[str, Any], resolved) -> None:
        """SRV records, and the addresses of every host federation would use."""
        delegated = split_server_name(resolved.delegated_name)
        dns_result = report["DNSResult"]
        dns_result["SRVSkipped"] = delegated.ip is not None or delegated.port is not None
        if dns_result["SRVSkipped"]:
            if delegated.ip is None:
                dns_result["Hosts"][delegated.host] = await self._host(delegated.host)
            return
        records = []
        for prefix in ("_matrix-fed._tcp", "_matrix._tcp"):
            try:
                found = await self.resolver.dns.lookup_srv(f"{prefix}.{delegated.host}")
            except OSError:
                found = []
            records += [{"Service": prefix, "Target": r.target, "Port": r.port, "Priority": r.priority,
                         "Weight": r.weight} for r in found]
        dns_result["SRVRecords"] = records
        targets = list(dict.fromkeys(r["Target"] for r in records if r["Target"] != "."))[:MAX_ADDRESSES]
        for target in targets or [delegated.host]:
            dns_result["Hosts"][target] = host = await self._host(target)
            if host["Error"] and targets:
                _add(report, [f"The SRV target {target} has no usable address ({host['Error']['Message']}): "
                              "servers skip it. Give it A/AAAA records or remove the SRV record."])

    async def _host(self, host: str) -> dict[str, Any]:
        try:
            addrs = await self.resolver.dns.lookup_addresses(host)
        except (DnsLookupError, OSError) as e:
            return {"CName": "", "Addrs": [], "Error": {"Message": str(e)}}
        blocked = [a for a in addrs if self.ip_policy is not None and not self.ip_policy.is_allowed(a)]
        return {"CName": "", "Addrs": addrs, "Error": None, "Blocked": blocked}

    # -- one address: TLS, keys -----------------------------------------------------------

    async def _probe_address(self, server_name: str, resolved, candidate: tuple[str, int],
                             session: aiohttp.ClientSession):
        """``(label, TLSDiagnosis, ConnectionReport or None, ConnectionError or None)``."""
        ip, port = candidate
        label = address_label(ip, port)
        facts = await self.tls.probe(ip, port, expected_name=resolved.tls_server_name, sni=resolved.sni)
        diagnosis = diagnose_tls(facts, self.clock_ms() / 1000)
        diagnosis["Seconds"] = facts["Seconds"]
        diagnosis["SNI"] = facts["SNI"]
        diagnosis["Chain"] = [{k: c[k] for k in ("SubjectCommonName", "IssuerCommonName", "DNSNames", "NotBefore",
                                                  "NotAfter", "IsCA")} for c in facts["Chain"]]
        if facts["Failure"]:
            failure = facts["Failure"]
            diagnosis["Seconds"] = {**facts["Seconds"], failure["Stage"].capitalize(): failure["Seconds"]}
            return label, diagnosis, None, {"Message": diagnosis["Words"], "Fix": diagnosis["Fix"],
                                            "Code": diagnosis["Code"], "Seconds": failure["Seconds"]}
        valid_certs = facts["VerifyCode"] is None
        try:
            status, body, date, took = await self._get(resolved, candidate, "/_matrix/key/v2/server", valid_certs)
        except TimeoutError:
            return label, diagnosis, None, {
                "Message": f"GET /_matrix/key/v2/server got no answer within {self.timeouts.request} s.",
                "Fix": "Check that the reverse proxy passes /_matrix/key/ to the homeserver and that it runs.",
                "Code": "keys_timeout", "Seconds": self.timeouts.request}
        except (aiohttp.ClientError, OSError, ssl.SSLError) as e:
            return label, diagnosis, None, {"Message": f"GET /_matrix/key/v2/server failed: {e}.", "Fix": "",
                                            "Code": "keys_failed", "Seconds": None}
        if status != 200 or len(body) > MAX_KEY_RESPONSE:
            what = f"answered HTTP {status}" if status != 200 else "answered with over 256 KiB"
            return label, diagnosis, None, {
                "Message": f"GET /_matrix/key/v2/server {what}.",
                "Fix": "The reverse proxy must pass /_matrix/key/ (and /_matrix/federation/) to the homeserver.",
                "Code": "keys_http_error", "Seconds": took}
        try:
            keys = parse_json(body, allow_constants=True)
        except ValueError:
            keys = None
        checks, ed_keys, explanations = check_server_keys(
            keys, server_name, self.clock_ms(), valid_certificates=valid_certs, explain_certificates=False)
        skew = _clock_skew_seconds(date, self.clock_ms())
        if skew is not None and abs(skew) > MAX_CLOCK_SKEW_S:
            explanations.append(
                f"The server's clock is {abs(int(skew))} seconds {'ahead' if skew > 0 else 'behind'}: other servers "
                "may refuse its requests and events. Keep its clock in sync (NTP)."
            )
        leaf = facts["Chain"][0] if facts["Chain"] else None
        if leaf and valid_certs:
            days_left = (leaf["NotAfterTs"] - self.clock_ms() / 1000) / 86400
            if days_left < 14:
                explanations.append(
                    f"The TLS certificate expires in {max(0, int(days_left))} days: renew it before federation breaks."
                )
        return label, diagnosis, {
            "Certificates": [_report_certificate(leaf)] if leaf else [],
            "Cipher": {"Version": facts["Version"], "CipherSuite": facts["Cipher"]},
            "Checks": checks,
            "Errors": [] if valid_certs else [facts["VerifyMessage"]],
            "Ed25519VerifyKeys": ed_keys,
            "ClockSkewSeconds": skew,
            "Keys": keys,
            "Explanations": explanations,
        }, None

    async def _get(self, resolved, candidate: tuple[str, int], path: str, verify: bool):
        """GET ``path`` at one address: ``(status, body, Date header, seconds)``."""
        ctx = self.verify_context if verify else self.insecure_context
        start = time.monotonic()
        async with asyncio.timeout(self.timeouts.request):
            connector = aiohttp.TCPConnector(ssl=ctx, force_close=True)
            async with aiohttp.ClientSession(connector=connector) as session:
                async with session.get(
                    resolved.url(path, candidate),
                    headers={"Host": resolved.host_header},
                    server_hostname=resolved.sni if verify else None,
                    allow_redirects=False,
                ) as resp:
                    body = await resp.content.read(MAX_KEY_RESPONSE + 1)
                    return resp.status, body, resp.headers.get("Date"), round(time.monotonic() - start, 3)

    async def _version(self, resolved, reachable: list[tuple[str, int]]) -> dict[str, Any]:
        if not reachable:
            return {"error": "no address answered"}
        for candidate in reachable:
            for verify in (True, False):
                try:
                    status, body, _, _ = await self._get(resolved, candidate, "/_matrix/federation/v1/version", verify)
                    server = parse_json(body, allow_constants=True).get("server", {}) if status == 200 else {}
                    return {"name": server.get("name", ""), "version": server.get("version", "")}
                except aiohttp.ClientConnectorCertificateError:
                    continue
                except (aiohttp.ClientError, OSError, ValueError, AttributeError, TimeoutError) as e:
                    return {"error": str(e) or type(e).__name__}
        return {"error": "no address answered"}

