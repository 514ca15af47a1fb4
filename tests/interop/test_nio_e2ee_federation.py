"""End-to-end encryption over federation with matrix-nio (vodozemac): a user of one
server and a user of another share an encrypted room; device keys travel through
/user/keys/query, one-time keys through /user/keys/claim, room keys as
m.direct_to_device EDUs; each side decrypts the other's megolm messages. Between two of
our servers, and between ours and a real Synapse."""

from __future__ import annotations

import nio

from tests.support.gateway_server import running_gateway
from tests.support.nio_e2ee import encrypted_client, exchange_encrypted_messages
from tests.support.synapse import register_synapse_user, unique_localpart
from tests.support.tls import TestCA

PASSWORD = "correct horse battery"


def _config(ca: TestCA) -> dict:
    return {"federation_custom_ca_list": [str(ca.ca_path)], "ip_range_whitelist": ["127.0.0.0/8"],
            "enable_registration": True, "enable_registration_without_verification": True, "bcrypt_rounds": 4}


async def _gateway_account(url: str, name: str, store) -> nio.AsyncClient:
    reg = nio.AsyncClient(url, name)
    try:
        assert isinstance(await reg.register(name, PASSWORD), nio.RegisterResponse)
    finally:
        await reg.close()
    return await encrypted_client(url, reg.user_id, PASSWORD, store)


async def test_between_two_gateways(tmp_path):
    ca = TestCA(tmp_path / "ca")
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    async with running_gateway(tmp_path / "a", ca, _config(ca)) as a, \
            running_gateway(tmp_path / "b", ca, _config(ca)) as b:
        alice = await _gateway_account(a.client_url, "alice", tmp_path / "alice")
        bob = await _gateway_account(b.client_url, "bob", tmp_path / "bob")
        try:
            await exchange_encrypted_messages(alice, bob)  # invited, as Element starts a DM
            await exchange_encrypted_messages(bob, alice, alias="secret-b")  # joined by alias
        finally:
            await alice.close()
            await bob.close()


async def test_with_synapse(tmp_path, shared_synapse):
    synapse = shared_synapse  # the process's (tests/interop/conftest.py): a user of our own below
    ca = synapse.ca
    (tmp_path / "gw").mkdir()
    async with running_gateway(tmp_path / "gw", ca, _config(ca)) as gw:
        alice = await _gateway_account(gw.client_url, "alice", tmp_path / "alice")
        localpart = unique_localpart("bob")
        await register_synapse_user(synapse, localpart, PASSWORD)
        bob = await encrypted_client(synapse.client_url, f"@{localpart}:{synapse.server_name}", PASSWORD,
                                     tmp_path / "bob")
        try:
            await exchange_encrypted_messages(alice, bob)  # our room, Synapse's user invited
            await exchange_encrypted_messages(bob, alice)  # Synapse's room, our user invited
            await exchange_encrypted_messages(alice, bob, alias="ours")  # joined by alias
        finally:
            await alice.close()
            await bob.close()
