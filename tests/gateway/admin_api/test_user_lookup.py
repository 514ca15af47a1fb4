"""Admin API reads of a user's data and lookups of users (Synapse's paths): account data,
pushers, username availability, users by 3PID and by SSO identity (set through
``PUT /v2/users`` or an SSO login), and background updates (there are none). Both engines."""

from __future__ import annotations

import pytest

from gateway.storage.sso import SsoStore
from tests.gateway.client_api.conftest import auth_header, register

A = "/_synapse/admin"
C = "/_matrix/client/v3"


async def _get(client, headers, path, **params):
    resp = await client.get(A + path, headers=headers, params=params)
    return resp.status, await resp.json()


async def test_non_admins_are_refused(client, admin):
    plain = auth_header((await register(client, "plain"))["access_token"])
    for method, path in (("GET", "/v1/users/@plain:hs.test/accountdata"), ("GET", "/v1/users/@plain:hs.test/pushers"),
                         ("GET", "/v1/username_available?username=x"), ("GET", "/v1/threepid/email/users/a@b.c"),
                         ("GET", "/v1/auth_providers/oidc/users/123"), ("GET", "/v1/background_updates/status"),
                         ("POST", "/v1/background_updates/enabled"), ("POST", "/v1/background_updates/start_job"),
                         ("POST", "/v1/account_validity/validity")):
        resp = await client.request(method, A + path, headers=plain, json={})
        assert (resp.status, (await resp.json())["errcode"]) == (403, "M_FORBIDDEN"), path


async def test_account_data_and_pushers(client, admin):
    alice = (await register(client, "alice"))["access_token"]
    h = auth_header(alice)
    assert (await client.put(f"{C}/user/@alice:hs.test/account_data/im.example.settings", headers=h,
                             json={"theme": "dark"})).status == 200
    room = (await (await client.post(f"{C}/createRoom", headers=h, json={})).json())["room_id"]
    assert (await client.put(f"{C}/user/@alice:hs.test/rooms/{room}/account_data/org.example.room_pref", headers=h,
                             json={"pinned": True})).status == 200
    status, body = await _get(client, admin, "/v1/users/@alice:hs.test/accountdata")
    assert status == 200
    assert body["account_data"]["global"]["im.example.settings"] == {"theme": "dark"}
    assert body["account_data"]["rooms"] == {room: {"org.example.room_pref": {"pinned": True}}}

    assert await _get(client, admin, "/v1/users/@alice:hs.test/pushers") == (200, {"pushers": [], "total": 0})
    pusher = {"kind": "http", "app_id": "org.example.app", "pushkey": "key1", "app_display_name": "App",
              "device_display_name": "Phone", "lang": "en", "data": {"url": "https://push.example/_matrix/push/v1/notify"}}
    assert (await client.post(f"{C}/pushers/set", headers=h, json=pusher)).status == 200
    status, body = await _get(client, admin, "/v1/users/@alice:hs.test/pushers")
    assert status == 200 and body["total"] == 1
    assert {k: body["pushers"][0][k] for k in pusher} == pusher

    for path in ("/v1/users/@ghost:hs.test/accountdata", "/v1/users/@ghost:hs.test/pushers"):
        assert (await _get(client, admin, path))[1]["errcode"] == "M_NOT_FOUND"
    for path in ("/v1/users/@alice:elsewhere.test/accountdata", "/v1/users/@alice:elsewhere.test/pushers"):
        assert (await _get(client, admin, path))[0] == 400


async def test_username_available(client, admin, hs):
    await register(client, "taken")
    assert await _get(client, admin, "/v1/username_available", username="free") == (200, {"available": True})
    status, body = await _get(client, admin, "/v1/username_available", username="taken")
    assert (status, body["errcode"]) == (400, "M_USER_IN_USE")
    status, body = await _get(client, admin, "/v1/username_available", username="Bad Name")
    assert (status, body["errcode"]) == (400, "M_INVALID_USERNAME")
    status, body = await _get(client, admin, "/v1/username_available")
    assert (status, body["errcode"]) == (400, "M_MISSING_PARAM")


@pytest.mark.parametrize("config_overrides", [{"enable_registration": False}])
async def test_username_available_works_with_registration_closed(client, admin):
    closed = await client.get(f"{C}/register/available", params={"username": "free"})
    assert closed.status == 403  # the client API's check says registration is closed
    assert await _get(client, admin, "/v1/username_available", username="free") == (200, {"available": True})
    status, body = await _get(client, admin, "/v1/username_available", username="root")
    assert (status, body["errcode"]) == (400, "M_USER_IN_USE")


async def test_users_by_threepid_and_by_sso_identity(client, admin, hs):
    await register(client, "alice")
    await register(client, "bob")
    resp = await client.put(f"{A}/v2/users/@alice:hs.test", headers=admin, json={
        "threepids": [{"medium": "email", "address": "Alice@Example.org"}, {"medium": "msisdn", "address": "447700900"}],
        "external_ids": [{"auth_provider": "oidc-keycloak", "external_id": "sub/with:odd@chars"}]})
    body = await resp.json()
    assert resp.status == 200, body
    assert {(t["medium"], t["address"]) for t in body["threepids"]} == {("email", "alice@example.org"),
                                                                        ("msisdn", "447700900")}
    assert all(isinstance(t["added_at"], int) and isinstance(t["validated_at"], int) for t in body["threepids"])
    assert body["external_ids"] == [{"auth_provider": "oidc-keycloak", "external_id": "sub/with:odd@chars"}]

    for medium, address in (("email", "alice%40example.org"), ("email", "ALICE@example.org"), ("msisdn", "447700900")):
        assert await _get(client, admin, f"/v1/threepid/{medium}/users/{address}") == (200, {"user_id": "@alice:hs.test"})
    status, body = await _get(client, admin, "/v1/threepid/email/users/nobody@example.org")
    assert (status, body) == (404, {"errcode": "M_NOT_FOUND", "error": "User not found"})
    assert (await _get(client, admin, "/v1/threepid/pigeon/users/coop"))[0] == 400

    # The external ID may hold '/', ':' and '@': URL-encoded.
    status, body = await _get(client, admin, "/v1/auth_providers/oidc-keycloak/users/sub%2Fwith%3Aodd%40chars")
    assert (status, body) == (200, {"user_id": "@alice:hs.test"})
    assert (await _get(client, admin, "/v1/auth_providers/oidc-other/users/sub%2Fwith%3Aodd%40chars"))[0] == 404
    # A link made by an SSO login is found the same way.
    await SsoStore(hs.db).link_external_id("saml", "bob-uid", "@bob:hs.test")
    assert await _get(client, admin, "/v1/auth_providers/saml/users/bob-uid") == (200, {"user_id": "@bob:hs.test"})

    # Someone else's address or identity is refused (409), nothing changes.
    for extra in ({"threepids": [{"medium": "email", "address": "alice@example.org"}]},
                  {"external_ids": [{"auth_provider": "oidc-keycloak", "external_id": "sub/with:odd@chars"}]}):
        resp = await client.put(f"{A}/v2/users/@bob:hs.test", headers=admin, json=extra)
        assert resp.status == 409, extra
    assert (await _get(client, admin, "/v2/users/@bob:hs.test"))[1]["threepids"] == []
    for bad in ({"threepids": "x"}, {"threepids": [{"medium": "fax", "address": "1"}]}, {"external_ids": [{}]}):
        assert (await client.put(f"{A}/v2/users/@bob:hs.test", headers=admin, json=bad)).status == 400, bad

    # Replacing the list drops what is not in it; deactivation forgets the addresses.
    resp = await client.put(f"{A}/v2/users/@alice:hs.test", headers=admin,
                            json={"threepids": [{"medium": "msisdn", "address": "447700900"}], "external_ids": []})
    body = await resp.json()
    assert [t["medium"] for t in body["threepids"]] == ["msisdn"] and body["external_ids"] == []
    assert (await _get(client, admin, "/v1/threepid/email/users/alice@example.org"))[0] == 404
    assert (await _get(client, admin, "/v1/auth_providers/oidc-keycloak/users/sub%2Fwith%3Aodd%40chars"))[0] == 404
    assert (await client.post(f"{A}/v1/deactivate/@alice:hs.test", headers=admin, json={})).status == 200
    assert (await _get(client, admin, "/v1/threepid/msisdn/users/447700900"))[0] == 404


async def test_background_updates(client, admin):
    assert await _get(client, admin, "/v1/background_updates/status") == (200, {"enabled": True, "current_updates": {}})
    resp = await client.post(f"{A}/v1/background_updates/enabled", headers=admin, json={"enabled": False})
    assert (resp.status, await resp.json()) == (200, {"enabled": False})
    assert await _get(client, admin, "/v1/background_updates/enabled") == (200, {"enabled": False})
    assert (await _get(client, admin, "/v1/background_updates/status"))[1]["enabled"] is False
    resp = await client.post(f"{A}/v1/background_updates/enabled", headers=admin, json={"enabled": "no"})
    assert (resp.status, (await resp.json())["errcode"]) == (400, "M_INVALID_PARAM")
    for job in ("populate_stats_process_rooms", "regenerate_directory"):
        resp = await client.post(f"{A}/v1/background_updates/start_job", headers=admin, json={"job_name": job})
        assert (resp.status, await resp.json()) == (200, {})
    resp = await client.post(f"{A}/v1/background_updates/start_job", headers=admin, json={"job_name": "rm_rf"})
    assert (resp.status, (await resp.json())["errcode"]) == (400, "M_UNKNOWN")
    resp = await client.post(f"{A}/v1/background_updates/start_job", headers=admin, json={})
    assert (resp.status, (await resp.json())["errcode"]) == (400, "M_MISSING_PARAM")


async def test_account_validity_without_a_module(client, admin):
    resp = await client.post(f"{A}/v1/account_validity/validity", headers=admin, json={"user_id": "@root:hs.test"})
    body = await resp.json()
    assert resp.status == 400 and body["errcode"] == "M_UNKNOWN" and "not enabled" in body["error"]
