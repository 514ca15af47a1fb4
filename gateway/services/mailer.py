"""Sending mail through the configured SMTP server (the ``email`` section).

A request never waits for the SMTP server: ``queue`` stores the message (a restart loses
nothing) and wakes one background task that sends what is due, retrying failures with
exponential backoff for a day before giving up (every failure is logged).
"""

from __future__ import annotations

import asyncio
import email.policy
import email.utils
import logging
import secrets
import smtplib
import ssl
from collections.abc import Callable
from email.message import EmailMessage

from ..config.email import EmailConfig
from ..storage.email_outbox import EmailOutboxStore, OutgoingMail

log = logging.getLogger(__name__)

FIRST_RETRY_MS = 10_000
MAX_RETRY_MS = 3_600_000
GIVE_UP_AFTER_MS = 24 * 3_600_000
SMTP_TIMEOUT_S = 30


class MailError(Exception):
    """The SMTP server did not take a message."""


def build_message(sender: str, recipient: str, subject: str, text: str, html: str | None, *,
                  domain: str, headers: dict[str, str] | None = None) -> EmailMessage:
    """A plain-text message with an HTML alternative (and extra ``headers``)."""
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = recipient
    msg["Subject"] = subject
    for name, value in (headers or {}).items():
        msg[name] = value
    msg["Date"] = email.utils.formatdate(localtime=False)
    msg["Message-ID"] = email.utils.make_msgid(domain=domain)
    msg.set_content(text)
    if html is not None:
        msg.add_alternative(html, subtype="html")
    return msg


def deliver(config: EmailConfig, recipient: str, message: str) -> None:
    """Hand one message to the SMTP server (blocking: run it in a thread). TLS as the
    ``force_tls``, ``enable_tls`` and ``require_transport_security`` keys say."""
    context = ssl.create_default_context()
    try:
        if config.force_tls:
            smtp: smtplib.SMTP = smtplib.SMTP_SSL(config.smtp_host, config.smtp_port, timeout=SMTP_TIMEOUT_S,
                                                  context=context)
        else:
            smtp = smtplib.SMTP(config.smtp_host, config.smtp_port, timeout=SMTP_TIMEOUT_S)
        with smtp:
            smtp.ehlo()
            if not config.force_tls:
                if config.enable_tls and smtp.has_extn("starttls"):
                    smtp.starttls(context=context)
                    smtp.ehlo()
                elif config.require_transport_security:
                    raise MailError(f"{config.smtp_host}:{config.smtp_port} does not offer STARTTLS "
                                    "(require_transport_security is set)")
            if config.smtp_user is not None:
                smtp.login(config.smtp_user, config.smtp_pass or "")
            sender = email.utils.parseaddr(config.from_address())[1]
            smtp.sendmail(sender, [recipient], message)  # ASCII (non-ASCII is transfer-encoded), CRLF
    except (OSError, smtplib.SMTPException) as e:
        raise MailError(f"{type(e).__name__}: {e}") from e


class Mailer:
    def __init__(self, config: EmailConfig, store: EmailOutboxStore, clock_ms: Callable[[], int], *,
                 server_name: str):
        self.config = config
        self.store = store
        self.clock_ms = clock_ms
        self.server_name = server_name
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._closing = False

    async def queue(self, recipient: str, subject: str, text: str, html: str | None = None, *,
                    app_name: str | None = None, headers: dict[str, str] | None = None) -> None:
        """Store a mail for sending and return at once."""
        msg = build_message(self.config.from_address(app_name), recipient, subject, text, html,
                            domain=self.server_name.split(":")[0], headers=headers)
        await self.store.add(secrets.token_hex(16), recipient, msg.as_string(policy=email.policy.SMTP),
                             self.clock_ms())
        self._wake.set()
        self._ensure_running()

    def wake(self) -> None:
        """Look at the queue now (a retry that is due, by the server's clock)."""
        self._wake.set()
        self._ensure_running()

    async def start(self) -> None:
        """Send what an earlier run left queued (called when the server starts)."""
        self._ensure_running()

    def _ensure_running(self) -> None:
        if not self._closing and (self._task is None or self._task.done()):
            self._task = asyncio.get_running_loop().create_task(self._run(), name="mailer")

    async def close(self) -> None:
        """Stop after the mail being handed over (its outcome is recorded: no mail twice)."""
        self._closing = True
        self._wake.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), SMTP_TIMEOUT_S + 5)
            except (asyncio.TimeoutError, Exception):
                self._task.cancel()
                await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        while not self._closing:
            self._wake.clear()
            try:
                for mail in await self.store.due(self.clock_ms()):
                    if self._closing:
                        return
                    await self._send(mail)
                next_ts = await self.store.next_attempt_ts()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("mail queue: unexpected error; trying again in a minute")
                next_ts = self.clock_ms() + 60_000
            if next_ts is not None and next_ts <= self.clock_ms():
                continue
            timeout = None if next_ts is None else (next_ts - self.clock_ms()) / 1000
            try:
                await asyncio.wait_for(self._wake.wait(), timeout)
            except asyncio.TimeoutError:
                pass

    async def _send(self, mail: OutgoingMail) -> None:
        try:
            await asyncio.to_thread(deliver, self.config, mail.recipient, mail.message)
        except MailError as e:
            now = self.clock_ms()
            if now - mail.created_ts >= GIVE_UP_AFTER_MS:
                log.error("mail to %s: giving up after %d attempts: %s", mail.recipient, mail.attempts + 1, e)
                await self.store.sent(mail.mail_id)
                return
            delay = min(MAX_RETRY_MS, FIRST_RETRY_MS * 2 ** mail.attempts)
            log.warning("mail to %s failed (attempt %d), retrying in %ds: %s", mail.recipient, mail.attempts + 1,
                        delay // 1000, e)
            await self.store.failed(mail.mail_id, now + delay, str(e))
            return
        log.info("mail sent to %s", mail.recipient)
        await self.store.sent(mail.mail_id)
