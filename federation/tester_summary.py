"""The federation tester's diagnosis in plain words (pure): one line per area of a report,
for the top of the page and the command line.

Areas: other servers reaching the server (federation), the server reaching others back
(outbound), clients finding it (client discovery), signing in (login), support contacts.
``OK`` is True, False, or None when the area was not checked or is optional and absent.
"""

from __future__ import annotations

from typing import Any, Mapping


def _area(area: str, ok: bool | None, words: str) -> dict[str, Any]:
    return {"Area": area, "OK": ok, "Words": words}


def _federation(report: Mapping[str, Any], server_name: str) -> dict[str, Any]:
    if report.get("FederationOK"):
        count = len(report.get("ConnectionReports") or {})
        where = "its address answers" if count == 1 else f"all {count} of its addresses answer"
        return _area("Federation", True, f"Other servers can reach {server_name}: {where} with valid TLS "
                                         "and correctly signed keys.")
    explanations = report.get("Explanations") or []
    if not explanations:
        return _area("Federation", False, f"Other servers cannot use {server_name}.")
    more = f" ({len(explanations) - 1} more problem{'s' if len(explanations) > 2 else ''} below)" \
        if len(explanations) > 1 else ""
    return _area("Federation", False, f"Other servers cannot use {server_name}: {explanations[0]}{more}")


def _outbound(report: Mapping[str, Any]) -> dict[str, Any]:
    outbound = report.get("Outbound") or {}
    return _area("Reaching others", outbound.get("CanReachUs"), outbound.get("Explanation") or "Not checked.")


def _client(report: Mapping[str, Any], server_name: str) -> dict[str, Any]:
    client = report.get("ClientWellKnown")
    if not client:
        return _area("Client discovery", None, "Not checked.")
    versions = client.get("Versions") or {}
    if client.get("OK"):
        return _area("Client discovery", True, f"Clients find the homeserver of @user:{server_name} at "
                                               f"{client['BaseURL']} and can use it from a browser.")
    problems = client.get("Problems") or []
    if client.get("Result") in ("IGNORE", "unreachable") and versions.get("OK"):
        return _area("Client discovery", False, f"No usable .well-known/matrix/client; the server name itself "
                                                f"serves the client API, so clients that try it work. {problems[0]}")
    return _area("Client discovery", False, " ".join(problems) or "Clients cannot find the homeserver.")


def _login(report: Mapping[str, Any]) -> dict[str, Any]:
    login = report.get("Login")
    if not login or (login.get("Error") and not login.get("legacy") and not login.get("oauth")):
        return _area("Sign-in", None if not login else False,
                     f"Could not see how to sign in ({login.get('Error')})." if login else "Not checked.")
    offered = []
    if login.get("legacy"):
        offered.append("the legacy login (" + ", ".join(login["legacy"]) + ")")
    if login.get("oauth"):
        offered.append("the OAuth 2.0 API")
    words = f"The server offers {' and '.join(offered) or 'no login'}. {login.get('ElementX', '')}".strip()
    return _area("Sign-in", bool(offered), words)


def _support(report: Mapping[str, Any]) -> dict[str, Any]:
    support = report.get("SupportWellKnown")
    if not support:
        return _area("Support contacts", None, "Not checked.")
    result = support.get("Result")
    if result == "ok":
        who = len(support.get("Contacts") or [])
        page = " and a support page" if support.get("SupportPage") else ""
        return _area("Support contacts", True, f"Publishes {who} contact{'s' if who != 1 else ''}{page}.")
    if result in ("absent", "unreachable"):
        return _area("Support contacts", None, "No .well-known/matrix/support (optional: it tells users whom "
                                               "to contact about this server).")
    return _area("Support contacts", False, ".well-known/matrix/support is not valid: "
                                            + "; ".join(support.get("Problems") or []) + ".")


def diagnose_report(report: Mapping[str, Any], server_name: str) -> list[dict[str, Any]]:
    """The ``Diagnosis`` of a report: ``[{"Area", "OK", "Words"}, ...]``, federation first."""
    if report.get("Error"):
        return [_area("Federation", False, report["Error"])]
    return [_federation(report, server_name), _outbound(report), _client(report, server_name), _login(report),
            _support(report)]
