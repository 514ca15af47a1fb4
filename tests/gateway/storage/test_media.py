"""The media metadata store on both engines."""

from __future__ import annotations

from gateway.storage.media import MediaStore, ThumbnailInfo

HS = "hs.test"


def _upload_args(**kw):
    return {"now_ms": 1000, "media_type": "image/png", "length": 10, "upload_name": "a.png",
            "filesystem_id": "f" * 24, "sha256": "00" * 32, **kw}


async def test_local_media_round_trip(database):
    store = MediaStore(database, HS)
    await store.store_local_media(media_id="m1", user_id="@a:hs.test", **_upload_args())
    info = await store.get_local_media("m1")
    assert info.origin == HS and info.user_id == "@a:hs.test" and info.uploaded
    assert (info.media_type, info.media_length, info.upload_name) == ("image/png", 10, "a.png")
    assert await store.get_local_media("nope") is None
    assert (await store.get_media(HS, "m1")) == info


async def test_pending_upload_only_creator_only_once_before_expiry(database):
    store = MediaStore(database, HS)
    assert await store.create_pending(media_id="p1", user_id="@a:hs.test", now_ms=1000, expires_ts=2000,
                                      max_pending=2)
    pending = await store.get_local_media("p1")
    assert not pending.uploaded and pending.unused_expires_ts == 2000
    # Someone else cannot fill it.
    assert not await store.complete_pending(media_id="p1", user_id="@b:hs.test", **_upload_args(now_ms=1500))
    # Not after it expired.
    assert not await store.complete_pending(media_id="p1", user_id="@a:hs.test", **_upload_args(now_ms=2000))
    assert await store.complete_pending(media_id="p1", user_id="@a:hs.test", **_upload_args(now_ms=1500))
    # Only once.
    assert not await store.complete_pending(media_id="p1", user_id="@a:hs.test",
                                            **_upload_args(now_ms=1600, filesystem_id="g" * 24))
    done = await store.get_local_media("p1")
    assert done.uploaded and done.filesystem_id == "f" * 24 and done.unused_expires_ts is None


async def test_pending_upload_limit_counts_unexpired_only(database):
    store = MediaStore(database, HS)
    for i in range(2):
        assert await store.create_pending(media_id=f"p{i}", user_id="@a:hs.test", now_ms=1000, expires_ts=2000,
                                          max_pending=2)
    assert not await store.create_pending(media_id="p2", user_id="@a:hs.test", now_ms=1000, expires_ts=2000,
                                          max_pending=2)
    assert await store.create_pending(media_id="p3", user_id="@b:hs.test", now_ms=1000, expires_ts=2000,
                                      max_pending=2)
    # Once the first two expired, there is room again (and the expired ones are gone).
    assert await store.create_pending(media_id="p4", user_id="@a:hs.test", now_ms=2500, expires_ts=3000,
                                      max_pending=2)
    assert await store.get_local_media("p0") is None and await store.get_local_media("p4") is not None
    assert await store.delete_expired_pending(2500) == 1  # @b's
    assert await store.get_local_media("p3") is None


async def test_remote_cache_first_writer_wins(database):
    store = MediaStore(database, HS)
    args = dict(origin="other.test", media_id="r1", now_ms=5, media_type="text/plain", length=3,
                upload_name=None, sha256="ab")
    assert await store.store_remote_media(filesystem_id="a" * 24, **args)
    assert not await store.store_remote_media(filesystem_id="b" * 24, **args)
    info = await store.get_media("other.test", "r1")
    assert info.filesystem_id == "a" * 24 and info.media_type == "text/plain" and info.user_id is None
    assert await store.set_quarantined("other.test", "r1", "@admin:hs.test")
    assert (await store.get_media("other.test", "r1")).quarantined_by == "@admin:hs.test"


async def test_remote_media_quarantined_before_it_is_fetched(database):
    store = MediaStore(database, HS)
    assert await store.set_quarantined("other.test", "never", "@admin:hs.test")
    info = await store.get_remote_media("other.test", "never")
    assert info.quarantined_by == "@admin:hs.test"
    assert await store.set_quarantined("other.test", "never", None)
    assert await store.get_remote_media("other.test", "never") is None
    assert not await store.set_quarantined("other.test", "never", None)
    assert not await store.set_quarantined(HS, "never", "@admin:hs.test")  # local media must exist


async def test_quarantine_and_delete_with_thumbnails(database):
    store = MediaStore(database, HS)
    await store.store_local_media(media_id="m1", user_id="@a:hs.test", **_upload_args())
    thumb = ThumbnailInfo(32, 32, "crop", "image/png", 32, 32, 99, "t" * 24)
    assert await store.store_thumbnail(HS, "m1", thumb)
    assert not await store.store_thumbnail(HS, "m1", thumb)
    assert await store.get_thumbnail(HS, "m1", 32, 32, "crop") == thumb
    assert await store.get_thumbnail(HS, "m1", 32, 32, "scale") is None

    assert await store.set_quarantined(HS, "m1", "@admin:hs.test")
    assert (await store.get_local_media("m1")).quarantined_by == "@admin:hs.test"
    assert not await store.set_quarantined(HS, "unknown", "@admin:hs.test")
    assert await store.set_quarantined(HS, "m1", None)
    assert (await store.get_local_media("m1")).quarantined_by is None

    assert sorted(await store.delete_media(HS, "m1")) == ["f" * 24, "t" * 24]
    assert await store.get_local_media("m1") is None
    assert await store.get_thumbnail(HS, "m1", 32, 32, "crop") is None
    assert await store.delete_media(HS, "m1") is None


async def test_mxc_uris_in_a_room_in_batches(database):
    import json

    store = MediaStore(database, HS)
    contents = [
        {"url": "mxc://hs.test/aaa", "info": {"thumbnail_url": "mxc://other.test/bbb"}},
        {"avatar_url": "mxc://hs.test/ccc", "membership": "join"},
        {"body": "mxc://hs.test/not_a_field_value but text"},
        {"file": {"url": "mxc://hs.test/ddd"}, "list": ["mxc://hs.test/eee", "mxc://bad/../x"]},
    ]
    rows = [(f"$e{i}", i - 1, "!room:hs.test", "m.room.message", None, "@a:hs.test", i, 0, 0,
             json.dumps({"content": c})) for i, c in enumerate(contents)]
    rows.append(("$other", 99, "!other:hs.test", "m.room.message", None, "@a:hs.test", 1, 0, 0,
                 json.dumps({"content": {"url": "mxc://hs.test/zzz"}})))
    await database.executemany(
        "INSERT INTO events (event_id, stream_ordering, room_id, type, state_key, sender, depth, origin_server_ts, "
        "received_ts, json) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)", rows)
    assert await store.mxc_uris_in_room("!room:hs.test", batch=2) == {
        ("hs.test", "aaa"), ("other.test", "bbb"), ("hs.test", "ccc"), ("hs.test", "ddd"), ("hs.test", "eee")}
