from __future__ import annotations

import pytest

from gateway.storage.users import UserExistsError, UserStore


async def test_create_and_get_user(database):
    store = UserStore(database)
    await store.create_user("@alice:test", password_hash="h", created_ts=123, admin=True)
    user = await store.get_user("@alice:test")
    assert user is not None
    assert (user.user_id, user.password_hash, user.admin, user.deactivated, user.created_ts) == (
        "@alice:test", "h", True, False, 123,
    )
    assert await store.get_user("@bob:test") is None
    with pytest.raises(UserExistsError):
        await store.create_user("@alice:test", password_hash=None, created_ts=1)
    assert await store.count_users() == 1
