"""GET /_matrix/client/v3/admin/whois/{userId}: each device's connections (IP address,
user agent, last seen) as the access-token middleware recorded them, for the user and
server admins only."""

from __future__ import annotations

from .conftest import auth_header, register

C = "/_matrix/client/v3"


async def whois(client, token, user_id, *, ua="test-agent/1"):
    return await client.get(f"{C}/admin/whois/{user_id}", headers={**auth_header(token), "User-Agent": ua})


async def test_whois_lists_connections_per_device(client, hs):
    now = [1_000_000_000]
    hs.clock_ms = lambda: now[0]
    alice = await register(client, "alice")
    other = await client.post(f"{C}/login", json={"type": "m.login.password", "user": "alice",
                                                  "password": "pw-" + "x" * 8})
    laptop = await other.json()
    # Each device calls with its own user agent; the first call is what whois shows.
    await client.get(f"{C}/account/whoami", headers={**auth_header(alice["access_token"]), "User-Agent": "phone/2"})
    await client.get(f"{C}/account/whoami", headers={**auth_header(laptop["access_token"]), "User-Agent": "laptop/9"})
    body = await (await whois(client, alice["access_token"], "@alice:hs.test", ua="phone/2")).json()
    assert body["user_id"] == "@alice:hs.test"
    assert set(body["devices"]) == {alice["device_id"], laptop["device_id"]}
    phone = body["devices"][alice["device_id"]]["sessions"][0]["connections"]
    assert phone == [{"ip": "127.0.0.1", "last_seen": now[0], "user_agent": "phone/2"}]
    assert [c["user_agent"] for c in body["devices"][laptop["device_id"]]["sessions"][0]["connections"]] \
        == ["laptop/9"]

    # Seen again soon: not written again. Later: last_seen moves. A new user agent is a new connection.
    now[0] += 60_000
    await client.get(f"{C}/account/whoami", headers={**auth_header(alice["access_token"]), "User-Agent": "phone/2"})
    body = await (await whois(client, alice["access_token"], "@alice:hs.test", ua="phone/2")).json()
    assert body["devices"][alice["device_id"]]["sessions"][0]["connections"][0]["last_seen"] == 1_000_000_000
    now[0] += 120_000
    await client.get(f"{C}/account/whoami", headers={**auth_header(alice["access_token"]), "User-Agent": "phone/3"})
    await client.get(f"{C}/account/whoami", headers={**auth_header(alice["access_token"]), "User-Agent": "phone/2"})
    body = await (await whois(client, alice["access_token"], "@alice:hs.test", ua="phone/2")).json()
    assert [(c["user_agent"], c["last_seen"]) for c in body["devices"][alice["device_id"]]["sessions"][0]["connections"]] \
        == [("phone/2", now[0]), ("phone/3", now[0])]
    # /devices shows the last connection too.
    devices = await (await client.get(f"{C}/devices", headers=auth_header(alice["access_token"]))).json()
    mine = next(d for d in devices["devices"] if d["device_id"] == alice["device_id"])
    assert mine["last_seen_ip"] == "127.0.0.1" and mine["last_seen_ts"] == now[0]

    # A deleted device takes its connections with it.
    resp = await client.post(f"{C}/logout", headers=auth_header(laptop["access_token"]))
    assert resp.status == 200
    body = await (await whois(client, alice["access_token"], "@alice:hs.test")).json()
    assert set(body["devices"]) == {alice["device_id"]}
    assert await hs.db.fetchval("SELECT COUNT(*) FROM client_ips WHERE device_id = $1", laptop["device_id"]) == 0


async def test_whois_is_for_admins_and_the_user(client, hs):
    alice = await register(client, "alice")
    bob = await register(client, "bob")
    resp = await whois(client, bob["access_token"], "@alice:hs.test")
    assert resp.status == 403 and (await resp.json())["errcode"] == "M_FORBIDDEN"
    # Non-admins learn nothing about users that do not exist either.
    resp = await whois(client, bob["access_token"], "@nobody:hs.test")
    assert resp.status == 403
    await hs.auth.users.set_admin("@bob:hs.test", True)
    resp = await whois(client, bob["access_token"], "@alice:hs.test")
    assert resp.status == 200
    assert list((await resp.json())["devices"]) == [alice["device_id"]]
    resp = await whois(client, bob["access_token"], "@nobody:hs.test")
    assert resp.status == 404 and (await resp.json())["errcode"] == "M_NOT_FOUND"
    resp = await whois(client, bob["access_token"], "@alice:elsewhere.test")
    assert resp.status == 400 and (await resp.json())["errcode"] == "M_INVALID_PARAM"
    resp = await whois(client, bob["access_token"], "not-a-user")
    assert resp.status == 400 and (await resp.json())["errcode"] == "M_INVALID_PARAM"
    resp = await client.get(f"{C}/admin/whois/@alice:hs.test")
    assert resp.status == 401
    # The admin API answers the same.
    resp = await client.get("/_synapse/admin/v1/whois/@alice:hs.test", headers=auth_header(bob["access_token"]))
    conns = (await resp.json())["devices"][alice["device_id"]]["sessions"][0]["connections"]
    assert resp.status == 200 and conns == []  # alice has not made a request since registering
