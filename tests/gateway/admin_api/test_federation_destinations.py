"""Federation destinations admin API (Synapse's paths and fields): list with paging and
ordering, details, rooms, reset_connection; non-admins get M_FORBIDDEN."""

from __future__ import annotations

from tests.gateway.admin_api.test_admin import A, user  # noqa: F401  (fixtures)

D = f"{A}/v1/federation/destinations"


async def seed(hs):
    store = hs.federation_sender.store
    await store.save_batch(9, {("b.test", "!r1:hs.test"): 4, ("b.test", "!r2:hs.test"): 9, ("a.test", "!r1:hs.test"): 4})
    await store.set_retry_timings("b.test", retry_last_ts=2000, retry_interval=600_000, failure_ts=1000)
    await store.set_last_successful("a.test", 4)


async def test_non_admins_are_refused(client, user):
    for method, path in (("GET", D), ("GET", f"{D}/a.test"), ("GET", f"{D}/a.test/rooms"),
                         ("POST", f"{D}/a.test/reset_connection")):
        resp = await client.request(method, path, headers=user, json={})
        assert resp.status == 403 and (await resp.json())["errcode"] == "M_FORBIDDEN", path
        resp = await client.request(method, path, json={})
        assert resp.status == 401 and (await resp.json())["errcode"] == "M_MISSING_TOKEN", path


async def test_list_details_and_rooms(hs, client, admin):
    await seed(hs)
    body = await (await client.get(D, headers=admin)).json()
    assert body == {"total": 2, "destinations": [
        {"destination": "a.test", "retry_last_ts": 0, "retry_interval": 0, "failure_ts": None,
         "last_successful_stream_ordering": 4},
        {"destination": "b.test", "retry_last_ts": 2000, "retry_interval": 600_000, "failure_ts": 1000,
         "last_successful_stream_ordering": None},
    ]}
    page = await (await client.get(D, headers=admin, params={"limit": "1"})).json()
    assert [d["destination"] for d in page["destinations"]] == ["a.test"] and page["next_token"] == "1"
    page = await (await client.get(D, headers=admin, params={"from": page["next_token"]})).json()
    assert [d["destination"] for d in page["destinations"]] == ["b.test"] and "next_token" not in page
    page = await (await client.get(D, headers=admin, params={"order_by": "retry_interval", "dir": "b"})).json()
    assert [d["destination"] for d in page["destinations"]] == ["b.test", "a.test"]
    for bad in ({"order_by": "nope"}, {"dir": "x"}, {"limit": "-1"}, {"from": "x"}):
        resp = await client.get(D, headers=admin, params=bad)
        assert resp.status == 400 and (await resp.json())["errcode"] == "M_INVALID_PARAM", bad

    one = await (await client.get(f"{D}/b.test", headers=admin)).json()
    assert one["destination"] == "b.test" and one["failure_ts"] == 1000
    resp = await client.get(f"{D}/unknown.test", headers=admin)
    assert resp.status == 404 and (await resp.json())["errcode"] == "M_NOT_FOUND"

    rooms = await (await client.get(f"{D}/b.test/rooms", headers=admin)).json()
    assert rooms == {"total": 2, "rooms": [{"room_id": "!r1:hs.test", "stream_ordering": 4},
                                           {"room_id": "!r2:hs.test", "stream_ordering": 9}]}
    rooms = await (await client.get(f"{D}/b.test/rooms", headers=admin, params={"dir": "b", "limit": "1"})).json()
    assert rooms["rooms"] == [{"room_id": "!r2:hs.test", "stream_ordering": 9}] and rooms["next_token"] == "1"
    assert (await client.get(f"{D}/unknown.test/rooms", headers=admin)).status == 404


async def test_reset_connection(hs, client, admin):
    await seed(hs)
    resp = await client.post(f"{D}/b.test/reset_connection", headers=admin, json={})
    assert resp.status == 200 and await resp.json() == {}
    one = await (await client.get(f"{D}/b.test", headers=admin)).json()
    assert (one["retry_last_ts"], one["retry_interval"], one["failure_ts"]) == (0, 0, None)
    # Not failing (any more): nothing to reset, as in Synapse.
    resp = await client.post(f"{D}/b.test/reset_connection", headers=admin, json={})
    assert resp.status == 400 and (await resp.json())["errcode"] == "M_UNKNOWN"
    resp = await client.post(f"{D}/unknown.test/reset_connection", headers=admin, json={})
    assert resp.status == 404
