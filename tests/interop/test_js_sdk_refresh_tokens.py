"""Legacy refresh tokens with matrix-js-sdk 43 (tests/interop/js/refresh_tokens.mjs):
the SDK's ``loginRequest`` asks for one and its ``refreshToken`` uses ``POST /v3/refresh``."""

from __future__ import annotations

from pathlib import Path

import aiohttp

from tests.support.gateway_server import running_gateway
from tests.support.js_sdk import run_scenario
from tests.support.tls import TestCA

SCENARIO = Path(__file__).with_name("js") / "refresh_tokens.mjs"


async def test_refresh_tokens_through_matrix_js_sdk(tmp_path):
    extra = {"enable_registration": True, "enable_registration_without_verification": True, "bcrypt_rounds": 4,
             "refreshable_access_token_lifetime": "2m"}
    async with running_gateway(tmp_path, TestCA(tmp_path / "ca"), extra) as gw, aiohttp.ClientSession() as s:
        async with s.post(f"{gw.client_url}/_matrix/client/v3/register", json={
                "username": "alice", "password": "alice-password", "auth": {"type": "m.login.dummy"}}) as r:
            assert r.status == 200, await r.text()
        result = await run_scenario(SCENARIO, base_url=gw.client_url,
                                    args={"user": "alice", "password": "alice-password"})
    assert result["login"] == {"hasRefresh": True, "expiresInMs": 120_000}
    assert result["refreshed"] == {"changed": True, "expiresInMs": 120_000, "newRefresh": True}
    assert result["me"]["user_id"] == f"@alice:{gw.server_name}" and result["me"]["device_id"] == "JSREFRESH"
    # The new access token was used (whoami): the old refresh token is revoked.
    assert result["replay"]["errcode"] == "M_UNKNOWN_TOKEN" and result["replay"]["httpStatus"] == 401
    assert result["nextOk"] is True
