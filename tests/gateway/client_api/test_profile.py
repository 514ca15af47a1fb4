"""Profiles over the Client-Server API (in-process, both engines): reads (public by
default, or behind a token / shared rooms), changes with the spec's checks and errcodes,
extended fields (v1.16: ``m.tz``, custom keys, the 64 KiB limit), the capability, and
filters."""

from __future__ import annotations

import pytest

from .conftest import auth_header, register

C = "/_matrix/client/v3"


async def _json(resp):
    return resp.status, await resp.json()


async def test_profile_round_trip(client):
    reg = await register(client, "pat")
    h = auth_header(reg["access_token"])
    assert await (await client.get(f"{C}/profile/@pat:hs.test", headers=h)).json() == {"displayname": "pat"}
    assert (await client.put(f"{C}/profile/@pat:hs.test/displayname", json={"displayname": "Pat ✓"}, headers=h)).status == 200
    assert (await client.put(f"{C}/profile/@pat:hs.test/avatar_url", json={"avatar_url": "mxc://hs.test/abc"}, headers=h)).status == 200
    assert await (await client.get(f"{C}/profile/@pat:hs.test", headers=h)).json() == {
        "displayname": "Pat ✓", "avatar_url": "mxc://hs.test/abc"}
    assert await (await client.get(f"{C}/profile/@pat:hs.test/displayname", headers=h)).json() == {"displayname": "Pat ✓"}
    # r0 is the same API.
    assert await (await client.get("/_matrix/client/r0/profile/@pat:hs.test/avatar_url")).json() == {
        "avatar_url": "mxc://hs.test/abc"}


async def test_reads_need_no_token_by_default(client):
    """SyTest "GET /profile/:user_id/displayname publicly accessible"; unset display
    names and avatars read as null (as Synapse answers), unknown users are 404."""
    reg = await register(client, "pat")
    h = auth_header(reg["access_token"])
    assert await _json(await client.get(f"{C}/profile/@pat:hs.test/displayname")) == (200, {"displayname": "pat"})
    assert await _json(await client.get(f"{C}/profile/@pat:hs.test/avatar_url")) == (200, {"avatar_url": None})
    await client.put(f"{C}/profile/@pat:hs.test/avatar_url", json={"avatar_url": "mxc://hs.test/a"}, headers=h)
    assert await _json(await client.get(f"{C}/profile/@pat:hs.test/avatar_url")) == (200, {"avatar_url": "mxc://hs.test/a"})
    status, body = await _json(await client.get(f"{C}/profile/@nobody:hs.test"))
    assert status == 404 and body["errcode"] == "M_NOT_FOUND"
    status, body = await _json(await client.get(f"{C}/profile/@nobody:hs.test/displayname"))
    assert status == 404 and body["errcode"] == "M_NOT_FOUND"
    status, body = await _json(await client.get(f"{C}/profile/not-a-user-id"))
    assert status == 400 and body["errcode"] == "M_INVALID_PARAM"
    # A user whose every field is cleared has no profile to show (as Synapse).
    await client.delete(f"{C}/profile/@pat:hs.test/displayname", headers=h)
    await client.delete(f"{C}/profile/@pat:hs.test/avatar_url", headers=h)
    status, body = await _json(await client.get(f"{C}/profile/@pat:hs.test"))
    assert status == 404 and body["errcode"] == "M_NOT_FOUND"


@pytest.mark.parametrize("config_overrides", [{"require_auth_for_profile_requests": True}])
async def test_require_auth_for_profile_requests(client):
    reg = await register(client, "pat")
    for path in ("/profile/@pat:hs.test", "/profile/@pat:hs.test/displayname"):
        status, body = await _json(await client.get(C + path))
        assert status == 401 and body["errcode"] == "M_MISSING_TOKEN"
        status, body = await _json(await client.get(C + path, headers=auth_header("nonsense")))
        assert status == 401 and body["errcode"] == "M_UNKNOWN_TOKEN"
        assert (await client.get(C + path, headers=auth_header(reg["access_token"]))).status == 200


@pytest.mark.parametrize("config_overrides", [{"limit_profile_requests_to_users_who_share_rooms": True}])
async def test_limit_profile_requests_to_users_who_share_rooms(client):
    pat, quinn = await register(client, "pat"), await register(client, "quinn")
    hp, hq = auth_header(pat["access_token"]), auth_header(quinn["access_token"])
    # Who shares rooms can only be told for a known reader.
    status, body = await _json(await client.get(f"{C}/profile/@quinn:hs.test"))
    assert status == 401 and body["errcode"] == "M_MISSING_TOKEN"
    assert await _json(await client.get(f"{C}/profile/@pat:hs.test", headers=hp)) == (200, {"displayname": "pat"})
    for path in ("/profile/@quinn:hs.test", "/profile/@quinn:hs.test/displayname", "/profile/@nobody:hs.test"):
        status, body = await _json(await client.get(C + path, headers=hp))
        assert status == 403 and body["errcode"] == "M_FORBIDDEN", path
    room = (await (await client.post(f"{C}/createRoom", json={"preset": "public_chat"}, headers=hp)).json())["room_id"]
    assert (await client.post(f"{C}/join/{room}", json={}, headers=hq)).status == 200
    assert await _json(await client.get(f"{C}/profile/@quinn:hs.test", headers=hp)) == (200, {"displayname": "quinn"})
    assert await _json(await client.get(f"{C}/profile/@pat:hs.test/displayname", headers=hq)) == \
        (200, {"displayname": "pat"})


async def test_change_errors(client):
    pat = await register(client, "pat")
    await register(client, "quinn")
    h = auth_header(pat["access_token"])
    cases = [
        ("PUT", "/profile/@quinn:hs.test/displayname", {"displayname": "x"}, 403, "M_FORBIDDEN"),
        ("DELETE", "/profile/@quinn:hs.test/m.tz", None, 403, "M_FORBIDDEN"),
        ("PUT", "/profile/@pat:hs.test/displayname", {"displayname": 5}, 400, "M_INVALID_PARAM"),
        ("PUT", "/profile/@pat:hs.test/displayname", {"displayname": "x" * 257}, 400, "M_INVALID_PARAM"),
        ("PUT", "/profile/@pat:hs.test/avatar_url", {"avatar_url": ["mxc://a/b"]}, 400, "M_INVALID_PARAM"),
        ("PUT", "/profile/@pat:hs.test/avatar_url", {"avatar_url": "m" * 1001}, 400, "M_INVALID_PARAM"),
        ("PUT", "/profile/@pat:hs.test/m.tz", {"m.tz": 1}, 400, "M_INVALID_PARAM"),
        ("PUT", "/profile/@pat:hs.test/displayname", {"other": "x"}, 400, "M_MISSING_PARAM"),
        ("PUT", "/profile/@pat:hs.test/displayname", [], 400, "M_BAD_JSON"),
        ("PUT", "/profile/@pat:hs.test/Com.Example", {"Com.Example": 1}, 400, "M_INVALID_PARAM"),
        ("PUT", "/profile/@pat:hs.test/1abc", {"1abc": 1}, 400, "M_INVALID_PARAM"),
        ("PUT", "/profile/@pat:hs.test/com.ex%20ample", {"com.ex ample": 1}, 400, "M_INVALID_PARAM"),
        ("PUT", "/profile/@pat:hs.test/" + "a" * 256, {"a" * 256: 1}, 400, "M_KEY_TOO_LARGE"),
        ("DELETE", "/profile/@pat:hs.test/" + "a" * 256, None, 400, "M_KEY_TOO_LARGE"),
        ("DELETE", "/profile/@pat:hs.test/No", None, 400, "M_INVALID_PARAM"),
        ("PUT", "/profile/@pat:other.test/displayname", {"displayname": "x"}, 403, "M_FORBIDDEN"),
        ("GET", "/profile/@pat:hs.test/Bad", None, 400, "M_INVALID_PARAM"),
    ]
    for method, path, body, status, errcode in cases:
        resp = await client.request(method, C + path, json=body, headers=h)
        got = await resp.json()
        assert (resp.status, got.get("errcode")) == (status, errcode), (method, path, got)
    # Nothing was changed by the refused requests.
    assert await (await client.get(f"{C}/profile/@pat:hs.test")).json() == {"displayname": "pat"}
    # A body that is not JSON at all.
    resp = await client.put(f"{C}/profile/@pat:hs.test/displayname", data=b"{", headers=h)
    assert resp.status == 400 and (await resp.json())["errcode"] == "M_NOT_JSON"
    # Without a token, changes are refused.
    resp = await client.put(f"{C}/profile/@pat:hs.test/displayname", json={"displayname": "x"})
    assert resp.status == 401


async def test_display_name_values(client):
    """Trimmed; "" and null clear it; any string as an avatar (as Synapse, and SyTest's
    "avatar_url updates affect room member events" sets a plain word)."""
    h = auth_header((await register(client, "pat"))["access_token"])
    await client.put(f"{C}/profile/@pat:hs.test/displayname", json={"displayname": "  Pat  "}, headers=h)
    assert await (await client.get(f"{C}/profile/@pat:hs.test/displayname")).json() == {"displayname": "Pat"}
    await client.put(f"{C}/profile/@pat:hs.test/displayname", json={"displayname": ""}, headers=h)
    assert await (await client.get(f"{C}/profile/@pat:hs.test/displayname")).json() == {"displayname": None}
    await client.put(f"{C}/profile/@pat:hs.test/displayname", json={"displayname": "x" * 256}, headers=h)
    await client.put(f"{C}/profile/@pat:hs.test/displayname", json={"displayname": None}, headers=h)
    assert await (await client.get(f"{C}/profile/@pat:hs.test/displayname")).json() == {"displayname": None}
    assert (await client.put(f"{C}/profile/@pat:hs.test/avatar_url", json={"avatar_url": "LemurLover"},
                             headers=h)).status == 200
    assert await (await client.get(f"{C}/profile/@pat:hs.test")).json() == {"avatar_url": "LemurLover"}


async def test_extended_fields(client):
    h = auth_header((await register(client, "pat"))["access_token"])
    me = f"{C}/profile/@pat:hs.test"
    assert (await client.put(f"{me}/m.tz", json={"m.tz": "Europe/London"}, headers=h)).status == 200
    value = {"nested": [1, 2.5, None, True], "text": "é"}
    assert (await client.put(f"{me}/com.example.things", json={"com.example.things": value}, headers=h)).status == 200
    assert (await client.put(f"{me}/org.example-null", json={"org.example-null": None}, headers=h)).status == 200
    assert await _json(await client.get(f"{me}/m.tz")) == (200, {"m.tz": "Europe/London"})
    assert await _json(await client.get(f"{me}/com.example.things")) == (200, {"com.example.things": value})
    assert await _json(await client.get(f"{me}/org.example-null")) == (200, {"org.example-null": None})
    assert await (await client.get(me)).json() == {
        "displayname": "pat", "m.tz": "Europe/London", "com.example.things": value, "org.example-null": None}
    # Unset custom fields are 404; deleting one is 200 whether or not it was set.
    status, body = await _json(await client.get(f"{me}/com.example.unset"))
    assert status == 404 and body["errcode"] == "M_NOT_FOUND"
    assert (await client.delete(f"{me}/com.example.things", headers=h)).status == 200
    assert (await client.delete(f"{me}/com.example.things", headers=h)).status == 200
    assert (await client.get(f"{me}/com.example.things")).status == 404
    # Deleting the display name clears it; the other fields stay.
    assert (await client.delete(f"{me}/displayname", headers=h)).status == 200
    assert await (await client.get(me)).json() == {"m.tz": "Europe/London", "org.example-null": None}


async def test_profile_size_limit(client):
    """The whole profile stays within 64 KiB (M_PROFILE_TOO_LARGE); a field's new value
    replaces its old one in the count."""
    h = auth_header((await register(client, "pat"))["access_token"])
    me = f"{C}/profile/@pat:hs.test"
    big = "x" * 40_000
    assert (await client.put(f"{me}/com.example.a", json={"com.example.a": big}, headers=h)).status == 200
    assert (await client.put(f"{me}/com.example.a", json={"com.example.a": big + "y"}, headers=h)).status == 200
    status, body = await _json(await client.put(f"{me}/com.example.b", json={"com.example.b": big}, headers=h))
    assert status == 400 and body["errcode"] == "M_PROFILE_TOO_LARGE"
    assert (await client.get(f"{me}/com.example.b")).status == 404
    # Just under the limit fits: the profile is {"com.example.a": ..., "com.example.b": ..., "displayname": "pat"}.
    overhead = len('{"com.example.a":"","com.example.b":"","displayname":"pat"}')
    room = 64 * 1024 - overhead - len(big) - 1
    assert (await client.put(f"{me}/com.example.b", json={"com.example.b": "z" * room}, headers=h)).status == 200
    status, body = await _json(await client.put(f"{me}/com.example.b", json={"com.example.b": "z" * (room + 1)},
                                                headers=h))
    assert status == 400 and body["errcode"] == "M_PROFILE_TOO_LARGE"


async def test_admin_changes_another_users_profile(client, hs):
    admin = await register(client, "root")
    await hs.auth.users.set_admin("@root:hs.test", True)
    await register(client, "pat")
    h = auth_header(admin["access_token"])
    resp = await client.put(f"{C}/profile/@pat:hs.test/displayname", json={"displayname": "Renamed"}, headers=h)
    assert resp.status == 200
    assert await (await client.get(f"{C}/profile/@pat:hs.test/displayname")).json() == {"displayname": "Renamed"}


async def test_capabilities_advertise_profile_fields(client):
    h = auth_header((await register(client, "pat"))["access_token"])
    caps = (await (await client.get(f"{C}/capabilities", headers=h)).json())["capabilities"]
    assert caps["m.profile_fields"] == {"enabled": True}
    assert caps["m.set_displayname"] == {"enabled": True} and caps["m.set_avatar_url"] == {"enabled": True}


@pytest.mark.parametrize("config_overrides", [{"enable_set_displayname": False}])
async def test_enable_set_displayname_false(client, hs):
    """Users keep the display name they were given; the capability says so (both the
    v1.16 one and the deprecated one); admins still may change it."""
    h = auth_header((await register(client, "pat"))["access_token"])
    caps = (await (await client.get(f"{C}/capabilities", headers=h)).json())["capabilities"]
    assert caps["m.profile_fields"] == {"enabled": True, "disallowed": ["displayname"]}
    assert caps["m.set_displayname"] == {"enabled": False} and caps["m.set_avatar_url"] == {"enabled": True}
    status, body = await _json(await client.put(f"{C}/profile/@pat:hs.test/displayname",
                                                json={"displayname": "New"}, headers=h))
    assert status == 403 and body["errcode"] == "M_FORBIDDEN"
    assert (await client.put(f"{C}/profile/@pat:hs.test/avatar_url", json={"avatar_url": "mxc://a/b"},
                             headers=h)).status == 200
    admin = await register(client, "root")
    await hs.auth.users.set_admin("@root:hs.test", True)
    assert (await client.put(f"{C}/profile/@pat:hs.test/displayname", json={"displayname": "New"},
                             headers=auth_header(admin["access_token"]))).status == 200


@pytest.mark.parametrize("config_overrides", [{"rc_message": {"per_second": 0.001, "burst_count": 1}}])
async def test_display_name_changes_are_rate_limited(client):
    """A display name or avatar change sends events into every room: it counts against
    ``rc_message``, checked before anything is stored."""
    h = auth_header((await register(client, "pat"))["access_token"])
    assert (await client.put(f"{C}/profile/@pat:hs.test/displayname", json={"displayname": "One"},
                             headers=h)).status == 200
    status, body = await _json(await client.put(f"{C}/profile/@pat:hs.test/displayname",
                                                json={"displayname": "Two"}, headers=h))
    assert status == 429 and body["errcode"] == "M_LIMIT_EXCEEDED" and body["retry_after_ms"] > 0
    assert await (await client.get(f"{C}/profile/@pat:hs.test/displayname")).json() == {"displayname": "One"}
    # Other fields send no events: not limited.
    assert (await client.put(f"{C}/profile/@pat:hs.test/m.tz", json={"m.tz": "UTC"}, headers=h)).status == 200


async def test_filters(client):
    reg = await register(client, "rae")
    h = auth_header(reg["access_token"])
    f = {"room": {"timeline": {"limit": 10, "types": ["m.room.message"]}}}
    first = await (await client.post(f"{C}/user/@rae:hs.test/filter", json=f, headers=h)).json()
    second = await (await client.post(f"{C}/user/@rae:hs.test/filter", json={}, headers=h)).json()
    assert first["filter_id"] != second["filter_id"]
    assert await (await client.get(f"{C}/user/@rae:hs.test/filter/{first['filter_id']}", headers=h)).json() == f
    assert (await client.get(f"{C}/user/@rae:hs.test/filter/999", headers=h)).status == 404
    assert (await client.get(f"{C}/user/@rae:hs.test/filter/abc", headers=h)).status == 404
    assert (await client.post(f"{C}/user/@rae:hs.test/filter", json={"room": []}, headers=h)).status == 400
    # Filters naming what cannot be a room or a user (they would match nothing): 400.
    for bad in ({"room": {"timeline": {"rooms": ["not_a_room_id"]}}},
                {"room": {"state": {"not_senders": ["not_a_sender_id"]}}},
                {"room": {"rooms": ["#alias:hs.test"]}}, {"presence": {"senders": ["bob"]}},
                {"room": {"timeline": {"types": [0]}}},
                {"room": {"state": {"lazy_load_members": "true"}}}, {"room": {"state": {"lazy_load_members": 1}}},
                {"room": {"state": {"include_redundant_members": "true"}}}):
        resp = await client.post(f"{C}/user/@rae:hs.test/filter", json=bad, headers=h)
        assert resp.status == 400 and (await resp.json())["errcode"] == "M_BAD_JSON", bad
    good = {"room": {"rooms": ["!r:hs.test", "!" + "A" * 43], "timeline": {"senders": ["@Old.Name:hs.test"]}}}
    assert (await client.post(f"{C}/user/@rae:hs.test/filter", json=good, headers=h)).status == 200
    assert (await client.post(f"{C}/user/@other:hs.test/filter", json={}, headers=h)).status == 403


@pytest.mark.parametrize("config_overrides", [{"max_avatar_size": "1K",
                                               "allowed_avatar_mimetypes": ["image/png", "image/jpeg"]}])
async def test_avatar_size_and_media_type_limits(client):
    """Synapse's ``max_avatar_size`` and ``allowed_avatar_mimetypes``: an avatar (profile
    or member event) must name a file of our media repository within them, else 403
    ``M_FORBIDDEN``; removing the avatar is always allowed."""
    h = auth_header((await register(client, "pat"))["access_token"])

    async def upload(data: bytes, content_type: str) -> str:
        resp = await client.post("/_matrix/media/v3/upload", data=data, headers={**h, "Content-Type": content_type})
        assert resp.status == 200
        return (await resp.json())["content_uri"]

    small_png, big_png, gif = await upload(b"p" * 100, "image/png"), await upload(b"p" * 2000, "image/png"), \
        await upload(b"g" * 100, "image/gif")

    async def set_avatar(url):
        return await _json(await client.put(f"{C}/profile/@pat:hs.test/avatar_url", json={"avatar_url": url},
                                            headers=h))

    assert (await set_avatar(small_png))[0] == 200
    for refused in (big_png, gif, "mxc://hs.test/nothing", "mxc://elsewhere.test/unfetched", "https://x/y.png"):
        status, body = await set_avatar(refused)
        assert (status, body["errcode"]) == (403, "M_FORBIDDEN"), refused
    assert await _json(await client.get(f"{C}/profile/@pat:hs.test/avatar_url")) == (200, {"avatar_url": small_png})
    assert (await set_avatar(""))[0] == 200

    # A per-room avatar in a member event is checked the same way.
    resp = await client.post(f"{C}/createRoom", json={}, headers=h)
    room = (await resp.json())["room_id"]
    url = f"{C}/rooms/{room}/state/m.room.member/@pat:hs.test"
    status, body = await _json(await client.put(url, json={"membership": "join", "avatar_url": gif}, headers=h))
    assert (status, body["errcode"]) == (403, "M_FORBIDDEN")
    assert (await client.put(url, json={"membership": "join", "avatar_url": small_png}, headers=h)).status == 200


def test_avatar_limit_config_keys():
    from gateway.config import ConfigError, parse_config

    base = {"server_name": "hs.test"}
    profiles = parse_config({**base, "max_avatar_size": "10M", "allowed_avatar_mimetypes": []}).profiles
    assert profiles.max_avatar_size == 10 * 1024 * 1024 and profiles.allowed_avatar_mimetypes is None
    assert profiles.allow_per_room_profiles is True
    assert parse_config(base).profiles.max_avatar_size is None
    with pytest.raises(ConfigError, match="allowed_avatar_mimetypes"):
        parse_config({**base, "allowed_avatar_mimetypes": "image/png"})
    with pytest.raises(ConfigError, match="max_avatar_size"):
        parse_config({**base, "max_avatar_size": "big"})
