"""End-to-end encryption plumbing over HTTP on both engines: keys upload (signature and
owner checks), query, claim (each one-time key once, under concurrency; fallback keys),
changes, cross-signing with user-interactive auth, signatures, to-device messages
(idempotent, acknowledged by the next sync) and device lists in /sync."""

from __future__ import annotations

import asyncio
import os

import pytest

from federation.canonical_json import encode_base64, encode_canonical_json
from federation.signing import encode_verify_key, sign_json, signing_key_from_seed

from .conftest import auth_header, register
from .test_sync import User

C = "/_matrix/client/v3"
PASSWORD = "pw-" + "x" * 8


@pytest.fixture
async def alice(client):
    return User(client, await register(client, "alice"))


@pytest.fixture
async def bob(client):
    return User(client, await register(client, "bob"))


def ed25519(name: str):
    """A fresh ed25519 key whose key ID is ``ed25519:<name>``."""
    return signing_key_from_seed(name, os.urandom(32))


def pub(key) -> str:
    return encode_verify_key(key.verify_key)


def sign_as_key(obj: dict, user_id: str, key) -> dict:
    """Sign with a cross-signing key: its key ID is ``ed25519:<public key>``."""
    unsigned = {k: v for k, v in obj.items() if k not in ("signatures", "unsigned")}
    sig = encode_base64(key.signing_key.sign(encode_canonical_json(unsigned)).signature)
    sigs = {u: dict(v) for u, v in (obj.get("signatures") or {}).items()}
    sigs.setdefault(user_id, {})[f"ed25519:{pub(key)}"] = sig
    return {**obj, "signatures": sigs}


def device_keys(user: User, key=None, **extra) -> tuple[dict, object]:
    key = key or ed25519(user.device_id)
    body = {"user_id": user.user_id, "device_id": user.device_id,
            "algorithms": ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"],
            "keys": {f"ed25519:{user.device_id}": pub(key), f"curve25519:{user.device_id}": "c" * 43}, **extra}
    return sign_json(body, user.user_id, key), key


def otks(user: User, key, n: int, start: int = 0) -> dict:
    return {f"signed_curve25519:K{i:04d}": sign_json({"key": f"otk{i:04d}"}, user.user_id, key)
            for i in range(start, start + n)}


async def test_upload_query_and_bad_device_keys(alice, bob):
    keys, key = device_keys(alice)
    # Wrong owner, wrong device: refused with Matrix errors.
    other = sign_json({**{k: v for k, v in keys.items() if k != "signatures"}, "user_id": bob.user_id},
                      bob.user_id, key)
    body = await alice.call("POST", "/keys/upload", {"device_keys": other}, expect=400)
    assert body["errcode"] == "M_INVALID_PARAM"
    wrong_device = sign_json({**{k: v for k, v in keys.items() if k != "signatures"}, "device_id": "OTHER"},
                             alice.user_id, key)
    assert (await alice.call("POST", "/keys/upload", {"device_keys": wrong_device}, expect=400))["errcode"] \
        == "M_INVALID_PARAM"
    # Missing or mistyped fields the spec requires: M_BAD_JSON.
    for field, value in [("signatures", None), ("algorithms", None), ("keys", None), ("keys", {"ed25519:X": 1}),
                         ("algorithms", "m.megolm.v1.aes-sha2"), ("signatures", [])]:
        broken = {k: v for k, v in keys.items() if k != field}
        if value is not None:
            broken[field] = value
        assert (await alice.call("POST", "/keys/upload", {"device_keys": broken}, expect=400))["errcode"] \
            == "M_BAD_JSON", field
    assert (await alice.call("POST", "/keys/upload", {"device_keys": "x"}, expect=400))["errcode"] == "M_BAD_JSON"
    assert (await alice.call("POST", "/keys/upload", {"one_time_keys": {"nocolon": "k"}}, expect=400))["errcode"] \
        == "M_BAD_JSON"
    # Nothing bad was stored.
    q = await bob.call("POST", "/keys/query", {"device_keys": {alice.user_id: []}})
    assert q["device_keys"] == {alice.user_id: {}}

    counts = await alice.call("POST", "/keys/upload", {"device_keys": keys, "one_time_keys": otks(alice, key, 5)})
    assert counts == {"one_time_key_counts": {"signed_curve25519": 5}}
    # The same keys again: idempotent; a reused key ID with other content: refused.
    assert (await alice.call("POST", "/keys/upload", {"one_time_keys": otks(alice, key, 5)}))[
        "one_time_key_counts"] == {"signed_curve25519": 5}
    clash = {"signed_curve25519:K0000": sign_json({"key": "different"}, alice.user_id, key)}
    await alice.call("POST", "/keys/upload", {"one_time_keys": clash}, expect=400)

    await alice.call("PUT", f"/devices/{alice.device_id}", {"display_name": "Alice's phone"})
    q = await bob.call("POST", "/keys/query", {"device_keys": {alice.user_id: [], "@nobody:hs.test": []}})
    got = q["device_keys"][alice.user_id][alice.device_id]
    assert got["keys"] == keys["keys"] and got["signatures"] == keys["signatures"]
    assert got["unsigned"] == {"device_display_name": "Alice's phone"}
    assert q["device_keys"]["@nobody:hs.test"] == {} and q["failures"] == {}
    # Asking for one device only.
    q = await bob.call("POST", "/keys/query", {"device_keys": {alice.user_id: ["NOPE"]}})
    assert q["device_keys"][alice.user_id] == {}
    for bad in ({"device_keys": "x"}, {"device_keys": {"not-a-user": []}}, {"device_keys": {alice.user_id: "x"}}):
        await bob.call("POST", "/keys/query", bad, expect=400)


async def test_device_keys_are_stored_as_sent(alice, bob):
    """Keys whose self-signature the server cannot check (what clients and test suites in
    the field upload, and Synapse stores): kept as sent, for clients to judge."""
    keys = {"user_id": alice.user_id, "device_id": alice.device_id,
            "algorithms": ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"],
            "keys": {"ed25519:test": "c3op6BJi8aUnDGA541Q6TbTPmbiy1GqGv-zzXDQM9Us",
                     f"curve25519:{alice.device_id}": "curve25519+key"},
            "signatures": {alice.user_id: {f"ed25519:{alice.device_id}": "self+signature"}}}
    await alice.call("POST", "/keys/upload", {"device_keys": keys})
    q = await bob.call("POST", "/keys/query", {"device_keys": {alice.user_id: []}})
    got = q["device_keys"][alice.user_id][alice.device_id]
    assert {k: got[k] for k in keys} == keys


async def test_claims_never_share_a_key_and_fall_back(alice, bob, hs):
    keys, key = device_keys(alice)
    await alice.call("POST", "/keys/upload", {"device_keys": keys, "one_time_keys": otks(alice, key, 10),
                                              "fallback_keys": {"signed_curve25519:FB": sign_json(
                                                  {"key": "fallback", "fallback": True}, alice.user_id, key)}})
    first = await alice.sync()
    assert first["device_one_time_keys_count"] == {"signed_curve25519": 10}
    assert first["device_unused_fallback_key_types"] == ["signed_curve25519"]

    claim = {"one_time_keys": {alice.user_id: {alice.device_id: "signed_curve25519"}}}
    results = await asyncio.gather(*(bob.call("POST", "/keys/claim", claim) for _ in range(16)))
    got = [next(iter(r["one_time_keys"][alice.user_id][alice.device_id])) for r in results]
    one_time = [k for k in got if k != "signed_curve25519:FB"]
    assert sorted(one_time) == [f"signed_curve25519:K{i:04d}" for i in range(10)]  # each exactly once
    assert got.count("signed_curve25519:FB") == 6  # then the fallback key, as often as needed
    later = await alice.sync(first["next_batch"])
    assert later["device_one_time_keys_count"] == {"signed_curve25519": 0}
    assert later["device_unused_fallback_key_types"] == []
    # Unknown devices and algorithms give nothing; bad input is an error.
    r = await bob.call("POST", "/keys/claim", {"one_time_keys": {alice.user_id: {"NOPE": "signed_curve25519"},
                                                                 "@x:hs.test": {"D": "a"}}})
    assert r["one_time_keys"] == {} and r["failures"] == {}
    await bob.call("POST", "/keys/claim", {"one_time_keys": {alice.user_id: ["x"]}}, expect=400)
    await bob.call("POST", "/keys/claim", {"one_time_keys": {alice.user_id: {"D": "a"}}, "timeout": -1}, expect=400)


async def test_to_device_idempotent_and_deleted_once_acknowledged(alice, bob, client, hs):
    # bob has a second device.
    login = await client.post(f"{C}/login", json={"type": "m.login.password", "identifier": {
        "type": "m.id.user", "user": "bob"}, "password": PASSWORD})
    bob2 = User(client, await login.json())
    first = await bob.sync()
    first2 = await bob2.sync()
    assert first["to_device"] == {"events": []}

    # A long-poll wakes when a message arrives.
    waiting = asyncio.create_task(bob.sync(first["next_batch"], timeout=20000))
    await asyncio.sleep(0)
    msg = {"messages": {bob.user_id: {bob.device_id: {"n": 1}}}}
    await alice.call("PUT", "/sendToDevice/m.test/txn1", msg)
    await alice.call("PUT", "/sendToDevice/m.test/txn1", msg)  # a retry: stored once
    woke = await asyncio.wait_for(waiting, 10)
    assert woke["to_device"]["events"] == [{"type": "m.test", "sender": alice.user_id, "content": {"n": 1}}]
    # Not acknowledged yet: a sync from the same token gets it again.
    again = await bob.sync(first["next_batch"])
    assert again["to_device"]["events"] == woke["to_device"]["events"]
    # Syncing with the later token acknowledges (deletes) it.
    after = await bob.sync(woke["next_batch"])
    assert after["to_device"]["events"] == []
    assert await hs.db.fetchval("SELECT COUNT(*) FROM device_inbox WHERE user_id = $1 AND device_id = $2",
                                bob.user_id, bob.device_id) == 0
    # "*" reaches every device of the user; the other device did not get the first one.
    await alice.call("PUT", "/sendToDevice/m.test/txn2", {"messages": {bob.user_id: {"*": {"n": 2}}}})
    got2 = await bob2.sync(first2["next_batch"])
    assert [e["content"] for e in got2["to_device"]["events"]] == [{"n": 2}]
    got1 = await bob.sync(after["next_batch"])
    assert [e["content"] for e in got1["to_device"]["events"]] == [{"n": 2}]
    # Bad input.
    await alice.call("PUT", "/sendToDevice/m.test/txn3", {"messages": "x"}, expect=400)
    await alice.call("PUT", "/sendToDevice/m.test/txn4", {"messages": {"nobody": {}}}, expect=400)


async def test_device_lists_in_sync_and_changes(alice, bob, hs):
    room = await alice.create_room(preset="private_chat", invite=[bob.user_id])
    await bob.call("POST", f"/join/{room}", {})
    token = (await bob.sync())["next_batch"]
    keys, key = device_keys(alice)
    waiting = asyncio.create_task(bob.sync(token, timeout=20000))
    await asyncio.sleep(0)
    await alice.call("POST", "/keys/upload", {"device_keys": keys})
    woke = await asyncio.wait_for(waiting, 10)
    assert woke["device_lists"]["changed"] == [alice.user_id]
    changes = await bob.call("GET", "/keys/changes", **{"from": token, "to": woke["next_batch"]})
    assert changes == {"changed": [alice.user_id], "left": []}
    quiet = await bob.sync(woke["next_batch"])
    assert quiet["device_lists"] == {"changed": [], "left": []}
    # A user who does not share a room hears nothing.
    carol = User(bob.client, await register(bob.client, "carol"))
    c_token = (await carol.sync())["next_batch"]
    keys2, _ = device_keys(alice, key, extra_field=1)
    await alice.call("POST", "/keys/upload", {"device_keys": keys2})
    assert (await carol.sync(c_token))["device_lists"] == {"changed": [], "left": []}
    # Leaving the room: bob sees alice in "left".
    t = (await bob.sync())["next_batch"]
    await alice.call("POST", f"/rooms/{room}/leave", {})
    body = await bob.sync(t)
    assert body["device_lists"]["left"] == [alice.user_id]
    # Joining again: alice is "changed" (newly shared).
    t = body["next_batch"]
    await bob.call("POST", f"/rooms/{room}/invite", {"user_id": alice.user_id})
    await alice.call("POST", f"/join/{room}", {})
    body = await bob.sync(t)
    assert body["device_lists"] == {"changed": [alice.user_id], "left": []}
    await bob.call("GET", "/keys/changes", expect=400, **{"from": "bad", "to": t})
    await bob.call("GET", "/keys/changes", expect=400)
    # An old-style token (before to-device and device lists) still works.
    old = "_".join(t.split("_")[:5])
    assert (await bob.sync(old))["device_lists"] == {"changed": [], "left": []}


async def test_new_and_renamed_devices_change_the_device_list(alice, bob):
    """A login (a new device, no keys yet) and a rename change the user's device list:
    room-mates and the user's own other devices hear of it."""
    room = await alice.create_room(preset="private_chat", invite=[bob.user_id])
    await bob.call("POST", f"/join/{room}", {})
    bob_token, alice_token = (await bob.sync())["next_batch"], (await alice.sync())["next_batch"]
    resp = await alice.client.post(f"{C}/login", json={
        "type": "m.login.password", "identifier": {"type": "m.id.user", "user": "alice"}, "password": PASSWORD})
    phone = (await resp.json())["device_id"]
    body = await bob.sync(bob_token)
    assert body["device_lists"]["changed"] == [alice.user_id]
    assert (await alice.sync(alice_token))["device_lists"]["changed"] == [alice.user_id]
    await alice.call("PUT", f"/devices/{phone}", {"display_name": "Phone"})
    body = await bob.sync(body["next_batch"])
    assert body["device_lists"]["changed"] == [alice.user_id]
    # The same name again changes nothing.
    await alice.call("PUT", f"/devices/{phone}", {"display_name": "Phone"})
    assert (await bob.sync(body["next_batch"]))["device_lists"]["changed"] == []


async def test_a_user_signing_key_change_is_only_the_owners(alice, bob):
    """Other users cannot see a user-signing key, so its change alone is not theirs."""
    room = await alice.create_room(preset="private_chat", invite=[bob.user_id])
    await bob.call("POST", f"/join/{room}", {})
    (master, _, _), upload = cross_signing(alice)
    await alice.call("POST", "/keys/device_signing/upload", upload)
    bob_token, alice_token = (await bob.sync())["next_batch"], (await alice.sync())["next_batch"]
    usk = ed25519("u2")
    new_usk = sign_as_key({"user_id": alice.user_id, "usage": ["user_signing"],
                           "keys": {f"ed25519:{pub(usk)}": pub(usk)}}, alice.user_id, master)
    await alice.call("POST", "/keys/device_signing/upload", {"user_signing_key": new_usk, "auth": {
        "type": "m.login.password", "identifier": {"type": "m.id.user", "user": "alice"}, "password": PASSWORD}})
    assert (await alice.sync(alice_token))["device_lists"]["changed"] == [alice.user_id]
    body = await bob.sync(bob_token)
    assert body["device_lists"]["changed"] == []
    # A self-signing key change is everyone's.
    ssk = ed25519("s2")
    new_ssk = sign_as_key({"user_id": alice.user_id, "usage": ["self_signing"],
                           "keys": {f"ed25519:{pub(ssk)}": pub(ssk)}}, alice.user_id, master)
    await alice.call("POST", "/keys/device_signing/upload", {"self_signing_key": new_ssk, "auth": {
        "type": "m.login.password", "identifier": {"type": "m.id.user", "user": "alice"}, "password": PASSWORD}})
    assert (await bob.sync(body["next_batch"]))["device_lists"]["changed"] == [alice.user_id]


async def test_signing_another_users_master_key_changes_only_the_signers_view(alice, bob):
    """alice signs bob's master key with her user-signing key: bob's keys changed for
    alice (she now sees her signature on them), for nobody else."""
    room = await alice.create_room(preset="private_chat", invite=[bob.user_id])
    await bob.call("POST", f"/join/{room}", {})
    (_, _, usk), upload = cross_signing(alice)
    await alice.call("POST", "/keys/device_signing/upload", upload)
    _, bob_upload = cross_signing(bob)
    await bob.call("POST", "/keys/device_signing/upload", bob_upload)
    alice_token, bob_token = (await alice.sync())["next_batch"], (await bob.sync())["next_batch"]
    bob_master = bob_upload["master_key"]
    r = await alice.call("POST", "/keys/signatures/upload", {
        bob.user_id: {next(iter(bob_master["keys"].values())): sign_as_key(bob_master, alice.user_id, usk)}})
    assert r["failures"] == {}
    assert (await alice.sync(alice_token))["device_lists"]["changed"] == [bob.user_id]
    assert (await bob.sync(bob_token))["device_lists"]["changed"] == []


async def test_an_invited_user_is_in_the_changed_list(alice, bob):
    """Clients encrypt to invited members too, so they need to hear of their devices."""
    room = await alice.create_room(preset="private_chat")
    token = (await alice.sync())["next_batch"]
    await alice.call("POST", f"/rooms/{room}/invite", {"user_id": bob.user_id})
    body = await alice.sync(token)
    assert body["device_lists"] == {"changed": [bob.user_id], "left": []}
    changes = await alice.call("GET", "/keys/changes", **{"from": token, "to": body["next_batch"]})
    assert changes == {"changed": [bob.user_id], "left": []}


async def test_deleting_a_device_drops_its_keys(alice, bob, hs):
    room = await alice.create_room(preset="private_chat", invite=[bob.user_id])
    await bob.call("POST", f"/join/{room}", {})
    keys, key = device_keys(alice)
    await alice.call("POST", "/keys/upload", {"device_keys": keys, "one_time_keys": otks(alice, key, 2)})
    token = (await bob.sync())["next_batch"]
    r = await alice.client.request("DELETE", f"{C}/devices/{alice.device_id}", json={"auth": {
        "type": "m.login.password", "identifier": {"type": "m.id.user", "user": "alice"}, "password": PASSWORD}},
        headers=auth_header(alice.token))
    if r.status == 401:  # first call opens the session
        session = (await r.json())["session"]
        r = await alice.client.request("DELETE", f"{C}/devices/{alice.device_id}", json={"auth": {
            "type": "m.login.password", "identifier": {"type": "m.id.user", "user": "alice"}, "password": PASSWORD,
            "session": session}}, headers=auth_header(alice.token))
    assert r.status == 200, await r.text()
    q = await bob.call("POST", "/keys/query", {"device_keys": {alice.user_id: []}})
    assert q["device_keys"][alice.user_id] == {}
    assert await hs.db.fetchval("SELECT COUNT(*) FROM e2e_one_time_keys WHERE user_id = $1", alice.user_id) == 0
    assert (await bob.sync(token))["device_lists"]["changed"] == [alice.user_id]


def cross_signing(user: User):
    master, ssk, usk = ed25519("m"), ed25519("s"), ed25519("u")
    mk = {"user_id": user.user_id, "usage": ["master"], "keys": {f"ed25519:{pub(master)}": pub(master)}}

    def signed_by_master(k, usage):
        body = {"user_id": user.user_id, "usage": [usage], "keys": {f"ed25519:{pub(k)}": pub(k)}}
        return sign_as_key(body, user.user_id, master)

    return (master, ssk, usk), {"master_key": mk, "self_signing_key": signed_by_master(ssk, "self_signing"),
                                "user_signing_key": signed_by_master(usk, "user_signing")}


async def test_cross_signing_upload_uia_and_signatures(alice, bob):
    (master, ssk, usk), upload = cross_signing(alice)
    # Bad uploads: someone else's key, a self-signing key not signed by the master key.
    await alice.call("POST", "/keys/device_signing/upload",
                     {"master_key": {**upload["master_key"], "user_id": bob.user_id}}, expect=400)
    unsigned = {**upload, "self_signing_key": {k: v for k, v in upload["self_signing_key"].items()
                                               if k != "signatures"}}
    await alice.call("POST", "/keys/device_signing/upload", unsigned, expect=400)
    # The first upload needs no UIA.
    await alice.call("POST", "/keys/device_signing/upload", upload)
    await alice.call("POST", "/keys/device_signing/upload", upload)  # the same again: fine, no UIA
    q = await alice.call("POST", "/keys/query", {"device_keys": {alice.user_id: []}})
    assert q["master_keys"][alice.user_id]["keys"] == upload["master_key"]["keys"]
    assert alice.user_id in q["self_signing_keys"] and alice.user_id in q["user_signing_keys"]
    qb = await bob.call("POST", "/keys/query", {"device_keys": {alice.user_id: []}})
    assert alice.user_id in qb["master_keys"] and qb["user_signing_keys"] == {}  # only for herself
    # Replacing needs UIA.
    (master2, _, _), upload2 = cross_signing(alice)
    body = await alice.call("POST", "/keys/device_signing/upload", upload2, expect=401)
    assert {"stages": ["m.login.password"]} in body["flows"]
    await alice.call("POST", "/keys/device_signing/upload", {**upload2, "auth": {
        "type": "m.login.password", "identifier": {"type": "m.id.user", "user": "alice"}, "password": PASSWORD,
        "session": body["session"]}})
    q = await alice.call("POST", "/keys/query", {"device_keys": {alice.user_id: []}})
    assert q["master_keys"][alice.user_id]["keys"] == upload2["master_key"]["keys"]


async def test_cross_signing_under_the_unstable_prefix(alice, client):
    """MSC1756's paths, which clients from before spec v1.1 call."""
    _, upload = cross_signing(alice)
    resp = await client.post("/_matrix/client/unstable/keys/device_signing/upload", json=upload,
                             headers=auth_header(alice.token))
    assert resp.status == 200, await resp.text()
    q = await alice.call("POST", "/keys/query", {"device_keys": {alice.user_id: []}})
    assert q["master_keys"][alice.user_id]["keys"] == upload["master_key"]["keys"]
    resp = await client.post("/_matrix/client/unstable/keys/signatures/upload", json={},
                             headers=auth_header(alice.token))
    assert resp.status == 200 and (await resp.json())["failures"] == {}


async def test_signatures_upload(alice, bob):
    masters = {}
    subkeys = {}
    for user in (alice, bob):
        (master, ssk, usk), upload = cross_signing(user)
        await user.call("POST", "/keys/device_signing/upload", upload)
        masters[user.user_id] = upload["master_key"]
        subkeys[user.user_id] = (ssk, usk)
    keys, key = device_keys(alice)
    await alice.call("POST", "/keys/upload", {"device_keys": keys})
    ssk, usk = subkeys[alice.user_id]
    signed_device = sign_as_key(keys, alice.user_id, ssk)
    bob_master = sign_as_key(masters[bob.user_id], alice.user_id, usk)
    forged = sign_as_key(masters[bob.user_id], alice.user_id, ssk)  # the wrong key for another user
    r = await alice.call("POST", "/keys/signatures/upload", {
        alice.user_id: {alice.device_id: signed_device, "NOPE": signed_device},
        bob.user_id: {next(iter(masters[bob.user_id]["keys"].values())): bob_master},
    })
    assert set(r["failures"].get(alice.user_id, {})) == {"NOPE"}, r
    assert bob.user_id not in r["failures"]
    r = await alice.call("POST", "/keys/signatures/upload", {
        bob.user_id: {next(iter(masters[bob.user_id]["keys"].values())): forged}})
    assert set(r["failures"][bob.user_id]) == {next(iter(masters[bob.user_id]["keys"].values()))}
    q = await bob.call("POST", "/keys/query", {"device_keys": {alice.user_id: []}})
    sigs = q["device_keys"][alice.user_id][alice.device_id]["signatures"][alice.user_id]
    assert f"ed25519:{pub(ssk)}" in sigs and f"ed25519:{alice.device_id}" in sigs
    # alice's signature of bob's master key: alice sees it, a third user does not.
    qa = await alice.call("POST", "/keys/query", {"device_keys": {bob.user_id: []}})
    assert alice.user_id in qa["master_keys"][bob.user_id]["signatures"]
    carol = User(bob.client, await register(bob.client, "carol"))
    qc = await carol.call("POST", "/keys/query", {"device_keys": {bob.user_id: []}})
    assert alice.user_id not in qc["master_keys"][bob.user_id].get("signatures", {})
    await alice.call("POST", "/keys/signatures/upload", {alice.user_id: "x"}, expect=400)
