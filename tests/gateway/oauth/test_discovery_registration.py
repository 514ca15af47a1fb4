"""Server metadata (``auth_metadata``, RFC 8414, OpenID discovery) and dynamic client
registration (RFC 7591) over HTTP; clients survive a restart."""

from __future__ import annotations

import pytest
from aiohttp.test_utils import TestClient, TestServer

from gateway.app import build_listener_app
from gateway.server import HomeServer

from .conftest import CLIENT_URI, REDIRECT_URI, register_client, server_config


async def test_auth_metadata_when_oauth_is_off(tmp_path, database_config):
    hs = await HomeServer.open(server_config(database_config, tmp_path, {"enabled": False}))
    try:
        async with TestClient(TestServer(build_listener_app(hs, hs.config.listeners[0]))) as client:
            resp = await client.get("/_matrix/client/v1/auth_metadata")
            assert resp.status == 404
            assert (await resp.json())["errcode"] == "M_UNRECOGNIZED"
            # Nothing of the API is served, and /login stays as it was.
            assert (await client.post("/_gateway/oauth2/token", data={})).status == 404
            flows = (await (await client.get("/_matrix/client/v3/login")).json())["flows"]
            assert not any(f["type"] == "m.login.sso" for f in flows)
    finally:
        await hs.close()


async def test_auth_metadata_and_discovery(client):
    resp = await client.get("/_matrix/client/v1/auth_metadata")
    meta = await resp.json()
    assert resp.status == 200, meta
    assert resp.headers["Access-Control-Allow-Origin"] == "*"
    assert meta["issuer"] == "http://localhost/"
    for key in ("authorization_endpoint", "token_endpoint", "registration_endpoint", "revocation_endpoint",
                "device_authorization_endpoint", "account_management_uri"):
        assert meta[key].startswith("http://localhost/_gateway/"), key
    assert meta["response_types_supported"] == ["code"]
    assert {"query", "fragment"} <= set(meta["response_modes_supported"])
    assert meta["code_challenge_methods_supported"] == ["S256"]
    assert {"authorization_code", "refresh_token", "urn:ietf:params:oauth:grant-type:device_code"} \
        <= set(meta["grant_types_supported"])
    assert meta["prompt_values_supported"] == ["create", "login", "consent", "none"]
    assert set(meta["account_management_actions_supported"]) == {
        "org.matrix.profile", "org.matrix.devices_list", "org.matrix.device_view", "org.matrix.device_delete",
        "org.matrix.account_deactivate", "org.matrix.cross_signing_reset"}
    unstable = await (await client.get("/_matrix/client/unstable/org.matrix.msc2965/auth_metadata")).json()
    assert unstable == meta
    rfc8414 = await (await client.get("/.well-known/oauth-authorization-server")).json()
    assert rfc8414 == meta
    oidc = await (await client.get("/.well-known/openid-configuration")).json()
    assert oidc["issuer"] == meta["issuer"] and oidc["jwks_uri"].endswith("/_gateway/oauth2/keys.json")
    assert oidc["id_token_signing_alg_values_supported"] == ["RS256"]
    jwks = await (await client.get("/_gateway/oauth2/keys.json")).json()
    assert jwks["keys"][0]["kty"] == "RSA" and jwks["keys"][0]["alg"] == "RS256"
    # The JSON endpoints answer CORS preflights (web clients call them from their origin).
    pre = await client.options("/_gateway/oauth2/token", headers={"Origin": "https://app.example.org",
                                                                 "Access-Control-Request-Method": "POST"})
    assert pre.status == 204 and pre.headers["Access-Control-Allow-Origin"] == "*"
    # Errors too: a browser must be able to read an OAuth error.
    refused = await client.post("/_gateway/oauth2/token", data={"grant_type": "nope"})
    assert refused.status == 400 and refused.headers["Access-Control-Allow-Origin"] == "*"
    # Not our pages (cookie-bound, for top-level navigation).
    page = await client.get("/_gateway/login")
    assert page.status == 200 and "Access-Control-Allow-Origin" not in page.headers


async def test_login_flows_prefer_oauth(client):
    flows = (await (await client.get("/_matrix/client/v3/login")).json())["flows"]
    sso = next(f for f in flows if f["type"] == "m.login.sso")
    assert sso["oauth_aware_preferred"] is True
    assert any(f["type"] == "m.login.password" for f in flows)


async def test_registration_stores_the_client(client, hs, tmp_path, database_config, oauth_overrides):
    resp = await client.post("/_gateway/oauth2/register", json={
        "client_name": "My App", "client_name#fr": "Mon application", "client_uri": CLIENT_URI,
        "logo_uri": "https://app.example.org/logo.png", "tos_uri": "https://app.example.org/tos",
        "redirect_uris": [REDIRECT_URI], "token_endpoint_auth_method": "none", "response_types": ["code"],
        "grant_types": ["authorization_code", "refresh_token", "urn:ietf:params:oauth:grant-type:token-exchange"],
        "application_type": "web"})
    body = await resp.json()
    assert resp.status == 201, body
    assert resp.headers["Cache-Control"] == "no-store"
    assert body["client_id"] and body["client_name#fr"] == "Mon application"
    assert body["grant_types"] == ["authorization_code", "refresh_token"]
    assert body["redirect_uris"] == [REDIRECT_URI]
    # A second process (or a restart) knows the client.
    other = await HomeServer.open(server_config(database_config, tmp_path, oauth_overrides))
    try:
        stored = await other.oauth.get_client(body["client_id"])
        assert stored["client_name"] == "My App" and stored["redirect_uris"] == [REDIRECT_URI]
    finally:
        await other.close()


@pytest.mark.parametrize("metadata,error", [
    ({"redirect_uris": ["https://app.com/callback"]}, "invalid_redirect_uri"),  # another site
    ({"redirect_uris": ["https://app.example.org/cb#frag"]}, "invalid_redirect_uri"),
    ({"redirect_uris": ["http://app.example.org/cb"]}, "invalid_redirect_uri"),
    ({"client_uri": "http://app.example.org/"}, "invalid_client_metadata"),
    ({"logo_uri": "https://evil.example.net/logo.png"}, "invalid_client_metadata"),
    ({"token_endpoint_auth_method": "client_secret_post"}, "invalid_client_metadata"),
])
async def test_registration_refusals(client, metadata, error):
    body = {"client_uri": CLIENT_URI, "redirect_uris": [REDIRECT_URI], **metadata}
    resp = await client.post("/_gateway/oauth2/register", json=body)
    assert resp.status == 400
    assert (await resp.json())["error"] == error


async def test_registration_of_garbage(client):
    resp = await client.post("/_gateway/oauth2/register", data=b"{not json", headers={"Content-Type": "application/json"})
    assert resp.status == 400 and (await resp.json())["error"] == "invalid_client_metadata"
    resp = await client.post("/_gateway/oauth2/register", data=b"[" * 100000, headers={"Content-Type": "application/json"})
    assert resp.status == 400 and (await resp.json())["error"] == "invalid_client_metadata"
    resp = await client.post("/_gateway/oauth2/register", json=["a list"])
    assert resp.status == 400


@pytest.mark.parametrize("oauth_overrides", [{"allow_loopback_http_web_clients": True}])
async def test_loopback_web_client_with_the_development_switch(client):
    client_id = await register_client(client, client_uri="http://127.0.0.1:8123/",
                                      redirect_uris=["http://127.0.0.1:8123/cb"])
    assert client_id
