"""Registration, login, logout, devices and account management over real HTTP."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from .conftest import auth_header, register

C = "/_matrix/client/v3"


async def test_register_flow_and_whoami(client):
    # Without auth: 401 with the flows and a session.
    resp = await client.post(f"{C}/register", json={"username": "alice", "password": "secret-pass"})
    assert resp.status == 401
    body = await resp.json()
    assert body["flows"] == [{"stages": ["m.login.dummy"]}]
    assert "errcode" not in body
    session = body["session"]
    resp = await client.post(f"{C}/register", json={
        "username": "alice", "password": "secret-pass", "auth": {"type": "m.login.dummy", "session": session},
        "initial_device_display_name": "phone",
    })
    assert resp.status == 200
    reg = await resp.json()
    assert reg["user_id"] == "@alice:hs.test" and reg["access_token"] and reg["device_id"]
    resp = await client.get(f"{C}/account/whoami", headers=auth_header(reg["access_token"]))
    assert await resp.json() == {"user_id": "@alice:hs.test", "device_id": reg["device_id"], "is_guest": False}
    # The session registered alice: it cannot register anyone else.
    resp = await client.post(f"{C}/register", json={
        "username": "alice2", "password": "x", "auth": {"type": "m.login.dummy", "session": session}})
    assert resp.status == 400 and (await resp.json())["errcode"] == "M_USER_IN_USE"


async def start_registration(client, **params):
    resp = await client.post(f"{C}/register", json=params)
    assert resp.status == 401
    body = await resp.json()
    assert body["completed"] == []  # always there, as Synapse sends it
    return body["session"]


async def test_a_registration_retried_with_its_session_answers_the_same_user(hs, client):
    """A client that lost the answer retries with the same session: the same user, a new
    login (not M_USER_IN_USE); for ten minutes only."""
    session = await start_registration(client, username="kim", password="kim-password")
    complete = {"username": "kim", "password": "kim-password", "auth": {"type": "m.login.dummy", "session": session}}
    first = await (await client.post(f"{C}/register", json=complete)).json()
    again = await client.post(f"{C}/register", json=complete)
    assert again.status == 200
    second = await again.json()
    assert second["user_id"] == first["user_id"] == "@kim:hs.test"
    assert second["access_token"] != first["access_token"]
    resp = await client.get(f"{C}/account/whoami", headers=auth_header(second["access_token"]))
    assert (await resp.json())["user_id"] == "@kim:hs.test"
    now = hs.clock_ms()
    hs.clock_ms = lambda: now + 11 * 60 * 1000
    resp = await client.post(f"{C}/register", json=complete)
    assert resp.status == 400 and (await resp.json())["errcode"] == "M_UNKNOWN"


async def test_registration_remembers_the_first_requests_parameters(client):
    """The request that completes the stages may carry only ``auth``: the username, the
    password (kept as a hash), the device and inhibit_login of the first request apply."""
    session = await start_registration(client, username="lou", password="lou-password", device_id="XYZZY",
                                       initial_device_display_name="Lou's phone")
    resp = await client.post(f"{C}/register", json={"auth": {"type": "m.login.dummy", "session": session}})
    reg = await resp.json()
    assert resp.status == 200 and reg["user_id"] == "@lou:hs.test" and reg["device_id"] == "XYZZY"
    resp = await client.get(f"{C}/devices/XYZZY", headers=auth_header(reg["access_token"]))
    assert (await resp.json())["display_name"] == "Lou's phone"
    resp = await client.post(f"{C}/login", json={"type": "m.login.password", "password": "lou-password",
                                                 "identifier": {"type": "m.id.user", "user": "lou"}})
    assert resp.status == 200
    session = await start_registration(client, username="max", password="max-password", inhibit_login=True)
    resp = await client.post(f"{C}/register", json={"auth": {"type": "m.login.dummy", "session": session}})
    assert await resp.json() == {"user_id": "@max:hs.test", "home_server": "hs.test"}


@pytest.mark.parametrize("username, errcode", [
    ("Alice Smith", "M_INVALID_USERNAME"), ("al:ice", "M_INVALID_USERNAME"), ("12345", "M_INVALID_USERNAME"),
    ("", "M_INVALID_USERNAME"), ("a" * 300, "M_INVALID_USERNAME"),
])
async def test_register_bad_usernames(client, username, errcode):
    resp = await client.post(f"{C}/register", json={"username": username, "password": "p",
                                                    "auth": {"type": "m.login.dummy"}})
    assert resp.status == 400
    assert (await resp.json())["errcode"] == errcode


async def test_register_user_in_use_and_available(client):
    await register(client, "bob")
    resp = await client.post(f"{C}/register", json={"username": "bob", "password": "p", "auth": {"type": "m.login.dummy"}})
    assert (await resp.json())["errcode"] == "M_USER_IN_USE"
    resp = await client.get(f"{C}/register/available", params={"username": "bob"})
    assert resp.status == 400 and (await resp.json())["errcode"] == "M_USER_IN_USE"
    resp = await client.get(f"{C}/register/available", params={"username": "carol"})
    assert await resp.json() == {"available": True}
    resp = await client.post(f"{C}/register?kind=guest", json={})
    assert (await resp.json())["errcode"] == "M_GUEST_ACCESS_FORBIDDEN"


@pytest.mark.parametrize("config_overrides", [{"enable_registration": False}])
async def test_registration_disabled(client, config_overrides):
    resp = await client.post(f"{C}/register", json={"username": "x", "password": "p", "auth": {"type": "m.login.dummy"}})
    assert resp.status == 403 and (await resp.json())["errcode"] == "M_FORBIDDEN"


@pytest.mark.parametrize("config_overrides", [{"registration_requires_token": True,
                                               "enable_registration_without_verification": False}])
async def test_registration_token_stage(hs, client, config_overrides):
    await hs.auth.store.create_registration_token("letmein", uses_allowed=1, expiry_time=None)
    resp = await client.post(f"{C}/register", json={"username": "tok", "password": "p"})
    body = await resp.json()
    assert body["flows"] == [{"stages": ["m.login.registration_token"]}]
    resp = await client.post(f"{C}/register", json={
        "username": "tok", "password": "p",
        "auth": {"type": "m.login.registration_token", "token": "wrong", "session": body["session"]}})
    bad = await resp.json()
    assert resp.status == 401 and bad["errcode"] == "M_UNAUTHORIZED" and bad["session"] == body["session"]
    resp = await client.post(f"{C}/register", json={
        "username": "tok", "password": "p",
        "auth": {"type": "m.login.registration_token", "token": "letmein", "session": body["session"]}})
    assert resp.status == 200
    # One use only.
    resp = await client.post(f"{C}/register", json={
        "username": "tok2", "password": "p", "auth": {"type": "m.login.registration_token", "token": "letmein"}})
    assert resp.status == 401


async def test_login_forms_and_failures(client):
    await register(client, "dave", "correct horse")
    flows = await (await client.get(f"{C}/login")).json()
    assert {"type": "m.login.password"} in flows["flows"]
    for body in (
        {"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "dave"}, "password": "correct horse"},
        {"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "@dave:hs.test"}, "password": "correct horse"},
        {"type": "m.login.password", "user": "DAVE", "password": "correct horse"},
    ):
        resp = await client.post("/_matrix/client/r0/login", json=body)
        assert resp.status == 200, await resp.text()
        assert (await resp.json())["user_id"] == "@dave:hs.test"
    for body, status, errcode in (
        ({"type": "m.login.password", "user": "dave", "password": "wrong"}, 403, "M_FORBIDDEN"),
        ({"type": "m.login.password", "user": "nobody", "password": "x"}, 403, "M_FORBIDDEN"),
        ({"type": "m.login.password", "user": "@dave:other.test", "password": "correct horse"}, 403, "M_FORBIDDEN"),
        ({"type": "m.login.password", "user": "dave"}, 400, "M_BAD_JSON"),
        ({"type": "m.login.fancy"}, 400, "M_UNKNOWN"),
        ({"type": "m.login.token", "token": "made-up"}, 403, "M_FORBIDDEN"),
    ):
        resp = await client.post(f"{C}/login", json=body)
        assert resp.status == status, body
        assert (await resp.json())["errcode"] == errcode


async def test_login_token_is_single_use(hs, client):
    await register(client, "erin")
    token = await hs.auth.create_login_token("@erin:hs.test")
    resp = await client.post(f"{C}/login", json={"type": "m.login.token", "token": token})
    assert resp.status == 200 and (await resp.json())["user_id"] == "@erin:hs.test"
    resp = await client.post(f"{C}/login", json={"type": "m.login.token", "token": token})
    assert resp.status == 403


async def test_login_token_expires(hs, client):
    await register(client, "fay")
    token = await hs.auth.create_login_token("@fay:hs.test")
    real_clock = hs.clock_ms
    hs.clock_ms = lambda: real_clock() + 3 * 60 * 1000
    resp = await client.post(f"{C}/login", json={"type": "m.login.token", "token": token})
    assert resp.status == 403


async def test_tokens_missing_unknown_and_logout(client):
    reg = await register(client, "gus")
    resp = await client.get(f"{C}/account/whoami")
    assert resp.status == 401 and (await resp.json())["errcode"] == "M_MISSING_TOKEN"
    resp = await client.get(f"{C}/account/whoami", headers=auth_header("nonsense"))
    assert resp.status == 401 and (await resp.json())["errcode"] == "M_UNKNOWN_TOKEN"
    resp = await client.get(f"{C}/account/whoami", params={"access_token": reg["access_token"]})
    assert resp.status == 200
    second = await (await client.post(f"{C}/login", json={"type": "m.login.password", "user": "gus",
                                                           "password": "pw-" + "x" * 8})).json()
    assert (await client.post(f"{C}/logout", headers=auth_header(reg["access_token"]))).status == 200
    assert (await client.get(f"{C}/account/whoami", headers=auth_header(reg["access_token"]))).status == 401
    assert (await client.get(f"{C}/account/whoami", headers=auth_header(second["access_token"]))).status == 200
    assert (await client.post(f"{C}/logout/all", headers=auth_header(second["access_token"]))).status == 200
    assert (await client.get(f"{C}/account/whoami", headers=auth_header(second["access_token"]))).status == 401


async def test_devices_and_reauth(client):
    reg = await register(client, "hal", "hal-password")
    h = auth_header(reg["access_token"])
    other = await (await client.post(f"{C}/login", json={
        "type": "m.login.password", "user": "hal", "password": "hal-password", "device_id": "OTHER"})).json()
    devices = (await (await client.get(f"{C}/devices", headers=h)).json())["devices"]
    assert {d["device_id"] for d in devices} == {reg["device_id"], "OTHER"}
    assert (await client.put(f"{C}/devices/OTHER", json={"display_name": "tablet"}, headers=h)).status == 200
    assert (await (await client.get(f"{C}/devices/OTHER", headers=h)).json())["display_name"] == "tablet"
    assert (await client.get(f"{C}/devices/NOPE", headers=h)).status == 404
    # Deleting needs the password (user-interactive auth).
    resp = await client.delete(f"{C}/devices/OTHER", headers=h)
    assert resp.status == 401
    session = (await resp.json())["session"]
    resp = await client.delete(f"{C}/devices/OTHER", headers=h, json={"auth": {
        "type": "m.login.password", "identifier": {"type": "m.id.user", "user": "hal"},
        "password": "wrong", "session": session}})
    body = await resp.json()
    assert resp.status == 401 and body["errcode"] == "M_FORBIDDEN" and body["completed"] == []
    # Someone else's password (a stolen access token): refused outright, the device stays.
    await register(client, "eve", "eve-password")
    resp = await client.delete(f"{C}/devices/OTHER", headers=h, json={"auth": {
        "type": "m.login.password", "identifier": {"type": "m.id.user", "user": "eve"},
        "password": "eve-password", "session": session}})
    assert resp.status == 403 and (await resp.json())["errcode"] == "M_FORBIDDEN"
    assert (await client.get(f"{C}/devices/OTHER", headers=h)).status == 200
    resp = await client.delete(f"{C}/devices/OTHER", headers=h, json={"auth": {
        "type": "m.login.password", "identifier": {"type": "m.id.user", "user": "hal"},
        "password": "hal-password", "session": session}})
    assert resp.status == 200
    assert (await client.get(f"{C}/account/whoami", headers=auth_header(other["access_token"]))).status == 401


async def test_uia_session_cannot_be_moved_to_another_request(client):
    reg = await register(client, "ivy", "ivy-password")
    h = auth_header(reg["access_token"])
    session = (await (await client.post(f"{C}/account/password", headers=h, json={"new_password": "n"})).json())["session"]
    resp = await client.post(f"{C}/account/deactivate", headers=h, json={"auth": {
        "type": "m.login.password", "user": "ivy", "password": "ivy-password", "session": session}})
    assert resp.status == 403


async def test_password_change_and_deactivate(client):
    reg = await register(client, "jay", "old-password")
    h = auth_header(reg["access_token"])
    other = await (await client.post(f"{C}/login", json={"type": "m.login.password", "user": "jay",
                                                         "password": "old-password"})).json()
    auth = {"type": "m.login.password", "user": "jay", "password": "old-password"}
    resp = await client.post(f"{C}/account/password", headers=h, json={"new_password": "new-password", "auth": auth})
    assert resp.status == 200
    assert (await client.get(f"{C}/account/whoami", headers=h)).status == 200
    assert (await client.get(f"{C}/account/whoami", headers=auth_header(other["access_token"]))).status == 401
    resp = await client.post(f"{C}/login", json={"type": "m.login.password", "user": "jay", "password": "old-password"})
    assert resp.status == 403
    auth["password"] = "new-password"
    assert (await client.post(f"{C}/account/deactivate", headers=h, json={"auth": auth})).status == 200
    assert (await client.get(f"{C}/account/whoami", headers=h)).status == 401
    resp = await client.post(f"{C}/login", json={"type": "m.login.password", "user": "jay", "password": "new-password"})
    assert resp.status == 403


async def test_capabilities(client):
    reg = await register(client, "kim")
    caps = (await (await client.get(f"{C}/capabilities", headers=auth_header(reg["access_token"]))).json())["capabilities"]
    assert caps["m.room_versions"]["default"] == "12"
    assert set(caps["m.room_versions"]["available"]) == {str(i) for i in range(1, 13)}


@pytest.mark.parametrize("config_overrides", [{"rc_login": {"address": {"per_second": 0.001, "burst_count": 2}}}])
async def test_login_rate_limited(client, config_overrides):
    body = {"type": "m.login.password", "user": "nobody", "password": "x"}
    statuses = [(await client.post(f"{C}/login", json=body)).status for _ in range(2)]
    assert statuses == [403, 403]
    resp = await client.post(f"{C}/login", json=body)
    assert resp.status == 429
    err = await resp.json()
    assert err["errcode"] == "M_LIMIT_EXCEEDED" and err["retry_after_ms"] > 0


def _mac(nonce, user, password, admin):
    msg = b"\x00".join([nonce.encode(), user.encode(), password.encode(), b"admin" if admin else b"notadmin"])
    return hmac.new(b"shared-secret", msg, hashlib.sha1).hexdigest()


async def test_shared_secret_admin_registration(hs, client):
    url = "/_synapse/admin/v1/register"
    nonce = (await (await client.get(url)).json())["nonce"]
    resp = await client.post(url, json={"nonce": nonce, "username": "root", "password": "pw", "admin": True,
                                        "mac": _mac(nonce, "root", "pw", False)})
    assert resp.status == 403  # MAC for admin=false does not match admin=true
    resp = await client.post(url, json={"nonce": nonce, "username": "root", "password": "pw", "admin": True,
                                        "mac": _mac(nonce, "root", "pw", True)})
    assert resp.status == 400  # the nonce was spent by the failed attempt
    nonce = (await (await client.get(url)).json())["nonce"]
    resp = await client.post(url, json={"nonce": nonce, "username": "root", "password": "pw", "admin": True,
                                        "mac": _mac(nonce, "root", "pw", True)})
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["user_id"] == "@root:hs.test"
    assert (await hs.auth.users.get_user("@root:hs.test")).admin is True


@pytest.mark.parametrize("config_overrides", [{
    "rc_login": {"address": {"per_second": 0.001, "burst_count": 1}},
    "listeners": [{"port": 1, "x_forwarded": True, "resources": [{"names": ["client"]}]}],
}])
async def test_x_forwarded_for_is_the_client_address(client, config_overrides):
    body = {"type": "m.login.password", "user": "nobody", "password": "x"}
    one = {"X-Forwarded-For": "203.0.113.7, 10.0.0.1"}
    two = {"X-Forwarded-For": "198.51.100.9"}
    assert (await client.post(f"{C}/login", json=body, headers=one)).status == 403
    assert (await client.post(f"{C}/login", json=body, headers=one)).status == 429
    # Another client behind the same proxy has its own budget.
    assert (await client.post(f"{C}/login", json=body, headers=two)).status == 403
