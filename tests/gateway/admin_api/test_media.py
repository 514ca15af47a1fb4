"""The media admin API (Synapse's paths) on both engines: a room's media, a user's media
(listed, ordered, paged, deleted), quarantine by user and protection, usage statistics,
deleting old local media by date and size, and purging the remote media cache. Deletions
are checked row by row and file by file: what should go goes, the rest stays."""

from __future__ import annotations

from tests.gateway.client_api.test_media import alice, bob, image_bytes, upload  # noqa: F401  (fixtures)

A = "/_synapse/admin/v1"
V1 = "/_matrix/client/v1/media"
C = "/_matrix/client/v3"
DAY = 24 * 3600 * 1000
T0 = 1_700_000_000_000  # a time in milliseconds, well after 1970


def at(hs, ts: int) -> None:
    """Set the server's clock."""
    hs.clock_ms = lambda: ts


async def _json(resp):
    return resp.status, await resp.json()


async def _file_exists(hs, origin: str, media_id: str) -> bool:
    info = await hs.media.store.get_media(origin, media_id)
    return info is not None and hs.media.files.path(info.filesystem_id).exists()


async def _thumbnail_files(hs, origin: str, media_id: str) -> list:
    rows = await hs.db.fetch("SELECT filesystem_id FROM media_thumbnails WHERE media_origin = $1 AND media_id = $2",
                             origin, media_id)
    return [hs.media.files.path(r[0]) for r in rows]


async def _cache_remote(hs, origin: str, media_id: str, data: bytes, created_ts: int) -> None:
    written = await hs.media.files.write_bytes(data)
    assert await hs.media.store.store_remote_media(
        origin=origin, media_id=media_id, now_ms=created_ts, media_type="image/png", length=written.length,
        upload_name=None, filesystem_id=written.filesystem_id, sha256=written.sha256)


async def test_non_admins_are_refused(client, alice):
    for method, path in (("GET", "/room/!r:hs.test/media"), ("GET", "/users/@alice:hs.test/media"),
                         ("DELETE", "/users/@alice:hs.test/media"), ("POST", "/user/@alice:hs.test/media/quarantine"),
                         ("POST", "/media/protect/abc"), ("POST", "/media/unprotect/abc"),
                         ("GET", "/statistics/users/media"), ("POST", f"/media/delete?before_ts={T0}"),
                         ("POST", f"/media/hs.test/delete?before_ts={T0}"),
                         ("POST", f"/purge_media_cache?before_ts={T0}")):
        status, body = await _json(await client.request(method, A + path, headers=alice, json={}))
        assert (status, body["errcode"]) == (403, "M_FORBIDDEN"), path


async def test_a_rooms_media(client, hs, admin, alice):
    pic = await upload(client, alice, image_bytes(8, 8))
    room = (await (await client.post(f"{C}/createRoom", headers=alice, json={})).json())["room_id"]
    content = {"msgtype": "m.image", "body": "x", "url": f"mxc://hs.test/{pic}",
               "info": {"thumbnail_url": "mxc://remote.test/RemoteThumb"}}
    assert (await client.put(f"{C}/rooms/{room}/send/m.room.message/1", headers=alice, json=content)).status == 200
    status, body = await _json(await client.get(f"{A}/room/{room}/media", headers=admin))
    assert (status, body) == (200, {"local": [f"mxc://hs.test/{pic}"], "remote": ["mxc://remote.test/RemoteThumb"]})
    assert (await client.get(f"{A}/room/!nope:hs.test/media", headers=admin)).status == 404
    assert (await client.get(f"{A}/room/not-a-room/media", headers=admin)).status == 400


async def test_a_users_media_listed_ordered_paged_and_deleted(client, hs, admin, alice, bob):
    ids = {}
    for i, (name, data) in enumerate((("b.png", image_bytes(16, 16)), ("c.png", b"x" * 10), ("a.png", b"x" * 20))):
        at(hs, T0 + i * DAY)
        ids[name] = await upload(client, alice, data, "image/png", filename=name)
    bobs = await upload(client, bob, b"bob's", "text/plain")

    status, body = await _json(await client.get(f"{A}/users/@alice:hs.test/media", headers=admin))
    assert status == 200 and body["total"] == 3 and "next_token" not in body
    assert [m["upload_name"] for m in body["media"]] == ["a.png", "c.png", "b.png"]  # newest first
    first = body["media"][0]
    assert first == {"media_id": ids["a.png"], "media_type": "image/png", "media_length": 20, "upload_name": "a.png",
                     "created_ts": T0 + 2 * DAY, "last_access_ts": None, "quarantined_by": None,
                     "safe_from_quarantine": False}
    for params, names in (({"order_by": "media_length"}, ["c.png", "a.png", "b.png"]),
                          ({"order_by": "media_length", "dir": "b"}, ["b.png", "a.png", "c.png"]),
                          ({"order_by": "upload_name"}, ["a.png", "b.png", "c.png"]),
                          ({"dir": "f"}, ["b.png", "c.png", "a.png"])):
        listed = await (await client.get(f"{A}/users/@alice:hs.test/media", headers=admin, params=params)).json()
        assert [m["upload_name"] for m in listed["media"]] == names, params
    page = await (await client.get(f"{A}/users/@alice:hs.test/media", headers=admin, params={"limit": "2"})).json()
    assert len(page["media"]) == 2 and page["next_token"] == 2
    rest = await (await client.get(f"{A}/users/@alice:hs.test/media", headers=admin, params={"from": "2"})).json()
    assert [m["upload_name"] for m in rest["media"]] == ["b.png"] and "next_token" not in rest

    for params, errcode in (({"order_by": "colour"}, "M_INVALID_PARAM"), ({"dir": "up"}, "M_INVALID_PARAM"),
                            ({"limit": "-1"}, "M_INVALID_PARAM"), ({"from": "x"}, "M_INVALID_PARAM")):
        status, err = await _json(await client.get(f"{A}/users/@alice:hs.test/media", headers=admin, params=params))
        assert (status, err["errcode"]) == (400, errcode), params
    assert (await client.get(f"{A}/users/@ghost:hs.test/media", headers=admin)).status == 404
    assert (await client.get(f"{A}/users/@alice:remote.test/media", headers=admin)).status == 400

    # Deleting takes the page the same parameters list: here the oldest one.
    resp = await client.get(f"{V1}/thumbnail/hs.test/{ids['b.png']}?width=4&height=4", headers=alice)
    assert resp.status == 200 and await _thumbnail_files(hs, "hs.test", ids["b.png"])
    paths = {n: hs.media.files.path((await hs.media.store.get_local_media(m)).filesystem_id) for n, m in ids.items()}
    status, body = await _json(await client.delete(f"{A}/users/@alice:hs.test/media", headers=admin,
                                                   params={"order_by": "created_ts", "dir": "f", "limit": "1"}))
    assert (status, body) == (200, {"deleted_media": [ids["b.png"]], "total": 1})
    assert await hs.media.store.get_local_media(ids["b.png"]) is None and not paths["b.png"].exists()
    assert await _thumbnail_files(hs, "hs.test", ids["b.png"]) == []
    assert paths["a.png"].exists() and paths["c.png"].exists() and await _file_exists(hs, "hs.test", bobs)
    assert (await client.get(f"{V1}/download/hs.test/{ids['b.png']}", headers=alice)).status == 404
    assert (await client.get(f"{V1}/download/hs.test/{ids['a.png']}", headers=alice)).status == 200
    # Without a limit: all of them (100 at a time); bob's stay.
    status, body = await _json(await client.delete(f"{A}/users/@alice:hs.test/media", headers=admin))
    assert status == 200 and sorted(body["deleted_media"]) == sorted([ids["a.png"], ids["c.png"]])
    assert not paths["a.png"].exists() and not paths["c.png"].exists()
    assert (await client.get(f"{V1}/download/hs.test/{bobs}", headers=bob)).status == 200


async def test_quarantine_a_users_media_and_protection(client, hs, admin, alice, bob):
    sticker = await upload(client, alice, image_bytes(6, 6))
    plain = await upload(client, alice, image_bytes(7, 7))
    other = await upload(client, alice, b"text", "text/plain")
    bobs = await upload(client, bob, image_bytes(5, 5))
    assert await _json(await client.post(f"{A}/media/protect/{sticker}", headers=admin, json={})) == (200, {})
    status, body = await _json(await client.post(f"{A}/user/@alice:hs.test/media/quarantine", headers=admin, json={}))
    assert (status, body) == (200, {"num_quarantined": 2})
    for media_id, want in ((sticker, 200), (plain, 404), (other, 404), (bobs, 200)):
        assert (await client.get(f"{V1}/download/hs.test/{media_id}", headers=bob)).status == want, media_id
    info = (await (await client.get(f"{A}/media/hs.test/{sticker}", headers=admin)).json())["media_info"]
    assert info["safe_from_quarantine"] is True and info["quarantined_by"] is None

    # Protected media is not quarantined by ID or by room either.
    assert (await client.post(f"{A}/media/quarantine/hs.test/{sticker}", headers=admin, json={})).status == 200
    assert (await client.get(f"{V1}/download/hs.test/{sticker}", headers=bob)).status == 200
    room = (await (await client.post(f"{C}/createRoom", headers=alice, json={})).json())["room_id"]
    await client.put(f"{C}/rooms/{room}/send/m.sticker/1", headers=alice,
                     json={"body": "s", "url": f"mxc://hs.test/{sticker}", "info": {}})
    assert await _json(await client.post(f"{A}/room/{room}/media/quarantine", headers=admin, json={})) \
        == (200, {"num_quarantined": 0})
    assert await _json(await client.post(f"{A}/media/unprotect/{sticker}", headers=admin, json={})) == (200, {})
    assert await _json(await client.post(f"{A}/room/{room}/media/quarantine", headers=admin, json={})) \
        == (200, {"num_quarantined": 1})
    assert (await client.get(f"{V1}/download/hs.test/{sticker}", headers=bob)).status == 404

    assert (await client.post(f"{A}/media/protect/NoSuchMedia", headers=admin, json={})).status == 404
    assert (await client.post(f"{A}/user/@ghost:hs.test/media/quarantine", headers=admin, json={})).status == 404


async def test_media_statistics(client, hs, admin, alice, bob):
    await client.put(f"{C}/profile/@bob:hs.test/displayname", headers=bob, json={"displayname": "Robert"})
    at(hs, T0)
    await upload(client, alice, b"a" * 100, "text/plain")
    await upload(client, alice, b"a" * 50, "text/plain")
    at(hs, T0 + DAY)
    await upload(client, bob, b"b" * 10, "text/plain")

    status, body = await _json(await client.get(f"{A}/statistics/users/media", headers=admin))
    assert status == 200 and body["total"] == 2 and "next_token" not in body
    assert body["users"] == [
        {"user_id": "@alice:hs.test", "displayname": "alice", "media_count": 2, "media_length": 150},
        {"user_id": "@bob:hs.test", "displayname": "Robert", "media_count": 1, "media_length": 10}]

    async def users(**params):
        found = await (await client.get(f"{A}/statistics/users/media", headers=admin, params=params)).json()
        return [u["user_id"] for u in found["users"]], found

    assert (await users(order_by="media_length"))[0] == ["@bob:hs.test", "@alice:hs.test"]
    assert (await users(order_by="media_count", dir="b"))[0] == ["@alice:hs.test", "@bob:hs.test"]
    assert (await users(search_term="rob"))[0] == ["@bob:hs.test"]  # the display name
    assert (await users(search_term="ALI"))[0] == ["@alice:hs.test"]  # the localpart
    assert (await users(search_term="hs.test"))[0] == []  # not the server name
    assert (await users(from_ts=str(T0 + 1)))[0] == ["@bob:hs.test"]
    assert (await users(until_ts=str(T0)))[0] == ["@alice:hs.test"]
    ids, page = await users(limit="1")
    assert ids == ["@alice:hs.test"] and page["next_token"] == 1 and page["total"] == 2
    for params in ({"order_by": "size"}, {"dir": "x"}, {"from_ts": "-1"}, {"until_ts": "soon"},
                   {"from_ts": str(T0 + 5), "until_ts": str(T0)}, {"search_term": ""}, {"limit": "-3"}):
        status, err = await _json(await client.get(f"{A}/statistics/users/media", headers=admin, params=params))
        assert (status, err["errcode"]) == (400, "M_INVALID_PARAM"), params


async def test_delete_local_media_by_date_and_size(client, hs, admin, alice):
    at(hs, T0)
    big = await upload(client, alice, b"B" * 500, "text/plain")
    small = await upload(client, alice, b"s" * 10, "text/plain")
    avatar = await upload(client, alice, image_bytes(4, 4))
    quarantined = await upload(client, alice, b"q" * 500, "text/plain")
    protected = await upload(client, alice, b"p" * 500, "text/plain")
    still_used = await upload(client, alice, b"u" * 500, "text/plain")
    await client.put(f"{C}/profile/@alice:hs.test/avatar_url", headers=alice,
                     json={"avatar_url": f"mxc://hs.test/{avatar}"})
    await client.post(f"{A}/media/quarantine/hs.test/{quarantined}", headers=admin, json={})
    await client.post(f"{A}/media/protect/{protected}", headers=admin, json={})
    assert (await client.get(f"{V1}/thumbnail/hs.test/{avatar}?width=2&height=2", headers=alice)).status == 200
    avatar_thumbs = await _thumbnail_files(hs, "hs.test", avatar)
    assert avatar_thumbs
    at(hs, T0 + 10 * DAY)
    assert (await client.get(f"{V1}/download/hs.test/{still_used}", headers=alice)).status == 200  # served lately
    recent = await upload(client, alice, b"R" * 500, "text/plain")
    everything = [big, small, avatar, quarantined, protected, still_used, recent]
    paths = {m: hs.media.files.path((await hs.media.store.get_local_media(m)).filesystem_id) for m in everything}

    before = T0 + 5 * DAY
    status, body = await _json(await client.post(f"{A}/media/delete", headers=admin, json={},
                                                 params={"before_ts": str(before), "size_gt": "100"}))
    assert (status, body) == (200, {"deleted_media": [big], "total": 1})
    status, body = await _json(await client.post(f"{A}/media/hs.test/delete", headers=admin, json={},
                                                 params={"before_ts": str(before), "keep_profiles": "false"}))
    assert status == 200 and sorted(body["deleted_media"]) == sorted([small, avatar]) and body["total"] == 2
    gone, kept = [big, small, avatar], [quarantined, protected, still_used, recent]
    for media_id in gone:
        assert await hs.media.store.get_local_media(media_id) is None and not paths[media_id].exists(), media_id
    assert not any(p.exists() for p in avatar_thumbs) and await _thumbnail_files(hs, "hs.test", avatar) == []
    for media_id in kept:
        assert await hs.media.store.get_local_media(media_id) is not None and paths[media_id].exists(), media_id

    for params, status, errcode in (({}, 400, "M_MISSING_PARAM"), ({"before_ts": "1700000000"}, 400, "M_INVALID_PARAM"),
                                    ({"before_ts": "x"}, 400, "M_INVALID_PARAM"),
                                    ({"before_ts": str(before), "size_gt": "-1"}, 400, "M_INVALID_PARAM"),
                                    ({"before_ts": str(before), "keep_profiles": "maybe"}, 400, "M_INVALID_PARAM")):
        got = await _json(await client.post(f"{A}/media/delete", headers=admin, json={}, params=params))
        assert (got[0], got[1]["errcode"]) == (status, errcode), params
    got = await _json(await client.post(f"{A}/media/remote.test/delete", headers=admin, json={},
                                        params={"before_ts": str(before)}))
    assert (got[0], got[1]["errcode"]) == (400, "M_INVALID_PARAM")


async def test_purge_the_remote_media_cache(client, hs, admin, alice):
    await _cache_remote(hs, "remote.test", "OldOne", image_bytes(9, 9), T0)
    await _cache_remote(hs, "remote.test", "ServedLately", b"served", T0)
    await _cache_remote(hs, "other.test", "NewOne", b"new", T0 + 18 * DAY)
    await _cache_remote(hs, "remote.test", "Quarantined", b"bad", T0)
    await hs.media.store.set_quarantined("remote.test", "Quarantined", "@root:hs.test")
    await hs.media.store.set_quarantined("remote.test", "NeverFetched", "@root:hs.test")  # a placeholder row
    # A thumbnail fetched from a remote server without the media itself.
    written = await hs.media.files.write_bytes(image_bytes(2, 2))
    from gateway.storage.media import ThumbnailInfo
    await hs.media.store.store_thumbnail("remote.test", "ThumbOnly", ThumbnailInfo(
        32, 32, "scale", "image/png", 2, 2, written.length, written.filesystem_id))
    at(hs, T0 + 10 * DAY)
    assert (await client.get(f"{V1}/download/remote.test/ServedLately", headers=alice)).status == 200
    assert (await client.get(f"{V1}/thumbnail/remote.test/OldOne?width=4&height=4", headers=alice)).status == 200
    at(hs, T0 + 20 * DAY)  # the thumbnail above touched OldOne at T0 + 10 days
    old_thumbs = await _thumbnail_files(hs, "remote.test", "OldOne")
    old_file = hs.media.files.path((await hs.media.store.get_remote_media("remote.test", "OldOne")).filesystem_id)

    status, body = await _json(await client.post(f"{A}/purge_media_cache", headers=admin, json={},
                                                 params={"before_ts": str(T0 + 5 * DAY)}))
    assert (status, body) == (200, {"deleted": 1})  # the thumbnail-only one
    assert not hs.media.files.path(written.filesystem_id).exists()
    status, body = await _json(await client.post(f"{A}/purge_media_cache", headers=admin, json={},
                                                 params={"before_ts": str(T0 + 15 * DAY)}))
    assert (status, body) == (200, {"deleted": 2})
    assert await hs.media.store.get_remote_media("remote.test", "OldOne") is None and not old_file.exists()
    assert old_thumbs and not any(p.exists() for p in old_thumbs)
    assert await hs.media.store.get_remote_media("remote.test", "ServedLately") is None
    for origin, media_id in (("other.test", "NewOne"), ("remote.test", "Quarantined")):
        assert await _file_exists(hs, origin, media_id), media_id
    placeholder = await hs.media.store.get_remote_media("remote.test", "NeverFetched")
    assert placeholder is not None and placeholder.quarantined_by == "@root:hs.test"
    # Quarantined media stays out after the purge: still 404, never fetched again.
    assert (await client.get(f"{V1}/download/remote.test/Quarantined", headers=alice)).status == 404
    for params in ({}, {"before_ts": "1000"}):
        status, err = await _json(await client.post(f"{A}/purge_media_cache", headers=admin, json={}, params=params))
        assert status == 400 and err["errcode"] in ("M_MISSING_PARAM", "M_INVALID_PARAM")
