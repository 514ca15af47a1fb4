"""The pages the links in our validation mails lead to (Synapse's paths and templates).

- ``/_matrix/client/unstable/registration/email/submit_token`` and
  ``/_matrix/client/unstable/add_threepid/email/submit_token``: following the link validates
  the address (``registration_success.html`` / ``add_threepid_success.html``, or ``*_failure.html``);
- ``/_synapse/client/password_reset/email/submit_token``: GET shows
  ``password_reset_confirmation.html`` (link checkers and mail scanners fetch links; only the
  person confirms), its POST validates (``password_reset_success.html`` / ``_failure.html``).

Then the browser goes on to the client's ``next_link`` by itself only when it is on a host we
trust (gateway/services/threepids.py ``redirects_to``); otherwise the page links to it.
"""

from __future__ import annotations

import urllib.parse
from typing import Any

from aiohttp import web

from .appkeys import THREEPIDS
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


def add_threepid_pages(app: web.Application) -> None:
    """On ``client`` listeners, before the ``/_matrix/client`` sub-app (more specific paths)."""
    app.router.add_get("/" + LINK_PATHS["registration"], registration_link)
    app.router.add_get("/" + LINK_PATHS["add_threepid"], add_threepid_link)
    app.router.add_get("/" + LINK_PATHS["password_reset"], password_reset_link)
    app.router.add_post("/" + LINK_PATHS["password_reset"], password_reset_confirm)
