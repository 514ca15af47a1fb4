"""A web client on another origin reads our error answers (spec: "Web Browser Clients").

Element Web checks ``GET /room_keys/version`` at every login and takes its 404 to mean "no
backup yet". Without CORS headers on error answers the browser hides the 404 and reports a
network failure, and Element says "Unable to set up keys". This page runs in Chromium on
another origin and uses ``fetch`` with an access token (so every request is preflighted).
"""

from __future__ import annotations

import aiohttp
from aiohttp import web

from tests.conftest import free_port
from tests.e2e.browser import chromium
from tests.support.gateway_server import running_gateway
from tests.support.tls import TestCA

PAGE = "<!DOCTYPE html><title>client</title><p>a web client</p>"


async def page(request: web.Request) -> web.Response:
    return web.Response(text=PAGE, content_type="text/html")

#: Runs in the page: each request's status and errcode, or the network error fetch raised.
PROBE = """async ([base, token, requests]) => {
  const out = [];
  for (const [method, path, auth, body] of requests) {
    const headers = {"Content-Type": "application/json"};
    if (auth) headers["Authorization"] = "Bearer " + (auth === "bad" ? "not-a-token" : token);
    try {
      const resp = await fetch(base + path, {method, headers, body: body === null ? undefined : body});
      const json = await resp.json();
      out.push({path, status: resp.status, errcode: json.errcode || null});
    } catch (e) {
      out.push({path, network_error: String(e)});
    }
  }
  return out;
}"""


async def test_errors_reach_a_client_on_another_origin(tmp_path):
    ca = TestCA(tmp_path / "ca")
    origin = web.Application()
    origin.router.add_get("/", page)
    runner = web.AppRunner(origin)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    extra = {"enable_registration": True, "enable_registration_without_verification": True}
    try:
        async with running_gateway(tmp_path, ca, extra) as gw, chromium() as browser:
            async with aiohttp.ClientSession() as http:
                async with http.post(f"{gw.client_url}/_matrix/client/v3/register", json={
                        "username": "web", "password": "web-password", "auth": {"type": "m.login.dummy"}}) as r:
                    token = (await r.json())["access_token"]
            tab = await browser.new_page()
            await tab.goto(f"http://127.0.0.1:{port}/")
            results = await tab.evaluate(PROBE, [gw.client_url, token, [
                ["GET", "/_matrix/client/v3/room_keys/version", True, None],
                ["GET", "/_matrix/client/v3/no/such/endpoint", True, None],
                ["GET", "/_matrix/client/v3/account/whoami", "bad", None],
                ["POST", "/_matrix/client/v3/login", False,
                 '{"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "web"}, "password": "no"}'],
                ["POST", "/_matrix/client/v3/createRoom", True, "[[[[not json"],
                ["GET", "/_matrix/client/v3/account/whoami", True, None],
            ]])
    finally:
        await runner.cleanup()
    assert results == [
        {"path": "/_matrix/client/v3/room_keys/version", "status": 404, "errcode": "M_NOT_FOUND"},
        {"path": "/_matrix/client/v3/no/such/endpoint", "status": 404, "errcode": "M_UNRECOGNIZED"},
        {"path": "/_matrix/client/v3/account/whoami", "status": 401, "errcode": "M_UNKNOWN_TOKEN"},
        {"path": "/_matrix/client/v3/login", "status": 403, "errcode": "M_FORBIDDEN"},
        {"path": "/_matrix/client/v3/createRoom", "status": 400, "errcode": "M_NOT_JSON"},
        {"path": "/_matrix/client/v3/account/whoami", "status": 200, "errcode": None},
    ]
