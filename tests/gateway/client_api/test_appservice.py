"""Application services on the client-server API: identity assertion, registration and
login, exclusive namespaces, timestamp massaging, device management, deactivation, ping,
third-party lookups and published room lists (both engines).

Spec: https://spec.matrix.org/latest/application-service-api/#client-server-api-extensions
"""

from __future__ import annotations

import pytest
import yaml

from tests.gateway.client_api.conftest import auth_header, register
from tests.support.fake_appservice import fake_appservice

AS_TOKEN, HS_TOKEN = "as-token-1", "hs-token-1"
AS2_TOKEN, HS2_TOKEN = "as-token-2", "hs-token-2"
AS3_TOKEN = "as-token-3"
AS = auth_header(AS_TOKEN)


@pytest.fixture
async def services():
    async with fake_appservice(HS_TOKEN) as one, fake_appservice(HS2_TOKEN) as two:
        yield one, two


@pytest.fixture
def config_overrides(tmp_path, services):
    one, two = services
    regs = [
        {"id": "irc", "url": one.url, "as_token": AS_TOKEN, "hs_token": HS_TOKEN, "sender_localpart": "ircbot",
         "rate_limited": False, "protocols": ["irc"],
         "namespaces": {"users": [{"exclusive": True, "regex": "@_irc_.*"}],
                        "aliases": [{"exclusive": True, "regex": "#_irc_.*"}]}},
        {"id": "other", "url": two.url, "as_token": AS2_TOKEN, "hs_token": HS2_TOKEN, "sender_localpart": "otherbot",
         "protocols": ["irc"], "namespaces": {"users": [{"exclusive": False, "regex": "@_shared_.*"}]}},
        {"id": "modern", "url": None, "as_token": AS3_TOKEN, "hs_token": "x", "sender_localpart": "modernbot",
         "io.element.msc4190": True, "ip_range_whitelist": ["127.0.0.0/8"],
         "namespaces": {"users": [{"exclusive": True, "regex": "@_modern_.*"}]}},
    ]
    files = []
    for i, reg in enumerate(regs):
        path = tmp_path / f"as{i}.yaml"
        path.write_text(yaml.safe_dump(reg))
        files.append(str(path))
    return {"app_service_config_files": files}


@pytest.fixture(autouse=True)
async def senders(hs):
    await hs.appservices.ensure_senders()


async def as_register(client, username: str, token: str = AS_TOKEN, **extra) -> tuple[int, dict]:
    resp = await client.post("/_matrix/client/v3/register", headers=auth_header(token),
                             json={"type": "m.login.application_service", "username": username, **extra})
    return resp.status, await resp.json()


async def whoami(client, query: dict | None = None, token: str = AS_TOKEN) -> tuple[int, dict]:
    resp = await client.get("/_matrix/client/v3/account/whoami", headers=auth_header(token), params=query or {})
    return resp.status, await resp.json()


# --- identity assertion ---------------------------------------------------------------------


async def test_as_token_acts_as_sender_or_namespace_users(client):
    assert await whoami(client) == (200, {"user_id": "@ircbot:hs.test", "is_guest": False})
    status, body = await as_register(client, "_irc_alice", inhibit_login=True)
    assert (status, body) == (200, {"user_id": "@_irc_alice:hs.test", "home_server": "hs.test"})
    assert (await whoami(client, {"user_id": "@_irc_alice:hs.test"}))[1]["user_id"] == "@_irc_alice:hs.test"
    # Outside its namespace, or not registered: refused.
    status, body = await whoami(client, {"user_id": "@someone:hs.test"})
    assert (status, body["errcode"]) == (403, "M_FORBIDDEN")
    status, body = await whoami(client, {"user_id": "@_irc_nobody:hs.test"})
    assert (status, body["errcode"]) == (403, "M_FORBIDDEN")
    # Another server's user matching the regex is not in the namespace.
    status, _ = await whoami(client, {"user_id": "@_irc_alice:elsewhere.test"})
    assert status == 403


async def test_device_masquerading(client):
    status, body = await as_register(client, "_irc_bob")
    assert status == 200 and body["access_token"] and body["device_id"]
    device = body["device_id"]
    for param in ("device_id", "org.matrix.msc3202.device_id"):
        status, me = await whoami(client, {"user_id": "@_irc_bob:hs.test", param: device})
        assert (status, me.get("device_id")) == (200, device)
    status, body = await whoami(client, {"user_id": "@_irc_bob:hs.test", "device_id": "NOPE"})
    assert (status, body["errcode"]) == (400, "M_UNKNOWN_DEVICE")
    status, body = await whoami(client, {"device_id": device})  # the sender has no such device
    assert (status, body["errcode"]) == (400, "M_UNKNOWN_DEVICE")


async def test_admins_decisions_about_its_users_hold(client, hs):
    await as_register(client, "_irc_locked", inhibit_login=True)
    await as_register(client, "_irc_quiet", inhibit_login=True)
    await hs.auth.users.set_flag("@_irc_locked:hs.test", "locked", True)
    await hs.auth.users.set_flag("@_irc_quiet:hs.test", "suspended", True)
    status, body = await whoami(client, {"user_id": "@_irc_locked:hs.test"})
    assert (status, body["errcode"]) == (401, "M_USER_LOCKED")
    # A suspended user may read, not send.
    assert (await whoami(client, {"user_id": "@_irc_quiet:hs.test"}))[0] == 200
    resp = await client.post("/_matrix/client/v3/createRoom", headers=AS, params={"user_id": "@_irc_quiet:hs.test"},
                             json={})
    assert (resp.status, (await resp.json())["errcode"]) == (403, "M_USER_SUSPENDED")


async def test_unknown_token_and_ip_whitelist(client, hs):
    status, body = await whoami(client, token="not-a-token")
    assert (status, body["errcode"]) == (401, "M_UNKNOWN_TOKEN")
    # The test client connects from 127.0.0.1, inside the third service's whitelist.
    assert (await whoami(client, token=AS3_TOKEN))[0] == 200
    service = hs.appservices.by_id("modern")
    assert not service.may_connect_from("192.0.2.1")


# --- registration and login -------------------------------------------------------------------


async def test_registration(client, hs):
    status, body = await as_register(client, "_irc_carol", device_id="DEV1", initial_device_display_name="bridge")
    assert status == 200 and body["user_id"] == "@_irc_carol:hs.test" and body["device_id"] == "DEV1"
    assert (await whoami(client, token=body["access_token"]))[1]["user_id"] == "@_irc_carol:hs.test"
    assert await hs.appservices.store.get_user_appservice("@_irc_carol:hs.test") == "irc"
    status, body = await as_register(client, "_irc_carol")
    assert (status, body["errcode"]) == (400, "M_USER_IN_USE")
    status, body = await as_register(client, "outsider")
    assert (status, body["errcode"]) == (400, "M_EXCLUSIVE")
    # Another service's exclusive namespace, even when the registering one's regex matched.
    status, body = await as_register(client, "_modern_x", token=AS2_TOKEN)
    assert (status, body["errcode"]) == (400, "M_EXCLUSIVE")
    # A non-exclusive namespace: its service registers, and so may a person.
    assert (await as_register(client, "_shared_one", token=AS2_TOKEN))[0] == 200
    await register(client, "_shared_two")
    # The sender exists from the start (services act as it without registering it).
    status, body = await as_register(client, "ircbot")
    assert (status, body["errcode"]) == (400, "M_USER_IN_USE")


async def test_registration_errors(client):
    resp = await client.post("/_matrix/client/v3/register", json={"type": "m.login.application_service",
                                                                  "username": "_irc_x"})
    assert (resp.status, (await resp.json())["errcode"]) == (401, "M_MISSING_TOKEN")
    status, body = await as_register(client, "_irc_x", token="wrong")
    assert (status, body["errcode"]) == (401, "M_UNKNOWN_TOKEN")
    resp = await client.post("/_matrix/client/v3/register", headers=AS,
                             json={"username": "_irc_x", "auth": {"type": "m.login.dummy"}, "password": "p" * 10})
    assert (resp.status, (await resp.json())["errcode"]) == (400, "M_INVALID_PARAM")
    status, body = await as_register(client, "")
    assert (status, body["errcode"]) == (400, "M_INVALID_USERNAME")
    # MSC4190 services manage devices themselves: no login at registration.
    status, body = await as_register(client, "_modern_a", token=AS3_TOKEN)
    assert (status, body["errcode"]) == (400, "M_APPSERVICE_LOGIN_UNSUPPORTED")
    assert (await as_register(client, "_modern_a", token=AS3_TOKEN, inhibit_login=True))[0] == 200


async def test_people_cannot_take_exclusive_names(client):
    for name in ("_irc_mallory", "ircbot"):
        resp = await client.post("/_matrix/client/v3/register", json={
            "username": name, "password": "p" * 12, "auth": {"type": "m.login.dummy"}})
        assert (resp.status, (await resp.json())["errcode"]) == (400, "M_EXCLUSIVE")
        resp = await client.get("/_matrix/client/v3/register/available", params={"username": name})
        assert (resp.status, (await resp.json())["errcode"]) == (400, "M_EXCLUSIVE")


async def test_registration_works_with_registration_closed(client, hs):
    from dataclasses import replace

    hs.config = replace(hs.config, enable_registration=False)
    resp = await client.post("/_matrix/client/v3/register", json={
        "username": "someone", "password": "p" * 12, "auth": {"type": "m.login.dummy"}})
    assert resp.status == 403
    assert (await as_register(client, "_irc_closed", inhibit_login=True))[0] == 200


async def test_login(client):
    await as_register(client, "_irc_dan", inhibit_login=True)
    resp = await client.get("/_matrix/client/v3/login")
    assert {"type": "m.login.application_service"} in (await resp.json())["flows"]
    resp = await client.post("/_matrix/client/v3/login", headers=AS, json={
        "type": "m.login.application_service", "identifier": {"type": "m.id.user", "user": "_irc_dan"}})
    body = await resp.json()
    assert resp.status == 200 and body["user_id"] == "@_irc_dan:hs.test"
    assert (await whoami(client, token=body["access_token"]))[1]["device_id"] == body["device_id"]
    resp = await client.post("/_matrix/client/v3/login", headers=AS, json={
        "type": "m.login.application_service", "identifier": {"type": "m.id.user", "user": "someone"}})
    assert (resp.status, (await resp.json())["errcode"]) == (403, "M_FORBIDDEN")
    resp = await client.post("/_matrix/client/v3/login", json={
        "type": "m.login.application_service", "identifier": {"type": "m.id.user", "user": "_irc_dan"}})
    assert (resp.status, (await resp.json())["errcode"]) == (401, "M_MISSING_TOKEN")
    resp = await client.post("/_matrix/client/v3/login", headers=auth_header(AS3_TOKEN), json={
        "type": "m.login.application_service", "identifier": {"type": "m.id.user", "user": "_modern_b"}})
    assert (resp.status, (await resp.json())["errcode"]) == (400, "M_APPSERVICE_LOGIN_UNSUPPORTED")


# --- acting for users -----------------------------------------------------------------------------


async def test_timestamp_massaging(client):
    await as_register(client, "_irc_eve", inhibit_login=True)
    user = {"user_id": "@_irc_eve:hs.test"}
    resp = await client.post("/_matrix/client/v3/createRoom", headers=AS, params=user, json={})
    room_id = (await resp.json())["room_id"]
    resp = await client.put(f"/_matrix/client/v3/rooms/{room_id}/send/m.room.message/1", headers=AS,
                            params={**user, "ts": "1234567890123"}, json={"msgtype": "m.text", "body": "old"})
    event_id = (await resp.json())["event_id"]
    resp = await client.put(f"/_matrix/client/v3/rooms/{room_id}/state/m.room.topic", headers=AS,
                            params={**user, "ts": "1234567890999"}, json={"topic": "then"})
    topic_id = (await resp.json())["event_id"]
    for eid, ts in ((event_id, 1234567890123), (topic_id, 1234567890999)):
        resp = await client.get(f"/_matrix/client/v3/rooms/{room_id}/event/{eid}", headers=AS, params=user)
        assert (await resp.json())["origin_server_ts"] == ts
    for bad in ("-5", "soon", str(2**53)):
        resp = await client.put(f"/_matrix/client/v3/rooms/{room_id}/send/m.room.message/b{bad}", headers=AS,
                                params={**user, "ts": bad}, json={"msgtype": "m.text", "body": "x"})
        assert (resp.status, (await resp.json())["errcode"]) == (400, "M_INVALID_PARAM")
    # Anyone else's ts is ignored.
    person = await register(client, "frank")
    resp = await client.post("/_matrix/client/v3/createRoom", headers=auth_header(person["access_token"]), json={})
    other = (await resp.json())["room_id"]
    resp = await client.put(f"/_matrix/client/v3/rooms/{other}/send/m.room.message/1", params={"ts": "5"},
                            headers=auth_header(person["access_token"]), json={"msgtype": "m.text", "body": "now"})
    eid = (await resp.json())["event_id"]
    resp = await client.get(f"/_matrix/client/v3/rooms/{other}/event/{eid}", headers=auth_header(person["access_token"]))
    assert (await resp.json())["origin_server_ts"] > 1_000_000_000_000


async def test_devices_and_deactivation_without_ui_auth(client, hs):
    await as_register(client, "_modern_g", token=AS3_TOKEN, inhibit_login=True)
    headers, user = auth_header(AS3_TOKEN), {"user_id": "@_modern_g:hs.test"}
    # MSC4190: PUT /devices creates the device (201), then renames it (200).
    resp = await client.put("/_matrix/client/v3/devices/BRIDGEDEV", headers=headers, params=user,
                            json={"display_name": "bridge"})
    assert resp.status == 201
    resp = await client.put("/_matrix/client/v3/devices/BRIDGEDEV", headers=headers, params=user,
                            json={"display_name": "renamed"})
    assert resp.status == 200
    device = await hs.auth.devices.get_device("@_modern_g:hs.test", "BRIDGEDEV")
    assert device is not None and device.display_name == "renamed"
    assert (await whoami(client, {**user, "device_id": "BRIDGEDEV"}, token=AS3_TOKEN))[1]["device_id"] == "BRIDGEDEV"
    resp = await client.delete("/_matrix/client/v3/devices/BRIDGEDEV", headers=headers, params=user, json={})
    assert resp.status == 200 and await hs.auth.devices.get_device("@_modern_g:hs.test", "BRIDGEDEV") is None
    # A person cannot create devices that way.
    person = await register(client, "grace")
    resp = await client.put("/_matrix/client/v3/devices/NEWONE", headers=auth_header(person["access_token"]),
                            json={"display_name": "x"})
    assert resp.status == 404
    # The service deactivates its user, no password asked.
    resp = await client.post("/_matrix/client/v3/account/deactivate", headers=headers, params=user, json={})
    assert resp.status == 200
    assert (await hs.auth.users.get_user("@_modern_g:hs.test")).deactivated


async def test_rate_limited_false_exempts_its_users(client, hs):
    from gateway.config import RateLimit
    from gateway.http import MatrixError

    await as_register(client, "_irc_fast", inhibit_login=True)
    tight = RateLimit(per_second=0.001, burst_count=1)
    limiter = hs.ratelimiters["rc_message"]
    # rate_limited: false: its users are never limited; every service's sender never is.
    for user_id in ("@_irc_fast:hs.test", "@otherbot:hs.test"):
        for _ in range(5):
            limiter.ratelimit(user_id, limit=tight)
    # rate_limited defaults to true; people are limited.
    for user_id in ("@_shared_x:hs.test", "@person:hs.test"):
        limiter.ratelimit(user_id, limit=tight)
        with pytest.raises(MatrixError) as e:
            limiter.ratelimit(user_id, limit=tight)
        assert e.value.errcode == "M_LIMIT_EXCEEDED"


async def test_aliases(client):
    person = await register(client, "heidi")
    ph = auth_header(person["access_token"])
    room_id = (await (await client.post("/_matrix/client/v3/createRoom", headers=ph, json={})).json())["room_id"]
    resp = await client.put("/_matrix/client/v3/directory/room/%23_irc_chan:hs.test", headers=ph,
                            json={"room_id": room_id})
    assert (resp.status, (await resp.json())["errcode"]) == (400, "M_EXCLUSIVE")
    # The service makes aliases of its namespace without being in the room, and only those.
    resp = await client.put("/_matrix/client/v3/directory/room/%23_irc_chan:hs.test", headers=AS,
                            json={"room_id": room_id})
    assert resp.status == 200
    resp = await client.put("/_matrix/client/v3/directory/room/%23elsewhere:hs.test", headers=AS,
                            json={"room_id": room_id})
    assert (resp.status, (await resp.json())["errcode"]) == (400, "M_EXCLUSIVE")
    # Not even the room's creator deletes it.
    resp = await client.delete("/_matrix/client/v3/directory/room/%23_irc_chan:hs.test", headers=ph)
    assert (resp.status, (await resp.json())["errcode"]) == (400, "M_EXCLUSIVE")
    resp = await client.delete("/_matrix/client/v3/directory/room/%23_irc_chan:hs.test", headers=AS)
    assert resp.status == 200


# --- queries to services ---------------------------------------------------------------------


async def test_unknown_users_and_aliases_are_asked(client, services):
    one, _ = services
    person = await register(client, "ivan")
    ph = auth_header(person["access_token"])
    room_id = (await (await client.post("/_matrix/client/v3/createRoom", headers=ph, json={})).json())["room_id"]

    async def create_user(rec):
        await as_register(client, rec.path.rsplit("/", 1)[1].split(":")[0][1:], inhibit_login=True)
        return 200, {}

    one.answers["/_matrix/app/v1/users/@_irc_judy:hs.test"] = create_user
    resp = await client.post(f"/_matrix/client/v3/rooms/{room_id}/invite", headers=ph,
                             json={"user_id": "@_irc_judy:hs.test"})
    assert resp.status == 200
    # A user the service does not know: 404 from it, 404 here.
    resp = await client.post(f"/_matrix/client/v3/rooms/{room_id}/invite", headers=ph,
                             json={"user_id": "@_irc_unknown:hs.test"})
    assert resp.status == 404
    asked = [r for r in one.requests if r.path.startswith("/_matrix/app/v1/users/")]
    assert [r.path for r in asked] == ["/_matrix/app/v1/users/@_irc_judy:hs.test",
                                       "/_matrix/app/v1/users/@_irc_unknown:hs.test"]
    assert all(r.authorization == f"Bearer {HS_TOKEN}" for r in asked)

    async def create_alias(rec):
        resp = await client.put("/_matrix/client/v3/directory/room/%23_irc_lobby:hs.test", headers=AS,
                                json={"room_id": room_id})
        assert resp.status == 200
        return 200, {}

    one.answers["/_matrix/app/v1/rooms/#_irc_lobby:hs.test"] = create_alias
    resp = await client.get("/_matrix/client/v3/directory/room/%23_irc_lobby:hs.test")
    assert (resp.status, (await resp.json())["room_id"]) == (200, room_id)
    resp = await client.get("/_matrix/client/v3/directory/room/%23_irc_none:hs.test")
    assert resp.status == 404
    # Aliases outside every namespace are not asked about.
    before = len(one.requests)
    assert (await client.get("/_matrix/client/v3/directory/room/%23plain:hs.test")).status == 404
    assert len(one.requests) == before


# --- ping ---------------------------------------------------------------------------------------


async def test_ping(client, services):
    one, two = services
    resp = await client.post("/_matrix/client/v1/appservice/irc/ping", headers=AS, json={"transaction_id": "meow"})
    body = await resp.json()
    assert resp.status == 200 and isinstance(body["duration_ms"], int)
    [ping] = [r for r in one.requests if r.path == "/_matrix/app/v1/ping"]
    assert (ping.body, ping.authorization) == ({"transaction_id": "meow"}, f"Bearer {HS_TOKEN}")
    # The service refuses: 502 M_BAD_STATUS with its status and body.
    two.answers["/_matrix/app/v1/ping"] = (403, {"errcode": "M_FORBIDDEN"})
    resp = await client.post("/_matrix/client/v1/appservice/other/ping", headers=auth_header(AS2_TOKEN), json={})
    body = await resp.json()
    assert (resp.status, body["errcode"], body["status"]) == (502, "M_BAD_STATUS", 403)
    assert "M_FORBIDDEN" in body["body"]
    # Another service's ID, a person, no URL.
    resp = await client.post("/_matrix/client/v1/appservice/other/ping", headers=AS, json={})
    assert (resp.status, (await resp.json())["errcode"]) == (403, "M_FORBIDDEN")
    person = await register(client, "kim")
    resp = await client.post("/_matrix/client/v1/appservice/irc/ping", headers=auth_header(person["access_token"]),
                             json={})
    assert resp.status == 403
    resp = await client.post("/_matrix/client/v1/appservice/modern/ping", headers=auth_header(AS3_TOKEN), json={})
    assert (resp.status, (await resp.json())["errcode"]) == (400, "M_URL_NOT_SET")


async def test_ping_unreachable(client, services, hs):
    one, _ = services
    # Point the service at a port nobody listens on.
    from dataclasses import replace

    from tests.conftest import free_port

    service = hs.appservices.by_id("irc")
    moved = replace(service, url=f"http://127.0.0.1:{free_port()}")
    hs.appservices._by_id["irc"] = moved
    resp = await client.post("/_matrix/client/v1/appservice/irc/ping", headers=AS, json={})
    assert (resp.status, (await resp.json())["errcode"]) == (502, "M_CONNECTION_FAILED")


# --- third-party networks and published room lists -------------------------------------------------


async def test_thirdparty_lookups(client, services):
    one, two = services
    meta = {"user_fields": ["nick"], "location_fields": ["channel"], "icon": "mxc://x/y", "field_types": {}}
    one.answers["/_matrix/app/v1/thirdparty/protocol/irc"] = (200, {**meta, "instances": [
        {"desc": "Libera", "network_id": "libera", "fields": {}}]})
    two.answers["/_matrix/app/v1/thirdparty/protocol/irc"] = (200, {**meta, "instances": [{"desc": "OFTC"}]})
    person = await register(client, "leo")
    ph = auth_header(person["access_token"])
    resp = await client.get("/_matrix/client/v3/thirdparty/protocols", headers=ph)
    body = await resp.json()
    assert set(body) == {"irc"}
    instances = sorted(body["irc"]["instances"], key=lambda i: i["desc"])
    assert instances == [{"desc": "Libera", "network_id": "libera", "fields": {}, "instance_id": "irc|libera"},
                         {"desc": "OFTC"}]
    resp = await client.get("/_matrix/client/v3/thirdparty/protocol/irc", headers=ph)
    assert resp.status == 200 and len((await resp.json())["instances"]) == 2
    assert (await client.get("/_matrix/client/v3/thirdparty/protocol/xmpp", headers=ph)).status == 404

    one.answers["/_matrix/app/v1/thirdparty/user/irc"] = (200, [
        {"userid": "@_irc_nick:hs.test", "protocol": "irc", "fields": {"nick": "nick"}}])
    two.answers["/_matrix/app/v1/thirdparty/user/irc"] = (500, {})
    resp = await client.get("/_matrix/client/v3/thirdparty/user/irc", headers=ph, params={"nick": "nick"})
    assert await resp.json() == [{"userid": "@_irc_nick:hs.test", "protocol": "irc", "fields": {"nick": "nick"}}]
    [asked] = [r for r in one.requests if r.path == "/_matrix/app/v1/thirdparty/user/irc"]
    assert asked.query == {"nick": "nick"}
    one.answers["/_matrix/app/v1/thirdparty/location"] = (200, [
        {"alias": "#_irc_chan:hs.test", "protocol": "irc", "fields": {"channel": "#chan"}}])
    resp = await client.get("/_matrix/client/v3/thirdparty/location", headers=ph,
                            params={"alias": "#_irc_chan:hs.test"})
    assert [x["alias"] for x in await resp.json()] == ["#_irc_chan:hs.test"]
    resp = await client.get("/_matrix/client/v3/thirdparty/location", headers=ph)
    assert resp.status == 400


async def test_published_room_lists(client):
    person = await register(client, "mia")
    ph = auth_header(person["access_token"])
    room_id = (await (await client.post("/_matrix/client/v3/createRoom", headers=ph,
                                        json={"preset": "public_chat", "name": "bridged"})).json())["room_id"]

    async def listed(body):
        resp = await client.post("/_matrix/client/v3/publicRooms", headers=ph, json=body)
        assert resp.status == 200, await resp.text()
        return [r["room_id"] for r in (await resp.json())["chunk"]]

    resp = await client.put(f"/_matrix/client/v3/directory/list/appservice/libera/{room_id}", headers=ph,
                            json={"visibility": "public"})
    assert resp.status == 403
    resp = await client.put(f"/_matrix/client/v3/directory/list/appservice/libera/{room_id}", headers=AS,
                            json={"visibility": "public"})
    assert resp.status == 200
    assert room_id not in await listed({})
    assert room_id in await listed({"third_party_instance_id": "irc|libera"})
    assert room_id not in await listed({"third_party_instance_id": "irc|oftc"})
    assert room_id in await listed({"include_all_networks": True})
    resp = await client.get("/_matrix/client/v3/publicRooms", headers=ph,
                            params={"third_party_instance_id": "irc|libera"})
    assert room_id in [r["room_id"] for r in (await resp.json())["chunk"]]
    resp = await client.post("/_matrix/client/v3/publicRooms", headers=ph, json={"third_party_instance_id": "nope"})
    assert resp.status == 400
    resp = await client.put(f"/_matrix/client/v3/directory/list/appservice/libera/{room_id}", headers=AS,
                            json={"visibility": "sideways"})
    assert resp.status == 400
    resp = await client.delete(f"/_matrix/client/v3/directory/list/appservice/libera/{room_id}", headers=AS)
    assert resp.status == 200
    assert room_id not in await listed({"third_party_instance_id": "irc|libera"})
