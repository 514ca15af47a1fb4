"""Login tokens and the IdP sessions of devices (for OIDC back-channel logout), on both engines."""

from __future__ import annotations

from gateway.storage.auth import AuthStore


async def test_login_token_carries_its_idp_session_and_is_single_use(database):
    store = AuthStore(database)
    await store.add_login_token("tok", "@a:hs", 10_000, "oidc-x", "sid-1", {"org.example.dept": "Ops"})
    await store.add_login_token("plain", "@b:hs", 10_000)
    assert await store.consume_login_token("tok", 5_000) == ("@a:hs", "oidc-x", "sid-1", {"org.example.dept": "Ops"})
    assert await store.consume_login_token("tok", 5_000) is None
    assert await store.consume_login_token("plain", 20_000) is None  # expired
    await store.add_login_token("plain2", "@b:hs", 10_000)
    assert await store.consume_login_token("plain2", 5_000) == ("@b:hs", None, None, {})


async def test_devices_by_idp_session(database):
    store = AuthStore(database)
    await store.add_device_auth_provider("@a:hs", "D1", "oidc-x", "sid-1")
    await store.add_device_auth_provider("@a:hs", "D2", "oidc-x", "sid-2")
    await store.add_device_auth_provider("@b:hs", "D3", "oidc-x", "sid-1")
    await store.add_device_auth_provider("@a:hs", "D4", "oidc-y", "sid-1")
    assert await store.devices_for_auth_provider_session("oidc-x", "sid-1") == [("@a:hs", "D1"), ("@b:hs", "D3")]
    assert await store.devices_for_auth_provider_session("oidc-x", "sid-1", "@b:hs") == [("@b:hs", "D3")]
    assert await store.devices_for_auth_provider_session("oidc-x", None, "@a:hs") == [("@a:hs", "D1"),
                                                                                     ("@a:hs", "D2")]
    await store.delete_device_auth_providers("@a:hs", "D1")
    assert await store.devices_for_auth_provider_session("oidc-x", "sid-1") == [("@b:hs", "D3")]
