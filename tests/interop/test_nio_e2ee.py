"""Real end-to-end encryption with matrix-nio (its E2EE extra, vodozemac) against a real
server process: two users in an encrypted room upload keys, query each other's devices,
claim one-time keys, share a megolm session over to-device olm messages, and each
decrypts what the other sent. The server only stores and forwards the keys."""

from __future__ import annotations

import aiosqlite
import nio

from tests.support.gateway_server import running_gateway
from tests.support.nio_e2ee import encrypted_client, exchange_encrypted_messages, sync
from tests.support.tls import TestCA

CONFIG = {"enable_registration": True, "enable_registration_without_verification": True, "bcrypt_rounds": 4}
PASSWORD = "correct horse battery"


async def _account(url: str, name: str, store) -> nio.AsyncClient:
    reg = nio.AsyncClient(url, name)
    try:
        assert isinstance(await reg.register(name, PASSWORD), nio.RegisterResponse)
    finally:
        await reg.close()
    return await encrypted_client(url, reg.user_id, PASSWORD, store)


async def test_megolm_messages_decrypt_on_the_other_side(tmp_path):
    ca = TestCA(tmp_path / "ca")
    (tmp_path / "gw").mkdir()
    async with running_gateway(tmp_path / "gw", ca, CONFIG) as gw:
        alice = await _account(gw.client_url, "alice", tmp_path / "alice")
        bob = await _account(gw.client_url, "bob", tmp_path / "bob")
        try:
            await exchange_encrypted_messages(alice, bob)
            # The to-device messages that carried the room keys were acknowledged and deleted.
            await sync(alice)
            await sync(bob)
            async with aiosqlite.connect(gw.config.database.args["database"]) as db:
                async with db.execute("SELECT COUNT(*) FROM device_inbox") as cur:
                    assert (await cur.fetchone())[0] == 0
        finally:
            await alice.close()
            await bob.close()
