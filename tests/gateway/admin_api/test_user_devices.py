"""Admin API over a user's devices (Synapse's paths): list, show, rename, delete one or
several; deleted devices' sessions end, the others keep working. Both engines."""

from __future__ import annotations

from tests.gateway.client_api.conftest import auth_header, register

A = "/_synapse/admin"
C = "/_matrix/client/v3"


async def _login(client, device_id: str, ua: str) -> str:
    resp = await client.post(f"{C}/login", json={"type": "m.login.password", "user": "alice",
                                                 "password": "pw-" + "x" * 8, "device_id": device_id,
                                                 "initial_device_display_name": f"{device_id} name"})
    token = (await resp.json())["access_token"]
    await client.get(f"{C}/account/whoami", headers={**auth_header(token), "User-Agent": ua})
    return token


async def test_non_admins_are_refused(client, admin):
    plain = auth_header((await register(client, "plain"))["access_token"])
    for method, path in (("GET", "/v2/users/@plain:hs.test/devices"),
                         ("GET", "/v2/users/@plain:hs.test/devices/X"),
                         ("PUT", "/v2/users/@plain:hs.test/devices/X"),
                         ("DELETE", "/v2/users/@plain:hs.test/devices/X"),
                         ("POST", "/v2/users/@plain:hs.test/delete_devices")):
        resp = await client.request(method, A + path, headers=plain, json={"devices": []})
        assert (resp.status, (await resp.json())["errcode"]) == (403, "M_FORBIDDEN"), path


async def test_list_show_rename_and_delete_devices(client, admin):
    await register(client, "alice")
    phone = await _login(client, "PHONE", "phone/1")
    laptop = await _login(client, "LAPTOP", "laptop/2")
    tablet = await _login(client, "TABLET", "tablet/3")

    resp = await client.get(f"{A}/v2/users/@alice:hs.test/devices", headers=admin)
    body = await resp.json()
    assert resp.status == 200 and body["total"] == 4  # the registration's device too
    by_id = {d["device_id"]: d for d in body["devices"]}
    assert {"PHONE", "LAPTOP", "TABLET"} <= set(by_id)
    phone_json = by_id["PHONE"]
    assert phone_json["user_id"] == "@alice:hs.test" and phone_json["display_name"] == "PHONE name"
    assert phone_json["last_seen_user_agent"] == "phone/1" and phone_json["last_seen_ip"] == "127.0.0.1"
    assert isinstance(phone_json["last_seen_ts"], int)

    resp = await client.get(f"{A}/v2/users/@alice:hs.test/devices/LAPTOP", headers=admin)
    assert resp.status == 200 and (await resp.json())["last_seen_user_agent"] == "laptop/2"
    resp = await client.put(f"{A}/v2/users/@alice:hs.test/devices/LAPTOP", headers=admin,
                            json={"display_name": "Work laptop"})
    assert resp.status == 200
    mine = await (await client.get(f"{C}/devices/LAPTOP", headers=auth_header(laptop))).json()
    assert mine["display_name"] == "Work laptop"  # the user sees the new name
    resp = await client.put(f"{A}/v2/users/@alice:hs.test/devices/LAPTOP", headers=admin, json={})
    assert resp.status == 200  # nothing to change
    assert (await (await client.get(f"{C}/devices/LAPTOP", headers=auth_header(laptop))).json())["display_name"] \
        == "Work laptop"

    resp = await client.delete(f"{A}/v2/users/@alice:hs.test/devices/PHONE", headers=admin, json={})
    assert resp.status == 200
    assert (await client.get(f"{C}/account/whoami", headers=auth_header(phone))).status == 401
    assert (await client.get(f"{C}/account/whoami", headers=auth_header(laptop))).status == 200
    assert (await client.get(f"{A}/v2/users/@alice:hs.test/devices/PHONE", headers=admin)).status == 404

    resp = await client.post(f"{A}/v2/users/@alice:hs.test/delete_devices", headers=admin,
                             json={"devices": ["LAPTOP", "TABLET", "NEVER_EXISTED"]})
    assert resp.status == 200 and await resp.json() == {}
    for token in (laptop, tablet):
        assert (await client.get(f"{C}/account/whoami", headers=auth_header(token))).status == 401
    left = await (await client.get(f"{A}/v2/users/@alice:hs.test/devices", headers=admin)).json()
    assert left["total"] == 1 and left["devices"][0]["device_id"] not in ("PHONE", "LAPTOP", "TABLET")


async def test_bad_requests(client, admin):
    await register(client, "alice")
    cases = [
        ("GET", "/v2/users/@nobody:hs.test/devices", None, 404, "M_NOT_FOUND"),
        ("GET", "/v2/users/@alice:other.test/devices", None, 400, "M_INVALID_PARAM"),
        ("GET", "/v2/users/@alice:hs.test/devices/NOPE", None, 404, "M_NOT_FOUND"),
        ("PUT", "/v2/users/@alice:hs.test/devices/NOPE", {"display_name": "x"}, 404, "M_NOT_FOUND"),
        ("POST", "/v2/users/@alice:hs.test/delete_devices", {}, 400, "M_MISSING_PARAM"),
        ("POST", "/v2/users/@alice:hs.test/delete_devices", {"devices": "PHONE"}, 400, "M_INVALID_PARAM"),
        ("POST", "/v2/users/@alice:hs.test/delete_devices", {"devices": [1]}, 400, "M_INVALID_PARAM"),
    ]
    device = (await (await client.get(f"{A}/v2/users/@alice:hs.test/devices", headers=admin)).json())["devices"][0]
    cases += [
        ("PUT", f"/v2/users/@alice:hs.test/devices/{device['device_id']}", {"display_name": 7}, 400, "M_INVALID_PARAM"),
        ("PUT", f"/v2/users/@alice:hs.test/devices/{device['device_id']}", {"display_name": "x" * 101}, 400,
         "M_INVALID_PARAM"),
    ]
    for method, path, body, status, errcode in cases:
        resp = await client.request(method, A + path, headers=admin, json=body)
        assert (resp.status, (await resp.json())["errcode"]) == (status, errcode), (method, path, body)
