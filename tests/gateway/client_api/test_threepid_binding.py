"""Binding and unbinding addresses at the identity server a client names, against a small
identity server of our own over HTTPS on loopback (tests/support/identity_server.py): bind
proxied with the client's token, unbind signed with our server key (X-Matrix), on delete,
unbind and deactivation. Both engines."""

from __future__ import annotations

import pytest

from tests.conftest import free_port
from tests.support.identity_server import ACCESS_TOKEN, start_identity_server
from tests.support.tls import TestCA

from .conftest import auth_header, register

PASSWORD = "pw-" + "x" * 8


@pytest.fixture
def ca(tmp_path):
    return TestCA(tmp_path / "ca")


@pytest.fixture
async def identity(ca):
    server, runner = await start_identity_server(ca)
    yield server
    await runner.cleanup()


@pytest.fixture
def config_overrides(ca):
    # Our identity server is on loopback, with a certificate of the test CA.
    return {"federation_custom_ca_list": [str(ca.ca_path)], "ip_range_whitelist": ["127.0.0.0/8"]}


@pytest.fixture
def trusting(hs, identity):
    identity.homeserver_keys[hs.server_name] = hs.signing_key.signing_key.verify_key
    return identity


async def post(client, token: str, path: str, body: dict):
    resp = await client.post(f"/_matrix/client/{path}", headers=auth_header(token), json=body)
    return resp.status, await resp.json()


async def bind(client, identity, user: dict, address: str, *, prefix: str = "v3"):
    sid = identity.validated_session("email", address, "secret")
    return await post(client, user["access_token"], f"{prefix}/account/3pid/bind", {
        "id_server": identity.name, "id_access_token": ACCESS_TOKEN, "sid": sid, "client_secret": "secret"})


async def test_bind_through_us_then_delete_unbinds(hs, client, trusting):
    alice = await register(client, "alice", PASSWORD)
    assert await bind(client, trusting, alice, "alice@example.org", prefix="unstable") == (200, {})
    assert trusting.bindings[("email", "alice@example.org")] == "@alice:hs.test"
    method, path, body = trusting.requests[-1]
    assert (method, path) == ("POST", "/_matrix/identity/v2/3pid/bind") and body["mxid"] == "@alice:hs.test"
    # Deleting it (never on the account here) unbinds it where we bound it, signed by us.
    status, body = await post(client, alice["access_token"], "v3/account/3pid/delete",
                              {"medium": "email", "address": "alice@example.org"})
    assert (status, body) == (200, {"id_server_unbind_result": "success"})
    assert ("email", "alice@example.org") not in trusting.bindings
    # Nothing known any more: nobody to ask.
    status, body = await post(client, alice["access_token"], "v3/account/3pid/delete",
                              {"medium": "email", "address": "alice@example.org"})
    assert body == {"id_server_unbind_result": "no-support"}


async def test_unbind_an_address_bound_out_of_band(hs, client, trusting):
    alice = await register(client, "alice", PASSWORD)
    await trusting.bind("email", "oob@example.org", "@alice:hs.test")
    status, body = await post(client, alice["access_token"], "v3/account/3pid/delete",
                              {"medium": "email", "address": "oob@example.org", "id_server": trusting.name})
    assert (status, body) == (200, {"id_server_unbind_result": "success"})
    assert trusting.bindings == {}


@pytest.mark.parametrize("named", [True, False])
async def test_unbind_endpoint(hs, client, trusting, named):
    alice = await register(client, "alice", PASSWORD)
    await bind(client, trusting, alice, "bobby@example.org")
    request = {"medium": "email", "address": "bobby@example.org"} | ({"id_server": trusting.name} if named else {})
    status, body = await post(client, alice["access_token"], "unstable/account/3pid/unbind", request)
    assert (status, body) == (200, {"id_server_unbind_result": "success"})
    assert trusting.bindings == {}


async def test_an_unbind_for_another_user_is_refused_by_the_identity_server(hs, client, trusting):
    alice = await register(client, "alice", PASSWORD)
    await trusting.bind("email", "carol@example.org", "@carol:hs.test")
    status, body = await post(client, alice["access_token"], "v3/account/3pid/unbind",
                              {"medium": "email", "address": "carol@example.org", "id_server": trusting.name})
    assert (status, body) == (200, {"id_server_unbind_result": "no-support"})
    assert trusting.bindings == {("email", "carol@example.org"): "@carol:hs.test"}


async def test_deactivation_unbinds(hs, client, trusting):
    alice = await register(client, "alice", PASSWORD)
    await bind(client, trusting, alice, "bob4@example.org")
    status, body = await post(client, alice["access_token"], "v3/account/deactivate", {
        "auth": {"type": "m.login.password", "password": PASSWORD,
                 "identifier": {"type": "m.id.user", "user": "alice"}}})
    assert (status, body) == (200, {"id_server_unbind_result": "success"})
    assert trusting.bindings == {}


async def test_bind_errors(hs, client, trusting):
    alice = await register(client, "alice", PASSWORD)
    sid = trusting.validated_session("email", "x@example.org", "secret")
    base = {"id_server": trusting.name, "id_access_token": ACCESS_TOKEN, "sid": sid, "client_secret": "secret"}
    # The identity server's own refusals come back as they are.
    status, body = await post(client, alice["access_token"], "v3/account/3pid/bind", {**base, "id_access_token": "x"})
    assert status == 401 and body["errcode"] == "M_UNAUTHORIZED"
    status, body = await post(client, alice["access_token"], "v3/account/3pid/bind", {**base, "client_secret": "other"})
    assert status == 404 and body["errcode"] == "M_NO_VALID_SESSION"
    for bad in ("https://id.example.org", "id.example.org/path", "", 5):
        status, body = await post(client, alice["access_token"], "v3/account/3pid/bind", {**base, "id_server": bad})
        assert status == 400 and body["errcode"] == "M_INVALID_PARAM", bad
    status, body = await post(client, alice["access_token"], "v3/account/3pid/bind", {**base, "sid": None})
    assert status == 400 and body["errcode"] == "M_MISSING_PARAM"
    # Nothing listening there.
    status, body = await post(client, alice["access_token"], "v3/account/3pid/bind",
                              {**base, "id_server": f"127.0.0.1:{free_port()}"})
    assert status == 502 and body["errcode"] == "M_UNKNOWN"
    assert trusting.bindings == {}


@pytest.mark.parametrize("config_overrides", [{}])
async def test_identity_servers_follow_the_outbound_ip_rules(hs, client, identity):
    """Without a whitelist, loopback is in the default blacklist: never contacted."""
    alice = await register(client, "alice", PASSWORD)
    before = len(identity.requests)
    status, body = await bind(client, identity, alice, "x@example.org")
    assert status == 400 and body["errcode"] == "M_SERVER_NOT_TRUSTED"
    assert len(identity.requests) == before


@pytest.fixture
async def localhost_identity(tmp_path, monkeypatch):
    """An identity server named ``localhost`` (in /etc/hosts, not in DNS) whose CA the
    system trust store holds (``SSL_CERT_FILE``), not ``federation_custom_ca_list``; set
    before the homeserver starts, as an operator's environment is."""
    system_ca = TestCA(tmp_path / "system-ca")
    monkeypatch.setenv("SSL_CERT_FILE", str(system_ca.ca_path))
    server, runner = await start_identity_server(system_ca, "localhost")
    yield server
    await runner.cleanup()


@pytest.mark.parametrize("config_overrides", [{"ip_range_whitelist": ["127.0.0.0/8"]}])
async def test_identity_server_found_as_the_os_finds_it_and_trusted_as_the_system_trusts(
        localhost_identity, hs, client):
    localhost_identity.homeserver_keys[hs.server_name] = hs.signing_key.signing_key.verify_key
    alice = await register(client, "alice", PASSWORD)
    assert await bind(client, localhost_identity, alice, "local@example.org") == (200, {})
    assert localhost_identity.bindings[("email", "local@example.org")] == "@alice:hs.test"


@pytest.mark.parametrize("config_overrides", [{}])
async def test_a_name_the_os_resolves_to_loopback_is_still_refused(localhost_identity, hs, client):
    """/etc/hosts gives the address, the outbound IP rules still judge it."""
    alice = await register(client, "alice", PASSWORD)
    status, body = await bind(client, localhost_identity, alice, "local@example.org")
    assert status == 400 and body["errcode"] == "M_SERVER_NOT_TRUSTED"
    assert localhost_identity.requests == []

