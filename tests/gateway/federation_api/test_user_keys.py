"""E2EE over federation on both engines, against a scripted remote over TLS: serving our
users' devices and keys (/user/devices, /user/keys/query, /user/keys/claim); querying a
remote user's keys (one request per server, cached while a room is shared, dropped when
it no longer is); m.device_list_update applied in prev_id order or resynced;
m.signing_key_update; m.direct_to_device delivered once; the device list updates we send."""

from __future__ import annotations

import asyncio

import os
from urllib.parse import quote

import aiohttp
import pytest
from aiohttp import web

from federation.net.client import FederationRequestError
from federation.signing import encode_verify_key, sign_json, signing_key_from_seed
from tests.support.fake_remote import FakeRemote, local_gateway
from tests.support.tls import TestCA

from ..client_api.test_keys import cross_signing, pub, sign_as_key
from .test_transactions import Client, join_bob, public_room, sync_view

F = "/_matrix/federation/v1"


@pytest.fixture
def ca(tmp_path):
    return TestCA(tmp_path / "ca")


@pytest.fixture
async def gw(tmp_path, database_config, ca):
    async with local_gateway(tmp_path, database_config, ca) as g:
        yield g


class RemoteDevices:
    """What the scripted remote says about its users' devices."""

    def __init__(self):
        self.devices: dict[str, dict[str, dict]] = {}  # user -> device -> signed keys
        self.stream_id = 5
        self.calls: list[str] = []  # paths asked for

    def add(self, user_id: str, device_id: str) -> dict:
        key = signing_key_from_seed(device_id, os.urandom(32))
        keys = sign_json({"user_id": user_id, "device_id": device_id, "algorithms": ["m.megolm.v1.aes-sha2"],
                          "keys": {f"ed25519:{device_id}": encode_verify_key(key.verify_key),
                                   f"curve25519:{device_id}": "c" * 43}}, user_id, key)
        self.devices.setdefault(user_id, {})[device_id] = keys
        return keys

    async def user_devices(self, request: web.Request) -> web.Response:
        self.calls.append("/user/devices/")
        user_id = request.match_info["user_id"]
        return web.json_response({"user_id": user_id, "stream_id": self.stream_id, "devices": [
            {"device_id": d, "keys": k} for d, k in self.devices.get(user_id, {}).items()]})

    async def keys_query(self, request: web.Request) -> web.Response:
        self.calls.append("/user/keys/query")
        body = await request.json()
        return web.json_response({"device_keys": {u: self.devices.get(u, {}) for u in body["device_keys"]}})

    async def keys_claim(self, request: web.Request) -> web.Response:
        self.calls.append("/user/keys/claim")
        body = await request.json()
        return web.json_response({"one_time_keys": {u: {d: {f"{alg}:AAA": {"key": "k"}} for d, alg in ds.items()}
                                                    for u, ds in body["one_time_keys"].items()}})


@pytest.fixture
async def remote_devices():
    return RemoteDevices()


@pytest.fixture
async def remote(ca, remote_devices):
    r = FakeRemote(ca)
    r.extra_routes += [("GET", F + "/user/devices/{user_id}", remote_devices.user_devices),
                       ("POST", F + "/user/keys/query", remote_devices.keys_query),
                       ("POST", F + "/user/keys/claim", remote_devices.keys_claim)]
    async with r:
        yield r


@pytest.fixture
async def alice(gw):
    async with aiohttp.ClientSession() as s:
        async with s.post(gw.url + "/_matrix/client/v3/register", ssl=gw.ssl, json={
                "username": "alice", "password": "pw-xxxxxxxx", "auth": {"type": "m.login.dummy"}}) as r:
            body = await r.json()
            assert r.status == 200, body
        client = Client(gw, s, body["access_token"], body["user_id"])
        client.device_id = body["device_id"]
        yield client


def count(remote_devices, path):
    return remote_devices.calls.count(path[len(F):])


async def upload_device_keys(alice, extra=None):
    key = signing_key_from_seed(alice.device_id, os.urandom(32))
    keys = sign_json({"user_id": alice.user_id, "device_id": alice.device_id, "algorithms": ["m.megolm.v1.aes-sha2"],
                      "keys": {f"ed25519:{alice.device_id}": encode_verify_key(key.verify_key)}, **(extra or {})},
                     alice.user_id, key)
    otk = {} if extra else {"signed_curve25519:A1": sign_json({"key": "a1"}, alice.user_id, key)}
    await alice.call("POST", "/keys/upload", {"device_keys": keys, "one_time_keys": otk})
    return keys


async def test_serving_our_devices_and_keys(gw, remote, alice):
    keys = await upload_device_keys(alice)
    devices = await remote.client.request("GET", gw.server_name, f"{F}/user/devices/{quote(alice.user_id)}")
    assert devices["user_id"] == alice.user_id and devices["stream_id"] > 0
    assert [d["device_id"] for d in devices["devices"]] == [alice.device_id]
    assert devices["devices"][0]["keys"] == keys
    q = await remote.client.request("POST", gw.server_name, f"{F}/user/keys/query",
                                    content={"device_keys": {alice.user_id: []}})
    assert q["device_keys"][alice.user_id][alice.device_id]["keys"] == keys["keys"]
    assert "user_signing_keys" not in q
    claim = {"one_time_keys": {alice.user_id: {alice.device_id: "signed_curve25519"}}}
    got = await remote.client.request("POST", gw.server_name, f"{F}/user/keys/claim", content=claim)
    assert list(got["one_time_keys"][alice.user_id][alice.device_id]) == ["signed_curve25519:A1"]
    again = await remote.client.request("POST", gw.server_name, f"{F}/user/keys/claim", content=claim)
    assert again["one_time_keys"] == {}  # used once
    # Signatures alice made with her self-signing key are part of what others see.
    (_, ssk, _), upload = cross_signing(alice)
    await alice.call("POST", "/keys/device_signing/upload", upload)
    r = await alice.call("POST", "/keys/signatures/upload", {
        alice.user_id: {alice.device_id: sign_as_key(keys, alice.user_id, ssk)}})
    assert r == {"failures": {}}
    devices = await remote.client.request("GET", gw.server_name, f"{F}/user/devices/{quote(alice.user_id)}")
    assert f"ed25519:{pub(ssk)}" in devices["devices"][0]["keys"]["signatures"][alice.user_id]
    assert devices["master_key"] == upload["master_key"] and "self_signing_key" in devices
    assert "user_signing_key" not in devices
    # Users of other servers are not ours to answer for.
    for method, path, body in (("GET", f"{F}/user/devices/{quote('@x:elsewhere')}", None),
                               ("POST", f"{F}/user/keys/query", {"device_keys": {"@x:elsewhere": []}}),
                               ("POST", f"{F}/user/keys/claim", {"one_time_keys": {"@x:elsewhere": {"D": "a"}}}),
                               ("POST", f"{F}/user/keys/query", {"device_keys": "x"})):
        with pytest.raises(FederationRequestError) as e:
            await remote.client.request(method, gw.server_name, path, content=body)
        assert e.value.status == 400 and e.value.body["errcode"] in ("M_INVALID_PARAM", "M_BAD_JSON")


async def test_remote_keys_cached_while_sharing_a_room(gw, remote, remote_devices, alice):
    bob = f"@bob:{remote.server_name}"
    carl = f"@carl:{remote.server_name}"
    bob_keys = remote_devices.add(bob, "BOBDEV")
    remote_devices.add(carl, "CARLDEV")
    # A device whose keys name another device, one whose keys are no object: dropped.
    # Anything else is relayed as sent (as Synapse does): clients check what they get.
    remote_devices.devices[carl]["FORGED"] = dict(remote_devices.add(carl, "FORGED"), device_id="CARLDEV")
    remote_devices.devices[carl]["NOTANOBJECT"] = "x"
    remote_devices.devices[carl]["ODD"] = {"device_keys": {}}
    # Not sharing a room: asked every time, one request for both users.
    for n in (1, 2):
        q = await alice.call("POST", "/keys/query", {"device_keys": {bob: [], carl: []}})
        assert q["device_keys"][bob]["BOBDEV"]["keys"] == bob_keys["keys"]
        assert set(q["device_keys"][carl]) == {"CARLDEV", "ODD"}
        assert count(remote_devices, F + "/user/keys/query") == n
    # Sharing a room: the whole list is fetched (/user/devices, with the stream ID the
    # remote's updates build on) and cached.
    room_id, view = await public_room(gw, alice, remote)
    await join_bob(gw, remote, view)
    q = await alice.call("POST", "/keys/query", {"device_keys": {bob: []}})
    assert q["device_keys"][bob]["BOBDEV"]["keys"] == bob_keys["keys"]
    assert count(remote_devices, F + "/user/devices/") == 1 and count(remote_devices, F + "/user/keys/query") == 2
    assert await gw.hs.e2e_keys.store.get_remote_cache([bob]) == {bob: 5}
    q = await alice.call("POST", "/keys/query", {"device_keys": {bob: ["BOBDEV"]}})
    assert list(q["device_keys"][bob]) == ["BOBDEV"]
    assert count(remote_devices, F + "/user/devices/") == 1 and count(remote_devices, F + "/user/keys/query") == 2
    # Claims go to the remote, one request per server.
    c = await alice.call("POST", "/keys/claim", {"one_time_keys": {bob: {"BOBDEV": "signed_curve25519"},
                                                                  carl: {"CARLDEV": "signed_curve25519"}}})
    assert set(c["one_time_keys"]) == {bob, carl} and c["failures"] == {}
    assert count(remote_devices, F + "/user/keys/claim") == 1
    # Bob leaves: the cache is dropped, the next query asks again.
    await sync_view(gw, view)
    leave = view.make("m.room.member", bob, {"membership": "leave"}, state_key=bob)
    await remote.send(gw.server_name, [leave])
    if gw.hs.e2e_keys._member_task is not None:
        await gw.hs.e2e_keys._member_task
    assert await gw.hs.e2e_keys.store.get_remote_cache([bob]) == {}
    await alice.call("POST", "/keys/query", {"device_keys": {bob: []}})
    assert count(remote_devices, F + "/user/keys/query") == 3
    # An unreachable server is a failure of that server only.
    q = await alice.call("POST", "/keys/query", {"device_keys": {"@x:127.0.0.1:1": [], bob: []}})
    assert "127.0.0.1:1" in q["failures"] and bob in q["device_keys"]


async def settle(gw):
    """Wait for the resyncs our server started in the background."""
    while gw.hs.e2e_keys._background:
        await asyncio.wait(list(gw.hs.e2e_keys._background))


async def test_device_list_updates_in_order_or_resynced(gw, remote, remote_devices, alice):
    bob = f"@bob:{remote.server_name}"
    remote_devices.add(bob, "B1")
    room_id, view = await public_room(gw, alice, remote)
    await join_bob(gw, remote, view)
    token = (await alice.call("GET", "/sync"))["next_batch"]

    def edu(device_id, stream_id, prev, keys=None, deleted=False):
        content = {"user_id": bob, "device_id": device_id, "stream_id": stream_id, "prev_id": prev,
                   "deleted": deleted}
        if keys:
            content["keys"] = keys
        return {"edu_type": "m.device_list_update", "content": content}

    # The first update of a user sharing a room, not cached yet: the whole list is
    # fetched (in the background, the transaction is not held up).
    b2 = remote_devices.add(bob, "B2")
    await remote.send(gw.server_name, [], [edu("B2", 5, [4], b2)])
    await settle(gw)
    assert count(remote_devices, F + "/user/devices/") == 1
    assert await gw.hs.e2e_keys.store.get_remote_cache([bob]) == {bob: 5}
    body = await alice.call("GET", f"/sync?since={token}")
    assert bob in body["device_lists"]["changed"]
    # In order: applied from the EDU, no request.
    b3 = remote_devices.add(bob, "B3")
    await remote.send(gw.server_name, [], [edu("B3", 6, [5], b3)])
    await remote.send(gw.server_name, [], [edu("B1", 7, [6], deleted=True)])
    assert count(remote_devices, F + "/user/devices/") == 1
    q = await alice.call("POST", "/keys/query", {"device_keys": {bob: []}})
    assert set(q["device_keys"][bob]) == {"B2", "B3"}
    # A repeat is ignored; a forged sender (another server's user) is ignored.
    await remote.send(gw.server_name, [], [edu("B3", 6, [5], b3),
                                           {"edu_type": "m.device_list_update", "content": {
                                               "user_id": "@x:elsewhere", "device_id": "X", "stream_id": 1,
                                               "prev_id": []}}])
    await settle(gw)
    assert count(remote_devices, F + "/user/devices/") == 1
    # A gap (prev_id 9 never seen): resync.
    remote_devices.stream_id = 10
    await remote.send(gw.server_name, [], [edu("B4", 10, [9])])
    await settle(gw)
    assert count(remote_devices, F + "/user/devices/") == 2
    assert await gw.hs.e2e_keys.store.get_remote_cache([bob]) == {bob: 10}
    q = await alice.call("POST", "/keys/query", {"device_keys": {bob: []}})
    assert set(q["device_keys"][bob]) == {"B1", "B2", "B3"}  # what the remote now says
    # An update of a user sharing no room with ours asks nothing.
    await remote.send(gw.server_name, [], [{"edu_type": "m.device_list_update", "content": {
        "user_id": f"@stranger:{remote.server_name}", "device_id": "S", "stream_id": 1, "prev_id": []}}])
    await settle(gw)
    assert count(remote_devices, F + "/user/devices/") == 2
    # A signing key update replaces the cached master key.
    master = {"user_id": bob, "usage": ["master"], "keys": {"ed25519:" + "m" * 43: "m" * 43}}
    await remote.send(gw.server_name, [], [{"edu_type": "m.signing_key_update",
                                            "content": {"user_id": bob, "master_key": master}}])
    q = await alice.call("POST", "/keys/query", {"device_keys": {bob: []}})
    assert q["master_keys"][bob] == master


async def test_direct_to_device_delivered_once(gw, remote, alice):
    bob = f"@bob:{remote.server_name}"
    token = (await alice.call("GET", "/sync"))["next_batch"]
    msg = {"edu_type": "m.direct_to_device", "content": {
        "sender": bob, "type": "m.room_key_request", "message_id": "m1",
        "messages": {alice.user_id: {"*": {"action": "request"}}}}}
    spoofed = {"edu_type": "m.direct_to_device", "content": {
        "sender": "@mallory:elsewhere", "type": "m.x", "message_id": "m2",
        "messages": {alice.user_id: {alice.device_id: {"spoof": True}}}}}
    await remote.send(gw.server_name, [], [msg, spoofed])
    await remote.send(gw.server_name, [], [msg])  # the same message again
    body = await alice.call("GET", f"/sync?since={token}")
    assert body["to_device"]["events"] == [{"sender": bob, "type": "m.room_key_request",
                                            "content": {"action": "request"}}]


async def test_our_device_changes_reach_servers_sharing_a_room(gw, remote, alice):
    sent = []
    gw.hs.federation_sender.send_edu = lambda dest, edu_type, content, key=None: sent.append(
        (dest, edu_type, content))
    await upload_device_keys(alice)
    assert sent == []  # nobody to tell yet
    room_id, view = await public_room(gw, alice, remote)
    await join_bob(gw, remote, view)
    await upload_device_keys(alice, {"x": 1})
    await upload_device_keys(alice, {"x": 2})
    updates = [c for d, t, c in sent if t == "m.device_list_update" and d == remote.server_name]
    assert len(updates) == 2
    first, second = updates
    assert first["user_id"] == alice.user_id and first["device_id"] == alice.device_id
    assert second["prev_id"] == [first["stream_id"]] and second["stream_id"] > first["stream_id"]
    assert second["keys"]["x"] == 2 and second["deleted"] is False
    # Cross-signing keys: an m.signing_key_update with the master key.
    master = signing_key_from_seed("m", os.urandom(32))
    pub = encode_verify_key(master.verify_key)
    mk = {"user_id": alice.user_id, "usage": ["master"], "keys": {f"ed25519:{pub}": pub}}
    await alice.call("POST", "/keys/device_signing/upload", {"master_key": mk})
    signing = [c for d, t, c in sent if t == "m.signing_key_update"]
    assert signing == [{"user_id": alice.user_id, "master_key": mk}]
    # A deleted device: a device list update saying so.
    await gw.hs.auth.devices.delete_devices(alice.user_id, [alice.device_id])
    last = [c for d, t, c in sent if t == "m.device_list_update"][-1]
    assert last["deleted"] is True and last["prev_id"] == [second["stream_id"]] and "keys" not in last
