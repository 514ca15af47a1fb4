"""``GET /_matrix/consent``: the privacy policy (``user_consent``) as Synapse's consent
resource shows it to someone not yet registered (its "public version": no ``u``/``h``).

The document is ``<template_dir>/en/<version>.html`` (Jinja, autoescaped), rendered with
``has_consented`` false, ``public_version`` true and ``consent_version``. Per-user consent
links (``u`` and ``h``, the HMAC with ``form_secret``) are not supported yet.

https://element-hq.github.io/synapse/latest/consent_tracking.html
"""

from __future__ import annotations

import jinja2
from aiohttp import web

from .appkeys import HS
from .config.consent import VERSION_RE, UserConsentConfig
from .http import Codes, MatrixError

CONSENT_ENV = web.AppKey("consent_env", jinja2.Environment)


def _environment(config: UserConsentConfig) -> jinja2.Environment:
    return jinja2.Environment(loader=jinja2.FileSystemLoader(config.template_dir),
                              autoescape=jinja2.select_autoescape(["html", "htm"]))


async def consent_page(request: web.Request) -> web.Response:
    config = request.app[HS].config.user_consent
    assert config is not None
    if "u" in request.query:
        raise MatrixError(400, Codes.UNRECOGNIZED, "Per-user consent links are not supported by this server")
    version = request.query.get("v", config.version)
    if not VERSION_RE.match(version):
        raise MatrixError(400, Codes.INVALID_PARAM, "Unknown policy version")
    try:
        template = request.app[CONSENT_ENV].get_template(f"en/{version}.html")
    except jinja2.TemplateNotFound:
        raise MatrixError(404, Codes.NOT_FOUND, f"There is no policy version {version!r}") from None
    html = template.render(has_consented=False, public_version=True, consent_version=version)
    return web.Response(text=html, content_type="text/html", charset="utf-8",
                        headers={"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"})


def add_consent_routes(app: web.Application) -> None:
    """Mount ``/_matrix/consent`` (only when ``user_consent`` is configured)."""
    config = app[HS].config.user_consent
    if config is None:
        return
    app[CONSENT_ENV] = _environment(config)
    app.router.add_get("/_matrix/consent", consent_page)
