"""Modules: loading (errors name the config key), each callback family exercised over HTTP,
ordering between modules, and modules that raise. Both engines."""

from __future__ import annotations

import pytest

from gateway.config import ConfigError, parse_config
from gateway.server import HomeServer
from tests.gateway.client_api.conftest import BASE_CONFIG, auth_header, register
from tests.gateway.client_api.test_rooms import create, get, post, send

M = "tests.gateway.modules.sample_modules"
C = "/_matrix/client/v3"


def module(name: str, **config) -> dict:
    return {"module": f"{M}.{name}", "config": config}


def instance(hs, cls_name: str):
    return next(m for m in hs.modules.instances if type(m).__name__ == cls_name)


async def login(client, user, password="pw-" + "x" * 8, **extra):
    body = {"type": "m.login.password", "identifier": {"type": "m.id.user", "user": user}, "password": password}
    body.update(extra)
    resp = await client.post(f"{C}/login", json=body)
    return resp.status, await resp.json()


# --- loading ----------------------------------------------------------------------------


@pytest.mark.parametrize("modules, key, words", [
    ([{"module": "nodots"}], "modules[0].module", "dotted path"),
    ([{"module": f"{M}.Missing"}], "modules[0].module", "cannot load"),
    ([{"module": "no_such_package.Thing"}], "modules[0].module", "cannot load"),
    ([module("Recorder"), {"module": f"{M}.NeedsConfig", "config": {}}], "modules[1].config", "'colour' is required"),
    ([module("FailsToStart")], "modules[0]", "no database for me"),
    ([module("Passwords"), module("OtherPinFields")], "modules[1]", "different fields"),
    ([{"module": f"{M}.Recorder", "config": []}], "modules[0].config", "mapping"),
    ([{"module": f"{M}.Recorder", "extra": 1}], "modules[0].extra", "unknown key"),
    ("not a list", "modules", "list"),
])
async def test_broken_module_config_stops_startup_naming_the_key(tmp_path, modules, key, words):
    data = {**BASE_CONFIG, "database": {"name": "sqlite3", "args": {"database": str(tmp_path / "db")}},
            "modules": modules}
    with pytest.raises(ConfigError) as err:
        await HomeServer.open(parse_config(data, config_path=str(tmp_path / "homeserver.yaml")))
    assert err.value.path == key and words in str(err.value)


# --- spam checker -----------------------------------------------------------------------


@pytest.fixture
def config_overrides():
    return {"modules": [module("SpamRules", no_join=["@mallory:hs.test"], no_invite=["@trent:hs.test"],
                               no_rooms=["@mallory:hs.test"], no_register=["spammer"], shadow_ban=["sneaky"], no_login=["@eve:hs.test"], no_publish=["@bob:hs.test"]),
                        module("SecondOpinion"), module("Rules", keep=["@keeper:hs.test"]), module("Validity",
                        expired=["@old:hs.test"]), module("Passwords"), module("Pages"), module("SamePath")]}


async def test_check_event_for_spam_and_ordering(hs, client):
    alice = (await register(client, "alice"))["access_token"]
    room = await create(client, alice, preset="public_chat")
    ok = await send(client, alice, room, "hello", txn="1")
    assert ok["status"] == 200
    refused = await send(client, alice, room, "buy spam now", txn="2")
    assert refused["status"] == 403 and refused["errcode"] == "M_FORBIDDEN"
    limited = await send(client, alice, room, "over the limit", txn="3")
    assert limited["status"] == 403 and limited["errcode"] == "M_LIMIT_EXCEEDED" and limited["retry_after_ms"] == 5
    legacy = await send(client, alice, room, "legacy true", txn="4")
    assert legacy["status"] == 403 and legacy["errcode"] == "M_FORBIDDEN"
    cabbage = await send(client, alice, room, "cabbage soup", txn="5")
    assert cabbage["status"] == 403 and cabbage["error"] == "Messages about cabbages are not welcome here"
    # The second module is only asked when the first one allowed the event.
    first, second = instance(hs, "SpamRules"), instance(hs, "SecondOpinion")
    asked_second = {c[0] for c in second.called("check_event_for_spam")}
    refused_by_first = {c[0] for c in first.called("check_event_for_spam") if c[1] != "hello" and "cabbage" not in c[1]}
    assert asked_second and not (asked_second & refused_by_first)
    # Nothing refused was stored.
    status, msgs = await get(client, alice, f"/rooms/{room}/messages", dir="b", limit="50")
    bodies = [e["content"].get("body") for e in msgs["chunk"] if e["type"] == "m.room.message"]
    assert bodies == ["hello"]


async def test_room_creation_joins_and_invites(hs, client):
    alice = (await register(client, "alice"))["access_token"]
    mallory = (await register(client, "mallory"))["access_token"]
    await register(client, "trent")
    bob = (await register(client, "bob"))["access_token"]
    status, body = await post(client, mallory, "/createRoom", {})
    assert status == 403 and body["errcode"] == "M_FORBIDDEN"
    room = await create(client, alice, preset="public_chat", name="Garden")
    # on_create_room changed the request: the topic comes from the module.
    status, topic = await get(client, alice, f"/rooms/{room}/state/m.room.topic")
    assert topic == {"topic": "Set by a module"}
    status, body = await post(client, alice, "/createRoom", {"name": "forbidden"})
    assert status == 403 and body["error"] == "No such rooms here"
    status, body = await post(client, mallory, f"/rooms/{room}/join")
    assert status == 403
    assert (await post(client, bob, f"/rooms/{room}/join"))[0] == 200
    rules = instance(hs, "SpamRules")
    assert ("@bob:hs.test", room, False) in rules.called("user_may_join_room")
    status, body = await post(client, alice, f"/rooms/{room}/invite", {"user_id": "@trent:hs.test"})
    assert status == 403
    # Invites in createRoom: a refused invitee is left out, the room is still made.
    room2 = await create(client, alice, invite=["@trent:hs.test", "@bob:hs.test"])
    status, members = await get(client, alice, f"/rooms/{room2}/members")
    invited = {e["state_key"] for e in members["chunk"] if e["content"]["membership"] == "invite"}
    assert invited == {"@bob:hs.test"}


async def test_third_party_rules_on_events(hs, client):
    alice = (await register(client, "alice"))["access_token"]
    room = await create(client, alice)
    refused = await send(client, alice, room, "forbidden words", txn="a")
    assert refused["status"] == 403 and refused["errcode"] == "M_FORBIDDEN"
    shouted = await send(client, alice, room, "shout", txn="b")
    assert shouted["status"] == 200
    status, event = await get(client, alice, f"/rooms/{room}/event/{shouted['event_id']}")
    assert event["content"]["body"] == "SHOUT"
    rules = instance(hs, "Rules")
    # check_event_allowed saw the room's state (the create event) for the message.
    assert ("m.room.message", True) in rules.called("check_event_allowed")

    # on_new_event runs after storing, for each stored event, with the state after it.
    async def seen():
        return [c for c in rules.called("on_new_event") if c[1] == shouted["event_id"]]
    for _ in range(200):
        if await seen():
            break
        task = next(iter(hs.events._module_tasks), None)
        if task is not None:
            await task
    (found,) = await seen()
    assert found[0] == "m.room.message" and found[2] >= 5


async def test_account_validity(hs, client):
    old = (await register(client, "old"))["access_token"]
    status, body = await get(client, old, "/account/whoami")
    assert status == 403 and body["errcode"] == "ORG_MATRIX_EXPIRED_ACCOUNT"
    resp = await client.post(f"{C}/logout", headers=auth_header(old))
    assert resp.status == 200  # logging out still works
    fresh = (await register(client, "fresh"))["access_token"]
    assert (await get(client, fresh, "/account/whoami"))[0] == 200
    assert ("@fresh:hs.test",) in instance(hs, "Validity").called("on_user_registration")


async def test_account_validity_admin_api(hs, client):
    """``POST /_synapse/admin/v1/account_validity/validity`` is the module's
    ``on_legacy_admin_request``: the admin renews an expired account, or ends one."""
    await hs.auth.users.create_user("@root:hs.test", password_hash=None, created_ts=1, admin=True)
    admin = auth_header((await hs.auth.login_session("@root:hs.test"))["access_token"])
    old = (await register(client, "old"))["access_token"]
    url = "/_synapse/admin/v1/account_validity/validity"
    resp = await client.post(url, headers=admin, json={"user_id": "@old:hs.test"})
    assert (resp.status, await resp.json()) == (200, {"expiration_ts": 4_000_000_000_000})
    assert (await get(client, old, "/account/whoami"))[0] == 200  # renewed
    resp = await client.post(url, headers=admin, json={"user_id": "@old:hs.test", "expiration_ts": 1_000})
    assert (resp.status, await resp.json()) == (200, {"expiration_ts": 1_000})
    assert (await get(client, old, "/account/whoami"))[1]["errcode"] == "ORG_MATRIX_EXPIRED_ACCOUNT"
    # The module's own error reaches the admin; a non-admin is refused before it is asked.
    resp = await client.post(url, headers=admin, json={})
    assert (resp.status, (await resp.json())["error"]) == (400, "Missing property 'user_id' in the request body")
    resp = await client.post(url, headers=auth_header(old), json={"user_id": "@old:hs.test"})
    assert resp.status == 403


async def test_registration_shadow_banned_by_a_module(hs, client):
    sneaky = (await register(client, "sneaky"))["access_token"]
    assert (await hs.auth.users.get_user("@sneaky:hs.test")).shadow_banned is True
    alice = (await register(client, "alice"))["access_token"]
    room = await create(client, alice, preset="public_chat")
    assert (await post(client, sneaky, f"/join/{room}"))[0] == 200
    answer = await send(client, sneaky, room, "hi", txn="s1")
    assert answer["status"] == 200 and await hs.events.store.get_event(answer["event_id"]) is None


async def test_registration_callbacks(hs, client):
    resp = await client.post(f"{C}/register", json={"username": "spammer", "password": "pw-xxxxxxxx",
                                                    "auth": {"type": "m.login.dummy"}})
    assert resp.status == 403 and (await resp.json())["errcode"] == "M_FORBIDDEN"
    assert await hs.auth.users.get_user("@spammer:hs.test") is None
    body = await register(client, "renameme")
    assert body["user_id"] == "@forced:hs.test"
    status, profile = await get(client, body["access_token"], "/profile/@forced:hs.test")
    assert profile["displayname"] == "Display renameme"
    uia_results, username = instance(hs, "Passwords").called("get_username_for_registration")[-1]
    assert uia_results == {"m.login.dummy": True} and username == "renameme"


async def test_password_auth_providers(hs, client):
    await register(client, "carol")
    # A custom login type, listed in the flows; the module registers the user it vouches for.
    flows = await (await client.get(f"{C}/login")).json()
    assert {"type": "com.example.pin"} in flows["flows"]
    resp = await client.post(f"{C}/login", json={"type": "com.example.pin", "identifier": {
        "type": "m.id.user", "user": "dave"}, "pin": "1234"})
    body = await resp.json()
    assert resp.status == 200 and body["user_id"] == "@dave:hs.test"
    passwords = instance(hs, "Passwords")
    assert ("@dave:hs.test",) in passwords.called("after_login")
    resp = await client.post(f"{C}/login", json={"type": "com.example.pin", "identifier": {
        "type": "m.id.user", "user": "dave"}, "pin": "0000"})
    assert resp.status == 403 and (await resp.json())["errcode"] == "M_FORBIDDEN"
    resp = await client.post(f"{C}/login", json={"type": "com.example.pin", "user": "dave"})  # no pin field
    assert resp.status == 403
    # m.login.password: the module first, then the local password.
    assert (await login(client, "carol", "module-secret"))[0] == 200
    assert (await login(client, "carol"))[0] == 200
    assert (await login(client, "carol", "wrong"))[0] == 403
    # A module may only vouch for users that exist here.
    assert (await login(client, "nobody", "module-secret"))[0] == 403
    # Third-party identifiers go to check_3pid_auth.
    await register(client, "pat")
    resp = await client.post(f"{C}/login", json={"type": "m.login.password", "password": "mail-secret",
                                                 "identifier": {"type": "m.id.thirdparty", "medium": "email",
                                                                "address": "pat@example.com"}})
    body = await resp.json()
    assert resp.status == 200 and body["user_id"] == "@pat:hs.test"
    resp = await client.post(f"{C}/logout", headers=auth_header(body["access_token"]))
    assert resp.status == 200
    assert ("@pat:hs.test", body["device_id"]) in passwords.called("on_logged_out")
    # check_login_for_spam refuses a login that passed the password check.
    await register(client, "eve")
    status, body = await login(client, "eve")
    assert status == 403 and body["errcode"] == "M_FORBIDDEN"


async def test_deactivation_and_profile_callbacks(hs, client):
    keeper = (await register(client, "keeper"))["access_token"]
    resp = await client.post(f"{C}/account/deactivate", headers=auth_header(keeper), json={
        "auth": {"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "keeper"},
                 "password": "pw-" + "x" * 8}})
    assert resp.status == 403
    assert not (await hs.auth.users.get_user("@keeper:hs.test")).deactivated
    leaver = (await register(client, "leaver"))["access_token"]
    resp = await client.put(f"{C}/profile/@leaver:hs.test/displayname", headers=auth_header(leaver),
                            json={"displayname": "Leaving soon"})
    assert resp.status == 200
    rules = instance(hs, "Rules")
    assert ("@leaver:hs.test", "Leaving soon") in rules.called("on_profile_update")
    resp = await client.post(f"{C}/account/deactivate", headers=auth_header(leaver), json={
        "auth": {"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "leaver"},
                 "password": "pw-" + "x" * 8}})
    assert resp.status == 200
    assert ("@leaver:hs.test", True, False) in rules.called("on_user_deactivation_status_changed")


async def test_shutdown_refused_by_module(hs, client):
    await hs.auth.users.create_user("@root:hs.test", password_hash=None, created_ts=1, admin=True)
    admin = auth_header((await hs.auth.login_session("@root:hs.test"))["access_token"])
    alice = (await register(client, "alice"))["access_token"]
    room = await create(client, alice)
    for path in (f"/_synapse/admin/v1/rooms/{room}", f"/_synapse/admin/v2/rooms/{room}"):
        resp = await client.delete(path, headers=admin, json={})
        assert resp.status == 403 and (await resp.json())["errcode"] == "M_FORBIDDEN"
    assert await hs.events.store.get_room(room) is not None


async def test_web_resources(hs, client):
    resp = await client.get("/_synapse/client/pages/hello")
    assert resp.status == 200 and await resp.text() == "hello from hs.test"  # the first module keeps the path
    resp = await client.get("/_synapse/client/pages/app/status")
    assert resp.status == 200 and await resp.json() == {"ok": True}


async def test_module_may_not_serve_under_matrix(hs):
    from gateway.modules.api import ModuleApi

    api = ModuleApi(hs, hs.modules.callbacks, {}, "x")
    with pytest.raises(ValueError):
        api.register_web_resource("/_matrix/client/v3/evil", lambda r: None)


async def test_directory_callbacks(hs, client):
    alice = (await register(client, "alice"))["access_token"]
    bob = (await register(client, "bob"))["access_token"]
    room = await create(client, alice, preset="public_chat")
    secret = await create(client, alice, name="Secret")
    h = auth_header(alice)
    resp = await client.put(f"{C}/directory/room/%23good:hs.test", headers=h, json={"room_id": room})
    assert resp.status == 200
    resp = await client.put(f"{C}/directory/room/%23bad:hs.test", headers=h, json={"room_id": room})
    assert resp.status == 403 and (await resp.json())["errcode"] == "M_FORBIDDEN"
    assert ("@alice:hs.test", "#bad:hs.test") in instance(hs, "SpamRules").called("user_may_create_room_alias")
    resp = await client.put(f"{C}/directory/list/room/{room}", headers=h, json={"visibility": "public"})
    assert resp.status == 200
    resp = await client.put(f"{C}/directory/list/room/{secret}", headers=h, json={"visibility": "public"})
    assert resp.status == 403
    # Bob may not publish (a spam checker says so), even once he has the power to.
    assert (await post(client, bob, f"/rooms/{room}/join"))[0] == 200
    status, pl = await get(client, alice, f"/rooms/{room}/state/m.room.power_levels")
    pl["users"] = {**pl.get("users", {}), "@bob:hs.test": 100}
    resp = await client.put(f"{C}/rooms/{room}/state/m.room.power_levels", headers=h, json=pl)
    assert resp.status == 200
    resp = await client.put(f"{C}/directory/list/room/{room}", headers=auth_header(bob), json={"visibility": "public"})
    assert resp.status == 403
    assert ("@bob:hs.test", room) in instance(hs, "SpamRules").called("user_may_publish_room")
