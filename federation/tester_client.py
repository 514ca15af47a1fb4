"""The federation tester's client-side checks (pure): what a client that signs in to
``@user:<server name>`` finds, over answers already fetched.

Spec, client-server API: "Server Discovery" and "Well-known URIs" (the
``.well-known/matrix/client`` flow: IGNORE, FAIL_PROMPT, FAIL_ERROR), "Web Browser
Clients" (CORS), "API Versions", "Server support discovery" (``.well-known/matrix/support``),
"Login" (``m.login.*`` flows) and the OAuth 2.0 API's ``auth_metadata``. MatrixRTC
transports (MSC4143) are read from ``.well-known/matrix/client`` when advertised.
"""

from __future__ import annotations

from typing import Any, Mapping
from urllib.parse import urlsplit

from .canonical_json import parse_json

#: The origin the probes send, as a web client served from elsewhere would.
PROBE_ORIGIN = "https://client.example"
#: The headers a browser client sends with its API requests (the login POST has both).
CLIENT_REQUEST_HEADERS = ("authorization", "content-type")
#: The keys of ``.well-known/matrix/client`` that advertise MatrixRTC transports (MSC4143).
RTC_FOCI_KEYS = ("org.matrix.msc4143.rtc_foci", "m.rtc_foci")
#: Element X needs simplified sliding sync (MSC4186) from the homeserver.
SIMPLIFIED_SLIDING_SYNC = "org.matrix.simplified_msc3575"


def _json_object(body: bytes | None) -> dict[str, Any] | None:
    if not body:
        return None
    try:
        value = parse_json(body, allow_constants=True)
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


def _http_url(value: Any) -> str | None:
    """``value`` if it is an http(s) URL with a host, else None."""
    if not isinstance(value, str):
        return None
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        return None
    return value if parts.scheme in ("http", "https") and parts.hostname else None


def check_client_well_known(status: int | None, body: bytes | None, error: str | None) -> dict[str, Any]:
    """The spec's discovery steps over one ``GET https://host/.well-known/matrix/client``.

    ``Result``: ``ok`` (a base URL to validate), ``IGNORE`` (404: no file, the client asks
    the user), ``FAIL_PROMPT`` (unusable file), ``FAIL_ERROR`` (a base URL that is not a
    URL), or ``unreachable`` (no HTTP answer at all).
    """
    result: dict[str, Any] = {"Result": "ok", "BaseURL": None, "IdentityServer": None, "RTCTransports": [],
                              "Problems": []}

    def fail(kind: str, problem: str) -> dict[str, Any]:
        result["Result"] = kind
        result["Problems"].append(problem)
        return result

    if status is None:
        return fail("unreachable", f"No answer ({error}). Clients that try it wait and then ask the user for "
                                   "the homeserver URL.")
    if status == 404:
        return fail("IGNORE", "There is no .well-known/matrix/client (404): clients cannot find the homeserver "
                              "from a user ID and ask people to type its URL. Serve {\"m.homeserver\": "
                              "{\"base_url\": \"https://matrix.example.com\"}}.")
    if status != 200:
        return fail("FAIL_PROMPT", f"It answers HTTP {status}, not 200: clients give up on it.")
    content = _json_object(body)
    if content is None:
        return fail("FAIL_PROMPT", "It is not a JSON object: clients give up on it.")
    homeserver = content.get("m.homeserver")
    base_url = homeserver.get("base_url") if isinstance(homeserver, dict) else None
    if base_url is None:
        return fail("FAIL_PROMPT", "It has no m.homeserver.base_url.")
    result["BaseURL"] = _http_url(base_url)
    if result["BaseURL"] is None:
        return fail("FAIL_ERROR", f"m.homeserver.base_url {base_url!r} is not an http(s) URL.")
    if "m.identity_server" in content:
        identity = content["m.identity_server"]
        result["IdentityServer"] = identity.get("base_url") if isinstance(identity, dict) else None
        if result["IdentityServer"] is None:
            return fail("FAIL_PROMPT", "m.identity_server is present without a base_url: clients give up.")
    for key in RTC_FOCI_KEYS:
        foci = content.get(key)
        if isinstance(foci, list):
            for focus in foci:
                if isinstance(focus, dict) and isinstance(focus.get("type"), str):
                    result["RTCTransports"].append({"Key": key, **focus})
                else:
                    result["Problems"].append(f"{key} has an entry that is not an object with a type: {focus!r}.")
        elif foci is not None:
            result["Problems"].append(f"{key} must be a list of transports.")
    for transport in result["RTCTransports"]:
        if transport["type"] == "livekit" and _http_url(transport.get("livekit_service_url")) is None:
            result["Problems"].append("A livekit transport needs livekit_service_url (an https URL of the "
                                      "MatrixRTC authorisation service).")
    return result


def check_cors(headers: Mapping[str, str], *, origin: str = PROBE_ORIGIN) -> dict[str, Any]:
    """Would a browser on ``origin`` see this answer? (``Access-Control-Allow-Origin``)"""
    allow = headers.get("Access-Control-Allow-Origin")
    ok = allow in ("*", origin)
    return {"OK": ok, "AllowOrigin": allow,
            "Problem": None if ok else ("no Access-Control-Allow-Origin header" if allow is None
                                        else f"Access-Control-Allow-Origin is {allow!r}")}


def _listed(value: str | None) -> set[str]:
    return {v.strip().lower() for v in (value or "").split(",") if v.strip()}


def check_preflight(status: int | None, headers: Mapping[str, str], *, origin: str = PROBE_ORIGIN,
                    method: str = "POST", request_headers: tuple[str, ...] = CLIENT_REQUEST_HEADERS) -> dict[str, Any]:
    """Would a browser's preflight (``OPTIONS``) let a client send ``method`` with
    ``request_headers``? ``*`` does not cover ``Authorization`` (Fetch standard)."""
    missing: list[str] = []
    if status is None or not 200 <= status < 300:
        missing.append(f"a 2xx answer to OPTIONS (got {status})")
    if headers.get("Access-Control-Allow-Origin") not in ("*", origin):
        missing.append("Access-Control-Allow-Origin")
    methods = _listed(headers.get("Access-Control-Allow-Methods"))
    if method.lower() not in methods and "*" not in methods:
        missing.append(f"{method} in Access-Control-Allow-Methods")
    allowed = _listed(headers.get("Access-Control-Allow-Headers"))
    for name in request_headers:
        if name not in allowed and not (name != "authorization" and "*" in allowed):
            missing.append(f"{name.title()} in Access-Control-Allow-Headers")
    return {"OK": not missing, "Status": status, "Missing": missing,
            "Headers": {k: headers[k] for k in ("Access-Control-Allow-Origin", "Access-Control-Allow-Methods",
                                                 "Access-Control-Allow-Headers") if k in headers}}


def check_versions(status: int | None, body: bytes | None, error: str | None) -> dict[str, Any]:
    """``GET /_matrix/client/versions``: the spec's validation of a discovered base URL."""
    if status is None:
        return {"OK": False, "Versions": [], "SimplifiedSlidingSync": False, "Problem": f"no answer ({error})"}
    content = _json_object(body) if status == 200 else None
    versions = content.get("versions") if content else None
    if status != 200 or not isinstance(versions, list) or not all(isinstance(v, str) for v in versions):
        what = f"HTTP {status}" if status != 200 else "no list of versions"
        return {"OK": False, "Versions": [], "SimplifiedSlidingSync": False,
                "Problem": f"it answers {what}: this is not a Matrix client API"}
    features = content.get("unstable_features")
    sliding = isinstance(features, dict) and features.get(SIMPLIFIED_SLIDING_SYNC) is True
    return {"OK": True, "Versions": versions, "SimplifiedSlidingSync": sliding, "Problem": None}


def check_support(status: int | None, body: bytes | None, error: str | None) -> dict[str, Any]:
    """``.well-known/matrix/support``: optional; when served it must give ``contacts``
    (each with ``role`` and a ``matrix_id`` or ``email_address``) or a ``support_page``."""
    result: dict[str, Any] = {"Result": "ok", "Status": status, "Contacts": [], "SupportPage": None, "Problems": []}
    if status is None:
        return {**result, "Result": "unreachable", "Problems": [f"no answer ({error})"]}
    if status == 404:
        return {**result, "Result": "absent"}
    content = _json_object(body) if status == 200 else None
    if content is None:
        what = f"HTTP {status}" if status != 200 else "not a JSON object"
        return {**result, "Result": "invalid", "Problems": [f"it answers {what}"]}
    contacts = content.get("contacts")
    page = content.get("support_page")
    if contacts is not None and not isinstance(contacts, list):
        result["Problems"].append("contacts must be a list")
        contacts = None
    for i, contact in enumerate(contacts or []):
        if not isinstance(contact, dict):
            result["Problems"].append(f"contacts[{i}] is not an object")
            continue
        result["Contacts"].append(contact)
        if not isinstance(contact.get("role"), str):
            result["Problems"].append(f"contacts[{i}] has no role (m.role.admin or m.role.security)")
        mxid, email = contact.get("matrix_id"), contact.get("email_address")
        if not (isinstance(mxid, str) and mxid.startswith("@")) and not isinstance(email, str):
            result["Problems"].append(f"contacts[{i}] has neither a matrix_id nor an email_address")
    if page is not None:
        result["SupportPage"] = _http_url(page)
        if result["SupportPage"] is None:
            result["Problems"].append(f"support_page {page!r} is not a URL")
    if not result["Contacts"] and result["SupportPage"] is None:
        result["Problems"].append("it needs at least one contact or a support_page")
    if result["Problems"]:
        result["Result"] = "invalid"
    return result


def summarize_login(flows_status: int | None, flows_body: bytes | None, oauth_status: int | None,
                    oauth_body: bytes | None, *, element_x_sync: bool) -> dict[str, Any]:
    """Which login the server offers: the legacy ``m.login.*`` flows (``GET /login``), the
    OAuth 2.0 API (``auth_metadata`` with an issuer) or both, and what Element X makes of it
    (it uses the OAuth 2.0 API or ``m.login.password``, never the legacy SSO flow, and
    needs simplified sliding sync: ``element_x_sync``)."""
    flows_content = _json_object(flows_body) if flows_status == 200 else None
    flows = flows_content.get("flows") if flows_content else None
    legacy = [f["type"] for f in flows if isinstance(f, dict) and isinstance(f.get("type"), str)] \
        if isinstance(flows, list) else []
    metadata = _json_object(oauth_body) if oauth_status == 200 else None
    issuer = metadata.get("issuer") if metadata else None
    oauth = isinstance(issuer, str) and isinstance(metadata.get("authorization_endpoint"), str)
    if oauth:
        element_x = "Element X signs in through the OAuth 2.0 API (the server's own sign-in pages)."
    elif "m.login.password" in legacy:
        element_x = "Element X offers its password form (m.login.password); it does not use the legacy SSO flow."
    elif legacy:
        element_x = ("Element X cannot sign in here: it needs the OAuth 2.0 API or m.login.password, and the "
                     f"server offers only {', '.join(legacy)}.")
    else:
        element_x = "Element X cannot sign in here: the server offers no login."
    if not element_x_sync and (oauth or legacy):
        element_x += " It also needs simplified sliding sync (MSC4186), which /versions does not advertise."
    return {"legacy": legacy, "oauth": oauth, "Issuer": issuer if oauth else None, "ElementX": element_x,
            "Error": None if flows_status == 200 else f"GET /login answered {flows_status}"}
