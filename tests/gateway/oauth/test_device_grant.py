"""The device authorisation grant (RFC 8628; spec "Device authorisation flow")."""

from __future__ import annotations

import pytest

from .conftest import csrf_of, follow, hidden, make_user, register_client, sign_in, token_request, whoami

DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"


@pytest.fixture
async def alice(hs):
    return await make_user(hs)


async def start(client, client_id: str, device_id: str = "TVSET00001") -> dict:
    resp = await client.post("/_gateway/oauth2/device", data={
        "client_id": client_id, "scope": f"urn:matrix:client:api:* urn:matrix:client:device:{device_id}"})
    body = await resp.json()
    assert resp.status == 200, body
    return body


async def poll(client, client_id: str, device_code: str) -> tuple[int, dict]:
    return await token_request(client, grant_type=DEVICE_GRANT, device_code=device_code, client_id=client_id)


async def enter_code(client, code: str, decision: str = "allow") -> str:
    """In the browser: the verification page, the login, then consent. The final page's text."""
    page = await follow(client, "/_gateway/link")
    html = await page.text()
    resp = await client.post("/_gateway/link", data={"csrf": csrf_of(html), "code": code}, allow_redirects=False)
    assert resp.status == 302, await resp.text()
    location = resp.headers["Location"]
    if location.startswith("/_gateway/login"):
        location = (await sign_in(client, location)).headers["Location"]
    html = await (await follow(client, location)).text()
    assert "another device" in html
    resp = await client.post("/_gateway/oauth2/consent", data={"csrf": csrf_of(html), "grant": hidden(html, "grant"),
                                                               "action": decision}, allow_redirects=False)
    assert resp.status == 200
    return await resp.text()


async def test_device_grant_end_to_end(client, hs, alice, clock):
    client_id = await register_client(client)
    session = await start(client, client_id)
    assert session["verification_uri"] == "http://localhost/_gateway/link"
    assert session["verification_uri_complete"].endswith("?code=" + session["user_code"])
    assert session["interval"] == 5 and session["expires_in"] == 900
    status, body = await poll(client, client_id, session["device_code"])
    assert (status, body["error"]) == (400, "authorization_pending")
    status, body = await poll(client, client_id, session["device_code"])  # at once again: too fast
    assert body["error"] == "slow_down"
    clock.advance(5000)
    assert (await poll(client, client_id, session["device_code"]))[1]["error"] == "authorization_pending"
    # The user types the code in lower case, without the dash.
    text = await enter_code(client, session["user_code"].replace("-", "").lower())
    assert "Device connected" in text
    clock.advance(5000)
    status, tokens = await poll(client, client_id, session["device_code"])
    assert status == 200 and tokens["refresh_token"] and tokens["token_type"] == "Bearer"
    assert (await whoami(client, tokens["access_token"]))[1] == {"user_id": alice, "device_id": "TVSET00001",
                                                                 "is_guest": False}
    # The device code gives tokens once.
    clock.advance(5000)
    assert (await poll(client, client_id, session["device_code"]))[1]["error"] == "invalid_grant"


async def test_denied_expired_and_foreign_device_codes(client, hs, alice, clock):
    client_id = await register_client(client)
    denied = await start(client, client_id)
    assert "Not connected" in await enter_code(client, denied["user_code"], "deny")
    assert (await poll(client, client_id, denied["device_code"]))[1]["error"] == "access_denied"
    expired = await start(client, client_id, "TVSET00002")
    other = await register_client(client)
    assert (await poll(client, other, expired["device_code"]))[1]["error"] == "invalid_grant"
    clock.advance(901 * 1000)
    assert (await poll(client, client_id, expired["device_code"]))[1]["error"] == "expired_token"
    # An unknown or expired user code is told on the page, not accepted.
    html = await (await follow(client, "/_gateway/link")).text()
    resp = await client.post("/_gateway/link", data={"csrf": csrf_of(html), "code": expired["user_code"]},
                             allow_redirects=False)
    assert resp.status == 400 and "unknown or has expired" in await resp.text()


async def test_device_authorization_refusals(client, hs):
    no_device_grant = await register_client(client, grant_types=["authorization_code", "refresh_token"])
    resp = await client.post("/_gateway/oauth2/device", data={
        "client_id": no_device_grant, "scope": "urn:matrix:client:api:* urn:matrix:client:device:X1"})
    assert (await resp.json())["error"] == "unauthorized_client"
    resp = await client.post("/_gateway/oauth2/device", data={"client_id": "nobody", "scope": "x"})
    assert resp.status == 401 and (await resp.json())["error"] == "invalid_client"
    client_id = await register_client(client)
    resp = await client.post("/_gateway/oauth2/device", data={"client_id": client_id, "scope": "openid"})
    assert (await resp.json())["error"] == "invalid_scope"


async def test_a_user_code_binds_to_the_first_browser(client, hs, alice, aiohttp_client_factory):
    client_id = await register_client(client)
    session = await start(client, client_id)
    other = await aiohttp_client_factory()
    html = await (await follow(other, "/_gateway/link")).text()
    resp = await other.post("/_gateway/link", data={"csrf": csrf_of(html), "code": session["user_code"]},
                            allow_redirects=False)
    assert resp.status == 302
    html = await (await follow(client, "/_gateway/link")).text()
    resp = await client.post("/_gateway/link", data={"csrf": csrf_of(html), "code": session["user_code"]},
                             allow_redirects=False)
    assert resp.status == 400 and "already been used" in await resp.text()
