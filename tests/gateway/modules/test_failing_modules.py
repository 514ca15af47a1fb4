"""A module whose callbacks raise: the guarded operation fails safe with a Matrix error,
notifications are skipped, the server keeps serving."""

from __future__ import annotations

import pytest

from tests.gateway.client_api.conftest import register
from tests.gateway.client_api.test_rooms import post, send

from .test_modules import instance, module


@pytest.fixture
def config_overrides():
    return {"modules": [module("Broken")]}


async def test_raising_callbacks_fail_safe(hs, client):
    # on_user_registration raises: registration still succeeds (a notification).
    alice = (await register(client, "alice"))["access_token"]
    # user_may_create_room raises: the room is not created, with a clear 403.
    status, body = await post(client, alice, "/createRoom", {})
    assert status == 403 and body["errcode"] == "M_FORBIDDEN" and "module failed" in body["error"]
    assert await hs.db.fetchval("SELECT COUNT(*) FROM rooms") == 0
    broken = instance(hs, "Broken")
    assert [c[0] for c in broken.calls].count("boom") == 2
    # The server keeps working for everything else.
    resp = await client.get("/_matrix/client/v3/account/whoami", headers={"Authorization": f"Bearer {alice}"})
    assert resp.status == 200
