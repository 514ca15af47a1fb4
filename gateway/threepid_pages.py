"""The pages the links in our mails lead to (Synapse's paths and templates).

- ``/_matrix/client/unstable/registration/email/submit_token`` and
  ``/_matrix/client/unstable/add_threepid/email/submit_token``: following the link validates
  the address (``registration_success.html`` / ``add_threepid_success.html``, or ``*_failure.html``);
- ``/_synapse/client/password_reset/email/submit_token``: GET shows
  ``password_reset_confirmation.html`` (link checkers and mail scanners fetch links; only the
  person confirms), its POST validates (``password_reset_success.html`` / ``_failure.html``).

- ``/_synapse/client/unsubscribe``: the end of missed-message mails (``unsubscribe.html``).

Then the browser goes on to the client's ``next_link`` by itself only when it is on a host we
trust (gateway/services/threepids.py ``redirects_to``); otherwise the page links to it.
"""

from __future__ import annotations

import urllib.parse
from typing import Any

from aiohttp import web

from .appkeys import EMAIL_NOTIFS, THREEPIDS
from .services.email_notifs import UNSUBSCRIBE_PATH
from .services.threepids import LINK_PATHS, ValidationFailed

_PAGE_HEADERS = {"Cache-Control": "no-store", "X-Frame-Options": "DENY",
                 "Content-Security-Policy": "frame-ancestors 'none'", "Referrer-Policy": "no-referrer",
                 "X-Content-Type-Options": "nosniff"}


def _page(request: web.Request, name: str, status: int = 200, **context: Any) -> web.Response:
    threepids = request.config_dict[THREEPIDS]
    html = threepids.pages.get_template(name).render(server_name=threepids.server_name, **context)
    return web.Response(text=html, status=status, content_type="text/html", charset="utf-8", headers=_PAGE_HEADERS)


def _done(request: web.Request, template: str, next_link: str | None) -> web.Response:
    if next_link and request.config_dict[THREEPIDS].redirects_to(next_link):
        return web.Response(status=302, headers={"Location": next_link, "Cache-Control": "no-store"})
    host = urllib.parse.urlsplit(next_link).hostname if next_link else None
    return _page(request, template, next_link=next_link, next_link_host=host)


async def _validate(request: web.Request, purpose: str, params) -> web.Response:
    try:
        next_link = await request.config_dict[THREEPIDS].follow_link(purpose, params.get("sid"),
                                                                params.get("client_secret"), params.get("token"))
    except ValidationFailed as e:
        return _page(request, f"{purpose}_failure.html", 400, failure_reason=str(e))
    return _done(request, f"{purpose}_success.html", next_link)


async def registration_link(request: web.Request) -> web.Response:
    return await _validate(request, "registration", request.query)


async def add_threepid_link(request: web.Request) -> web.Response:
    return await _validate(request, "add_threepid", request.query)


async def password_reset_link(request: web.Request) -> web.Response:
    q = request.query
    try:
        await request.config_dict[THREEPIDS].check_link("password_reset", q.get("sid"), q.get("client_secret"),
                                                   q.get("token"))
    except ValidationFailed as e:
        return _page(request, "password_reset_failure.html", 400, failure_reason=str(e))
    return _page(request, "password_reset_confirmation.html", sid=q["sid"], token=q["token"],
                 client_secret=q["client_secret"])


async def password_reset_confirm(request: web.Request) -> web.Response:
    return await _validate(request, "password_reset", await request.post())


async def unsubscribe_page(request: web.Request) -> web.Response:
    """``/_synapse/client/unsubscribe``, the link in missed-message mails: GET asks (mail
    scanners open links), POST removes the email pusher (also the one-click POST of a mail
    program, RFC 8058, with the link's query)."""
    notifs = request.config_dict[EMAIL_NOTIFS]
    if notifs is None:
        raise web.HTTPNotFound()
    params = dict(request.query)
    if request.method == "POST":
        params.update({k: v for k, v in (await request.post()).items() if isinstance(v, str)})
    names = ("user_id", "app_id", "pushkey", "access_token")
    ok = notifs.check_unsubscribe(*(params.get(n) for n in names))
    if not ok:
        return _page(request, "unsubscribe.html", 400, failed=True)
    if request.method == "POST":
        await notifs.unsubscribe(params["user_id"], params["app_id"], params["pushkey"])
        return _page(request, "unsubscribe.html", done=True)
    return _page(request, "unsubscribe.html", **{n: params[n] for n in names})


def add_threepid_pages(app: web.Application) -> None:
    """On ``client`` listeners, before the ``/_matrix/client`` sub-app (more specific paths)."""
    app.router.add_get("/" + LINK_PATHS["registration"], registration_link)
    app.router.add_get("/" + LINK_PATHS["add_threepid"], add_threepid_link)
    app.router.add_get("/" + LINK_PATHS["password_reset"], password_reset_link)
    app.router.add_post("/" + LINK_PATHS["password_reset"], password_reset_confirm)
    app.router.add_get("/" + UNSUBSCRIBE_PATH, unsubscribe_page)
    app.router.add_post("/" + UNSUBSCRIBE_PATH, unsubscribe_page)
