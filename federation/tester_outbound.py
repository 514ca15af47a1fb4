"""The federation tester's "both directions" check, over what was observed (pure).

The tester sends the target a request signed with a key published on our key server for
that run only; the target can only verify it by fetching that key from us (directly or
through a notary). The report's ``Outbound`` says whether it could. Issue 22.
Spec: server-server API, "Request Authentication" and "Retrieving server keys".
"""

from __future__ import annotations

import ipaddress
from typing import Any, Iterable, Sequence


def _is_global(ip: str) -> bool:
    try:
        return ipaddress.ip_address(ip.strip("[]")).is_global
    except ValueError:
        return False


def outbound(can_reach_us: bool | None, explanation: str, fetches: Sequence[dict[str, Any]] = ()) -> dict[str, Any]:
    """The report's ``Outbound`` field."""
    return {"CanReachUs": can_reach_us, "Explanation": explanation, "KeyFetches": list(fetches)}


def not_applicable(us: str, target: str, our_ips: Iterable[str], target_ips: Iterable[str]) -> str | None:
    """Why the check cannot say anything (None: it can).

    A target on the public internet cannot reach a tester that has no public address; a
    target on the same private network (or loopback) can, so the check runs there.
    """
    if us.lower() == target.lower():
        return f"Not checked: {target} is the server running this tester."
    our_ips, target_ips = list(our_ips), list(target_ips)
    if not our_ips:
        return (f"Not checked: this tester's own server name ({us}) does not resolve to an address here, so "
                f"{target} could not reach it whatever its setup.")
    if any(_is_global(ip) for ip in target_ips) and not any(_is_global(ip) for ip in our_ips):
        return (f"Not checked: this tester ({us}) is not reachable from the internet (its addresses: "
                f"{', '.join(our_ips)}), so {target} could not reach it back whatever its setup. Run the tester "
                "on a publicly reachable server to check this.")
    return None


def _sources(fetches: Sequence[dict[str, Any]]) -> str:
    return ", ".join(sorted({f.get("From") or "?" for f in fetches}))


def outbound_verdict(us: str, target: str, status: int | None, error: str | None,
                     fetches: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """``status``: the target's HTTP answer to the request signed with the run's key
    (None: no answer); ``fetches``: the fetches of our keys seen while it was handled."""
    if status is None:
        return outbound(None, f"Not checked: {target} did not answer the test request ({error}).", fetches)
    refused = status in (401, 403)
    if fetches and not refused:
        return outbound(True, f"{target} can reach other servers: to check our request it fetched this run's "
                              f"signing key from {us} (the fetch came from {_sources(fetches)}).", fetches)
    if fetches:
        return outbound(True, f"{target} reached {us} (a fetch of our keys came from {_sources(fetches)}) but "
                              f"still refused the request (HTTP {status}): {error}", fetches)
    if refused:
        return outbound(False, (
            f"{target} can receive but not send: it refused a request signed with a key it could only get from "
            f"{us} (HTTP {status}), and never fetched it. Its outbound federation does not work: check its "
            "firewall for outgoing connections (port 8448 and 443), its DNS resolver, an HTTP proxy, and "
            "settings that block addresses or servers (ip_range_blacklist, federation_domain_whitelist)."), fetches)
    return outbound(None, f"{target} accepted a request signed with a key it never fetched (HTTP {status}): "
                          "it does not seem to check signatures, so this says nothing about its outbound "
                          "federation.", fetches)
