"""The federation tester's client side: what a client signing in to ``@user:<server name>``
fetches, fetched the same way (``federation.tester_client`` judges the answers).

Every request goes through the session the tester gives (its connector applies the IP
range policy to every connection, redirects included), sends the ``Origin`` of a web
client, and reads a bounded body.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp

from ..server_discovery import ServerAddress
from ..tester_client import (
    CLIENT_REQUEST_HEADERS,
    PROBE_ORIGIN,
    check_client_well_known,
    check_cors,
    check_preflight,
    check_support,
    check_versions,
    summarize_login,
)

MAX_BODY = 256 * 1024
MAX_REDIRECTS = 5


class Fetched:
    """One HTTP exchange: ``status`` None when there was no answer (``error`` says why)."""

    def __init__(self, url: str):
        self.url = url
        self.status: int | None = None
        self.headers: dict[str, str] = {}
        self.body: bytes | None = None
        self.error: str | None = None
        self.seconds = 0.0
        self.redirects: list[str] = []


async def fetch(session: aiohttp.ClientSession, method: str, url: str, *, headers: dict[str, str] | None = None,
                timeout: float) -> Fetched:
    result = Fetched(url)
    start = time.monotonic()
    try:
        async with asyncio.timeout(timeout):
            async with session.request(method, url, headers={"Origin": PROBE_ORIGIN, **(headers or {})},
                                       allow_redirects=True, max_redirects=MAX_REDIRECTS) as resp:
                result.status = resp.status
                result.headers = dict(resp.headers)
                result.redirects = [str(r.headers.get("Location", "")) for r in resp.history]
                result.body = await resp.content.read(MAX_BODY)
    except aiohttp.ConnectionTimeoutError:
        result.error = f"connecting timed out after {session.timeout.connect} s"
    except TimeoutError:
        result.error = f"no answer within {timeout} s"
    except aiohttp.TooManyRedirects:
        result.error = f"more than {MAX_REDIRECTS} redirects"
    except aiohttp.ClientConnectorError as e:
        result.error = str(e.os_error or e)
    except (aiohttp.ClientError, OSError, ValueError) as e:
        result.error = f"{type(e).__name__}: {e}"
    result.seconds = round(time.monotonic() - start, 3)
    return result


def _exchange(f: Fetched) -> dict[str, Any]:
    return {"URL": f.url, "Status": f.status, "Error": f.error, "Seconds": f.seconds, "Redirects": f.redirects}


class ClientSideProbe:
    """``.well-known/matrix/client`` and ``/support`` from ``https://<host>:<well_known_port>``,
    then ``/versions``, the login flows and ``auth_metadata`` over the advertised base URL."""

    def __init__(self, *, well_known_port: int = 443, timeout: float = 10.0):
        self.well_known_port = well_known_port
        self.timeout = timeout

    def _site(self, address: ServerAddress) -> str:
        """``https://<host>``: where the well-known files are, and what a client tries
        when there is none."""
        host = f"[{address.host}]" if address.ip is not None and ":" in address.host else address.host
        port = "" if self.well_known_port == 443 else f":{self.well_known_port}"
        return f"https://{host}{port}"

    def _well_known_url(self, address: ServerAddress, name: str) -> str:
        return f"{self._site(address)}/.well-known/matrix/{name}"

    async def run(self, address: ServerAddress, session: aiohttp.ClientSession) -> dict[str, Any]:
        """``{"ClientWellKnown": ..., "SupportWellKnown": ..., "Login": ...}``"""
        client, support = await asyncio.gather(
            fetch(session, "GET", self._well_known_url(address, "client"), timeout=self.timeout),
            fetch(session, "GET", self._well_known_url(address, "support"), timeout=self.timeout))
        well_known = {**_exchange(client), **check_client_well_known(client.status, client.body, client.error)}
        well_known["CORS"] = check_cors(client.headers) if client.status is not None else None
        if well_known["CORS"] is not None and not well_known["CORS"]["OK"] and client.status == 200:
            well_known["Problems"].append(
                f"Browser clients cannot read it ({well_known['CORS']['Problem']}): add "
                "Access-Control-Allow-Origin: * to /.well-known/matrix/client.")
        base = well_known["BaseURL"]
        well_known["BaseURLFrom"] = "well-known" if base else None
        if base is None and well_known["Result"] in ("IGNORE", "unreachable"):
            # What a client does with a server name and no file: try the name itself.
            base, well_known["BaseURLFrom"] = self._site(address), "server name"
        login: dict[str, Any] = {"legacy": [], "oauth": False, "Issuer": None, "ElementX": "", "Error": None}
        if base is None:
            well_known["Versions"] = well_known["Preflight"] = None
            login["Error"] = "no homeserver URL to ask"
        else:
            await self._homeserver(base.rstrip("/"), session, well_known, login)
        well_known["OK"] = well_known["Result"] == "ok" and not well_known["Problems"]
        support_report = {**_exchange(support), **check_support(support.status, support.body, support.error)}
        return {"ClientWellKnown": well_known, "SupportWellKnown": support_report, "Login": login}

    async def _homeserver(self, base: str, session: aiohttp.ClientSession, well_known: dict[str, Any],
                          login: dict[str, Any]) -> None:
        client_api = f"{base}/_matrix/client"
        versions, preflight, flows, oauth = await asyncio.gather(
            fetch(session, "GET", f"{client_api}/versions", timeout=self.timeout),
            fetch(session, "OPTIONS", f"{client_api}/v3/login", timeout=self.timeout, headers={
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": ", ".join(CLIENT_REQUEST_HEADERS)}),
            fetch(session, "GET", f"{client_api}/v3/login", timeout=self.timeout),
            fetch(session, "GET", f"{client_api}/v1/auth_metadata", timeout=self.timeout))
        if oauth.status in (400, 404):  # servers from before the OAuth 2.0 API was in the spec
            oauth = await fetch(session, "GET", f"{client_api}/unstable/org.matrix.msc2965/auth_metadata",
                                timeout=self.timeout)
        checked = check_versions(versions.status, versions.body, versions.error)
        checked["CORS"] = check_cors(versions.headers) if versions.status is not None else None
        well_known["Versions"] = {**_exchange(versions), **checked}
        well_known["Preflight"] = {**_exchange(preflight), **check_preflight(preflight.status, preflight.headers)}
        if not checked["OK"]:
            well_known["Problems"].append(f"{base}/_matrix/client/versions: {checked['Problem']}.")
            if well_known["Result"] == "ok":
                well_known["Result"] = "FAIL_ERROR"  # the spec's verdict on a base URL that is not a homeserver
        elif checked["CORS"] and not checked["CORS"]["OK"]:
            well_known["Problems"].append(f"Browser clients cannot use {base} ({checked['CORS']['Problem']} on "
                                          "/versions): serve the CORS headers on /_matrix/.")
        if checked["OK"] and not well_known["Preflight"]["OK"]:
            well_known["Problems"].append(f"A browser's preflight for the login POST fails (missing "
                                          f"{', '.join(well_known['Preflight']['Missing'])}): web clients cannot "
                                          "sign in.")
        login.update(summarize_login(flows.status, flows.body, oauth.status, oauth.body,
                                     element_x_sync=checked["SimplifiedSlidingSync"]))
        login["OAuthMetadataURL"] = oauth.url if login["oauth"] else None
        if flows.status is None:
            login["Error"] = f"GET /login: {flows.error}"
