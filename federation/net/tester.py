"""The federation tester's probe: resolve a server as federation would, then connect to
every address it resolves to and check TLS, keys and version.

The report's field names follow matrix-federation-tester's ``/api/report``; see
``federation.tester_checks`` for the checks themselves.
"""

from __future__ import annotations

import asyncio
import hashlib
import ssl
import time
from typing import Any, Callable

import aiohttp
from cryptography import x509
from cryptography.x509.oid import NameOID

from ..canonical_json import parse_json
from ..server_discovery import ServerDiscoveryError, split_server_name
from ..tester_checks import check_server_keys, federation_ok
from .ip_ranges import IPRangePolicy
from .resolver import ServerResolver

MAX_KEY_RESPONSE = 256 * 1024
TIMEOUT = aiohttp.ClientTimeout(total=15, connect=5)


def _cert_info(der: bytes | None) -> list[dict[str, Any]]:
    if not der:
        return []
    cert = x509.load_der_x509_certificate(der)

    def cn(name: x509.Name) -> str:
        attrs = name.get_attributes_for_oid(NameOID.COMMON_NAME)
        return str(attrs[0].value) if attrs else ""

    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        dns_names = san.get_values_for_type(x509.DNSName) + [str(ip) for ip in san.get_values_for_type(x509.IPAddress)]
    except x509.ExtensionNotFound:
        dns_names = []
    return [{
        "SubjectCommonName": cn(cert.subject),
        "IssuerCommonName": cn(cert.issuer),
        "SHA256Fingerprint": hashlib.sha256(der).hexdigest(),
        "DNSNames": dns_names,
        "NotAfter": cert.not_valid_after_utc.isoformat(),
    }]


MAX_CLOCK_SKEW_S = 60


def _clock_skew_seconds(date_header: str | None, now_ms: int) -> float | None:
    """How far the server's ``Date`` is ahead of our clock (None without a usable header)."""
    if not date_header:
        return None
    from email.utils import parsedate_to_datetime

    try:
        return parsedate_to_datetime(date_header).timestamp() - now_ms / 1000
    except (TypeError, ValueError):
        return None


def _parse_iso(text: str) -> float:
    import datetime

    return datetime.datetime.fromisoformat(text).timestamp()


class FederationTester:
    """Runs one test at a time per call; safe to share."""

    def __init__(
        self,
        *,
        resolver: ServerResolver,
        ssl_context: ssl.SSLContext | None = None,
        ip_policy: IPRangePolicy | None = None,
        clock_ms: Callable[[], int] = lambda: int(time.time() * 1000),
    ):
        self.resolver = resolver
        self.verify_context = ssl_context or ssl.create_default_context()
        self.insecure_context = ssl.create_default_context()
        self.insecure_context.check_hostname = False
        self.insecure_context.verify_mode = ssl.CERT_NONE
        self.ip_policy = ip_policy
        self.clock_ms = clock_ms

    async def run(self, server_name: str) -> dict[str, Any]:
        report: dict[str, Any] = {
            "WellKnownResult": {"m.server": "", "CacheExpiresAt": 0},
            "DNSResult": {"SRVSkipped": False, "SRVCName": "", "SRVRecords": None, "SRVError": None,
                          "Hosts": {}, "Addrs": []},
            "ConnectionReports": {},
            "ConnectionErrors": {},
            "Version": {},
            "FederationOK": False,
            "Explanations": [],
        }
        try:
            address = split_server_name(server_name)
        except ServerDiscoveryError as e:
            report["Error"] = f"{server_name!r} is not a valid server name: {e}"
            report["Explanations"].append(report["Error"])
            return report
        if address.ip is None and address.port is None:
            fetch = await self.resolver.fetch_well_known(address)
            if fetch.delegated is not None:
                report["WellKnownResult"] = {
                    "m.server": fetch.delegated.text,
                    "CacheExpiresAt": int(time.time() + fetch.lifetime),
                }
                if fetch.lifetime <= 300:
                    report["Explanations"].append(
                        "The .well-known answer may only be cached for 5 minutes or less (Cache-Control / "
                        "Expires): every server will fetch it again and again. Allow caching for hours."
                    )
            elif fetch.error:
                report["WellKnownResult"]["error"] = {"Error": fetch.error}
                if fetch.error != "HTTP 404":
                    report["Explanations"].append(
                        f"https://{address.host}/.well-known/matrix/server is not usable ({fetch.error}), so "
                        "other servers ignore it. Serve a JSON object like {\"m.server\": \"matrix.example.com:443\"} "
                        "with status 200, or remove it."
                    )
        try:
            resolved = await self.resolver.resolve(server_name)
        except (ServerDiscoveryError, OSError) as e:
            report["DNSResult"]["SRVError"] = {"Message": str(e)}
            report["Explanations"].append(
                f"Could not find where to connect: {e}. Check the .well-known file, the "
                "_matrix-fed._tcp SRV record and the A/AAAA records of the server name."
            )
            return report
        delegated = split_server_name(resolved.delegated_name)
        report["DNSResult"]["SRVSkipped"] = delegated.ip is not None or delegated.port is not None
        if not report["DNSResult"]["SRVSkipped"]:
            records = []
            for prefix in ("_matrix-fed._tcp", "_matrix._tcp"):
                try:
                    found = await self.resolver.dns.lookup_srv(f"{prefix}.{delegated.host}")
                except OSError:
                    found = []
                records += [{"Service": prefix, "Target": r.target, "Port": r.port, "Priority": r.priority,
                             "Weight": r.weight} for r in found]
            report["DNSResult"]["SRVRecords"] = records
        report["DNSResult"]["Addrs"] = [f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}" for ip, port in resolved.candidates]

        async def probe(candidate: tuple[str, int]) -> None:
            label = f"[{candidate[0]}]:{candidate[1]}" if ":" in candidate[0] else f"{candidate[0]}:{candidate[1]}"
            try:
                report["ConnectionReports"][label] = await self._probe_address(server_name, resolved, candidate)
            except Exception as e:  # noqa: BLE001 - every failure is part of the report
                report["ConnectionErrors"][label] = {"Message": f"{type(e).__name__}: {e}"}
                report["Explanations"].append(
                    f"Nothing usable answered at {label}: {e}. Is the server listening there with TLS, "
                    "and does the firewall let connections through?"
                )

        await asyncio.gather(*(probe(c) for c in resolved.candidates))
        for conn in report["ConnectionReports"].values():
            report["Explanations"] += [x for x in conn.pop("Explanations") if x not in report["Explanations"]]
        report["Version"] = await self._version(resolved)
        report["FederationOK"] = federation_ok(report["ConnectionReports"], report["ConnectionErrors"])
        return report

    async def _get(self, resolved, candidate, path: str, ctx: ssl.SSLContext):
        connector = aiohttp.TCPConnector(ssl=ctx, force_close=True)
        async with aiohttp.ClientSession(connector=connector, timeout=TIMEOUT) as session:
            async with session.get(
                resolved.url(path, candidate),
                headers={"Host": resolved.host_header},
                server_hostname=resolved.sni if ctx is self.verify_context else None,
                allow_redirects=False,
            ) as resp:
                body = await resp.content.read(MAX_KEY_RESPONSE + 1)
                return resp.status, body, resp.headers.get("Date")

    async def _tls_info(self, resolved, candidate) -> dict[str, Any]:
        """One bare TLS handshake, to see the certificate and cipher whatever their validity."""
        _, writer = await asyncio.wait_for(
            asyncio.open_connection(candidate[0], candidate[1], ssl=self.insecure_context,
                                    server_hostname=resolved.sni or ""),
            TIMEOUT.connect,
        )
        try:
            ssl_obj = writer.get_extra_info("ssl_object")
            cipher = ssl_obj.cipher()
            return {"cert": ssl_obj.getpeercert(binary_form=True), "version": ssl_obj.version() or "",
                    "cipher": cipher[0] if cipher else ""}
        finally:
            writer.close()

    async def _probe_address(self, server_name: str, resolved, candidate) -> dict[str, Any]:
        if self.ip_policy is not None and not self.ip_policy.is_allowed(candidate[0]):
            raise PermissionError(f"{candidate[0]} is in a blocked IP range")
        tls = await self._tls_info(resolved, candidate)
        valid_certs, cert_error = True, None
        try:
            status, body, date = await self._get(resolved, candidate, "/_matrix/key/v2/server", self.verify_context)
        except aiohttp.ClientConnectorCertificateError as e:
            valid_certs, cert_error = False, str(e.certificate_error)
            status, body, date = await self._get(resolved, candidate, "/_matrix/key/v2/server", self.insecure_context)
        if status != 200:
            raise ValueError(f"GET /_matrix/key/v2/server answered HTTP {status}")
        if len(body) > MAX_KEY_RESPONSE:
            raise ValueError("key response too large")
        try:
            keys = parse_json(body, allow_constants=True)
        except ValueError:
            keys = None
        checks, ed_keys, explanations = check_server_keys(
            keys, server_name, self.clock_ms(), valid_certificates=valid_certs
        )
        errors = [cert_error] if cert_error else []
        skew = _clock_skew_seconds(date, self.clock_ms())
        if skew is not None and abs(skew) > MAX_CLOCK_SKEW_S:
            explanations.append(
                f"The server's clock is {abs(int(skew))} seconds {'ahead' if skew > 0 else 'behind'}: other servers "
                "may refuse its requests and events. Keep its clock in sync (NTP)."
            )
        certs = _cert_info(tls["cert"])
        if certs and valid_certs:
            days_left = (_parse_iso(certs[0]["NotAfter"]) - time.time()) / 86400
            if days_left < 14:
                explanations.append(
                    f"The TLS certificate expires in {max(0, int(days_left))} days: renew it before federation breaks."
                )
        return {
            "Certificates": certs,
            "Cipher": {"Version": tls["version"], "CipherSuite": tls["cipher"]},
            "Checks": checks,
            "Errors": errors,
            "Ed25519VerifyKeys": ed_keys,
            "ClockSkewSeconds": skew,
            "Keys": keys,
            "Explanations": explanations,
        }

    async def _version(self, resolved) -> dict[str, Any]:
        for candidate in resolved.candidates:
            for ctx in (self.verify_context, self.insecure_context):
                try:
                    status, body, _ = await self._get(resolved, candidate, "/_matrix/federation/v1/version", ctx)
                    server = parse_json(body, allow_constants=True).get("server", {}) if status == 200 else {}
                    return {"name": server.get("name", ""), "version": server.get("version", "")}
                except aiohttp.ClientConnectorCertificateError:
                    continue
                except (aiohttp.ClientError, OSError, ValueError, AttributeError) as e:
                    return {"error": str(e)}
        return {"error": "no address answered"}
