"""E-mail addresses on accounts (3PIDs) and their validation by mail.

Spec: https://spec.matrix.org/latest/client-server-api/#adding-account-administrative-contact-information
and the ``requestToken`` endpoints. A ``requestToken`` starts a validation session and mails a
link (Synapse's paths, served by gateway/threepid_pages.py); following it validates the
session, which a registration (``m.login.email.identity``), ``/account/3pid/add`` or a
password reset then uses once. Each session is for one purpose: ``registration``,
``add_threepid`` or ``password_reset``.
"""

from __future__ import annotations

import hmac
import re
import secrets
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..config.email import EmailConfig
from ..config.threepids import ThreepidConfig
from ..http import Codes, MatrixError
from ..storage.devices import token_hash
from ..storage.threepids import ThreepidInUseError, ThreepidStore, ValidationSession
from ..storage.users import UserStore
from .identity_servers import IdentityServerClient, check_id_server
from .mailer import Mailer

if TYPE_CHECKING:
    import jinja2  # the pages environment is built at its first use (sso.pages.lazy_environment)

PURPOSES = ("registration", "add_threepid", "password_reset")
#: Where the mailed link goes, per purpose (Synapse's paths).
LINK_PATHS = {
    "registration": "_matrix/client/unstable/registration/email/submit_token",
    "add_threepid": "_matrix/client/unstable/add_threepid/email/submit_token",
    "password_reset": "_synapse/client/password_reset/email/submit_token",
}
#: The mail templates per purpose (``<name>.html`` and ``<name>.txt``), and their subject.
_MAILS = {"registration": ("registration", "email_validation"),
          "add_threepid": ("add_threepid", "email_validation"),
          "password_reset": ("password_reset", "password_reset")}
#: How long a validated session may be used (as Synapse).
VALIDATED_SESSION_LIFETIME_MS = 24 * 3_600_000
#: client_secret and sid: the spec's grammar.
_OPAQUE = re.compile(r"^[0-9a-zA-Z.=_\-]{1,255}$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+$")


def canonical_email(address: Any) -> str:
    """An e-mail address as stored and compared (Synapse's rule: trimmed, lower case)."""
    if not isinstance(address, str) or not _EMAIL.match(address.strip()) or len(address) > 500:
        raise MatrixError(400, Codes.INVALID_PARAM, "Unable to parse email address")
    return address.strip().lower()


def check_opaque(value: Any, name: str) -> str:
    if not isinstance(value, str) or not _OPAQUE.match(value):
        raise MatrixError(400, Codes.INVALID_PARAM, f"'{name}' must be 1-255 of the characters [0-9a-zA-Z.=_-]")
    return value


class ValidationFailed(Exception):
    """A validation link that does not (or no longer) work; the message is for the page."""


@dataclass(frozen=True)
class ValidatedAddress:
    session_id: str
    medium: str
    address: str
    validated_at: int


class ThreepidService:
    def __init__(self, store: ThreepidStore, users: UserStore, mailer: Mailer | None,
                 identity_servers: IdentityServerClient, *, email: EmailConfig, config: ThreepidConfig,
                 server_name: str, public_baseurl: str, pages: jinja2.Environment, clock_ms: Callable[[], int],
                 modules, ratelimiter):
        self.store = store
        self.users = users
        self.mailer = mailer
        self.identity_servers = identity_servers
        self.email = email
        self.config = config
        self.server_name = server_name
        self.public_baseurl = public_baseurl
        self.pages = pages
        self.clock_ms = clock_ms
        self.modules = modules
        self.ratelimiter = ratelimiter

    # --- requestToken ----------------------------------------------------------------------

    async def request_email_token(self, purpose: str, body: dict[str, Any], requester_ip: str) -> dict[str, str]:
        """``POST .../email/requestToken``: ``{"sid": ...}``; a mail with the link is queued."""
        if not self.email.enabled or self.mailer is None:
            raise MatrixError(400, Codes.THREEPID_MEDIUM_NOT_SUPPORTED,
                              "This server does not send e-mail (no email section in its config)")
        client_secret = check_opaque(body.get("client_secret"), "client_secret")
        address = canonical_email(body.get("email"))
        send_attempt = body.get("send_attempt")
        if isinstance(send_attempt, bool) or not isinstance(send_attempt, int):
            raise MatrixError(400, Codes.INVALID_PARAM, "'send_attempt' must be an integer")
        next_link = self.check_next_link(body.get("next_link"))
        self.ratelimiter.ratelimit(f"ip:{requester_ip}")
        self.ratelimiter.ratelimit(f"email:{address}")
        if not await self.is_allowed("email", address, registration=purpose == "registration"):
            raise MatrixError(403, Codes.THREEPID_DENIED, "This e-mail address is not allowed on this server")
        owner = await self.users.get_user_by_threepid("email", address)
        if purpose == "password_reset" and owner is None:
            if self.config.request_token_inhibit_3pid_errors:
                return {"sid": _fake_sid()}
            raise MatrixError(400, Codes.THREEPID_NOT_FOUND, "No account has this e-mail address")
        if purpose != "password_reset" and owner is not None:
            if self.config.request_token_inhibit_3pid_errors:
                return {"sid": _fake_sid()}
            raise MatrixError(400, Codes.THREEPID_IN_USE, "This e-mail address is already in use")
        now = self.clock_ms()
        await self.store.delete_expired_sessions(now, VALIDATED_SESSION_LIFETIME_MS)
        session = await self.store.find_session(client_secret, "email", address, purpose, now)
        if session is not None and send_attempt <= session.last_send_attempt:
            return {"sid": session.session_id}  # a retry of a request we answered: no new mail
        token = secrets.token_urlsafe(24)
        expires = now + self.email.validation_token_lifetime_ms
        if session is None:
            session = ValidationSession(secrets.token_urlsafe(18), "email", address, client_secret, purpose,
                                        send_attempt, token_hash(token), expires, next_link, now, None, None)
            await self.store.add_session(session)
        else:
            await self.store.resend(session.session_id, send_attempt, token_hash(token), expires, next_link)
        await self._mail_link(session, token)
        return {"sid": session.session_id}

    async def _mail_link(self, session: ValidationSession, token: str) -> None:
        query = urllib.parse.urlencode({"token": token, "client_secret": session.client_secret,
                                        "sid": session.session_id})
        link = f"{self.public_baseurl}{LINK_PATHS[session.purpose]}?{query}"
        template, subject_key = _MAILS[session.purpose]
        context = {"link": link, "server_name": self.server_name, "app_name": self.email.app_name}
        subject = self.email.subjects[subject_key] % {"server_name": self.server_name, "app": self.email.app_name}
        await self.mailer.queue(session.address, subject, self.pages.get_template(f"{template}.txt").render(context),
                                self.pages.get_template(f"{template}.html").render(context))

    async def is_allowed(self, medium: str, address: str, *, registration: bool) -> bool:
        """``allowed_local_3pids`` and the modules' ``is_3pid_allowed``."""
        if not self.config.allowed(medium, address):
            return False
        try:
            await self.modules.all_true("is_3pid_allowed", "This address", medium, address, registration)
        except MatrixError:
            return False
        return True

    # --- next_link ---------------------------------------------------------------------------

    def check_next_link(self, next_link: Any) -> str | None:
        """``next_link`` of a requestToken: an http(s) URL, on a host of
        ``next_link_domain_whitelist`` when that is set (400 ``M_INVALID_PARAM`` otherwise)."""
        if next_link is None:
            return None
        if not isinstance(next_link, str) or len(next_link) > 2000:
            raise MatrixError(400, Codes.INVALID_PARAM, "'next_link' must be a URL")
        parts = urllib.parse.urlsplit(next_link)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise MatrixError(400, Codes.INVALID_PARAM, "'next_link' must be an http or https URL")
        whitelist = self.config.next_link_domain_whitelist
        if whitelist is not None and parts.hostname.lower() not in whitelist:
            raise MatrixError(400, Codes.INVALID_PARAM, "'next_link' is not on a domain this server redirects to")
        return next_link

    def redirects_to(self, next_link: str) -> bool:
        """Whether the validation page sends the browser on to ``next_link`` by itself: hosts of
        ``next_link_domain_whitelist`` when set, else only our own and ``email.client_base_url``'s.
        Other links are shown on the page for the user to follow (no open redirect)."""
        host = (urllib.parse.urlsplit(next_link).hostname or "").lower()
        if self.config.next_link_domain_whitelist is not None:
            return host in self.config.next_link_domain_whitelist
        ours = {urllib.parse.urlsplit(u).hostname for u in (self.public_baseurl, self.email.client_base_url)}
        return host in ours

    # --- following the link ----------------------------------------------------------------------

    async def check_link(self, purpose: str, sid: Any, client_secret: Any, token: Any) -> ValidationSession:
        """The session a link names, if the link is good (not validated by this)."""
        if not all(isinstance(v, str) and v for v in (sid, client_secret, token)):
            raise ValidationFailed("This link is incomplete.")
        session = await self.store.get_session(sid)
        if session is None or session.purpose != purpose \
                or not hmac.compare_digest(session.client_secret.encode(), client_secret.encode()):
            raise ValidationFailed("This link is not valid (or the request it belongs to has expired).")
        if not hmac.compare_digest(session.token_hash, token_hash(token)):
            raise ValidationFailed("This link is not valid: a newer mail was sent, use the link in it.")
        if session.validated_at is None and session.token_expires_ts <= self.clock_ms():
            raise ValidationFailed("This link has expired: ask for a new mail.")
        return session

    async def follow_link(self, purpose: str, sid: Any, client_secret: Any, token: Any) -> str | None:
        """Validate the session the link names; its ``next_link``. Following it again is fine."""
        session = await self.check_link(purpose, sid, client_secret, token)
        await self.store.mark_validated(session.session_id, self.clock_ms())
        return session.next_link

    # --- using a validated session -------------------------------------------------------------

    async def validated(self, creds: Any, purpose: str) -> ValidatedAddress:
        """The address a validated session of ``purpose`` proved (``threepid_creds`` with
        ``sid`` and ``client_secret``); 400 ``M_THREEPID_AUTH_FAILED`` otherwise."""
        if not isinstance(creds, dict):
            raise MatrixError(400, Codes.BAD_JSON, "'threepid_creds' must be an object")
        sid, secret = creds.get("sid"), creds.get("client_secret")
        if not isinstance(sid, str) or not isinstance(secret, str):
            raise MatrixError(400, Codes.MISSING_PARAM, "'sid' and 'client_secret' are required")
        session = await self.store.get_session(sid)
        now = self.clock_ms()
        if session is None or session.purpose != purpose \
                or not hmac.compare_digest(session.client_secret.encode(), secret.encode()):
            raise MatrixError(400, Codes.THREEPID_AUTH_FAILED, "Unknown validation session")
        if session.validated_at is None:
            raise MatrixError(400, Codes.THREEPID_AUTH_FAILED,
                              "This e-mail address has not been validated yet: follow the link in the mail")
        if session.validated_at + VALIDATED_SESSION_LIFETIME_MS <= now:
            raise MatrixError(400, Codes.THREEPID_AUTH_FAILED, "This validation has expired: start again")
        return ValidatedAddress(session.session_id, session.medium, session.address, session.validated_at)

    async def use_in_uia(self, auth: dict[str, Any], purpose: str) -> None:
        """``m.login.email.identity``: the session goes with the UI-auth session (read back with
        ``address_of_uia``)."""
        creds = auth.get("threepid_creds", auth.get("threepidCreds"))
        try:
            found = await self.validated(creds, purpose)
        except MatrixError as e:
            raise MatrixError(401, e.errcode, e.error) from None
        await self.store.set_uia_session(found.session_id, auth["session"])

    async def address_of_uia(self, uia_session_id: str) -> ValidatedAddress | None:
        session = await self.store.session_of_uia(uia_session_id)
        if session is None or session.validated_at is None:
            return None
        return ValidatedAddress(session.session_id, session.medium, session.address, session.validated_at)

    async def consume(self, found: ValidatedAddress) -> None:
        """A validated session did what it was for: it cannot be used again."""
        await self.store.delete_session(found.session_id)

    # --- 3PIDs of accounts -----------------------------------------------------------------------

    async def list(self, user_id: str) -> list[dict[str, Any]]:
        return await self.users.get_threepids(user_id)

    async def add(self, user_id: str, medium: str, address: str, validated_at: int) -> None:
        """Put a validated address on an account; 400 ``M_THREEPID_IN_USE`` if another has it."""
        if not self.config.allowed(medium, address):
            raise MatrixError(403, Codes.THREEPID_DENIED, "This address is not allowed on this server")
        try:
            await self.store.add_threepid(user_id, medium, address, validated_at, self.clock_ms())
        except ThreepidInUseError:
            raise MatrixError(400, Codes.THREEPID_IN_USE, "This address is on another account") from None
        await self.modules.notify("on_add_user_third_party_identifier", user_id, medium, address)

    async def remove(self, user_id: str, medium: str, address: str) -> bool:
        removed = await self.store.remove_threepid(user_id, medium, address)
        if removed:
            await self.modules.notify("on_remove_user_third_party_identifier", user_id, medium, address)
        return removed

    # --- identity server bindings --------------------------------------------------------------

    async def bind(self, user_id: str, body: dict[str, Any]) -> None:
        """``/account/3pid/bind``: the identity server the client names binds an address it
        validated to the user; we remember where, to unbind it later."""
        id_server = check_id_server(body.get("id_server"))
        token, sid, secret = body.get("id_access_token"), body.get("sid"), body.get("client_secret")
        if not all(isinstance(v, str) and v for v in (token, sid, secret)):
            raise MatrixError.missing_param("'id_access_token', 'sid' and 'client_secret' are required")
        association = await self.identity_servers.bind(id_server, token, sid, check_opaque(secret, "client_secret"),
                                                       user_id)
        medium, address = association.get("medium"), association.get("address")
        if association.get("mxid") != user_id or not isinstance(medium, str) or not isinstance(address, str):
            raise MatrixError(502, Codes.UNKNOWN, f"{id_server} answered the bind with another association")
        await self.store.add_binding(user_id, medium, address, id_server)
        await self.modules.notify("on_threepid_bind", user_id, medium, address)

    async def unbind(self, user_id: str, medium: str, address: str, id_server: str | None = None) -> str:
        """Unbind an address of the user at ``id_server``, or wherever we bound it: the
        spec's ``id_server_unbind_result`` (``no-support`` when we know of no server, or one refused)."""
        servers = [check_id_server(id_server)] if id_server is not None else \
            [server for _, _, server in await self.store.bindings(user_id, medium, address)]
        if not servers:
            return "no-support"
        result = "success"
        for server in servers:
            if await self.identity_servers.unbind(server, user_id, medium, address):
                await self.store.remove_binding(user_id, medium, address, server)
            else:
                result = "no-support"
        return result

    async def delete(self, user_id: str, medium: str, address: str, id_server: str | None) -> str:
        """``/account/3pid/delete``: off the account, and unbound from identity servers."""
        if id_server is not None:
            check_id_server(id_server)
        await self.remove(user_id, medium, address)
        return await self.unbind(user_id, medium, address, id_server)

    async def unbind_all(self, user_id: str, id_server: str | None = None,
                         addresses: list[dict[str, Any]] = ()) -> str:
        """A deactivation: every address bound through us, and ``addresses`` (the account's,
        read before they went) at ``id_server`` when given."""
        pairs = {(m, a) for m, a, _ in await self.store.bindings(user_id)}
        if id_server is not None:
            pairs |= {(t["medium"], t["address"]) for t in addresses}
        results = [await self.unbind(user_id, m, a, id_server) for m, a in sorted(pairs)]
        return "success" if all(r == "success" for r in results) else "no-support"

    async def remove_all(self, user_id: str) -> None:
        """A deactivated account: every address goes."""
        for t in await self.users.get_threepids(user_id):
            await self.remove(user_id, t["medium"], t["address"])

    async def user_of(self, medium: str, address: str) -> str | None:
        if medium == "email":
            try:
                address = canonical_email(address)
            except MatrixError:
                return None
        return await self.users.get_user_by_threepid(medium, address)


def _fake_sid() -> str:
    """What ``request_token_inhibit_3pid_errors`` answers instead of an error."""
    return secrets.token_urlsafe(18)
