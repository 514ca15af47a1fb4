"""The federation tester's TLS diagnosis (pure): what is wrong with a server's TLS, as a
code, a sentence and a fix.

Spec: server-server API, "TLS" (https://spec.matrix.org/latest/server-server-api/#tls):
the certificate must be valid for the server name (or the delegated name of
``.well-known``, never an SRV target), signed by a trusted CA, and the SNI names it
(none for an IP address).

:func:`diagnose_tls` reads the facts a probe gathered (``federation/net/tester_tls.py``)
as plain data::

    Address          "ip:port" as shown in the report
    ExpectedName     the name (or IP address) the certificate must cover
    SNI              the SNI sent, or None (IP address)
    Failure          None, or {"Stage": "blocked" | "connect" | "handshake",
                     "Kind": "timeout" | "refused" | "tls_alert" | "tls_error" | "closed" | "other",
                     "Message": str, "Seconds": float, "Timeout": float}
    PlainHTTP        the first line a plain HTTP request got back, if the port speaks HTTP
    WithoutSNI       when compared: {"Handshake": bool, "Chain": [...]} of a handshake without SNI
    Chain            the certificates presented, leaf first: DNSNames, Subject, Issuer,
                     SubjectCommonName, IssuerCommonName, NotBefore/NotAfter (ISO text),
                     NotBeforeTs/NotAfterTs (Unix seconds), IsCA, SelfIssued
    VerifyCode       OpenSSL's X509_V_ERR_* code when verification failed, else None
    VerifyMessage    OpenSSL's words for it
    Version          the TLS version negotiated
    Seconds          {"Connect": s, "Handshake": s}

and returns ``{"Code", "Words", "Fix", "Problems": [{"Code", "Words", "Fix"}, ...]}``:
``Code`` is the first problem's (``ok`` when there is none).
"""

from __future__ import annotations

import ipaddress
from typing import Any, Mapping, Sequence

# OpenSSL's X509_V_ERR_* codes this module tells apart.
X509_UNABLE_TO_GET_ISSUER_CERT = 2
X509_CERT_NOT_YET_VALID = 9
X509_CERT_HAS_EXPIRED = 10
X509_DEPTH_ZERO_SELF_SIGNED_CERT = 18
X509_SELF_SIGNED_CERT_IN_CHAIN = 19
X509_UNABLE_TO_GET_ISSUER_CERT_LOCALLY = 20
X509_UNABLE_TO_VERIFY_LEAF_SIGNATURE = 21
X509_HOSTNAME_MISMATCH = 62
X509_IP_ADDRESS_MISMATCH = 64

#: Every code :func:`diagnose_tls` may give, with what it means (for the docs and the page).
CODES = {
    "ok": "TLS works and the certificate is valid for the name",
    "blocked": "the address is in a range the tester may not contact",
    "connect_timeout": "the TCP connection got no answer: packets are dropped (filtered port)",
    "connection_refused": "the host answered that nothing listens on the port",
    "connect_failed": "the TCP connection failed otherwise (no route, host unreachable)",
    "handshake_timeout": "the connection opened but the TLS handshake got no answer",
    "plain_http": "the port speaks plain HTTP where TLS is expected",
    "sni_rejected": "the handshake fails when the SNI names the server, works without SNI",
    "not_tls": "the TLS handshake failed (the port does not speak TLS, or no common protocol)",
    "expired": "the certificate has expired",
    "not_yet_valid": "the certificate is not valid yet",
    "sni_wrong_certificate": "the certificate sent for the SNI name does not cover it; the default one does",
    "name_mismatch": "the certificate does not cover the name other servers connect to",
    "self_signed": "the certificate is self-signed",
    "missing_intermediate": "the server sends no intermediate certificate linking it to a trusted root",
    "unknown_root": "the chain ends in a CA that is not trusted",
    "verify_failed": "certificate verification failed for another reason",
}


def _problem(code: str, words: str, fix: str) -> dict[str, str]:
    return {"Code": code, "Words": words, "Fix": fix}


def name_matches(pattern: str, name: str) -> bool:
    """Does one certificate name (``*.example.com`` allowed as the whole leftmost label)
    cover ``name``? (RFC 6125 section 6.4, as browsers and OpenSSL apply it.)"""
    pattern, name = pattern.lower().rstrip("."), name.lower().rstrip(".")
    if pattern == name:
        return True
    if not pattern.startswith("*.") or "*" in pattern[2:]:
        return False
    head, _, rest = name.partition(".")
    return bool(head) and rest == pattern[2:] and rest.count(".") >= 1


def certificate_covers(names: Sequence[str], expected: str) -> bool:
    """Is ``expected`` (a DNS name or an IP address) among a certificate's names?"""
    try:
        ip = ipaddress.ip_address(expected)
    except ValueError:
        ip = None
    for name in names:
        if ip is not None:
            try:
                if ipaddress.ip_address(name) == ip:
                    return True
            except ValueError:
                continue
        elif name_matches(name, expected):
            return True
    return False


def _names(cert: Mapping[str, Any]) -> str:
    names = list(cert.get("DNSNames") or [])
    if not names and cert.get("SubjectCommonName"):
        names = [f"CN={cert['SubjectCommonName']}"]
    return ", ".join(names) if names else "no name at all"


def _seconds(value: Any) -> str:
    return f"{float(value):.1f} s"


def _failure_problem(facts: Mapping[str, Any]) -> dict[str, str]:
    failure = facts["Failure"]
    address = facts.get("Address", "")
    port = address.rsplit(":", 1)[-1] if ":" in address else ""
    stage, kind, message = failure.get("Stage"), failure.get("Kind"), failure.get("Message", "")
    took = _seconds(failure.get("Seconds", 0))
    if stage == "blocked":
        return _problem("blocked", f"{address} is in a private, loopback or reserved range that this tester "
                        "may not contact (federation_ip_range_blacklist).",
                        "Other servers on the internet cannot reach a private address either: publish the "
                        "server's public addresses in DNS.")
    if stage == "connect":
        if kind == "timeout":
            return _problem("connect_timeout", f"The TCP connection to {address} got no answer within {took}: "
                            "packets to this port are dropped, not refused (a firewall filtering it, or an "
                            "address where no host answers).",
                            f"Open port {port} to the internet in the firewall (and any cloud security group "
                            "or router port forward), or fix the DNS record if the address is wrong.")
        if kind == "refused":
            return _problem("connection_refused", f"{address} refused the connection (after {took}): the host "
                            f"is up but nothing listens on port {port}.",
                            "Start the server or its reverse proxy on that port, or correct the port in the "
                            "SRV record or the .well-known delegation.")
        return _problem("connect_failed", f"Could not connect to {address}: {message}.",
                        "Check that the address is routable from the internet (no IPv6 without a route, "
                        "no stale DNS record).")
    # The handshake stage.
    if facts.get("PlainHTTP"):
        return _problem("plain_http", f"{address} answers in plain HTTP ({facts['PlainHTTP']!r}) where other "
                        "servers speak TLS.",
                        "Federation always uses HTTPS: serve TLS on this port (nginx: `listen "
                        f"{port} ssl`), or point the SRV record or .well-known at the port that does.")
    if kind == "timeout":
        return _problem("handshake_timeout", f"The TCP connection to {address} opened, but the TLS handshake got "
                        f"no answer within {took}: something accepts connections there and never answers "
                        "(a stuck proxy, or a port forward to a service that is down).",
                        "Check what listens on that port (ss -ltnp) and that the proxy's upstream is running.")
    without = facts.get("WithoutSNI") or {}
    if facts.get("SNI") and without.get("Handshake") and kind in ("tls_alert", "tls_error", "closed"):
        return _problem("sni_rejected", f"{address} refuses the TLS handshake when the SNI names "
                        f"{facts['SNI']} ({message}) but accepts one without SNI: its TLS setup has no site "
                        f"for {facts['SNI']}.",
                        f"Add {facts['SNI']} to the names of the TLS site (nginx `server_name`, the site "
                        "address in Caddy, the router rule in Traefik) with a certificate for it.")
    return _problem("not_tls", f"The TLS handshake with {address} failed: {message}.",
                    "Serve TLS 1.2 or 1.3 with a certificate on this port, directly or through the reverse proxy.")


def _chain_problems(facts: Mapping[str, Any], now_s: float) -> list[dict[str, str]]:
    chain: Sequence[Mapping[str, Any]] = facts.get("Chain") or []
    expected = facts.get("ExpectedName", "")
    sni = facts.get("SNI")
    code = facts.get("VerifyCode")
    message = facts.get("VerifyMessage") or ""
    problems: list[dict[str, str]] = []
    if not chain:
        if code is not None:
            problems.append(_problem("verify_failed", f"Certificate verification failed: {message}.",
                                     "Serve a certificate from a public CA for the name."))
        return problems
    leaf = chain[0]
    if leaf.get("NotAfterTs") is not None and now_s > leaf["NotAfterTs"]:
        problems.append(_problem("expired", f"The certificate for {_names(leaf)} expired on {leaf['NotAfter']}.",
                                 "Renew it, and check that automatic renewal runs and that the server or proxy "
                                 "is reloaded afterwards (it may still hold the old certificate)."))
    elif leaf.get("NotBeforeTs") is not None and now_s < leaf["NotBeforeTs"]:
        problems.append(_problem("not_yet_valid", f"The certificate for {_names(leaf)} is only valid from "
                                 f"{leaf['NotBefore']}.",
                                 "Check the clock of this machine and of the one that issued the certificate; "
                                 "reissue it if its dates are wrong."))
    elif code == X509_CERT_HAS_EXPIRED:
        stale = next((c for c in chain[1:] if c.get("NotAfterTs") is not None and now_s > c["NotAfterTs"]), None)
        what = f"the chain certificate {stale.get('SubjectCommonName')!r}" if stale else "a chain certificate"
        problems.append(_problem("expired", f"Verification says {what} has expired ({message}).",
                                 "Serve the CA's current intermediate certificate (renewing usually fetches it)."))
    if not certificate_covers(leaf.get("DNSNames") or [], expected):
        other = (facts.get("WithoutSNI") or {}).get("Chain") or []
        if sni and other and certificate_covers(other[0].get("DNSNames") or [], expected):
            problems.append(_problem(
                "sni_wrong_certificate",
                f"For the SNI name {sni} the server sends a certificate for {_names(leaf)}; without SNI it sends "
                f"one for {_names(other[0])}, which is right: the TLS site picked for {sni} has the wrong "
                "certificate.",
                f"Give the site for {sni} the certificate that covers {expected} (nginx: the server block whose "
                "server_name matches)."))
        else:
            how = "" if sni else " (no SNI is sent when the name is an IP address, so the default certificate counts)"
            problems.append(_problem(
                "name_mismatch", f"The certificate is for {_names(leaf)}, not for {expected}{how}.",
                f"Use a certificate that covers {expected}: the name other servers connect to is the server "
                "name, or the m.server name of .well-known; never the SRV target."))
    elif code in (X509_HOSTNAME_MISMATCH, X509_IP_ADDRESS_MISMATCH):
        problems.append(_problem("name_mismatch", f"Verification says the certificate does not cover {expected} "
                                 f"({message}); it names {_names(leaf)}.",
                                 f"Use a certificate that covers {expected}."))
    last = chain[-1]
    if code == X509_DEPTH_ZERO_SELF_SIGNED_CERT or (code is not None and len(chain) == 1 and last.get("SelfIssued")):
        problems.append(_problem("self_signed", "The certificate is self-signed.",
                                 "Other servers only trust certificates from public CAs: get one from Let's "
                                 "Encrypt (or another CA) for the name."))
    elif code == X509_SELF_SIGNED_CERT_IN_CHAIN:
        root = next((c for c in chain if c.get("SelfIssued")), last)
        problems.append(_problem("unknown_root", f"The chain ends in the root {root.get('SubjectCommonName')!r}, "
                                 "which is not a trusted CA.",
                                 "Use a certificate from a public CA; a private CA is only trusted by servers "
                                 "told to (federation_custom_ca_list)."))
    elif code in (X509_UNABLE_TO_GET_ISSUER_CERT_LOCALLY, X509_UNABLE_TO_VERIFY_LEAF_SIGNATURE,
                  X509_UNABLE_TO_GET_ISSUER_CERT):
        if not last.get("IsCA"):
            problems.append(_problem(
                "missing_intermediate",
                f"The server sends only its own certificate, issued by {last.get('IssuerCommonName')!r}, without "
                "the intermediate certificate that links it to a trusted root. Browsers often repair this by "
                "themselves; Matrix servers do not.",
                "Serve the full chain: with certbot use fullchain.pem (not cert.pem) for nginx's "
                f"ssl_certificate. If {last.get('IssuerCommonName')!r} is a private CA, use a public one instead."))
        else:
            problems.append(_problem(
                "unknown_root",
                f"The chain ends with {last.get('SubjectCommonName')!r}, issued by "
                f"{last.get('IssuerCommonName')!r}, which is not a trusted CA.",
                "Use a certificate from a public CA; a private CA is only trusted by servers told to "
                "(federation_custom_ca_list)."))
    if code is not None and not problems:
        problems.append(_problem("verify_failed", f"Certificate verification failed: {message}.",
                                 "Serve a certificate from a public CA, valid now, for the name, with its chain."))
    return problems


def diagnose_tls(facts: Mapping[str, Any], now_s: float) -> dict[str, Any]:
    """The diagnosis of one address's TLS (see the module docstring); ``now_s`` in Unix seconds."""
    if facts.get("Failure"):
        problems = [_failure_problem(facts)]
    else:
        problems = _chain_problems(facts, now_s)
    seen: set[str] = set()
    problems = [p for p in problems if not (p["Code"] in seen or seen.add(p["Code"]))]
    if problems:
        first = problems[0]
        return {**first, "Problems": problems}
    chain = facts.get("Chain") or [{}]
    leaf = chain[0]
    words = (f"TLS works ({facts.get('Version') or 'TLS'}): the certificate covers {facts.get('ExpectedName')}, "
             f"issued by {leaf.get('IssuerCommonName')!r}, valid until {leaf.get('NotAfter')}.")
    return {"Code": "ok", "Words": words, "Fix": "", "Problems": []}
