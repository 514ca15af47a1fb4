"""The example module shipped in docs/examples loads from config and works."""

from __future__ import annotations

import pathlib

import pytest

from tests.gateway.client_api.conftest import register
from tests.gateway.client_api.test_rooms import create, send

EXAMPLES = pathlib.Path(__file__).resolve().parents[3] / "docs" / "examples"


@pytest.fixture
def config_overrides(monkeypatch):
    monkeypatch.syspath_prepend(str(EXAMPLES))
    return {"modules": [{"module": "list_spam_checker.ListSpamChecker",
                         "config": {"evil_users": ["@mallory:hs.test"]}}]}


async def test_list_spam_checker(hs, client):
    alice = (await register(client, "alice"))["access_token"]
    mallory = (await register(client, "mallory"))["access_token"]
    room = await create(client, alice, preset="public_chat")
    assert (await client.post(f"/_matrix/client/v3/rooms/{room}/join",
                              headers={"Authorization": f"Bearer {mallory}"}, json={})).status == 200
    assert (await send(client, alice, room, "hi", txn="1"))["status"] == 200
    refused = await send(client, mallory, room, "hi", txn="1")
    assert refused["status"] == 403 and refused["errcode"] == "M_FORBIDDEN"
    resp = await client.get("/_synapse/client/list_spam_checker/is_evil", params={"user": "@mallory:hs.test"})
    assert await resp.json() == {"evil": True}
    resp = await client.get("/_synapse/client/list_spam_checker/is_evil", params={"user": "@alice:hs.test"})
    assert await resp.json() == {"evil": False}
