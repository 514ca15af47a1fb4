"""A real client library (matrix-nio) registers, logs in, checks whoami and logs out."""

from __future__ import annotations

import nio

from .conftest import auth_header


async def test_nio_register_login_whoami_logout(client):
    url = str(client.make_url("/")).rstrip("/")
    alice = nio.AsyncClient(url, "alice")
    try:
        resp = await alice.register("alice", "wonderland-pass", device_name="nio test")
        assert isinstance(resp, nio.RegisterResponse), resp
        assert resp.user_id == "@alice:hs.test"
        await alice.close()

        alice = nio.AsyncClient(url, "@alice:hs.test")
        login = await alice.login("wonderland-pass", device_name="second device")
        assert isinstance(login, nio.LoginResponse), login
        who = await alice.whoami()
        assert isinstance(who, nio.WhoamiResponse), who
        assert who.user_id == "@alice:hs.test" and who.device_id == login.device_id

        bad = await nio.AsyncClient(url, "@alice:hs.test").login("wrong")
        assert isinstance(bad, nio.LoginError) and bad.status_code == "M_FORBIDDEN"

        out = await alice.logout()
        assert isinstance(out, nio.LogoutResponse), out
        resp = await client.get("/_matrix/client/v3/account/whoami", headers=auth_header(login.access_token))
        assert resp.status == 401
    finally:
        await alice.close()
