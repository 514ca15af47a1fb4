"""SAML login against pysaml2's IdP side, in-process: the happy path and every way it must fail.

The IdP reads our real AuthnRequest and signs real responses (xmlsec1). Covers: SP metadata,
login flows, the full login with m.login.token, hexencode/dotreplace mapping, a restart
between request and response, unsigned / impostor-signed / tampered responses, another
request's InResponseTo, replay, expiry, another audience, attribute_requirements and the
grandfathered account.
"""

from __future__ import annotations

import base64
import re
import urllib.parse

import pytest
from aiohttp.test_utils import TestClient, TestServer

from gateway.app import build_listener_app
from gateway.config import parse_config
from gateway.server import HomeServer
from sso.handler import BROWSER_COOKIE
from tests.support.saml_idp import TestSamlIdP

SP_ENTITY = "https://hs.test/_synapse/client/saml2/metadata.xml"
ACS = "https://hs.test/_synapse/client/saml2/authn_response"
OTHER_SP = "https://other-sp.test/metadata"
ALICE = {"uid": ["alice"], "displayName": ["Alice Liddell"], "email": ["alice@idp.test"],
         "userGroup": ["staff"]}


def make_config(tmp_path, idp_metadata, **saml):
    return parse_config({
        "server_name": "hs.test", "public_baseurl": "https://hs.test/",
        "listeners": [{"port": 1, "resources": [{"names": ["client"]}]}],
        "database": {"name": "sqlite3", "args": {"database": str(tmp_path / "hs.db")}},
        "signing_key_path": str(tmp_path / "signing.key"),
        "saml2_config": {
            "sp_config": {"metadata": {"local": [str(idp_metadata)]}, "allow_unknown_attributes": True},
            "attribute_requirements": [{"attribute": "userGroup", "value": "staff"}],
            **saml,
        },
        "sso": {"client_whitelist": ["https://app.example/"]},
    }, config_path=str(tmp_path / "homeserver.yaml"))


class Gateway:
    """Our server in-process, which can be restarted on the same database."""

    def __init__(self, config):
        self.config = config
        self.client: TestClient | None = None
        self.hs: HomeServer | None = None

    async def start(self) -> TestClient:
        self.hs = await HomeServer.open(self.config)
        self.client = TestClient(TestServer(build_listener_app(self.hs, self.config.listeners[0])))
        await self.client.start_server()
        return self.client

    async def stop(self) -> None:
        await self.client.close()
        await self.hs.close()


@pytest.fixture
def idp(tmp_path):
    return TestSamlIdP(tmp_path / "idp")


@pytest.fixture
async def gateway(tmp_path, idp, request):
    saml = getattr(request, "param", {})
    gw = Gateway(make_config(tmp_path, idp.write_metadata(), **saml))
    client = await gw.start()
    metadata = await client.get("/_synapse/client/saml2/metadata.xml")
    assert metadata.status == 200
    idp.trust_sp(await metadata.read(), also_as=(OTHER_SP,))
    yield gw
    await gw.stop()


async def start(client, idp, redirect_url="https://app.example/cb?x=1"):
    """Our redirect to the IdP -> (AuthnRequest ID, ACS, RelayState, browser cookie)."""
    resp = await client.get("/_matrix/client/v3/login/sso/redirect/saml", params={"redirectUrl": redirect_url},
                            allow_redirects=False)
    assert resp.status == 302, await resp.text()
    assert resp.headers["Location"].startswith("https://idp.test/saml/sso?SAMLRequest=")
    request_id, acs, relay_state = idp.read_request(resp.headers["Location"])
    cookie = resp.cookies[BROWSER_COOKIE]
    assert cookie["httponly"] and cookie["secure"] and cookie["samesite"] == "None"
    return request_id, acs, relay_state, cookie.value


async def post_response(client, saml_response, relay_state, cookie):
    return await client.post("/_synapse/client/saml2/authn_response",
                             data={"SAMLResponse": saml_response, "RelayState": relay_state},
                             headers={"Cookie": f"{BROWSER_COOKIE}={cookie}"}, allow_redirects=False)


async def login_token_user(client, resp) -> str:
    assert resp.status == 302, await resp.text()
    target = urllib.parse.urlsplit(resp.headers["Location"])
    assert target.netloc == "app.example"
    token = dict(urllib.parse.parse_qsl(target.query))["loginToken"]
    login = await client.post("/_matrix/client/v3/login", json={"type": "m.login.token", "token": token})
    assert login.status == 200, await login.text()
    return (await login.json())["user_id"]


async def test_sp_metadata_and_login_flows(gateway):
    client = gateway.client
    xml = (await (await client.get("/_synapse/client/saml2/metadata.xml")).read()).decode()
    assert f'entityID="{SP_ENTITY}"' in xml
    assert f'Location="{ACS}"' in xml and "HTTP-POST" in xml
    assert 'WantAssertionsSigned="true"' in xml
    flows = (await (await client.get("/_matrix/client/v3/login")).json())["flows"]
    sso = next(f for f in flows if f["type"] == "m.login.sso")
    assert sso["identity_providers"] == [{"id": "saml", "name": "SAML"}]


async def test_full_login_registers_maps_and_links(gateway, idp):
    client = gateway.client
    request_id, acs, relay_state, cookie = await start(client, idp)
    assert acs == ACS
    resp = await post_response(client, idp.response(request_id, acs, SP_ENTITY, ALICE), relay_state, cookie)
    assert await login_token_user(client, resp) == "@alice:hs.test"
    profile = await gateway.hs.auth.users.get_user("@alice:hs.test")
    assert profile is not None
    # Linked by uid: the next login is the same account, even if the display name changed.
    request_id, acs, relay_state, cookie = await start(client, idp)
    resp = await post_response(client, idp.response(request_id, acs, SP_ENTITY, {**ALICE, "displayName": ["A"]}),
                               relay_state, cookie)
    assert await login_token_user(client, resp) == "@alice:hs.test"


@pytest.mark.parametrize("gateway", [{"user_mapping_provider": {
    "module": "synapse.handlers.saml.DefaultSamlMappingProvider",
    "config": {"mxid_source_attribute": "displayName", "mxid_mapping": "dotreplace"}}}], indirect=True)
async def test_dotreplace_mapping_from_display_name(gateway, idp):
    client = gateway.client
    request_id, acs, relay_state, cookie = await start(client, idp)
    resp = await post_response(client, idp.response(request_id, acs, SP_ENTITY, ALICE), relay_state, cookie)
    assert await login_token_user(client, resp) == "@alice.liddell:hs.test"


@pytest.mark.parametrize("gateway", [{"user_mapping_provider": {
    "config": {"mxid_source_attribute": "displayName"}}}], indirect=True)
async def test_hexencode_mapping_and_collision(gateway, idp):
    client = gateway.client
    await gateway.hs.auth.users.create_user("@bj=c3=b6rk:hs.test", password_hash="x", created_ts=0)
    # "Björk" hex-encodes to an existing account (not this uid's): the new user gets a numbered localpart.
    user = {"uid": ["b-1"], "displayName": ["Björk"], "userGroup": ["staff"]}
    request_id, acs, relay_state, cookie = await start(client, idp)
    resp = await post_response(client, idp.response(request_id, acs, SP_ENTITY, user), relay_state, cookie)
    assert await login_token_user(client, resp) == "@bj=c3=b6rk1:hs.test"


@pytest.mark.parametrize("gateway", [{"grandfathered_mxid_source_attribute": "uid"}], indirect=True)
async def test_grandfathered_user_is_linked_not_duplicated(gateway, idp):
    client = gateway.client
    await gateway.hs.auth.users.create_user("@olduser:hs.test", password_hash="x", created_ts=0)
    request_id, acs, relay_state, cookie = await start(client, idp)
    resp = await post_response(client, idp.response(request_id, acs, SP_ENTITY, {**ALICE, "uid": ["OldUser"]}),
                               relay_state, cookie)
    assert await login_token_user(client, resp) == "@olduser:hs.test"


async def test_restart_between_request_and_response(gateway, idp):
    """The outstanding request is in the database: a restart must not make it unsolicited."""
    request_id, acs, relay_state, cookie = await start(gateway.client, idp)
    await gateway.stop()
    client = await gateway.start()  # a new process's worth of state, same database
    resp = await post_response(client, idp.response(request_id, acs, SP_ENTITY, ALICE), relay_state, cookie)
    assert await login_token_user(client, resp) == "@alice:hs.test"


async def test_response_found_by_in_response_to_without_relay_state(gateway, idp):
    client = gateway.client
    request_id, acs, _, cookie = await start(client, idp)
    resp = await post_response(client, idp.response(request_id, acs, SP_ENTITY, ALICE), "", cookie)
    assert await login_token_user(client, resp) == "@alice:hs.test"


async def expect_refused(resp, status: int, code: str) -> None:
    text = await resp.text()
    assert resp.status == status, text
    assert "Location" not in resp.headers
    assert f'id="error-code">{code}<' in text, text
    assert "Traceback" not in text


async def test_unsigned_response_refused(gateway, idp):
    client = gateway.client
    request_id, acs, relay_state, cookie = await start(client, idp)
    unsigned = idp.response(request_id, acs, SP_ENTITY, ALICE, sign_assertion=False, sign_response=False)
    await expect_refused(await post_response(client, unsigned, relay_state, cookie), 403, "invalid_signature")
    assert await gateway.hs.auth.users.get_user("@alice:hs.test") is None


async def test_signed_response_with_unsigned_assertion_refused(gateway, idp):
    client = gateway.client
    request_id, acs, relay_state, cookie = await start(client, idp)
    only_response = idp.response(request_id, acs, SP_ENTITY, ALICE, sign_assertion=False, sign_response=True)
    await expect_refused(await post_response(client, only_response, relay_state, cookie), 403, "invalid_signature")


async def test_response_signed_by_an_impostor_refused(gateway, idp, tmp_path):
    client = gateway.client
    impostor = TestSamlIdP(tmp_path / "impostor", name="impostor")  # same entity ID, its own key
    impostor.trust_sp(idp.sp_metadata_path.read_bytes())
    request_id, acs, relay_state, cookie = await start(client, idp)
    forged = impostor.response(request_id, acs, SP_ENTITY, ALICE)
    await expect_refused(await post_response(client, forged, relay_state, cookie), 403, "invalid_signature")


async def test_tampered_assertion_refused(gateway, idp):
    client = gateway.client
    request_id, acs, relay_state, cookie = await start(client, idp)
    xml = base64.b64decode(idp.response(request_id, acs, SP_ENTITY, {**ALICE, "uid": ["mallory"]})).decode()
    assert xml.count(">mallory<") == 1
    tampered = base64.b64encode(xml.replace(">mallory<", ">admin<").encode()).decode()
    await expect_refused(await post_response(client, tampered, relay_state, cookie), 403, "invalid_signature")
    assert await gateway.hs.auth.users.get_user("@admin:hs.test") is None


async def test_response_to_another_request_refused(gateway, idp):
    client = gateway.client
    other_id, acs, _, _ = await start(client, idp)  # started, never finished
    _, _, relay_state, cookie = await start(client, idp)
    resp = await post_response(client, idp.response(other_id, acs, SP_ENTITY, ALICE), relay_state, cookie)
    await expect_refused(resp, 403, "unsolicited_response")
    # Nor with no session at all (an IdP-initiated / unsolicited response).
    resp = await post_response(client, idp.response("id-made-up", acs, SP_ENTITY, ALICE), "", cookie)
    await expect_refused(resp, 400, "unknown_session")


async def test_replayed_response_refused(gateway, idp):
    client = gateway.client
    request_id, acs, relay_state, cookie = await start(client, idp)
    saml_response = idp.response(request_id, acs, SP_ENTITY, ALICE)
    assert (await post_response(client, saml_response, relay_state, cookie)).status == 302
    await expect_refused(await post_response(client, saml_response, relay_state, cookie), 400, "session_used")


async def test_expired_response_refused(gateway, idp):
    client = gateway.client
    request_id, acs, relay_state, cookie = await start(client, idp)
    with idp.clock_behind(minutes=20):
        old = idp.response(request_id, acs, SP_ENTITY, ALICE)
    await expect_refused(await post_response(client, old, relay_state, cookie), 403, "expired_response")


async def test_response_for_another_audience_refused(gateway, idp):
    client = gateway.client
    request_id, acs, relay_state, cookie = await start(client, idp)
    # A response the IdP signed for another service (the IdP knows that SP too).
    other = idp.response(request_id, acs, OTHER_SP, ALICE)
    assert re.search(f">{re.escape(OTHER_SP)}</[a-z0-9]*:?Audience>", base64.b64decode(other).decode())
    await expect_refused(await post_response(client, other, relay_state, cookie), 403, "wrong_audience")
    assert await gateway.hs.auth.users.get_user("@alice:hs.test") is None


async def test_attribute_requirements_refuse_other_groups(gateway, idp):
    client = gateway.client
    request_id, acs, relay_state, cookie = await start(client, idp)
    guest = {**ALICE, "userGroup": ["guests"]}
    resp = await post_response(client, idp.response(request_id, acs, SP_ENTITY, guest), relay_state, cookie)
    await expect_refused(resp, 403, "unauthorised")
    assert await gateway.hs.auth.users.get_user("@alice:hs.test") is None


async def test_response_from_another_browser_and_junk_refused(gateway, idp):
    client = gateway.client
    request_id, acs, relay_state, _ = await start(client, idp)
    resp = await post_response(client, idp.response(request_id, acs, SP_ENTITY, ALICE), relay_state, "other")
    await expect_refused(resp, 400, "mismatching_session")
    _, _, relay_state, cookie = await start(client, idp)
    junk = base64.b64encode(b"<?xml version='1.0'?><!DOCTYPE x [<!ENTITY a 'aaaa'>]><x>&a;</x>").decode()
    await expect_refused(await post_response(client, junk, relay_state, cookie), 400, "invalid_response")
    resp = await client.post("/_synapse/client/saml2/authn_response", data={"RelayState": "x"})
    await expect_refused(resp, 400, "unknown_session")


@pytest.mark.parametrize("gateway", [{"user_mapping_provider": {
    "module": "tests.sso.custom_saml_mapper.EmployeeMapper", "config": {"prefix": "e"}}}], indirect=True)
async def test_custom_mapping_provider_with_synapse_method_names(gateway, idp):
    client = gateway.client
    xml = (await (await client.get("/_synapse/client/saml2/metadata.xml")).read()).decode()
    assert "employeeNumber" in xml  # from its get_saml_attributes
    request_id, acs, relay_state, cookie = await start(client, idp)
    employee = {**ALICE, "employeeNumber": ["4711"]}
    resp = await post_response(client, idp.response(request_id, acs, SP_ENTITY, employee), relay_state, cookie)
    assert await login_token_user(client, resp) == "@e4711:hs.test"
    assert await gateway.hs.auth.users.get_user("@alice:hs.test") is None


async def test_idp_error_status_shown(gateway, idp):
    client = gateway.client
    request_id, acs, relay_state, cookie = await start(client, idp)
    resp = await post_response(client, idp.error_response(request_id, acs), relay_state, cookie)
    await expect_refused(resp, 403, "idp_refused")


async def test_ui_auth_through_saml(gateway, idp):
    """UI-auth (m.login.sso) with SAML: the assertion must be for the same Matrix user."""
    client = gateway.client
    request_id, acs, relay_state, cookie = await start(client, idp)
    resp = await post_response(client, idp.response(request_id, acs, SP_ENTITY, ALICE), relay_state, cookie)
    target = urllib.parse.urlsplit(resp.headers["Location"])
    login = await client.post("/_matrix/client/v3/login", json={
        "type": "m.login.token", "token": dict(urllib.parse.parse_qsl(target.query))["loginToken"]})
    me = await login.json()
    headers = {"Authorization": f"Bearer {me['access_token']}"}
    first = await client.post("/_matrix/client/v3/account/deactivate", headers=headers, json={})
    session = (await first.json())["session"]
    assert first.status == 401 and (await first.json())["flows"] == [{"stages": ["m.login.sso"]}]

    async def through_idp(attributes: dict):
        go = await client.get("/_matrix/client/r0/auth/m.login.sso/fallback/web",
                              params={"session": session, "idp_id": "saml"}, allow_redirects=False)
        assert go.status == 302, await go.text()
        req_id, acs_url, relay = idp.read_request(go.headers["Location"])
        return await post_response(client, idp.response(req_id, acs_url, SP_ENTITY, attributes), relay,
                                   go.cookies[BROWSER_COOKIE].value)

    wrong = await through_idp({**ALICE, "uid": ["mallory"]})
    assert wrong.status == 403 and "@alice:hs.test" in await wrong.text()
    assert await gateway.hs.auth.users.get_user("@mallory:hs.test") is None  # UI-auth never registers
    right = await through_idp(ALICE)
    assert right.status == 200 and "authDone" in await right.text()
    done = await client.post("/_matrix/client/v3/account/deactivate", headers=headers,
                             json={"auth": {"type": "m.login.sso", "session": session}})
    assert done.status == 200, await done.text()
    assert (await gateway.hs.auth.users.get_user("@alice:hs.test")).deactivated
