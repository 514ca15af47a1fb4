"""The admin side of reported content (Synapse's paths): event, room and user reports
listed with their filters, directions and pagination, one report in detail, deleted;
non-admins refused. Both engines."""

from __future__ import annotations

from urllib.parse import quote

import pytest

from tests.gateway.client_api.conftest import auth_header, register
from tests.gateway.client_api.test_report_content import report
from tests.gateway.client_api.test_rooms import create, post, send

A = "/_synapse/admin/v1"


async def admin_call(client, admin, method, path, **params):
    resp = await client.request(method, A + path, headers=admin, params=params)
    return resp.status, await resp.json()


@pytest.fixture
async def users(client):
    return {name: (await register(client, name))["access_token"] for name in ("alice", "bob", "carol")}


async def test_event_reports_listed_filtered_paged_shown_deleted(client, hs, admin, users):
    alice, bob, carol = users["alice"], users["bob"], users["carol"]
    garden = await create(client, alice, preset="public_chat", name="Garden", room_alias_name="garden")
    lobby = await create(client, carol, preset="public_chat")
    for token in (bob, carol):
        assert (await post(client, token, f"/rooms/{garden}/join"))[0] == 200
    assert (await post(client, bob, f"/rooms/{lobby}/join"))[0] == 200
    by_alice = (await send(client, alice, garden, "from alice"))["event_id"]
    by_carol = (await send(client, carol, lobby, "from carol"))["event_id"]
    filed = [(bob, garden, by_alice, "one"), (carol, garden, by_alice, "two"), (bob, lobby, by_carol, "three"),
             (bob, garden, by_alice, "four")]
    for token, room, event, reason in filed:
        assert (await report(client, token, f"/rooms/{room}/report/{quote(event)}",
                             {"reason": reason, "score": -50}))[0] == 200

    status, body = await admin_call(client, admin, "GET", "/event_reports")
    assert status == 200 and body["total"] == 4 and "next_token" not in body
    assert [r["reason"] for r in body["event_reports"]] == ["four", "three", "two", "one"]  # newest first
    first = body["event_reports"][-1]
    assert first == {"id": first["id"], "received_ts": first["received_ts"], "room_id": garden, "event_id": by_alice,
                     "user_id": "@bob:hs.test", "reason": "one", "score": -50, "sender": "@alice:hs.test",
                     "name": "Garden", "canonical_alias": "#garden:hs.test"}
    # Oldest first, two at a time.
    status, page1 = await admin_call(client, admin, "GET", "/event_reports", dir="f", limit="2")
    assert [r["reason"] for r in page1["event_reports"]] == ["one", "two"] and page1["next_token"] == 2
    status, page2 = await admin_call(client, admin, "GET", "/event_reports", dir="f", limit="2",
                                     **{"from": str(page1["next_token"])})
    assert [r["reason"] for r in page2["event_reports"]] == ["three", "four"] and "next_token" not in page2
    # Filters: reporter and room by substring, the event's sender exactly.
    status, body = await admin_call(client, admin, "GET", "/event_reports", user_id="carol")
    assert [r["reason"] for r in body["event_reports"]] == ["two"] and body["total"] == 1
    status, body = await admin_call(client, admin, "GET", "/event_reports", room_id=lobby[1:8], dir="f")
    assert [r["reason"] for r in body["event_reports"]] == ["three"]
    status, body = await admin_call(client, admin, "GET", "/event_reports", event_sender_user_id="@alice:hs.test")
    assert body["total"] == 3
    status, body = await admin_call(client, admin, "GET", "/event_reports", event_sender_user_id="alice")
    assert body["total"] == 0
    status, body = await admin_call(client, admin, "GET", "/event_reports", user_id="%")
    assert body["total"] == 0  # a wildcard is a character here

    # One report, with the event itself.
    status, detail = await admin_call(client, admin, "GET", f"/event_reports/{first['id']}")
    assert status == 200 and detail["reason"] == "one" and detail["event_json"]["content"]["body"] == "from alice"
    assert detail["event_json"]["signatures"]["hs.test"]
    assert (await admin_call(client, admin, "DELETE", f"/event_reports/{first['id']}")) == (200, {})
    status, body = await admin_call(client, admin, "GET", f"/event_reports/{first['id']}")
    assert status == 404 and body["errcode"] == "M_NOT_FOUND"
    assert (await admin_call(client, admin, "DELETE", f"/event_reports/{first['id']}"))[0] == 404
    assert (await admin_call(client, admin, "GET", "/event_reports"))[1]["total"] == 3

    # Bad parameters.
    for params in ({"limit": "-1"}, {"from": "-5"}, {"limit": "x"}, {"dir": "sideways"}):
        status, body = await admin_call(client, admin, "GET", "/event_reports", **params)
        assert status == 400 and body["errcode"] == "M_INVALID_PARAM", params
    for bad in ("abc", "-1", "1.5"):
        status, body = await admin_call(client, admin, "GET", f"/event_reports/{bad}")
        assert status == 400 and body["errcode"] == "M_INVALID_PARAM", bad


async def test_room_and_user_reports(client, hs, admin, users):
    alice, bob = users["alice"], users["bob"]
    room = await create(client, alice, name="Den", room_alias_name="den")
    assert (await report(client, bob, f"/rooms/{room}/report", {"reason": "bad den"}))[0] == 200
    assert (await report(client, alice, f"/rooms/{room}/report", {"reason": "mine"}))[0] == 200
    assert (await report(client, bob, "/users/@alice:hs.test/report", {"reason": "rude"}))[0] == 200
    assert (await report(client, alice, f"/users/{quote('@far:remote.test')}/report", {"reason": "spam"}))[0] == 200

    status, body = await admin_call(client, admin, "GET", "/room_reports", user_id="bob")
    assert status == 200 and body["total"] == 1
    (entry,) = body["room_reports"]
    assert entry == {"id": entry["id"], "received_ts": entry["received_ts"], "room_id": room,
                     "user_id": "@bob:hs.test", "reason": "bad den", "name": "Den", "canonical_alias": "#den:hs.test"}
    status, body = await admin_call(client, admin, "GET", "/room_reports", dir="f", limit="1")
    assert [r["reason"] for r in body["room_reports"]] == ["bad den"] and body["next_token"] == 1

    status, body = await admin_call(client, admin, "GET", "/user_reports", target_user_id="remote")
    (entry,) = body["user_reports"]
    assert entry == {"id": entry["id"], "received_ts": entry["received_ts"], "target_user_id": "@far:remote.test",
                     "user_id": "@alice:hs.test", "reason": "spam"}
    assert (await admin_call(client, admin, "GET", f"/user_reports/{entry['id']}"))[1] == entry
    assert (await admin_call(client, admin, "DELETE", f"/user_reports/{entry['id']}")) == (200, {})
    assert (await admin_call(client, admin, "GET", "/user_reports"))[1]["total"] == 1
    # IDs are per kind: room report 1 is not user report 1.
    status, body = await admin_call(client, admin, "GET", "/room_reports/1")
    assert status == 200 and body["reason"] == "bad den"


async def test_non_admins_are_refused(client, users):
    for method, path in (("GET", "/event_reports"), ("GET", "/event_reports/1"), ("DELETE", "/event_reports/1"),
                         ("GET", "/room_reports"), ("GET", "/user_reports"), ("DELETE", "/user_reports/1")):
        resp = await client.request(method, A + path, headers=auth_header(users["bob"]))
        assert resp.status == 403 and (await resp.json())["errcode"] == "M_FORBIDDEN", path
