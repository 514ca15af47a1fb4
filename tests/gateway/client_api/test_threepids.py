"""E-mail addresses on accounts, validated through real mail: requestToken sends a mail to an
SMTP server on loopback (aiosmtpd), the test reads it and follows the link, then adds the
address, registers with it, logs in with it or resets a password with it. Both engines."""

from __future__ import annotations

import urllib.parse

import pytest

from tests.support.smtp import html_of, link_in, path_of, running_smtp, text_of

from .conftest import auth_header, register

PASSWORD = "pw-" + "x" * 8
BASEURL = "https://matrix.hs.test/"


@pytest.fixture
async def smtp():
    async with running_smtp() as mailbox:
        yield mailbox


def email_config(smtp, **extra) -> dict:
    return {"public_baseurl": BASEURL,
            "email": {"smtp_host": "127.0.0.1", "smtp_port": smtp.port, "notif_from": "%(app)s <noreply@hs.test>",
                      "app_name": "Gateway Test", **extra}}


@pytest.fixture
def extra_config() -> dict:
    return {}


@pytest.fixture
def config_overrides(smtp, extra_config):
    return {**email_config(smtp), **extra_config}


async def request_token(client, what: str, email: str, secret: str = "s3cret", attempt: int = 1, **extra):
    resp = await client.post(f"/_matrix/client/v3/{what}/email/requestToken",
                             json={"client_secret": secret, "email": email, "send_attempt": attempt, **extra})
    return resp.status, await resp.json()


async def validate(client, smtp, what: str, email: str, *, secret: str = "s3cret") -> dict:
    """requestToken, read the mail, follow its link: the creds of the validated session."""
    count = len(smtp.received)
    status, body = await request_token(client, what, email, secret)
    assert status == 200, body
    mail = await smtp.next_mail(email, after=count, containing=f"sid={body['sid']}")
    link = link_in(mail)
    resp = await client.get(path_of(link), allow_redirects=False)
    if what == "account/password":  # a confirmation page first; its form posts to the same URL
        assert resp.status == 200 and "<form" in await resp.text()
        query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(link).query))
        resp = await client.post(urllib.parse.urlsplit(link).path, data=query, allow_redirects=False)
    assert resp.status == 200, await resp.text()
    return {"sid": body["sid"], "client_secret": secret}


async def threepids(client, token: str) -> list[dict]:
    resp = await client.get("/_matrix/client/v3/account/3pid", headers=auth_header(token))
    assert resp.status == 200
    return (await resp.json())["threepids"]


async def login_by_email(client, address: str, password: str = PASSWORD, *, legacy: bool = False):
    body = {"type": "m.login.password", "password": password}
    if legacy:
        body |= {"medium": "email", "address": address}
    else:
        body["identifier"] = {"type": "m.id.thirdparty", "medium": "email", "address": address}
    resp = await client.post("/_matrix/client/v3/login", json=body)
    return resp.status, await resp.json()


async def add_email(client, smtp, token: str, address: str) -> None:
    creds = await validate(client, smtp, "account/3pid", address)
    resp = await client.post("/_matrix/client/v3/account/3pid/add", headers=auth_header(token), json={
        **creds, "auth": {"type": "m.login.password", "password": PASSWORD,
                          "identifier": {"type": "m.id.user", "user": "alice"}}})
    assert resp.status == 200, await resp.text()


async def test_add_an_address_through_the_mailed_link_then_log_in_with_it(hs, client, smtp):
    alice = await register(client, "alice", PASSWORD)
    status, body = await request_token(client, "account/3pid", "Alice@Example.org")
    assert status == 200 and body["sid"]
    mail = await smtp.next_mail("alice@example.org")
    assert mail["Subject"] == "[hs.test] Validate your email"
    assert mail["From"] == "Gateway Test <noreply@hs.test>"
    assert smtp.envelopes[-1] == ("noreply@hs.test", ["alice@example.org"])
    link = link_in(mail)
    assert link.startswith(f"{BASEURL}_matrix/client/unstable/add_threepid/email/submit_token?")
    assert link in html_of(mail).replace("&amp;", "&")
    creds = {"sid": body["sid"], "client_secret": "s3cret"}
    auth = {"type": "m.login.password", "password": PASSWORD, "identifier": {"type": "m.id.user", "user": "alice"}}
    # Not validated yet.
    resp = await client.post("/_matrix/client/v3/account/3pid/add", headers=auth_header(alice["access_token"]),
                             json={**creds, "auth": auth})
    assert resp.status == 400 and (await resp.json())["errcode"] == "M_THREEPID_AUTH_FAILED"
    resp = await client.get(path_of(link))
    assert resp.status == 200 and "confirmed" in await resp.text()
    # UI-auth: the password again.
    resp = await client.post("/_matrix/client/v3/account/3pid/add", headers=auth_header(alice["access_token"]),
                             json=creds)
    assert resp.status == 401 and ["m.login.password"] in [f["stages"] for f in (await resp.json())["flows"]]
    resp = await client.post("/_matrix/client/v3/account/3pid/add", headers=auth_header(alice["access_token"]),
                             json={**creds, "auth": auth})
    assert resp.status == 200, await resp.text()
    listed = await threepids(client, alice["access_token"])
    assert [(t["medium"], t["address"]) for t in listed] == [("email", "alice@example.org")]
    assert listed[0]["validated_at"] <= listed[0]["added_at"]
    # The session was used up; the address is taken now.
    resp = await client.post("/_matrix/client/v3/account/3pid/add", headers=auth_header(alice["access_token"]),
                             json={**creds, "auth": auth})
    assert resp.status == 400 and (await resp.json())["errcode"] == "M_THREEPID_AUTH_FAILED"
    assert (await request_token(client, "account/3pid", "alice@example.org"))[1]["errcode"] == "M_THREEPID_IN_USE"
    # Log in with it (and with the deprecated top-level medium/address).
    status, body = await login_by_email(client, "ALICE@example.org")
    assert status == 200 and body["user_id"] == "@alice:hs.test"
    assert (await login_by_email(client, "alice@example.org", legacy=True))[0] == 200
    status, body = await login_by_email(client, "alice@example.org", "wrong password")
    assert status == 403 and body["errcode"] == "M_FORBIDDEN"
    status, body = await login_by_email(client, "nobody@example.org")
    assert status == 403 and body["errcode"] == "M_FORBIDDEN"
    # Removed: no more login by it.
    resp = await client.post("/_matrix/client/v3/account/3pid/delete", headers=auth_header(alice["access_token"]),
                             json={"medium": "email", "address": "alice@example.org"})
    assert resp.status == 200 and (await resp.json()) == {"id_server_unbind_result": "no-support"}
    assert await threepids(client, alice["access_token"]) == []
    assert (await login_by_email(client, "alice@example.org"))[0] == 403


async def test_the_deprecated_post_3pid_adds_a_validated_address(hs, client, smtp):
    alice = await register(client, "alice", PASSWORD)
    creds = await validate(client, smtp, "account/3pid", "alice@example.org")
    resp = await client.post("/_matrix/client/v3/account/3pid", headers=auth_header(alice["access_token"]),
                             json={"three_pid_creds": {**creds, "id_server": "id.example.org"}})
    assert resp.status == 200, await resp.text()
    assert [t["address"] for t in await threepids(client, alice["access_token"])] == ["alice@example.org"]
    # A session of another purpose (registration) does not add.
    bob = await register(client, "bob", PASSWORD)
    creds = await validate(client, smtp, "register", "bob@example.org")
    resp = await client.post("/_matrix/client/v3/account/3pid", headers=auth_header(bob["access_token"]),
                             json={"three_pid_creds": creds})
    assert resp.status == 400 and (await resp.json())["errcode"] == "M_THREEPID_AUTH_FAILED"


async def test_register_with_an_email_address(hs, client, smtp):
    resp = await client.post("/_matrix/client/v3/register", json={"username": "carol", "password": PASSWORD})
    first = await resp.json()
    assert resp.status == 401
    assert [f["stages"] for f in first["flows"]] == [["m.login.dummy"], ["m.login.email.identity"]]
    count = len(smtp.received)
    creds = await validate(client, smtp, "register", "carol@example.org")
    assert smtp.received[count]["Subject"] == "[hs.test] Validate your email"
    assert "/_matrix/client/unstable/registration/email/submit_token?" in link_in(smtp.received[count])
    resp = await client.post("/_matrix/client/v3/register", json={
        "username": "carol", "password": PASSWORD,
        "auth": {"type": "m.login.email.identity", "session": first["session"], "threepid_creds": creds}})
    body = await resp.json()
    assert resp.status == 200, body
    assert [t["address"] for t in await threepids(client, body["access_token"])] == ["carol@example.org"]
    assert (await login_by_email(client, "carol@example.org"))[1]["user_id"] == "@carol:hs.test"
    status, body = await request_token(client, "register", "carol@example.org", "other")
    assert status == 400 and body["errcode"] == "M_THREEPID_IN_USE"


@pytest.mark.parametrize("extra_config", [{"registrations_require_3pid": ["email"],
                                           "enable_registration_without_verification": False}])
async def test_registrations_require_3pid(hs, client, smtp):
    resp = await client.post("/_matrix/client/v3/register", json={"username": "dave", "password": PASSWORD})
    first = await resp.json()
    assert [f["stages"] for f in first["flows"]] == [["m.login.email.identity"]]
    resp = await client.post("/_matrix/client/v3/register", json={
        "username": "dave", "password": PASSWORD, "auth": {"type": "m.login.dummy", "session": first["session"]}})
    body = await resp.json()
    assert resp.status == 401 and body["errcode"] == "M_UNRECOGNIZED" and body["completed"] == []
    # A session not validated yet does not pass.
    _, started = await request_token(client, "register", "dave@example.org", "unvalidated")
    resp = await client.post("/_matrix/client/v3/register", json={
        "username": "dave", "password": PASSWORD, "auth": {
            "type": "m.login.email.identity", "session": first["session"],
            "threepid_creds": {"sid": started["sid"], "client_secret": "unvalidated"}}})
    assert resp.status == 401 and (await resp.json())["errcode"] == "M_THREEPID_AUTH_FAILED"
    creds = await validate(client, smtp, "register", "dave@example.org")
    resp = await client.post("/_matrix/client/v3/register", json={
        "username": "dave", "password": PASSWORD,
        "auth": {"type": "m.login.email.identity", "session": first["session"], "threepid_creds": creds}})
    assert resp.status == 200, await resp.text()


async def test_password_reset_by_email(hs, client, smtp):
    alice = await register(client, "alice", PASSWORD)
    await add_email(client, smtp, alice["access_token"], "alice@example.org")
    status, body = await request_token(client, "account/password", "nobody@example.org")
    assert status == 400 and body["errcode"] == "M_THREEPID_NOT_FOUND"
    count = len(smtp.received)
    status, started = await request_token(client, "account/password", "alice@example.org", "reset")
    mail = await smtp.next_mail("alice@example.org", after=count)
    assert mail["Subject"] == "[hs.test] Password reset"
    link = link_in(mail)
    assert link.startswith(f"{BASEURL}_synapse/client/password_reset/email/submit_token?")
    reset = {"new_password": "a new password", "auth": {
        "type": "m.login.email.identity", "threepid_creds": {"sid": started["sid"], "client_secret": "reset"}}}
    # The GET only shows the confirmation: the session is not validated by it.
    resp = await client.get(path_of(link))
    page = await resp.text()
    assert resp.status == 200 and 'name="token"' in page and 'method="post"' in page
    resp = await client.post("/_matrix/client/v3/account/password", json=reset)
    assert resp.status == 401 and (await resp.json())["errcode"] == "M_THREEPID_AUTH_FAILED"
    query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(link).query))
    resp = await client.post(urllib.parse.urlsplit(link).path, data=query)
    assert resp.status == 200 and "confirmed" in await resp.text()
    resp = await client.post("/_matrix/client/v3/account/password", json=reset)
    assert resp.status == 200, await resp.text()
    # The new password works, the old one not; devices were logged out.
    assert (await login_by_email(client, "alice@example.org"))[0] == 403
    assert (await login_by_email(client, "alice@example.org", "a new password"))[0] == 200
    resp = await client.get("/_matrix/client/v3/account/whoami", headers=auth_header(alice["access_token"]))
    assert resp.status == 401
    # The session was used once.
    resp = await client.post("/_matrix/client/v3/account/password", json=reset)
    assert resp.status == 401 and (await resp.json())["errcode"] == "M_THREEPID_AUTH_FAILED"


@pytest.mark.parametrize("extra_config", [{"request_token_inhibit_3pid_errors": True}])
async def test_inhibited_errors_give_a_sid_and_send_nothing(hs, client, smtp):
    alice = await register(client, "alice", PASSWORD)
    await add_email(client, smtp, alice["access_token"], "alice@example.org")
    count = len(smtp.received)
    status, body = await request_token(client, "account/password", "nobody@example.org")
    assert status == 200 and body["sid"]
    status, body = await request_token(client, "account/3pid", "alice@example.org", "x")
    assert status == 200 and body["sid"]
    # The next mail we get is the next real one: the two answers above sent nothing.
    await request_token(client, "account/3pid", "second@example.org")
    mail = await smtp.next_mail(after=count)
    assert mail["To"] == "second@example.org" and len(smtp.received) == count + 1


async def test_send_attempt_and_newer_mails(hs, client, smtp):
    status, first = await request_token(client, "register", "eve@example.org", attempt=1)
    mail = await smtp.next_mail("eve@example.org")
    old_link = link_in(mail)
    count = len(smtp.received)
    # The same attempt again: the same session, no new mail.
    assert (await request_token(client, "register", "eve@example.org", attempt=1))[1]["sid"] == first["sid"]
    status, again = await request_token(client, "register", "eve@example.org", attempt=2)
    assert again["sid"] == first["sid"]
    mail = await smtp.next_mail("eve@example.org", after=count)
    assert len(smtp.received) == count + 1  # only the second attempt mailed
    resp = await client.get(path_of(old_link))
    assert resp.status == 400 and "newer mail" in await resp.text()
    resp = await client.get(path_of(link_in(mail)))
    assert resp.status == 200
    # Tampered links fail.
    parts = urllib.parse.urlsplit(link_in(mail))
    query = dict(urllib.parse.parse_qsl(parts.query))
    for key in ("token", "client_secret", "sid"):
        bad = urllib.parse.urlencode({**query, key: query[key] + "x"})
        resp = await client.get(f"{parts.path}?{bad}")
        assert resp.status == 400 and 'id="failure-reason"' in await resp.text()
    # A registration link does not validate at the add_threepid path.
    resp = await client.get(f"/_matrix/client/unstable/add_threepid/email/submit_token?{parts.query}")
    assert resp.status == 400


async def test_expired_link(hs, client, smtp):
    now = [1_800_000_000_000]
    hs.clock_ms = lambda: now[0]
    await request_token(client, "register", "late@example.org")
    link = link_in(await smtp.next_mail("late@example.org"))
    now[0] += 3_600_000 + 1  # validation_token_lifetime: 1h
    resp = await client.get(path_of(link))
    assert resp.status == 400 and "expired" in await resp.text()


async def test_next_link_is_no_open_redirect(hs, client, smtp):
    # Our own host: the browser is sent on.
    await request_token(client, "register", "n1@example.org", next_link=f"{BASEURL}welcome")
    resp = await client.get(path_of(link_in(await smtp.next_mail("n1@example.org"))), allow_redirects=False)
    assert resp.status == 302 and resp.headers["Location"] == f"{BASEURL}welcome"
    # Another host: the page shows where the link goes; the user decides.
    await request_token(client, "register", "n2@example.org", next_link="https://evil.example.net/phish")
    resp = await client.get(path_of(link_in(await smtp.next_mail("n2@example.org"))), allow_redirects=False)
    page = await resp.text()
    assert resp.status == 200 and "Location" not in resp.headers
    assert 'href="https://evil.example.net/phish"' in page and "evil.example.net" in page
    for bad in ("javascript:alert(1)", "//evil.example.net/", "data:text/html,x", 12):
        status, body = await request_token(client, "register", "n3@example.org", next_link=bad)
        assert status == 400 and body["errcode"] == "M_INVALID_PARAM", bad


@pytest.mark.parametrize("extra_config", [{"next_link_domain_whitelist": ["app.example.com"]}])
async def test_next_link_domain_whitelist(hs, client, smtp):
    status, body = await request_token(client, "register", "w@example.org", next_link="https://evil.example.net/")
    assert status == 400 and body["errcode"] == "M_INVALID_PARAM"
    await request_token(client, "register", "w@example.org", next_link="https://app.example.com/#/done")
    resp = await client.get(path_of(link_in(await smtp.next_mail("w@example.org"))), allow_redirects=False)
    assert resp.status == 302 and resp.headers["Location"] == "https://app.example.com/#/done"


@pytest.mark.parametrize("extra_config", [{"allowed_local_3pids": [{"medium": "email",
                                                                    "pattern": r"@example\.org$"}]}])
async def test_allowed_local_3pids(hs, client, smtp):
    status, body = await request_token(client, "register", "x@elsewhere.net")
    assert status == 403 and body["errcode"] == "M_THREEPID_DENIED"
    assert (await request_token(client, "register", "x@example.org"))[0] == 200


async def test_bad_requests_and_msisdn(hs, client, smtp):
    for body in ({"email": "a@example.org", "send_attempt": 1},
                 {"client_secret": "has space", "email": "a@example.org", "send_attempt": 1},
                 {"client_secret": "s", "email": "not-an-address", "send_attempt": 1},
                 {"client_secret": "s", "email": "a@example.org", "send_attempt": "1"}):
        resp = await client.post("/_matrix/client/v3/register/email/requestToken", json=body)
        assert resp.status == 400 and (await resp.json())["errcode"] == "M_INVALID_PARAM", body
    for what in ("register", "account/3pid", "account/password"):
        resp = await client.post(f"/_matrix/client/v3/{what}/msisdn/requestToken", json={
            "client_secret": "s", "country": "GB", "phone_number": "07700900001", "send_attempt": 1})
        assert resp.status == 400 and (await resp.json())["errcode"] == "M_THREEPID_MEDIUM_NOT_SUPPORTED"
    resp = await client.post("/_matrix/client/v3/login", json={
        "type": "m.login.password", "password": "x", "identifier": {"type": "m.id.phone", "country": "GB",
                                                                    "phone": "07700900001"}})
    assert resp.status == 400 and (await resp.json())["errcode"] == "M_THREEPID_MEDIUM_NOT_SUPPORTED"


async def test_capability_and_deactivation(hs, client, smtp):
    alice = await register(client, "alice", PASSWORD)
    resp = await client.get("/_matrix/client/v3/capabilities", headers=auth_header(alice["access_token"]))
    assert (await resp.json())["capabilities"]["m.3pid_changes"] == {"enabled": True}
    await add_email(client, smtp, alice["access_token"], "alice@example.org")
    resp = await client.post("/_matrix/client/v3/account/deactivate", headers=auth_header(alice["access_token"]),
                             json={"auth": {"type": "m.login.password", "password": PASSWORD,
                                            "identifier": {"type": "m.id.user", "user": "alice"}}})
    assert resp.status == 200
    # The address is free again.
    assert (await request_token(client, "register", "alice@example.org"))[0] == 200


@pytest.mark.parametrize("extra_config", [{"enable_3pid_changes": False}])
async def test_3pid_changes_disabled(hs, client, smtp):
    alice = await register(client, "alice", PASSWORD)
    resp = await client.get("/_matrix/client/v3/capabilities", headers=auth_header(alice["access_token"]))
    assert (await resp.json())["capabilities"]["m.3pid_changes"] == {"enabled": False}
    assert (await request_token(client, "account/3pid", "alice@example.org"))[0] == 400
    resp = await client.post("/_matrix/client/v3/account/3pid/delete", headers=auth_header(alice["access_token"]),
                             json={"medium": "email", "address": "alice@example.org"})
    assert resp.status == 400


async def test_mail_templates_render_text_and_html(hs, client, smtp):
    await request_token(client, "register", "t@example.org")
    mail = await smtp.next_mail("t@example.org")
    assert "hs.test" in text_of(mail) and "<a href=" in html_of(mail)


@pytest.mark.parametrize("extra_config", [{"rc_3pid_validation": {"per_second": 0.001, "burst_count": 2}}])
async def test_request_token_is_rate_limited_per_address(hs, client, smtp):
    assert (await request_token(client, "register", "r@example.org", attempt=1))[0] == 200
    assert (await request_token(client, "register", "r@example.org", attempt=2))[0] == 200
    status, body = await request_token(client, "register", "r@example.org", attempt=3)
    assert status == 429 and body["errcode"] == "M_LIMIT_EXCEEDED" and body["retry_after_ms"] > 0
