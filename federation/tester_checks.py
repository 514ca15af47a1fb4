"""The checks of a federation test, over data already fetched (pure).

The report uses the field names of matrix-federation-tester's ``/api/report`` so that
existing tooling can read it; each failed check also gets a plain-language explanation
and a fix in ``Explanations`` (our own addition).
Spec: server-server API, "Retrieving server keys" and "Resolving server names".
"""

from __future__ import annotations

from typing import Any, Mapping

import nacl.exceptions
import nacl.signing

from .canonical_json import decode_base64, encode_canonical_json


def check_server_keys(
    keys: Any, server_name: str, now_ms: int, *, valid_certificates: bool, explain_certificates: bool = True
) -> tuple[dict[str, Any], dict[str, str], list[str]]:
    """Check a ``GET /_matrix/key/v2/server`` answer.

    Returns ``(Checks, Ed25519VerifyKeys, explanations)``; ``explain_certificates``: False
    when the TLS diagnosis already explains the certificate.
    """
    explanations: list[str] = []
    if not isinstance(keys, dict):
        keys = {}
        explanations.append("The key server did not answer with a JSON object.")
    matching = keys.get("server_name") == server_name
    if not matching:
        explanations.append(
            f"The key response is for {keys.get('server_name')!r}, not {server_name!r}: the server's "
            "server_name setting must be exactly the name other servers use to reach it."
        )
    valid_until = keys.get("valid_until_ts")
    future = isinstance(valid_until, int) and not isinstance(valid_until, bool) and valid_until > now_ms
    if not future:
        explanations.append(
            "The key's valid_until_ts is missing or in the past: other servers will refuse "
            "events signed with it. Check the server's clock and its key refresh interval."
        )
    verify_keys = keys.get("verify_keys") if isinstance(keys.get("verify_keys"), dict) else {}
    ed_keys: dict[str, str] = {}
    ed_checks: dict[str, dict[str, bool]] = {}
    signatures = keys.get("signatures", {}).get(server_name, {}) if isinstance(keys.get("signatures"), dict) else {}
    unsigned = {k: v for k, v in keys.items() if k not in ("signatures", "unsigned")}
    message = encode_canonical_json(unsigned) if keys else b""
    for key_id, entry in verify_keys.items():
        if not key_id.startswith("ed25519:"):
            continue
        raw = entry.get("key") if isinstance(entry, dict) else None
        ed_keys[key_id] = raw if isinstance(raw, str) else ""
        valid_key, matching_sig = False, False
        try:
            vk = nacl.signing.VerifyKey(decode_base64(raw))
            valid_key = True
            sig = signatures.get(key_id) if isinstance(signatures, dict) else None
            if isinstance(sig, str):
                vk.verify(message, decode_base64(sig))
                matching_sig = True
        except (ValueError, TypeError, nacl.exceptions.CryptoError):
            pass
        ed_checks[key_id] = {"ValidEd25519": valid_key, "MatchingSignature": matching_sig}
        if not valid_key:
            explanations.append(f"{key_id} is not a valid ed25519 public key.")
        elif not matching_sig:
            explanations.append(
                f"The response is not correctly signed by {key_id}: the server's signing key file "
                "does not match the key it publishes, or a proxy altered the response."
            )
    has_ed = bool(ed_keys)
    if not has_ed:
        explanations.append("The server publishes no ed25519 key in verify_keys.")
    all_ed = has_ed and all(c["ValidEd25519"] and c["MatchingSignature"] for c in ed_checks.values())
    if not valid_certificates and explain_certificates:
        explanations.append(
            "The TLS certificate is not valid for this server name (or not trusted): use a "
            "certificate from a public CA that covers the name other servers connect to."
        )
    checks = {
        "AllChecksOK": matching and future and has_ed and all_ed and valid_certificates,
        "MatchingServerName": matching,
        "FutureValidUntilTS": future,
        "HasEd25519Key": has_ed,
        "AllEd25519ChecksOK": all_ed,
        "Ed25519Checks": ed_checks,
        "ValidCertificates": valid_certificates,
    }
    return checks, ed_keys, explanations


def federation_ok(connection_reports: Mapping[str, Any], connection_errors: Mapping[str, Any]) -> bool:
    """OK when at least one address answered and every address passed every check."""
    return bool(connection_reports) and not connection_errors and all(
        r["Checks"]["AllChecksOK"] for r in connection_reports.values()
    )


def _well_known_key(entry: Mapping[str, Any]) -> tuple[str, str]:
    """What one answer amounts to, for comparing addresses: a delegation, or a kind of failure."""
    if entry.get("m.server"):
        return ("delegates", entry["m.server"])
    code = entry.get("Code")
    if code is None:  # the report's WellKnownResult
        error = (entry.get("error") or {}).get("Error", "")
        code = "not_found" if error == "HTTP 404" else "timeout" if error.startswith("timed out") else "error"
    return (code, "") if code in ("not_found", "timeout") else ("error", "")


def _describe_well_known(entry: Mapping[str, Any]) -> str:
    if entry.get("m.server"):
        return f"delegate to {entry['m.server']}"
    if entry.get("Code") == "not_found":
        return "have no .well-known (404)"
    return f"fail ({entry.get('Error') or entry.get('Code')})"


def compare_well_known(host: str, main: Mapping[str, Any], per_address: dict[str, dict[str, Any]]) -> list[str]:
    """Mark each address's ``.well-known/matrix/server`` answer with ``Agrees`` (the same as
    the answer federation used, ``WellKnownResult``) and explain disagreements.

    Each server that resolves ``host`` picks one of its addresses, so addresses that answer
    differently make federation work for some servers and not others.
    """
    expected = _well_known_key(main)
    groups: dict[tuple[str, str], list[str]] = {}
    for address, entry in per_address.items():
        if entry.get("Code") == "blocked":
            entry["Agrees"] = None
            continue
        key = _well_known_key(entry)
        entry["Agrees"] = key == expected
        groups.setdefault(key, []).append(address)
    if len(groups) <= 1:
        return []
    parts = []
    for key, addresses in groups.items():
        parts.append(f"{', '.join(addresses)} {_describe_well_known(per_address[addresses[0]])}")
    return [f"The addresses of {host} answer /.well-known/matrix/server differently: {'; '.join(parts)}. "
            "Every other server picks one address, so some of them get another answer (or none). Serve the "
            "same file from every address, or remove the addresses that should not be there from DNS."]


def explain_well_known_timeout(host: str, error: str, addresses_found: bool) -> str:
    """A ``.well-known`` fetch that timed out, while SRV / A records work or not."""
    fallback = ("which work here, so federation works but every new server waits that long first"
                if addresses_found else "which do not give a usable address either")
    return (f"https://{host}/.well-known/matrix/server {error}: other servers wait that long on every "
            f"lookup and then fall back to the SRV and A/AAAA records, {fallback}. Make the web server for "
            f"{host} answer on port 443 (even a 404 is fine), or stop the firewall from dropping the packets.")
