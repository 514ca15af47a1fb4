"""Missed-message mails (the email pusher, ``email.enable_notifs``), read from a real SMTP
server on loopback (aiosmtpd): a user who registered with an address gets an email pusher;
a notification still unread after the delay is mailed once (not one that was read), with
the room, the sender and the message; the unsubscribe link removes the pusher. The server's
clock is moved instead of waiting. Both engines."""

from __future__ import annotations

import urllib.parse

import pytest

from gateway.services.email_notifs import DELAY_MS
from tests.support.smtp import html_of, path_of, running_smtp, text_of

from .conftest import auth_header, register
from .test_threepids import BASEURL, PASSWORD, email_config, validate


@pytest.fixture
async def smtp():
    async with running_smtp() as mailbox:
        yield mailbox


@pytest.fixture
def config_overrides(smtp):
    config = email_config(smtp, enable_notifs=True)
    return {**config, "email": {**config["email"], "client_base_url": "https://app.hs.test"}}


class MovableClock:
    def __init__(self, real):
        self.real, self.offset = real, 0

    def __call__(self) -> int:
        return self.real() + self.offset


@pytest.fixture
async def clock(hs):
    hs.clock_ms = MovableClock(hs.clock_ms)  # the services read hs.clock_ms at each call
    await hs.email_notifs.start()  # as in the process with the pusher role
    return hs.clock_ms


async def call(client, method: str, path: str, token: str, body: dict | None = None):
    resp = await client.request(method, f"/_matrix/client/v3{path}", headers=auth_header(token), json=body)
    return resp.status, await resp.json()


async def register_with_email(client, smtp, name: str, address: str) -> dict:
    resp = await client.post("/_matrix/client/v3/register", json={"username": name, "password": PASSWORD})
    session = (await resp.json())["session"]
    creds = await validate(client, smtp, "register", address)
    resp = await client.post("/_matrix/client/v3/register", json={
        "username": name, "password": PASSWORD,
        "auth": {"type": "m.login.email.identity", "session": session, "threepid_creds": creds}})
    assert resp.status == 200
    return await resp.json()


async def room_with(client, owner: dict, guest: dict, name: str | None) -> str:
    body = {"preset": "private_chat", "invite": [guest["user_id"]]} | ({"name": name} if name else {})
    room = (await call(client, "POST", "/createRoom", owner["access_token"], body))[1]["room_id"]
    assert (await call(client, "POST", f"/join/{urllib.parse.quote(room)}", guest["access_token"], {}))[0] == 200
    return room


async def send(client, user: dict, room: str, text: str, txn: str) -> str:
    status, body = await call(client, "PUT", f"/rooms/{urllib.parse.quote(room)}/send/m.room.message/{txn}",
                              user["access_token"], {"msgtype": "m.text", "body": text})
    assert status == 200
    return body["event_id"]


async def mails_to(hs, address: str) -> int:
    return await hs.db.fetchval("SELECT COUNT(*) FROM email_outbox WHERE recipient = $1", address)


async def test_unread_notifications_are_mailed_once_then_unsubscribed(hs, client, smtp, clock):
    alice = await register_with_email(client, smtp, "alice", "alice@example.org")
    status, body = await call(client, "GET", "/pushers", alice["access_token"])
    (pusher,) = body["pushers"]  # notif_for_new_users
    assert (pusher["kind"], pusher["app_id"], pusher["pushkey"]) == ("email", "m.email", "alice@example.org")
    await call(client, "PUT", "/profile/@alice:hs.test/displayname", alice["access_token"], {"displayname": "Alice"})
    bob = await register(client, "bob", PASSWORD)
    await call(client, "PUT", "/profile/@bob:hs.test/displayname", bob["access_token"], {"displayname": "Bob"})
    garden = await room_with(client, bob, alice, "Garden")
    other = await room_with(client, bob, alice, None)

    await send(client, bob, garden, "the roses are out", "t1")
    read = await send(client, bob, other, "seen already", "t2")
    assert (await call(client, "POST", f"/rooms/{urllib.parse.quote(other)}/receipt/m.read/{read}",
                       alice["access_token"], {}))[0] == 200
    await hs.push.flush()
    before = await mails_to(hs, "alice@example.org")

    # Not yet: the notification may still be read.
    clock.offset += DELAY_MS // 2
    await hs.email_notifs.process_user(alice["user_id"])
    assert await mails_to(hs, "alice@example.org") == before

    clock.offset += DELAY_MS
    count = len(smtp.received)
    hs.email_notifs.wake()
    mail = await smtp.next_mail("alice@example.org", after=count, containing="the roses are out")
    assert mail["Subject"] == "[Gateway Test] You have a message on Gateway Test from Bob in the Garden room..."
    text, html = text_of(mail), html_of(mail)
    assert "Hello Alice" in text and "Bob: the roses are out" in text and "seen already" not in text
    assert f"https://app.hs.test/#/room/{garden}" in text
    assert "the roses are out" in html and "seen already" not in html
    unsubscribe = mail["List-Unsubscribe"].strip("<>")
    assert unsubscribe.startswith(f"{BASEURL}_synapse/client/unsubscribe?") and unsubscribe in text
    assert mail["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"

    # The next mail has only what came after: nothing is mailed twice.
    await send(client, bob, garden, "and the tulips", "t3")
    await hs.push.flush()
    clock.offset += 2 * DELAY_MS
    count = len(smtp.received)
    hs.email_notifs.wake()
    mail = await smtp.next_mail("alice@example.org", after=count, containing="and the tulips")
    assert "the roses are out" not in text_of(mail)

    # Unsubscribing: the link asks first (mail scanners open links), its form removes the pusher.
    resp = await client.get(path_of(unsubscribe))
    assert resp.status == 200 and "<form" in await resp.text()
    assert len((await call(client, "GET", "/pushers", alice["access_token"]))[1]["pushers"]) == 1
    forged = path_of(unsubscribe).replace("access_token=", "access_token=x")
    assert (await client.post(forged)).status == 400
    query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(unsubscribe).query))
    resp = await client.post(urllib.parse.urlsplit(unsubscribe).path, data=query)
    assert resp.status == 200 and "Unsubscribed" in await resp.text()
    assert (await call(client, "GET", "/pushers", alice["access_token"]))[1]["pushers"] == []


async def test_email_pushers_only_for_the_accounts_addresses(hs, client, smtp, clock):
    alice = await register_with_email(client, smtp, "alice", "alice@example.org")
    pusher = {"kind": "email", "app_id": "m.email", "app_display_name": "Email", "device_display_name": "x",
              "lang": "en", "data": {}}
    status, body = await call(client, "POST", "/pushers/set", alice["access_token"],
                              {**pusher, "pushkey": "someone@example.org"})
    assert status == 400 and body["errcode"] == "M_THREEPID_NOT_FOUND"
    status, _ = await call(client, "POST", "/pushers/set", alice["access_token"],
                           {**pusher, "pushkey": "Alice@Example.org", "app_id": "org.example.mail"})
    assert status == 200
    keys = sorted((p["app_id"], p["pushkey"]) for p in (await call(client, "GET", "/pushers",
                                                                   alice["access_token"]))[1]["pushers"])
    assert keys == [("m.email", "alice@example.org"), ("org.example.mail", "alice@example.org")]


@pytest.mark.parametrize("config_overrides", [{}])
async def test_no_unsubscribe_page_without_notification_mails(hs, client):
    resp = await client.get("/_synapse/client/unsubscribe?user_id=a&app_id=b&pushkey=c&access_token=d")
    assert resp.status == 404


async def test_the_pusher_process_finds_notifications_evaluated_elsewhere(hs, client, smtp):
    """Notifications evaluated where no mail is sent (another process than the pusher
    role's, or before a restart) are found by the pusher's own look at the database."""
    hs.clock_ms = clock = MovableClock(hs.clock_ms)
    alice = await register_with_email(client, smtp, "alice", "alice@example.org")
    bob = await register(client, "bob", PASSWORD)
    room = await room_with(client, bob, alice, "Porch")
    await send(client, bob, room, "while nobody mailed", "t1")
    await hs.push.flush()
    clock.offset += 2 * DELAY_MS
    count = len(smtp.received)
    await hs.email_notifs.start()
    mail = await smtp.next_mail("alice@example.org", after=count, containing="while nobody mailed")
    assert "Porch" in mail["Subject"]
