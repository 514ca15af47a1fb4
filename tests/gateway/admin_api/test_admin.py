"""Synapse-compatible admin API: users and registration tokens; non-admins get M_FORBIDDEN."""

from __future__ import annotations

import pytest

from tests.gateway.client_api.conftest import auth_header, register

A = "/_synapse/admin"


@pytest.fixture
async def user(client):
    return auth_header((await register(client, "plain"))["access_token"])


async def test_non_admins_are_refused(client, user):
    for method, path in (("GET", "/v2/users"), ("GET", "/v1/server_version"), ("PUT", "/v2/users/@x:hs.test"),
                         ("GET", "/v1/registration_tokens"), ("POST", "/v1/deactivate/@root:hs.test")):
        resp = await client.request(method, A + path, headers=user, json={})
        assert resp.status == 403, path
        assert (await resp.json())["errcode"] == "M_FORBIDDEN"
        resp = await client.request(method, A + path, json={})
        assert resp.status == 401 and (await resp.json())["errcode"] == "M_MISSING_TOKEN"


async def test_create_modify_and_list_users(client, admin, user):
    resp = await client.put(f"{A}/v2/users/@new:hs.test", headers=admin,
                            json={"password": "new-pass", "displayname": "Newbie", "admin": False})
    assert resp.status == 201
    body = await resp.json()
    assert body["name"] == "@new:hs.test" and body["displayname"] == "Newbie" and body["admin"] is False
    login = await client.post("/_matrix/client/v3/login", json={"type": "m.login.password", "user": "new",
                                                                "password": "new-pass"})
    assert login.status == 200
    resp = await client.put(f"{A}/v2/users/@new:hs.test", headers=admin, json={"admin": True, "displayname": "Boss"})
    assert resp.status == 200 and (await resp.json())["admin"] is True
    assert (await (await client.get(f"{A}/v1/users/@new:hs.test/admin", headers=admin)).json()) == {"admin": True}

    listing = await (await client.get(f"{A}/v2/users", headers=admin, params={"limit": "2"})).json()
    assert listing["total"] == 3 and len(listing["users"]) == 2 and listing["next_token"] == "2"
    rest = await (await client.get(f"{A}/v2/users", headers=admin, params={"from": "2"})).json()
    assert [u["name"] for u in listing["users"] + rest["users"]] == ["@new:hs.test", "@plain:hs.test", "@root:hs.test"]
    found = await (await client.get(f"{A}/v2/users", headers=admin, params={"name": "boss"})).json()
    assert [u["name"] for u in found["users"]] == ["@new:hs.test"]
    admins = await (await client.get(f"{A}/v2/users", headers=admin, params={"admins": "true"})).json()
    assert {u["name"] for u in admins["users"]} == {"@new:hs.test", "@root:hs.test"}
    assert (await client.get(f"{A}/v2/users/@ghost:hs.test", headers=admin)).status == 404
    assert (await client.get(f"{A}/v2/users/@x:other.test", headers=admin)).status == 400
    assert (await client.get(f"{A}/v2/users", headers=admin, params={"limit": "many"})).status == 400


async def test_deactivate_reset_password_and_whois(client, admin, user):
    resp = await client.get(f"{A}/v1/whois/@plain:hs.test", headers=admin)
    assert len((await resp.json())["devices"]) == 1
    resp = await client.post(f"{A}/v1/reset_password/@plain:hs.test", headers=admin, json={"new_password": "fresh"})
    assert resp.status == 200
    assert (await client.get("/_matrix/client/v3/account/whoami", headers=user)).status == 401  # logged out
    login = await client.post("/_matrix/client/v3/login", json={"type": "m.login.password", "user": "plain",
                                                                "password": "fresh"})
    assert login.status == 200
    resp = await client.post(f"{A}/v1/deactivate/@plain:hs.test", headers=admin, json={"erase": True})
    assert resp.status == 200
    info = await (await client.get(f"{A}/v2/users/@plain:hs.test", headers=admin)).json()
    assert info["deactivated"] is True and info["displayname"] is None and info["erased"] is True
    deactivated = await (await client.get(f"{A}/v2/users", headers=admin, params={"deactivated": "true"})).json()
    assert {u["name"]: u["erased"] for u in deactivated["users"]}["@plain:hs.test"] is True
    login = await client.post("/_matrix/client/v3/login", json={"type": "m.login.password", "user": "plain",
                                                                "password": "fresh"})
    assert login.status == 403
    listing = await (await client.get(f"{A}/v2/users", headers=admin)).json()
    assert "@plain:hs.test" not in [u["name"] for u in listing["users"]]
    # Reactivation needs a password.
    resp = await client.put(f"{A}/v2/users/@plain:hs.test", headers=admin, json={"deactivated": False})
    assert resp.status == 400
    resp = await client.put(f"{A}/v2/users/@plain:hs.test", headers=admin, json={"deactivated": False, "password": "back"})
    assert resp.status == 200 and (await resp.json())["deactivated"] is False
    assert (await resp.json())["erased"] is False  # reactivated: the content is the user's again


async def test_admin_cannot_demote_self(client, admin):
    resp = await client.put(f"{A}/v1/users/@root:hs.test/admin", headers=admin, json={"admin": False})
    assert resp.status == 400
    version = await (await client.get(f"{A}/v1/server_version", headers=admin)).json()
    assert version["server_version"].startswith("Gateway")


@pytest.mark.parametrize("config_overrides", [{"registration_requires_token": True,
                                               "enable_registration_without_verification": False}])
async def test_registration_tokens_drive_registration(client, admin, config_overrides):
    resp = await client.post(f"{A}/v1/registration_tokens/new", headers=admin, json={"token": "abc", "uses_allowed": 1})
    assert await resp.json() == {"token": "abc", "uses_allowed": 1, "pending": 0, "completed": 0, "expiry_time": None}
    assert (await client.post(f"{A}/v1/registration_tokens/new", headers=admin, json={"token": "abc"})).status == 400
    assert (await client.post(f"{A}/v1/registration_tokens/new", headers=admin, json={"token": "bad token!"})).status == 400
    generated = await (await client.post(f"{A}/v1/registration_tokens/new", headers=admin, json={"length": 20})).json()
    assert len(generated["token"]) == 20
    resp = await client.post("/_matrix/client/v3/register", json={
        "username": "invited", "password": "p", "auth": {"type": "m.login.registration_token", "token": "abc"}})
    assert resp.status == 200
    token = await (await client.get(f"{A}/v1/registration_tokens/abc", headers=admin)).json()
    assert token["completed"] == 1
    valid = await (await client.get(f"{A}/v1/registration_tokens", headers=admin, params={"valid": "true"})).json()
    assert [t["token"] for t in valid["registration_tokens"]] == [generated["token"]]
    resp = await client.put(f"{A}/v1/registration_tokens/abc", headers=admin, json={"uses_allowed": 5})
    assert (await resp.json())["uses_allowed"] == 5
    assert (await client.delete(f"{A}/v1/registration_tokens/abc", headers=admin)).status == 200
    assert (await client.get(f"{A}/v1/registration_tokens/abc", headers=admin)).status == 404
    assert (await client.delete(f"{A}/v1/registration_tokens/abc", headers=admin)).status == 404
