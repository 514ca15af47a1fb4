"""The mail queue against a real SMTP server on loopback (aiosmtpd): retries while the server
is down, a restart resumes the queue, STARTTLS / implicit TLS / AUTH as the email keys say.
Both engines."""

from __future__ import annotations

import asyncio
import ssl

import pytest

from gateway.config import parse_config
from gateway.services.mailer import FIRST_RETRY_MS, Mailer
from gateway.storage.email_outbox import EmailOutboxStore
from tests.conftest import free_port
from tests.gateway.oauth.conftest import Clock
from tests.support.smtp import running_smtp, text_of
from tests.support.tls import TestCA


def mailer(database, clock, port: int, **email) -> Mailer:
    config = parse_config({"server_name": "hs.test", "email": {
        "smtp_host": "127.0.0.1", "smtp_port": port, "notif_from": "Gateway <noreply@hs.test>", **email}})
    return Mailer(config.email, EmailOutboxStore(database), clock, server_name="hs.test")


async def until(check, timeout: float = 30):
    """Polls ``check()`` until it is truthy (the queue's state in the database)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not (value := await check()):
        assert asyncio.get_running_loop().time() < deadline, "condition not met"
        await asyncio.sleep(0.02)
    return value


async def attempts(database) -> int | None:
    return await database.fetchval("SELECT MAX(attempts) FROM email_outbox")


async def test_a_mail_waits_for_the_server_and_is_retried(database):
    clock, port = Clock(), free_port()
    m = mailer(database, clock, port)
    try:
        await m.queue("alice@example.org", "Hello", "first line\nsecond line", "<p>hello</p>")  # returns at once
        assert await until(lambda: attempts(database)) == 1  # the server is down: one failed attempt
        row = await database.fetchrow("SELECT next_attempt_ts, last_error FROM email_outbox")
        assert row[0] == clock.now + FIRST_RETRY_MS and "Connection refused" in row[1]
        async with running_smtp(port=port) as smtp:
            m.wake()  # not due yet: nothing happens
            clock.advance(FIRST_RETRY_MS)
            m.wake()
            mail = await smtp.next_mail("alice@example.org")
            assert mail["Subject"] == "Hello" and text_of(mail).splitlines()[:2] == ["first line", "second line"]
            assert mail["From"] == "Gateway <noreply@hs.test>" and mail["Message-ID"].endswith("@hs.test>")
            assert await until(lambda: database.fetchval("SELECT COUNT(*) = 0 FROM email_outbox"))
            assert len(smtp.received) == 1
    finally:
        await m.close()


async def test_a_restart_sends_what_was_queued(database):
    clock, port = Clock(), free_port()
    first = mailer(database, clock, port)
    await first.queue("bob@example.org", "Queued", "before the restart")
    await until(lambda: attempts(database))
    await first.close()
    clock.advance(FIRST_RETRY_MS)
    async with running_smtp(port=port) as smtp:
        second = mailer(database, clock, port)
        try:
            await second.start()
            assert text_of(await smtp.next_mail("bob@example.org")).strip() == "before the restart"
        finally:
            await second.close()


async def test_a_mail_is_dropped_after_a_day_of_failures(database, caplog):
    clock, port = Clock(), free_port()
    m = mailer(database, clock, port)
    try:
        await m.queue("gone@example.org", "Never", "x")
        await until(lambda: attempts(database))
        clock.advance(24 * 3_600_000)
        m.wake()
        await until(lambda: database.fetchval("SELECT COUNT(*) = 0 FROM email_outbox"))
        assert "giving up" in caplog.text
    finally:
        await m.close()


@pytest.fixture
def tls_server_context(tmp_path, monkeypatch):
    """A certificate for 127.0.0.1 from a test CA, which the mailer trusts (SSL_CERT_FILE)."""
    ca = TestCA(tmp_path / "ca")
    cert = ca.issue("127.0.0.1")
    monkeypatch.setenv("SSL_CERT_FILE", str(ca.ca_path))
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert.cert_path, cert.key_path)
    return ctx


async def test_starttls_is_used_when_offered_and_auth(database, tls_server_context):
    clock = Clock()
    async with running_smtp(tls_context=tls_server_context, require_starttls=True,
                            credentials=("gateway", "smtp-password")) as smtp:
        m = mailer(database, clock, smtp.port, smtp_user="gateway", smtp_pass="smtp-password",
                   require_transport_security=True)
        try:
            await m.queue("carol@example.org", "Over TLS", "secret")
            await smtp.next_mail("carol@example.org")
            assert smtp.over_tls == [True]
        finally:
            await m.close()
        wrong = mailer(database, clock, smtp.port, smtp_user="gateway", smtp_pass="wrong")
        try:
            await wrong.queue("carol@example.org", "Refused", "x")
            await until(lambda: attempts(database))
            assert "Authentication" in await database.fetchval("SELECT last_error FROM email_outbox")
        finally:
            await wrong.close()


async def test_implicit_tls(database, tls_server_context):
    async with running_smtp(implicit_tls=tls_server_context) as smtp:
        m = mailer(database, Clock(), smtp.port, force_tls=True)
        try:
            await m.queue("dave@example.org", "TLS from the start", "x")
            await smtp.next_mail("dave@example.org")
            assert smtp.over_tls == [True]
        finally:
            await m.close()


async def test_require_transport_security_refuses_a_server_without_starttls(database):
    async with running_smtp() as smtp:
        m = mailer(database, Clock(), smtp.port, require_transport_security=True)
        try:
            await m.queue("eve@example.org", "Plain", "x")
            await until(lambda: attempts(database))
            assert "STARTTLS" in await database.fetchval("SELECT last_error FROM email_outbox")
            assert smtp.received == []
        finally:
            await m.close()
        plain = mailer(database, Clock(), smtp.port, enable_tls=False)
        try:
            await plain.queue("eve@example.org", "Plain", "x")
            await smtp.next_mail("eve@example.org")
            assert smtp.over_tls == [False]
        finally:
            await plain.close()
