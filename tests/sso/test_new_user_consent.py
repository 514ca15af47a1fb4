"""New-user consent (``user_consent.require_at_registration``) for SSO registrations and
``/register``'s ``m.login.terms`` stage, against the in-process fake OIDC IdP, on both
database engines; the ``user_consent`` config and the public ``/_matrix/consent`` page.
"""

from __future__ import annotations

import pytest
from aiohttp.test_utils import TestClient, TestServer

from gateway.app import build_listener_app
from gateway.config import ConfigError, parse_config
from gateway.server import HomeServer
from sso.handler import BROWSER_COOKIE, USERNAME_MAPPING_COOKIE

from .test_oidc_flow import FakeIdP, idp  # noqa: F401 - the fixture is used by name
from .test_ui_auth_sso import qs

POLICY = ("<h1>Policy {{ consent_version }}</h1>{% if not public_version %}<form>agree {{ user }}"
          " consented={{ has_consented }}</form>{% endif %}")


def base_config(tmp_path, database_config, idp_issuer: str, mapping: dict, consent: dict) -> dict:
    return {
        "server_name": "hs.test", "public_baseurl": "https://hs.test/",
        "listeners": [{"port": 1, "resources": [{"names": ["client"]}]}],
        "database": {"name": "sqlite3" if database_config.engine == "sqlite" else "psycopg2",
                     "args": database_config.args},
        "signing_key_path": str(tmp_path / "signing.key"),
        "enable_registration": True, "enable_registration_without_verification": True,
        "oidc_providers": [{"idp_id": "fake", "idp_name": "Fake", "issuer": idp_issuer, "client_id": "gateway",
                            "client_secret": "s3cret", "skip_verification": True,
                            "user_mapping_provider": {"config": mapping}}],
        "sso": {"client_whitelist": ["https://app.example/"]},
        "user_consent": consent,
        "form_secret": "consent-form-secret",
    }


@pytest.fixture
def policy_dir(tmp_path):
    (tmp_path / "privacy" / "en").mkdir(parents=True)
    (tmp_path / "privacy" / "en" / "1.0.html").write_text(POLICY)
    (tmp_path / "privacy" / "en" / "0.9.html").write_text("<h1>Old policy</h1>")
    (tmp_path / "privacy" / "en" / "success.html").write_text("<p id='ok'>Thanks {{ user }}</p>")
    return tmp_path / "privacy"


@pytest.fixture
def mapping() -> dict:
    return {"display_name_template": "{{ user.name }}"}  # no localpart: the picker asks


@pytest.fixture
async def client(tmp_path, idp, database_config, policy_dir, mapping):  # noqa: F811
    config = parse_config(base_config(tmp_path, database_config, idp.issuer, mapping, {
        "template_dir": str(policy_dir), "version": 1.0, "require_at_registration": True,
        "policy_name": "Privacy notice"}), config_path=str(tmp_path / "homeserver.yaml"))
    hs = await HomeServer.open(config)
    async with TestClient(TestServer(build_listener_app(hs, config.listeners[0]))) as c:
        c.hs = hs
        yield c
    await hs.close()


async def back_from_idp(client, idp, **claims):
    resp = await client.get("/_matrix/client/v3/login/sso/redirect",
                            params={"redirectUrl": "https://app.example/cb"}, allow_redirects=False)
    query = qs(resp.headers["Location"])
    return await client.get("/_synapse/client/oidc/callback",
                            params={"state": query["state"], "code": idp.mint_code(query["nonce"], **claims)},
                            headers={"Cookie": f"{BROWSER_COOKIE}={resp.cookies[BROWSER_COOKIE].value}"},
                            allow_redirects=False)


async def test_picker_then_consent_then_account(client, idp):
    resp = await back_from_idp(client, idp, sub="u-jo", name="Jo March")
    assert resp.headers["Location"] == "/_synapse/client/pick_username/account_details"
    cookie = resp.cookies[USERNAME_MAPPING_COOKIE]
    assert cookie["path"] == "/_synapse/client/" and cookie["httponly"]
    headers = {"Cookie": f"{USERNAME_MAPPING_COOKIE}={cookie.value}"}
    # The consent page needs a chosen username first.
    early = await client.get("/_synapse/client/new_user_consent", headers=headers)
    assert early.status == 400 and "missing_username" in await early.text()

    picked = await client.post("/_synapse/client/pick_username/account_details", headers=headers,
                               data={"username": "jo", "use_display_name": "true"}, allow_redirects=False)
    assert picked.status == 302 and picked.headers["Location"] == "/_synapse/client/new_user_consent"
    assert await client.hs.auth.users.get_user("@jo:hs.test") is None  # not before the terms

    page = await client.get("/_synapse/client/new_user_consent", headers=headers)
    html = await page.text()
    assert page.status == 200 and "@jo:hs.test" in html and "Jo March" in html
    assert 'href="https://hs.test/_matrix/consent?v=1.0"' in html
    assert 'name="accepted_version" value="1.0"' in html

    stale = await client.post("/_synapse/client/new_user_consent", headers=headers,
                              data={"accepted_version": "0.9"}, allow_redirects=False)
    assert stale.status == 400 and "consent_version_mismatch" in await stale.text()
    assert await client.hs.auth.users.get_user("@jo:hs.test") is None
    none = await client.post("/_synapse/client/new_user_consent", headers=headers, data={}, allow_redirects=False)
    assert none.status == 400

    done = await client.post("/_synapse/client/new_user_consent", headers=headers,
                             data={"accepted_version": "1.0"}, allow_redirects=False)
    assert done.status == 302 and done.headers["Location"].startswith("https://app.example/cb?loginToken=")
    assert await client.hs.auth.users.get_consent_version("@jo:hs.test") == "1.0"
    assert (await client.hs.db.fetchval("SELECT consent_ts FROM users WHERE user_id = $1", "@jo:hs.test")) > 0
    login = await client.post("/_matrix/client/v3/login", json={
        "type": "m.login.token", "token": qs(done.headers["Location"])["loginToken"]})
    assert (await login.json())["user_id"] == "@jo:hs.test"
    # Single use: the same session cannot register a second account.
    again = await client.post("/_synapse/client/new_user_consent", headers=headers,
                              data={"accepted_version": "1.0"}, allow_redirects=False)
    assert again.status == 400
    # A returning user is not asked again.
    back = await back_from_idp(client, idp, sub="u-jo")
    assert back.status == 302 and back.headers["Location"].startswith("https://app.example/cb?loginToken=")


async def test_name_taken_while_reading_the_terms(client, idp):
    resp = await back_from_idp(client, idp, sub="u-meg")
    headers = {"Cookie": f"{USERNAME_MAPPING_COOKIE}={resp.cookies[USERNAME_MAPPING_COOKIE].value}"}
    await client.post("/_synapse/client/pick_username/account_details", headers=headers, data={"username": "meg"})
    await client.hs.auth.users.create_user("@meg:hs.test", password_hash=None, created_ts=0)
    done = await client.post("/_synapse/client/new_user_consent", headers=headers,
                             data={"accepted_version": "1.0"}, allow_redirects=False)
    assert done.status == 400 and "already taken" in await done.text()  # back on the picker
    picked = await client.post("/_synapse/client/pick_username/account_details", headers=headers,
                               data={"username": "meg2"}, allow_redirects=False)
    assert picked.headers["Location"] == "/_synapse/client/new_user_consent"
    done = await client.post("/_synapse/client/new_user_consent", headers=headers,
                             data={"accepted_version": "1.0"}, allow_redirects=False)
    assert done.status == 302
    assert await client.hs.auth.users.get_consent_version("@meg2:hs.test") == "1.0"


@pytest.mark.parametrize("mapping", [{"localpart_template": "{{ user.preferred_username }}"}])
async def test_mapped_username_goes_straight_to_consent(client, idp):
    resp = await back_from_idp(client, idp, sub="u-beth", preferred_username="beth")
    assert resp.status == 302 and resp.headers["Location"] == "/_synapse/client/new_user_consent"
    headers = {"Cookie": f"{USERNAME_MAPPING_COOKIE}={resp.cookies[USERNAME_MAPPING_COOKIE].value}"}
    assert "@beth:hs.test" in await (await client.get("/_synapse/client/new_user_consent", headers=headers)).text()
    done = await client.post("/_synapse/client/new_user_consent", headers=headers,
                             data={"accepted_version": "1.0"}, allow_redirects=False)
    assert done.status == 302
    assert await client.hs.auth.users.get_consent_version("@beth:hs.test") == "1.0"


async def test_register_offers_and_records_terms(client):
    first = await client.post("/_matrix/client/v3/register", json={"username": "amy", "password": "pw-amy-123"})
    body = await first.json()
    assert first.status == 401
    assert body["flows"] == [{"stages": ["m.login.dummy", "m.login.terms"]}]
    assert body["params"]["m.login.terms"] == {"policies": {"privacy_policy": {
        "version": "1.0", "en": {"name": "Privacy notice", "url": "https://hs.test/_matrix/consent?v=1.0"}}}}
    session = body["session"]
    dummy_only = await client.post("/_matrix/client/v3/register", json={
        "username": "amy", "password": "pw-amy-123", "auth": {"type": "m.login.dummy", "session": session}})
    assert dummy_only.status == 401 and (await dummy_only.json())["completed"] == ["m.login.dummy"]
    done = await client.post("/_matrix/client/v3/register", json={
        "username": "amy", "password": "pw-amy-123", "auth": {"type": "m.login.terms", "session": session}})
    assert done.status == 200, await done.text()
    assert await client.hs.auth.users.get_consent_version("@amy:hs.test") == "1.0"


async def test_public_policy_page(client):
    page = await client.get("/_matrix/consent")
    assert page.status == 200 and "<h1>Policy 1.0</h1>" in await page.text() and "agree" not in await page.text()
    old = await client.get("/_matrix/consent", params={"v": "0.9"})
    assert old.status == 200 and "Old policy" in await old.text()
    missing = await client.get("/_matrix/consent", params={"v": "2.0"})
    assert missing.status == 404 and (await missing.json())["errcode"] == "M_NOT_FOUND"
    for bad in ("../0.9", "en/../1.0", "/etc/passwd"):
        resp = await client.get("/_matrix/consent", params={"v": bad})
        assert resp.status == 400 and (await resp.json())["errcode"] == "M_INVALID_PARAM"


async def test_per_user_consent_link(client):
    import dataclasses
    import hashlib
    import hmac

    await client.hs.auth.users.create_user("@lou:hs.test", password_hash=None, created_ts=0)
    h = hmac.new(b"consent-form-secret", b"lou", hashlib.sha256).hexdigest()
    page = await client.get("/_matrix/consent", params={"u": "lou", "h": h})
    assert page.status == 200 and "agree lou consented=False" in await page.text()
    forged = await client.get("/_matrix/consent", params={"u": "lou", "h": "00" * 32})
    assert forged.status == 403 and (await forged.json())["errcode"] == "M_FORBIDDEN"
    assert (await client.post("/_matrix/consent", data={"u": "lou", "h": "00" * 32, "v": "1.0"})).status == 403
    other = hmac.new(b"consent-form-secret", b"nobody", hashlib.sha256).hexdigest()
    assert (await client.get("/_matrix/consent", params={"u": "nobody", "h": other})).status == 404

    done = await client.post("/_matrix/consent", data={"u": "lou", "h": h, "v": "1.0"})
    assert done.status == 200 and "Thanks lou" in await done.text()
    assert await client.hs.auth.users.get_consent_version("@lou:hs.test") == "1.0"
    page = await client.get("/_matrix/consent", params={"u": "lou", "h": h})
    assert "consented=True" in await page.text()
    # The links need form_secret.
    config = client.hs.config
    client.hs.config = dataclasses.replace(config, form_secret=None)
    try:
        no_secret = await client.get("/_matrix/consent", params={"u": "lou", "h": h})
        assert no_secret.status == 400 and (await no_secret.json())["errcode"] == "M_UNRECOGNIZED"
    finally:
        client.hs.config = config


def test_user_consent_config_errors(tmp_path, policy_dir):
    from gateway.config import DatabaseConfig

    db = DatabaseConfig("sqlite", {"database": str(tmp_path / "x.db")})

    def parse(consent: dict):
        return parse_config(base_config(tmp_path, db, "http://127.0.0.1:1", {}, consent),
                            config_path=str(tmp_path / "homeserver.yaml"))

    with pytest.raises(ConfigError) as e:
        parse({"version": "1.0"})
    assert e.value.path == "user_consent.template_dir"
    with pytest.raises(ConfigError) as e:
        parse({"template_dir": str(tmp_path / "nowhere"), "version": "1.0"})
    assert e.value.path == "user_consent.template_dir"
    with pytest.raises(ConfigError) as e:
        parse({"template_dir": str(policy_dir), "version": "3.0"})
    assert e.value.path == "user_consent.version" and "3.0.html" in e.value.message
    with pytest.raises(ConfigError) as e:
        parse({"template_dir": str(policy_dir), "version": "../1.0"})
    assert e.value.path == "user_consent.version"
    config = parse({"template_dir": str(policy_dir), "version": "1.0", "block_events_error": "x"})
    assert config.user_consent.require_at_registration is False
    assert config.user_consent.policy_name == "Privacy Policy"
    assert any("block_events_error is not supported" in w for w in config.warnings)


async def test_terms_fallback_page_completes_the_stage(client):
    first = await client.post("/_matrix/client/v3/register", json={"username": "kim", "password": "pw-kim-123"})
    session = (await first.json())["session"]
    url = "/_matrix/client/r0/auth/m.login.terms/fallback/web"
    page = await client.get(url, params={"session": session})
    html = await page.text()
    assert page.status == 200 and 'href="https://hs.test/_matrix/consent?v=1.0"' in html
    assert f'name="session" value="{session}"' in html and "privacy notice" in html
    assert (await client.get(url, params={"session": "forged"})).status == 400
    assert (await client.post(url, data={"session": "forged"})).status == 400

    accepted = await client.post(url, data={"session": session})
    assert accepted.status == 200 and 'postMessage("authDone"' in await accepted.text()
    assert (await client.hs.auth.store.get_uia_session(session)).completed == ("m.login.terms",)
    done = await client.post("/_matrix/client/v3/register", json={
        "username": "kim", "password": "pw-kim-123", "auth": {"type": "m.login.dummy", "session": session}})
    assert done.status == 200, await done.text()
    assert await client.hs.auth.users.get_consent_version("@kim:hs.test") == "1.0"

    # A device-deletion session is no registration: the terms page does not serve it.
    token = (await done.json())["access_token"]
    uia = await client.post("/_matrix/client/v3/delete_devices", json={"devices": []},
                            headers={"Authorization": f"Bearer {token}"})
    assert (await client.get(url, params={"session": (await uia.json())["session"]})).status == 400
    sso_post = await client.post("/_matrix/client/v3/auth/m.login.sso/fallback/web", data={"session": session})
    assert sso_post.status == 405 and (await sso_post.json())["errcode"] == "M_UNRECOGNIZED"
