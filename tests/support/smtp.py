"""A real SMTP server on loopback (aiosmtpd) that keeps what it receives, for the e-mail tests.

It runs on the test's own event loop; ``next_mail`` waits for the next message to an address.
Optional STARTTLS (a certificate of tests/support/tls.py's TestCA) and AUTH.
"""

from __future__ import annotations

import asyncio
import contextlib
import email
import email.policy
import re
import ssl
import urllib.parse
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import AsyncIterator

from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword

from tests.conftest import free_port


@dataclass
class Mailbox:
    port: int
    received: list[EmailMessage] = field(default_factory=list)
    envelopes: list[tuple[str, list[str]]] = field(default_factory=list)
    #: Per message: whether it came over TLS (STARTTLS or implicit).
    over_tls: list[bool] = field(default_factory=list)
    _arrived: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def handle_DATA(self, server, session, envelope) -> str:
        msg = email.message_from_bytes(envelope.original_content, policy=email.policy.default)
        async with self._arrived:
            self.received.append(msg)
            self.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos)))
            self.over_tls.append(session.ssl is not None
                                 or server.transport.get_extra_info("ssl_object") is not None)
            self._arrived.notify_all()
        return "250 OK"

    async def next_mail(self, to: str | None = None, *, after: int = 0, containing: str | None = None,
                        timeout: float = 30) -> EmailMessage:
        """The first message (to ``to``, with ``containing`` in its text) among those received
        from index ``after`` on."""
        def found():
            return next((m for m in self.received[after:] if (to is None or to in m["To"])
                         and (containing is None or containing in text_of(m))), None)

        async with self._arrived:
            await asyncio.wait_for(self._arrived.wait_for(found), timeout)
            return found()


def text_of(msg: EmailMessage) -> str:
    return msg.get_body(preferencelist=("plain",)).get_content()


def html_of(msg: EmailMessage) -> str:
    return msg.get_body(preferencelist=("html",)).get_content()


def link_in(msg: EmailMessage) -> str:
    """The first http(s) link of the plain-text part."""
    return re.search(r"https?://\S+", text_of(msg)).group(0)


def path_of(url: str) -> str:
    """``/path?query`` of a URL (to follow a link with a test client)."""
    parts = urllib.parse.urlsplit(url)
    return parts.path + ("?" + parts.query if parts.query else "")


@contextlib.asynccontextmanager
async def running_smtp(*, port: int | None = None, tls_context: ssl.SSLContext | None = None,
                       require_starttls: bool = False, implicit_tls: ssl.SSLContext | None = None,
                       credentials: tuple[str, str] | None = None) -> AsyncIterator[Mailbox]:
    """An SMTP server on 127.0.0.1 (a free port unless given); STARTTLS when ``tls_context``,
    TLS from the first byte when ``implicit_tls``; AUTH PLAIN required when ``credentials``."""
    mailbox = Mailbox(port or free_port())

    def authenticate(server, session, envelope, mechanism, auth_data) -> AuthResult:
        ok = isinstance(auth_data, LoginPassword) and (auth_data.login.decode(), auth_data.password.decode()) \
            == credentials
        return AuthResult(success=ok, handled=False)  # aiosmtpd answers 235 or 535

    # PLAIN only: after a refused PLAIN, smtplib tries LOGIN, which aiosmtpd leaves hanging.
    extra = {"auth_required": True, "auth_require_tls": False, "authenticator": authenticate,
             "auth_exclude_mechanism": ["LOGIN"]} if credentials else {}
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: SMTP(mailbox, hostname="mail.test", tls_context=tls_context, require_starttls=require_starttls,
                     **extra),
        "127.0.0.1", mailbox.port, ssl=implicit_tls)
    try:
        yield mailbox
    finally:
        server.close()
        await server.wait_closed()
