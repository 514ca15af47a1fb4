"""The key cache: own keys never fetched, stale or old keys not used for requests."""

from __future__ import annotations

from federation.keyring import ServerKey
from federation.signing import encode_verify_key, generate_signing_key
from tests.gateway.client_api.conftest import client, config_overrides, hs  # noqa: F401


async def test_own_key_is_local_and_cached_keys_respect_validity(hs):
    own = await hs.keyring.get_verify_key(hs.server_name, hs.signing_key.key_id)
    assert own == hs.signing_key.verify_key
    assert await hs.keyring.get_verify_key(hs.server_name, "ed25519:other") is None

    remote = generate_signing_key("r1")
    old = generate_signing_key("r0")
    now = hs.clock_ms()
    await hs.keyring.store.store_keys(
        [ServerKey("remote.invalid", remote.key_id, encode_verify_key(remote.verify_key), now + 60_000, None),
         ServerKey("remote.invalid", old.key_id, encode_verify_key(old.verify_key), now - 60_000, now - 60_000)],
        {"server_name": "remote.invalid"}, now,
    )
    # Never go looking for remote.invalid on the network: it just failed, so it is backed off.
    hs.keyring._failed["remote.invalid"] = __import__("time").monotonic()
    found = await hs.keyring.get_verify_key("remote.invalid", remote.key_id, minimum_valid_until_ts=now)
    assert found == remote.verify_key
    # The old key is still known (for old events), but not valid now, and remote.invalid
    # cannot be reached to refresh it.
    assert await hs.keyring.get_verify_key("remote.invalid", old.key_id) == old.verify_key
    assert await hs.keyring.get_verify_key("remote.invalid", old.key_id, minimum_valid_until_ts=now) is None
