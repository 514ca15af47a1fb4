"""Server-side key backup over HTTP on both engines: version CRUD, keys stored per
version with the spec's replacement rules, etags and counts, the wrong-version error,
and bad input."""

from __future__ import annotations

import pytest

from .conftest import register
from .test_sync import User

AUTH = {"public_key": "abc", "signatures": {}}
ALG = "m.megolm_backup.v1.curve25519-aes-sha2"


@pytest.fixture
async def alice(client):
    return User(client, await register(client, "alice"))


def key(fmi=0, fc=0, verified=False, tag="a"):
    return {"first_message_index": fmi, "forwarded_count": fc, "is_verified": verified,
            "session_data": {"ciphertext": tag, "ephemeral": "e", "mac": "m"}}


async def test_versions_and_keys(alice, client):
    err = await alice.call("GET", "/room_keys/version", expect=404)
    assert err["errcode"] == "M_NOT_FOUND"
    v1 = (await alice.call("POST", "/room_keys/version", {"algorithm": ALG, "auth_data": AUTH}))["version"]
    got = await alice.call("GET", "/room_keys/version")
    assert got == {"algorithm": ALG, "auth_data": AUTH, "count": 0, "etag": "0", "version": v1}
    assert await alice.call("GET", f"/room_keys/version/{v1}") == got
    await alice.call("GET", "/room_keys/version/99", expect=404)
    await alice.call("GET", "/room_keys/version/nope", expect=404)

    # Keys: whole upload, per room, per session.
    r = await alice.call("PUT", "/room_keys/keys", {"rooms": {"!r:hs.test": {"sessions": {"s1": key(5)}}}},
                         version=v1)
    assert r == {"etag": "1", "count": 1}
    await alice.call("PUT", "/room_keys/keys/!r:hs.test", {"sessions": {"s2": key(0)}}, version=v1)
    await alice.call("PUT", "/room_keys/keys/!q:hs.test/s3", key(1), version=v1)
    all_keys = await alice.call("GET", "/room_keys/keys", version=v1)
    assert set(all_keys["rooms"]) == {"!r:hs.test", "!q:hs.test"}
    assert set(all_keys["rooms"]["!r:hs.test"]["sessions"]) == {"s1", "s2"}
    # Replacement: a worse copy is ignored, a better one (earlier index, verified) wins.
    await alice.call("PUT", "/room_keys/keys/!r:hs.test/s1", key(9, tag="worse"), version=v1)
    assert (await alice.call("GET", "/room_keys/keys/!r:hs.test/s1", version=v1))["first_message_index"] == 5
    await alice.call("PUT", "/room_keys/keys/!r:hs.test/s1", key(2, tag="better"), version=v1)
    assert (await alice.call("GET", "/room_keys/keys/!r:hs.test/s1", version=v1))["session_data"]["ciphertext"] \
        == "better"
    await alice.call("PUT", "/room_keys/keys/!r:hs.test/s1", key(7, verified=True, tag="verified"), version=v1)
    assert (await alice.call("GET", "/room_keys/keys/!r:hs.test/s1", version=v1))["is_verified"] is True
    assert (await alice.call("GET", "/room_keys/keys/!none:hs.test", version=v1)) == {"sessions": {}}
    await alice.call("GET", "/room_keys/keys/!r:hs.test/missing", version=v1, expect=404)
    info = await alice.call("GET", "/room_keys/version")
    assert info["count"] == 3 and int(info["etag"]) >= 4

    # A new version becomes current; the old one refuses keys and names the current one.
    await alice.call("PUT", f"/room_keys/version/{v1}", {"algorithm": ALG, "auth_data": {**AUTH, "x": 1},
                                                         "version": v1})
    assert (await alice.call("GET", f"/room_keys/version/{v1}"))["auth_data"]["x"] == 1
    await alice.call("PUT", f"/room_keys/version/{v1}", {"algorithm": "other", "auth_data": AUTH}, expect=400)
    await alice.call("PUT", f"/room_keys/version/{v1}", {"algorithm": ALG, "auth_data": AUTH, "version": "7"},
                     expect=400)
    v2 = (await alice.call("POST", "/room_keys/version", {"algorithm": ALG, "auth_data": AUTH}))["version"]
    assert v2 != v1
    wrong = await alice.call("PUT", "/room_keys/keys/!r:hs.test/s9", key(), version=v1, expect=403)
    assert wrong["errcode"] == "M_WRONG_ROOM_KEYS_VERSION" and wrong["current_version"] == v2
    # Deleting keys and versions.
    r = await alice.call("DELETE", "/room_keys/keys/!r:hs.test", version=v1)
    assert r["count"] == 1
    await alice.call("DELETE", f"/room_keys/version/{v2}")
    assert (await alice.call("GET", "/room_keys/version"))["version"] == v1
    await alice.call("DELETE", f"/room_keys/version/{v2}", expect=404)

    # auth_data is opaque: another JSON type is kept as sent, on creation and update.
    v3 = (await alice.call("POST", "/room_keys/version", {"algorithm": ALG, "auth_data": "anopaquestring"}))["version"]
    assert (await alice.call("GET", f"/room_keys/version/{v3}"))["auth_data"] == "anopaquestring"
    await alice.call("PUT", f"/room_keys/version/{v3}", {"algorithm": ALG, "auth_data": ["another"]})
    assert (await alice.call("GET", f"/room_keys/version/{v3}"))["auth_data"] == ["another"]
    opaque = {**key(), "session_data": "anopaquestring"}
    await alice.call("PUT", "/room_keys/keys/!r:hs.test/s1", opaque, version=v3)
    assert await alice.call("GET", "/room_keys/keys/!r:hs.test/s1", version=v3) == opaque
    await alice.call("PUT", "/room_keys/keys/!r:hs.test/s1", {**key(), "session_data": None}, version=v3, expect=400)
    await alice.call("DELETE", f"/room_keys/version/{v3}")

    # Bad input.
    await alice.call("POST", "/room_keys/version", {"algorithm": ALG}, expect=400)
    await alice.call("POST", "/room_keys/version", {"algorithm": ALG, "auth_data": None}, expect=400)
    await alice.call("PUT", f"/room_keys/version/{v1}", {"algorithm": ALG}, expect=400)
    await alice.call("PUT", "/room_keys/keys/!r:hs.test/s1", {"first_message_index": -1}, version=v1, expect=400)
    await alice.call("PUT", "/room_keys/keys", {"rooms": "x"}, version=v1, expect=400)
    await alice.call("PUT", "/room_keys/keys", {"rooms": {}}, expect=400)  # no version
    # Another user sees none of it.
    bob = User(client, await register(client, "bob"))
    await bob.call("GET", f"/room_keys/version/{v1}", expect=404)
    await bob.call("GET", "/room_keys/keys", version=v1, expect=404)
