"""``check_username_for_spam`` hides users from user directory searches (both the
current ``(user_profile, requester_id)`` form and the older one-argument form)."""

from __future__ import annotations

import pytest

from tests.gateway.client_api.test_user_directory import people, search, set_name  # noqa: F401 (fixture)

from .test_modules import instance, module


@pytest.fixture
def config_overrides():
    return {"user_directory": {"search_all_users": True},
            "modules": [module("HiddenUsers"), module("HiddenUsersLegacy", hide=["@dave:hs.test"])]}


async def test_modules_hide_users_from_searches(hs, client, people):
    await set_name(client, people["erin"], "@erin:hs.test", "Erin spammy deals")
    status, body = await search(client, people["alice"], "hs.test")
    assert status == 200
    found = {r["user_id"] for r in body["results"]}
    assert {"@bob:hs.test", "@carol:hs.test"} <= found
    assert "@erin:hs.test" not in found and "@dave:hs.test" not in found
    # The current form gets the profile and who is searching; the legacy form the profile only.
    seen = instance(hs, "HiddenUsers").called("check_username_for_spam")
    assert ({"user_id": "@bob:hs.test", "display_name": "Bobby Tables", "avatar_url": None}, "@alice:hs.test") in seen
    assert all(len(c) == 1 for c in instance(hs, "HiddenUsersLegacy").called("check_username_for_spam"))
