"""``password_config.pepper`` everywhere a password is hashed or checked: registration,
login, password change (a Synapse deployment moved here keeps its pepper)."""

from __future__ import annotations

import pytest

from gateway.passwords import check_password
from gateway.storage.users import UserStore
from tests.gateway.client_api.conftest import auth_header, register

C = "/_matrix/client/v3"


@pytest.fixture
def config_overrides() -> dict:
    return {"password_config": {"pepper": "cracked pepper"}}


async def _login(client, user: str, password: str) -> int:
    resp = await client.post(f"{C}/login", json={"type": "m.login.password", "password": password,
                                                 "identifier": {"type": "m.id.user", "user": user}})
    return resp.status


async def test_registration_login_and_password_change_use_the_pepper(hs, client):
    reg = await register(client, "pia", "first-password")
    stored = (await UserStore(hs.db).get_user(reg["user_id"])).password_hash
    assert check_password("first-password", stored, pepper="cracked pepper")
    assert not check_password("first-password", stored)
    assert await _login(client, "pia", "first-password") == 200

    auth = {"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "pia"},
            "password": "first-password"}
    resp = await client.post(f"{C}/account/password", headers=auth_header(reg["access_token"]),
                             json={"new_password": "second-password", "auth": auth})
    assert resp.status == 200, await resp.text()
    stored = (await UserStore(hs.db).get_user(reg["user_id"])).password_hash
    assert check_password("second-password", stored, pepper="cracked pepper")
    assert not check_password("second-password", stored)
    assert await _login(client, "pia", "second-password") == 200
    assert await _login(client, "pia", "first-password") == 403
