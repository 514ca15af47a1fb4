"""``GET /voip/turnServer`` (spec "Voice over IP"): credentials, guests, nothing configured.
A real coturn accepting them: tests/interop/test_turn_coturn.py."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest

from .conftest import auth_header, register

TURN = {"turn_uris": ["turn:turn.example.com:3478?transport=udp", "turns:turn.example.com:443?transport=tcp"],
        "turn_shared_secret": "s3cret", "turn_user_lifetime": "1d", "allow_guest_access": True}


async def turn_server(client, token: str, version: str = "v3"):
    resp = await client.get(f"/_matrix/client/{version}/voip/turnServer", headers=auth_header(token))
    return resp.status, await resp.json()


async def guest(client) -> str:
    resp = await client.post("/_matrix/client/v3/register?kind=guest", json={})
    return (await resp.json())["access_token"]


@pytest.mark.parametrize("config_overrides", [TURN])
async def test_shared_secret_credentials(hs, client):
    hs.clock_ms = lambda: 1_700_000_000_123
    alice = await register(client, "alice")
    for version in ("v3", "r0"):
        status, body = await turn_server(client, alice["access_token"], version)
        assert status == 200
        assert body["uris"] == TURN["turn_uris"] and body["ttl"] == 86400
        assert body["username"] == f"{1_700_000_000 + 86400}:@alice:hs.test"
        expected = hmac.new(b"s3cret", body["username"].encode(), hashlib.sha1).digest()
        assert base64.b64decode(body["password"]) == expected
    # Guests too, by default.
    assert (await turn_server(client, await guest(client)))[0] == 200
    resp = await client.get("/_matrix/client/v3/voip/turnServer")
    assert resp.status == 401 and (await resp.json())["errcode"] == "M_MISSING_TOKEN"


@pytest.mark.parametrize("config_overrides", [{**TURN, "turn_allow_guests": False}])
async def test_guests_refused_when_not_allowed(hs, client):
    status, body = await turn_server(client, await guest(client))
    assert status == 403 and body["errcode"] == "M_GUEST_ACCESS_FORBIDDEN"
    alice = await register(client, "alice")
    assert (await turn_server(client, alice["access_token"]))[0] == 200


@pytest.mark.parametrize("config_overrides", [{"turn_uris": ["turn:turn.example.com"], "turn_username": "calls",
                                               "turn_password": "pw", "turn_user_lifetime": "2h"}])
async def test_static_username_and_password(hs, client):
    alice = await register(client, "alice")
    assert await turn_server(client, alice["access_token"]) == (
        200, {"username": "calls", "password": "pw", "uris": ["turn:turn.example.com"], "ttl": 7200})


async def test_nothing_configured_answers_an_empty_object(hs, client):
    alice = await register(client, "alice")
    assert await turn_server(client, alice["access_token"]) == (200, {})
