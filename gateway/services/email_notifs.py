"""Missed-message mails: the email pusher (``kind: email``, Synapse's ``email.enable_notifs``).

Spec: https://spec.matrix.org/latest/client-server-api/#post_matrixclientv3pushersset (the
``email`` kind is the homeserver's own). A notification (a push action that notifies) for a
user with an email pusher is mailed when it is still unread ``DELAY_MS`` after its event:
one mail per pusher then lists every unread notification since its last mail (the newer
ones too), grouped by
room (``notif_mail.html`` / ``notif_mail.txt``, subjects from ``email.subjects``), with an
unsubscribe link (``/_synapse/client/unsubscribe``) that removes the pusher. Each
notification is mailed at most once: the pusher's progress is stored
(``email_pusher_progress``); a restart goes on from there. The mail itself goes through the
mail queue (gateway/services/mailer.py): sending never blocks anything, failures are retried.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import logging
import time
import urllib.parse
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..config.email import EmailConfig
from ..storage.email_pushers import EmailPusherStore, UnreadNotification
from ..storage.push import Pusher, PusherStore

if TYPE_CHECKING:
    import jinja2  # the pages environment is built at its first use (sso.pages.lazy_environment)

log = logging.getLogger(__name__)

#: How long a notification stays unread before it is mailed (as Synapse: 10 minutes).
DELAY_MS = 10 * 60_000
#: At most this many notifications in one mail (the oldest first).
MAX_PER_MAIL = 50
UNSUBSCRIBE_PATH = "_synapse/client/unsubscribe"
#: What app_id the pusher made for new users' addresses has (as Synapse).
EMAIL_APP_ID = "m.email"


def unsubscribe_token(secret: bytes, user_id: str, app_id: str, pushkey: str) -> str:
    """The token of an unsubscribe link: an HMAC of the pusher it removes."""
    mac = hmac.new(secret, "\n".join((user_id, app_id, pushkey)).encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).rstrip(b"=").decode()


def room_link(client_base_url: str, room_id: str, event_id: str | None = None) -> str:
    """A link that opens the room in the client (matrix.to's form, or Element's ``#/room/``)."""
    parts = [urllib.parse.quote(room_id, safe="!:")] + ([urllib.parse.quote(event_id, safe="$")] if event_id else [])
    if urllib.parse.urlsplit(client_base_url).hostname == "matrix.to":
        return f"{client_base_url}/#/" + "/".join(parts)
    return f"{client_base_url}/#/room/" + "/".join(parts)


def subject_for(subjects: dict[str, str], app: str, rooms: list[dict[str, Any]]) -> str:
    """The mail's subject: Synapse's ``email.subjects`` cases for the rooms mailed about."""
    first = rooms[0]
    senders = {n["sender_name"] for r in rooms for n in r["notifs"]}
    values = {"app": app, "room": first["title"], "person": next(iter(senders), "")}
    if len(rooms) == 1 and first["invite"]:
        values["person"] = first["inviter"]
        return subjects["invite_from_person_to_room" if first["named"] else "invite_from_person"] % values
    if len(rooms) == 1:
        if len(senders) == 1:
            key = "message_from_person_in_room" if first["named"] else "message_from_person"
            if len(first["notifs"]) > 1 and not first["named"]:
                key = "messages_from_person"
            return subjects[key] % values
        return subjects["messages_in_room"] % values
    if len(senders) == 1:
        return subjects["messages_from_person_and_others"] % values
    return subjects["messages_in_room_and_others"] % values


class EmailNotifier:
    def __init__(self, *, config: EmailConfig, server_name: str, public_baseurl: str, store: EmailPusherStore,
                 pushers: PusherStore, events, profiles, mailer, pages: jinja2.Environment, secret: bytes,
                 clock_ms: Callable[[], int], mails_here: Callable[[str], bool] = lambda user_id: True):
        """``mails_here(user_id)``: whether this process mails the user (their shard of
        ``pusher_instances``, gateway/roles.py)."""
        self.config = config
        self.mails_here = mails_here
        self.server_name = server_name
        self.public_baseurl = public_baseurl
        self.store = store
        self.pushers = pushers
        self.events = events
        self.profiles = profiles
        self.mailer = mailer
        self.pages = pages
        self.secret = secret
        self.clock_ms = clock_ms
        self.delay_ms = DELAY_MS
        self._due: dict[str, int] = {}
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task | None = None
        #: Set by ``start``: only the process with the pusher role (gateway/roles.py) mails.
        self._active = False

    # --- scheduling ---------------------------------------------------------------------------

    def on_notified(self, user_ids: list[str]) -> None:
        """Users got notifications (push rules said so): look at their mail once the
        newest could be due. In another process than the pusher's, nothing: the pusher's
        sweep finds them."""
        if not self._active:
            return
        due = self.clock_ms() + self.delay_ms
        for user_id in user_ids:
            if self.mails_here(user_id):
                self._due.setdefault(user_id, due)
        self.wake()

    def wake(self) -> None:
        """Look at what is due now (by the server's clock)."""
        if not self._active:
            return
        self._wakeup.set()
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name="email-notifs")

    async def start(self) -> None:
        """In the process with the pusher role: mail from now on, starting with what an
        earlier run (or another process's notifications) left unmailed."""
        self._active = True
        await self._sweep()
        self.wake()

    async def _sweep(self) -> None:
        """Every user with notifications their email pusher has not handled is looked at
        (after a restart, and every ``DELAY_MS``: notifications evaluated in another process)."""
        for user_id in await self.store.users_with_pending_notifications():
            if self.mails_here(user_id):
                self._due.setdefault(user_id, self.clock_ms())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            self._wakeup.clear()
            now = self.clock_ms()
            for user_id in [u for u, t in self._due.items() if t <= now]:
                del self._due[user_id]
                try:
                    await self.process_user(user_id)
                except Exception:
                    log.exception("missed-message mail for %s failed", user_id)
            next_ms = min(self._due.values()) - self.clock_ms() if self._due else self.delay_ms
            try:
                await asyncio.wait_for(self._wakeup.wait(), max(0.0, min(next_ms, self.delay_ms) / 1000))
            except asyncio.TimeoutError:
                if not self._due:
                    try:
                        await self._sweep()
                    except Exception:
                        log.exception("looking for missed-message mails to send failed")

    # --- one user's mail -----------------------------------------------------------------------

    async def process_user(self, user_id: str) -> None:
        for pusher in await self.pushers.get_pushers(user_id):
            if pusher.kind == "email":
                await self._process(pusher)

    async def _process(self, p: Pusher) -> None:
        after = await self.store.progress(p.user_id, p.app_id, p.pushkey)
        upto = await self.store.latest_notification(p.user_id)
        if upto <= after:
            return
        unread = await self.store.unread_after(p.user_id, after, upto, MAX_PER_MAIL)
        # What this look covers: up to the latest notification (those read meanwhile are
        # done), or the last one read when there were more than one mail's worth.
        covered = unread[-1].stream_ordering if len(unread) == MAX_PER_MAIL else upto
        pdus = await self.events.get_pdus([n.event_id for n in unread])
        # Nothing from before the pusher existed (it would mail a whole history at once).
        wanted = [n for n in unread if n.event_id in pdus and pdus[n.event_id].origin_server_ts >= p.created_ts]
        if not wanted:
            await self.store.set_progress(p.user_id, p.app_id, p.pushkey, covered, None)
            return
        now = self.clock_ms()
        due = min(pdus[n.event_id].origin_server_ts for n in wanted) + self.delay_ms
        if due > now:  # the person may still read it: look again then
            self._due[p.user_id] = min(self._due.get(p.user_id, due), due)
            return
        await self._mail(p, wanted, pdus)
        await self.store.set_progress(p.user_id, p.app_id, p.pushkey, covered, now)

    async def _mail(self, p: Pusher, notifs: list[UnreadNotification], pdus: dict[str, Any]) -> None:
        by_room: dict[str, list[UnreadNotification]] = {}
        for n in notifs:
            by_room.setdefault(n.room_id, []).append(n)
        rooms = [await self._room(room_id, p.user_id, found, pdus) for room_id, found in by_room.items()]
        profile = await self.profiles.get_member_profile(p.user_id)
        user_name = profile.get("displayname") or p.user_id
        app = p.data.get("brand") if isinstance(p.data.get("brand"), str) else self.config.app_name
        query = urllib.parse.urlencode({"user_id": p.user_id, "app_id": p.app_id, "pushkey": p.pushkey,
                                        "access_token": unsubscribe_token(self.secret, p.user_id, p.app_id,
                                                                          p.pushkey)})
        summary = subject_for(self.config.subjects, app, rooms)
        unsubscribe_link = f"{self.public_baseurl}{UNSUBSCRIBE_PATH}?{query}"
        context = {"app_name": app, "server_name": self.server_name, "user_display_name": user_name,
                   "user_id": p.user_id, "rooms": rooms, "summary_text": summary,
                   "unsubscribe_link": unsubscribe_link,
                   "reason": {"room_name": rooms[0]["title"], "delay_minutes": self.delay_ms // 60_000}}
        await self.mailer.queue(p.pushkey, summary, self.pages.get_template("notif_mail.txt").render(context),
                                self.pages.get_template("notif_mail.html").render(context), app_name=app,
                                # One-click unsubscribing from the mail program (RFC 8058).
                                headers={"List-Unsubscribe": f"<{unsubscribe_link}>",
                                         "List-Unsubscribe-Post": "List-Unsubscribe=One-Click"})
        log.info("missed-message mail for %s queued (%d notifications)", p.user_id, len(notifs))

    async def _room(self, room_id: str, user_id: str, notifs: list[UnreadNotification],
                    pdus: dict[str, Any]) -> dict[str, Any]:
        state = self.events.state
        ids = {t: await state.get_current_state_event_id(room_id, t, "")
               for t in ("m.room.name", "m.room.canonical_alias")}
        senders = sorted({pdus[n.event_id].sender for n in notifs})
        member_ids = {s: await state.get_current_state_event_id(room_id, "m.room.member", s) for s in senders}
        found = await self.events.get_pdus([i for i in [*ids.values(), *member_ids.values()] if i])

        def value(event_id: str | None, key: str) -> str | None:
            pdu = found.get(event_id or "")
            v = pdu.content.get(key) if pdu is not None else None
            return v if isinstance(v, str) and v else None

        names = {s: value(member_ids[s], "displayname") or s for s in senders}
        title = value(ids["m.room.name"], "name") or value(ids["m.room.canonical_alias"], "alias")
        invites = [pdus[n.event_id] for n in notifs if pdus[n.event_id].type == "m.room.member"
                   and pdus[n.event_id].state_key == user_id and pdus[n.event_id].content.get("membership") == "invite"]
        member = await state.get_membership(room_id, user_id)
        # An invite is news while it is pending; once answered it is not worth a line.
        invite = invites[-1] if invites and member is not None and member.membership == "invite" else None
        items = []
        for n in notifs:
            pdu = pdus[n.event_id]
            if pdu in invites:
                continue
            items.append({"sender_name": names[pdu.sender], "body": _body_text(pdu),
                          "ts": time.strftime("%H:%M", time.gmtime(pdu.origin_server_ts / 1000)),
                          "link": room_link(self.config.client_base_url, room_id, pdu.event_id)})
        return {"title": title or (", ".join(names[s] for s in senders)), "named": title is not None,
                "link": room_link(self.config.client_base_url, room_id), "notifs": items,
                "invite": invite is not None, "inviter": names.get(invite.sender, "") if invite else ""}

    # --- new users ------------------------------------------------------------------------------

    async def add_new_user_pusher(self, user_id: str, address: str) -> None:
        """``notif_for_new_users``: an account made with an address gets mails there (as Synapse)."""
        if not self.config.notif_for_new_users:
            return
        await self.pushers.set_pusher(Pusher(user_id, None, "email", EMAIL_APP_ID, address, "Email Notifications",
                                             address, None, "en", {}, self.clock_ms()), append=False)

    # --- unsubscribing -------------------------------------------------------------------------

    def check_unsubscribe(self, user_id: Any, app_id: Any, pushkey: Any, token: Any) -> bool:
        if not all(isinstance(v, str) and v for v in (user_id, app_id, pushkey, token)):
            return False
        return hmac.compare_digest(unsubscribe_token(self.secret, user_id, app_id, pushkey).encode(), token.encode())

    async def unsubscribe(self, user_id: str, app_id: str, pushkey: str) -> None:
        await self.pushers.delete_pusher(user_id, app_id, pushkey)
        self._due.pop(user_id, None)


def _body_text(pdu: Any) -> str:
    if pdu.type == "m.room.encrypted":
        return "(an encrypted message)"
    body = pdu.content.get("body")
    if pdu.type in ("m.room.message", "m.sticker") and isinstance(body, str):
        return body if len(body) <= 1000 else body[:1000] + "…"
    return f"({pdu.type})"
