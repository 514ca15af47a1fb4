"""``GET /_matrix/consent``: the privacy policy (``user_consent``) as Synapse's consent
resource shows it to someone not yet registered (its "public version": no ``u``/``h``).

The document is ``<template_dir>/en/<version>.html`` (Jinja, autoescaped), rendered with
``has_consented`` false, ``public_version`` true and ``consent_version``. Per-user consent
links (``u`` and ``h``, the HMAC with ``form_secret``) are not supported yet.

Also the fallback page of ``/register``'s ``m.login.terms`` stage, for clients that cannot
show the policies themselves (spec: "Fallback" of user-interactive auth).

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


async def terms_fallback(request: web.Request, pages) -> web.StreamResponse:
    """``GET|POST /_matrix/client/{r0,v3}/auth/m.login.terms/fallback/web``: the policy link and
    an accept button; accepting marks the stage done in the registration's UI-auth session.
    ``pages`` is the SSO handler (our page renderer, custom templates included)."""
    from sso.provider import SsoError

    from .services.uia import SESSION_LIFETIME_MS

    hs = request.app[HS]
    config = hs.config.user_consent
    if config is None or not config.require_at_registration:
        raise MatrixError(404, Codes.UNRECOGNIZED, "This server has no terms to accept")
    source = await request.post() if request.method == "POST" else request.query
    session_id = source.get("session")
    uia = await hs.auth.store.get_uia_session(session_id) if isinstance(session_id, str) and session_id else None
    if uia is None or uia.request_key != "POST /register" or uia.created_ts < hs.clock_ms() - SESSION_LIFETIME_MS:
        return pages.error_page(SsoError("unknown_session", "This registration session is unknown or has "
                                         "expired. Please go back to your app and try again."))
    if request.method == "POST":
        await hs.auth.store.mark_uia_stage_done(uia.session_id, "m.login.terms")
        return pages.render("sso_auth_success.html", server_name=hs.server_name)
    return pages.render("terms.html", server_name=hs.server_name, policy_name=config.policy_name,
                        consent_version=config.version, session=uia.session_id, myurl=request.path,
                        terms_url=f"{hs.config.public_baseurl}_matrix/consent?v={config.version}")


def add_consent_routes(app: web.Application) -> None:
    """Mount ``/_matrix/consent`` (only when ``user_consent`` is configured)."""
    config = app[HS].config.user_consent
    if config is None:
        return
    app[CONSENT_ENV] = _environment(config)
    app.router.add_get("/_matrix/consent", consent_page)
