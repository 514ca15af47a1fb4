"""E2E key storage on both engines: one-time keys claimed exactly once by concurrent
claims (real concurrent connections on PostgreSQL), fallback keys, to-device inboxes
with transaction IDs, the device list stream and remote device list caches."""

from __future__ import annotations

import asyncio

from gateway.storage.e2e_keys import DeviceKeys, E2EKeyStore, seen_only_by


async def test_concurrent_claims_get_distinct_keys(database):
    store = E2EKeyStore(database)
    keys = [("signed_curve25519", f"K{i:03d}", {"key": f"k{i}"}) for i in range(30)]
    assert await store.add_one_time_keys("@a:hs", "D", keys) == []
    await store.set_fallback_key("@a:hs", "D", "signed_curve25519", "FB", {"key": "fb", "fallback": True})
    claims = await asyncio.gather(*(store.claim_keys([("@a:hs", "D", "signed_curve25519")]) for _ in range(40)))
    got = [next(iter(c["@a:hs"]["D"])) for c in claims]
    one_time = [k for k in got if k != "signed_curve25519:FB"]
    assert len(one_time) == 30 and len(set(one_time)) == 30
    assert got.count("signed_curve25519:FB") == 10
    assert await store.count_one_time_keys("@a:hs", "D") == {}
    assert await store.get_key_counts("@a:hs", "D") == ({}, [])
    # A new fallback key is unused again; the same one re-uploaded stays used.
    await store.set_fallback_key("@a:hs", "D", "signed_curve25519", "FB", {"key": "fb", "fallback": True})
    assert await store.get_unused_fallback_key_types("@a:hs", "D") == []
    await store.set_fallback_key("@a:hs", "D", "signed_curve25519", "FB2", {"key": "fb2", "fallback": True})
    assert await store.get_unused_fallback_key_types("@a:hs", "D") == ["signed_curve25519"]
    # A key ID reused with other content is refused.
    await store.add_one_time_keys("@a:hs", "D", [("signed_curve25519", "X", {"key": "1"})])
    assert await store.add_one_time_keys("@a:hs", "D", [("signed_curve25519", "X", {"key": "2"})]) == [
        "signed_curve25519:X"]


async def test_to_device_inbox_and_txns(database):
    store = E2EKeyStore(database)
    pos = await store.add_to_device_messages(("@s:hs", "SD", "t1"), [("@a:hs", "D", {"n": 1}), ("@a:hs", "E", {"n": 1})], 1)
    assert pos and pos > 0
    assert await store.add_to_device_messages(("@s:hs", "SD", "t1"), [("@a:hs", "D", {"n": 1})], 2) is None
    pos2 = await store.add_to_device_messages(("@s:hs", "SD", "t2"), [("@a:hs", "D", {"n": 2})], 3)
    assert pos2 > pos
    msgs = await store.get_to_device_messages("@a:hs", "D", 0, pos2, 10)
    assert [m for _, m in msgs] == [{"n": 1}, {"n": 2}]
    assert await store.delete_to_device_messages("@a:hs", "D", pos) == 1
    assert [m for _, m in await store.get_to_device_messages("@a:hs", "D", 0, pos2, 10)] == [{"n": 2}]
    assert len(await store.get_to_device_messages("@a:hs", "E", 0, pos2, 10)) == 1


async def test_device_list_stream_and_remote_cache(database):
    store = E2EKeyStore(database)
    p1 = await store.set_device_keys("@a:hs", "D", {"keys": {"ed25519:D": "x"}})
    assert await store.set_device_keys("@a:hs", "D", {"keys": {"ed25519:D": "x"}}) is None  # unchanged
    p2 = await store.set_device_keys("@a:hs", "E", {"keys": {"ed25519:E": "y"}})
    assert p2 > p1
    assert await store.get_changed_users(0, p2, "@v:hs") == {"@a:hs"}
    assert await store.get_changed_users(p2, p2, "@v:hs") == set()
    # A change only one user sees (a signature made with their user-signing key); it is
    # no device change (no m.device_list_update stream ID).
    p3 = await store.mark_changed("@a:hs", [seen_only_by("@v:hs")])
    assert await store.get_changed_users(p2, p3, "@v:hs") == {"@a:hs"}
    assert await store.get_changed_users(p2, p3, "@w:hs") == set()
    assert await store.get_last_device_stream_ids("@a:hs", 2) == [p2, p1]
    assert await store.get_last_device_stream_ids("@a:hs", 1) == [p2]
    await store.delete_devices("@a:hs", ["D"])
    assert set((await store.get_device_keys(["@a:hs"]))["@a:hs"]) == {"E"}

    await store.replace_remote_devices("@r:remote", [DeviceKeys("@r:remote", "R1", {"k": 1}, "phone")], 7,
                                       {"master": {"user_id": "@r:remote"}})
    assert await store.get_remote_cache(["@r:remote", "@x:remote"]) == {"@r:remote": 7}
    await store.apply_remote_device_update("@r:remote", "R2", {"k": 2}, None, False, 8)
    assert set((await store.get_device_keys(["@r:remote"]))["@r:remote"]) == {"R1", "R2"}
    await store.apply_remote_device_update("@r:remote", "R1", None, None, True, 9)
    assert set((await store.get_device_keys(["@r:remote"]))["@r:remote"]) == {"R2"}
    assert await store.get_remote_cache(["@r:remote"]) == {"@r:remote": 9}
    await store.drop_remote_cache(["@r:remote"])
    assert await store.get_remote_cache(["@r:remote"]) == {}
    assert (await store.get_device_keys(["@r:remote"]))["@r:remote"] == {}
    assert (await store.get_cross_signing_keys(["@r:remote"]))["@r:remote"] == {}
