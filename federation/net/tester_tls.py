"""The federation tester's TLS probe: connect to one address, look at its TLS, gather the
facts that ``federation.tester_tls.diagnose_tls`` turns into words.

Each step has its own timeout and its duration is recorded, so that a port that drops
packets (the TCP connection times out) is told apart from one that refuses, and from one
that accepts but never answers the handshake. The certificate chain is read from a
handshake that does not verify (to see whatever the server sends), then a second
handshake verifies it with the tester's trust store (to get OpenSSL's verdict). The
IP range policy is checked before any connection.
"""

from __future__ import annotations

import asyncio
import hashlib
import ssl
import time
from dataclasses import dataclass
from typing import Any

from .ip_ranges import IPRangePolicy


@dataclass(frozen=True)
class TesterTimeouts:
    """Seconds allowed for each step of a probe."""

    connect: float = 5.0
    handshake: float = 5.0
    request: float = 10.0


def address_label(ip: str, port: int) -> str:
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def insecure_context() -> ssl.SSLContext:
    """A context that completes any handshake (to see the certificates whatever they are).
    It verifies nothing, so it loads no trust store (0.6 MiB a context)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def certificate_facts(der: bytes) -> dict[str, Any]:
    """One certificate as plain data: the report's fields plus what the diagnosis needs."""
    # cryptography here, not at module level: only the tester parses certificates, and its
    # x509 bindings cost every server process several MiB (docs/performance.md, "Memory").
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    cert = x509.load_der_x509_certificate(der)

    def cn(name: x509.Name) -> str:
        attrs = name.get_attributes_for_oid(NameOID.COMMON_NAME)
        return str(attrs[0].value) if attrs else ""

    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = san.get_values_for_type(x509.DNSName) + [str(ip) for ip in san.get_values_for_type(x509.IPAddress)]
    except x509.ExtensionNotFound:
        names = []
    try:
        is_ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        is_ca = False
    return {
        "SubjectCommonName": cn(cert.subject),
        "IssuerCommonName": cn(cert.issuer),
        "Subject": cert.subject.rfc4514_string(),
        "Issuer": cert.issuer.rfc4514_string(),
        "SHA256Fingerprint": hashlib.sha256(der).hexdigest(),
        "DNSNames": names,
        "NotBefore": cert.not_valid_before_utc.isoformat(),
        "NotAfter": cert.not_valid_after_utc.isoformat(),
        "NotBeforeTs": cert.not_valid_before_utc.timestamp(),
        "NotAfterTs": cert.not_valid_after_utc.timestamp(),
        "IsCA": bool(is_ca),
        "SelfIssued": cert.subject == cert.issuer,
    }


def _presented_chain(ssl_object: Any) -> list[bytes]:
    """The certificates the server sent, leaf first (Python >= 3.13 has this public; before,
    the same method lives on the private ``_sslobj``)."""
    getter = getattr(ssl_object, "get_unverified_chain", None)
    if getter is None:
        getter = getattr(getattr(ssl_object, "_sslobj", None), "get_unverified_chain", None)
    if getter is not None:
        chain = getter() or []
        return [c if isinstance(c, bytes) else c.public_bytes(ssl._ssl.ENCODING_DER) for c in chain]  # type: ignore[attr-defined]
    leaf = ssl_object.getpeercert(binary_form=True)
    return [leaf] if leaf else []


def _failure(stage: str, kind: str, message: str, seconds: float, timeout: float | None = None) -> dict[str, Any]:
    return {"Stage": stage, "Kind": kind, "Message": message, "Seconds": round(seconds, 3), "Timeout": timeout}


def _ssl_kind(e: BaseException) -> str:
    reason = (getattr(e, "reason", None) or "").upper()
    if isinstance(e, ssl.SSLError) and ("ALERT" in reason or reason.startswith(("TLSV1_", "TLSV13_"))):
        return "tls_alert"
    if isinstance(e, (ssl.SSLEOFError, ConnectionResetError, asyncio.IncompleteReadError, EOFError)):
        return "closed"
    return "tls_error"


class TLSProber:
    """Probes addresses with ``verify_context`` as the trust store, under ``ip_policy``."""

    def __init__(self, *, verify_context: ssl.SSLContext, ip_policy: IPRangePolicy | None,
                 timeouts: TesterTimeouts = TesterTimeouts(), insecure: ssl.SSLContext | None = None):
        self.verify_context = verify_context
        self.insecure_context = insecure or insecure_context()
        self.ip_policy = ip_policy
        self.timeouts = timeouts

    async def _connect(self, ip: str, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.wait_for(asyncio.open_connection(ip, port), self.timeouts.connect)

    async def _handshake(self, ip: str, port: int, ctx: ssl.SSLContext, server_hostname: str | None):
        """Connect and handshake; returns the writer (caller closes it)."""
        _, writer = await self._connect(ip, port)
        try:
            await asyncio.wait_for(writer.start_tls(ctx, server_hostname=server_hostname), self.timeouts.handshake)
        except BaseException:
            writer.transport.abort()
            raise
        return writer

    async def probe(self, ip: str, port: int, *, expected_name: str, sni: str | None) -> dict[str, Any]:
        """The facts for ``diagnose_tls`` (plus ``Cipher`` and ``LeafDER`` for the report)."""
        facts: dict[str, Any] = {"Address": address_label(ip, port), "ExpectedName": expected_name, "SNI": sni,
                                 "Failure": None, "PlainHTTP": None, "WithoutSNI": None, "Chain": [],
                                 "VerifyCode": None, "VerifyMessage": None, "Version": "", "Cipher": "",
                                 "Seconds": {}}
        if self.ip_policy is not None and not self.ip_policy.is_allowed(ip):
            facts["Failure"] = _failure("blocked", "blocked", f"{ip} is in a blocked IP range", 0)
            return facts
        start = time.monotonic()
        try:
            _, writer = await self._connect(ip, port)
        except (TimeoutError, asyncio.TimeoutError):
            facts["Failure"] = _failure("connect", "timeout", f"timed out after {self.timeouts.connect} s",
                                        time.monotonic() - start, self.timeouts.connect)
            return facts
        except ConnectionRefusedError as e:
            facts["Failure"] = _failure("connect", "refused", str(e), time.monotonic() - start)
            return facts
        except OSError as e:
            facts["Failure"] = _failure("connect", "other", str(e) or type(e).__name__, time.monotonic() - start)
            return facts
        connected = time.monotonic()
        facts["Seconds"]["Connect"] = round(connected - start, 3)
        try:
            await asyncio.wait_for(writer.start_tls(self.insecure_context, server_hostname=sni),
                                   self.timeouts.handshake)
        except (TimeoutError, asyncio.TimeoutError):
            writer.transport.abort()
            facts["Failure"] = _failure("handshake", "timeout", f"timed out after {self.timeouts.handshake} s",
                                        time.monotonic() - connected, self.timeouts.handshake)
            return facts
        except (ssl.SSLError, OSError, EOFError, asyncio.IncompleteReadError) as e:
            writer.transport.abort()
            facts["Failure"] = _failure("handshake", _ssl_kind(e), str(e) or type(e).__name__,
                                        time.monotonic() - connected)
            facts["PlainHTTP"] = await self._plain_http(ip, port, expected_name)
            if sni and not facts["PlainHTTP"]:
                facts["WithoutSNI"] = await self._without_sni(ip, port)
            return facts
        facts["Seconds"]["Handshake"] = round(time.monotonic() - connected, 3)
        ssl_object = writer.get_extra_info("ssl_object")
        try:
            facts["Version"] = ssl_object.version() or ""
            cipher = ssl_object.cipher()
            facts["Cipher"] = cipher[0] if cipher else ""
            chain = _presented_chain(ssl_object)
        finally:
            writer.close()
        facts["LeafDER"] = chain[0] if chain else None
        facts["Chain"] = [certificate_facts(der) for der in chain]
        await self._verify(ip, port, expected_name, facts)
        if facts["VerifyCode"] is not None and sni:
            facts["WithoutSNI"] = await self._without_sni(ip, port)
        return facts

    async def _verify(self, ip: str, port: int, expected_name: str, facts: dict[str, Any]) -> None:
        """Let OpenSSL verify the chain and the name (for an IP address Python checks the IP
        and sends no SNI, as the spec wants)."""
        try:
            writer = await self._handshake(ip, port, self.verify_context, expected_name)
            writer.close()
        except ssl.SSLCertVerificationError as e:
            facts["VerifyCode"], facts["VerifyMessage"] = e.verify_code, e.verify_message
        except (ssl.SSLError, OSError, EOFError, asyncio.TimeoutError, TimeoutError) as e:
            facts["VerifyCode"], facts["VerifyMessage"] = -1, f"verifying handshake failed: {e or type(e).__name__}"

    async def _without_sni(self, ip: str, port: int) -> dict[str, Any]:
        """A handshake without SNI, to compare (SNI problems)."""
        try:
            writer = await self._handshake(ip, port, self.insecure_context, None)
        except (ssl.SSLError, OSError, EOFError, asyncio.TimeoutError, TimeoutError):
            return {"Handshake": False, "Chain": []}
        try:
            chain = _presented_chain(writer.get_extra_info("ssl_object"))
        finally:
            writer.close()
        return {"Handshake": True, "Chain": [certificate_facts(der) for der in chain[:1]]}

    async def _plain_http(self, ip: str, port: int, host: str) -> str | None:
        """The status line a plain HTTP request gets, if the port speaks HTTP."""
        try:
            reader, writer = await self._connect(ip, port)
        except (OSError, asyncio.TimeoutError, TimeoutError):
            return None
        try:
            writer.write(f"GET /_matrix/key/v2/server HTTP/1.0\r\nHost: {host}\r\n\r\n".encode("ascii", "replace"))
            line = await asyncio.wait_for(reader.readline(), self.timeouts.handshake)
        except (OSError, asyncio.TimeoutError, TimeoutError, ValueError):
            return None
        finally:
            writer.transport.abort()
        text = line[:100].decode("latin-1").strip()
        return text if text.startswith("HTTP/") else None
