"""Modules see events that arrive over federation: ``should_drop_federated_event`` drops
them before anything is stored, ``check_event_for_spam`` keeps spam out of the timeline
(soft-failed, as Synapse does), and ``on_new_event`` runs for each event that reaches it."""

from __future__ import annotations

import asyncio

import pytest

from tests.gateway.federation_api.test_transactions import alice, bodies, join_bob, public_room, remote  # noqa: F401
from tests.support.fake_remote import local_gateway
from tests.support.tls import TestCA

from .test_modules import instance, module


@pytest.fixture
async def gw(tmp_path, database_config):
    ca = TestCA(tmp_path / "ca")
    extra = {"modules": [module("FederationPolicy"), module("SpamRules"), module("Rules")]}
    async with local_gateway(tmp_path, database_config, ca, extra) as g:
        g.ca = ca
        yield g


@pytest.fixture
def ca(gw):
    return gw.ca


async def test_modules_judge_and_see_federated_events(gw, remote, alice):
    room_id, view = await public_room(gw, alice, remote)
    bob = await join_bob(gw, remote, view)
    fine = view.make("m.room.message", bob, {"msgtype": "m.text", "body": "hello from afar"})
    spam = view.make("m.room.message", bob, {"msgtype": "m.text", "body": "cheap spam"})
    dropped = view.make("m.room.message", bob, {"msgtype": "m.text", "body": "please drop me"}, advance=False)
    ids = [view.event_id(e, view.rv) for e in (fine, spam, dropped)]
    answer = await remote.send(gw.server_name, [fine, spam, dropped])
    assert answer["pdus"][ids[0]] == {} and answer["pdus"][ids[1]] == {}
    assert "policy" in answer["pdus"][ids[2]]["error"]

    # Only the fine message is in the timeline; the spam is stored but soft-failed;
    # the dropped event is not stored at all.
    assert bodies(await alice.messages(room_id)) == ["hello from afar"]
    metas = await gw.hs.events.store.get_event_meta(ids)
    assert metas[ids[1]].soft_failed and not metas[ids[0]].soft_failed and ids[2] not in metas

    policy, spam_rules, rules = (instance(gw.hs, n) for n in ("FederationPolicy", "SpamRules", "Rules"))
    assert {c[0] for c in policy.called("should_drop_federated_event")} >= set(ids)
    assert {c[0] for c in spam_rules.called("check_event_for_spam")} >= {ids[0], ids[1]}

    async def seen():
        while not {ids[0]} <= {c[1] for c in rules.called("on_new_event")}:
            await asyncio.sleep(0.01)  # on_new_event runs in the background after the store
    await asyncio.wait_for(seen(), 10)
    notified = {c[1] for c in rules.called("on_new_event")}
    assert ids[1] not in notified and ids[2] not in notified
