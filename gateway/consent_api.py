"""``/_matrix/consent``: the privacy policy (``user_consent``), as Synapse's consent resource.

``GET`` shows ``<template_dir>/en/<version>.html`` (Jinja, autoescaped; ``v`` defaults to the
current version): without ``u`` the public version (``public_version`` true, for people not
yet registered); with ``u`` (user ID or localpart) and ``h`` (hex HMAC-SHA256 of ``u`` keyed
with ``form_secret``) the user's own, with ``has_consented``, ``user``, ``userhmac``.
``POST`` (form ``v``, ``u``, ``h``) records the consent and shows ``en/success.html``.

Also the fallback page of ``/register``'s ``m.login.terms`` stage, for clients that cannot
show the policies themselves (spec: "Fallback" of user-interactive auth).

https://element-hq.github.io/synapse/latest/consent_tracking.html
"""

from __future__ import annotations

import hashlib
import hmac
from typing import TYPE_CHECKING

from aiohttp import web

from .appkeys import HS
from .config.consent import VERSION_RE, UserConsentConfig
from .http import Codes, MatrixError

if TYPE_CHECKING:
    import jinja2

#: Jinja is imported only when ``user_consent`` is configured (docs/performance.md, "Memory").
CONSENT_ENV: web.AppKey[jinja2.Environment] = web.AppKey("consent_env")


def _environment(config: UserConsentConfig) -> jinja2.Environment:
    import jinja2

    return jinja2.Environment(loader=jinja2.FileSystemLoader(config.template_dir),
                              autoescape=jinja2.select_autoescape(["html", "htm"]))


def _headers() -> dict[str, str]:
    return {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
            "X-Frame-Options": "DENY", "Content-Security-Policy": "frame-ancestors 'none'"}


def _render(request: web.Request, name: str, **context) -> web.Response:
    import jinja2

    try:
        template = request.app[CONSENT_ENV].get_template(f"en/{name}.html")
    except jinja2.TemplateNotFound:
        raise MatrixError(404, Codes.NOT_FOUND, f"There is no page {name!r}") from None
    return web.Response(text=template.render(**context), content_type="text/html", charset="utf-8",
                        headers=_headers())


def _version(config: UserConsentConfig, value) -> str:
    version = value if isinstance(value, str) and value else config.version
    if not VERSION_RE.match(version):
        raise MatrixError(400, Codes.INVALID_PARAM, "Unknown policy version")
    return version


async def _user_from_link(request: web.Request, u, h) -> str:
    """The user a ``u``/``h`` link names, once the HMAC (keyed with ``form_secret``) checks out."""
    hs = request.app[HS]
    if not hs.config.form_secret:
        raise MatrixError(400, Codes.UNRECOGNIZED, "Per-user consent links need form_secret in the config")
    if not isinstance(u, str) or not u or not isinstance(h, str):
        raise MatrixError.missing_param("'u' and 'h' are required")
    expected = hmac.new(hs.config.form_secret.encode(), u.encode(), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected.encode(), h.lower().encode()):  # bytes: h may be non-ASCII
        raise MatrixError.forbidden("This consent link is not valid")
    user_id = u if u.startswith("@") else f"@{u}:{hs.server_name}"
    if await hs.auth.users.get_user(user_id) is None:
        raise MatrixError.not_found("Unknown user")
    return user_id


async def consent_page(request: web.Request) -> web.Response:
    """The policy: public (no ``u``) or for one user (``u``, ``h``), with ``has_consented``."""
    hs = request.app[HS]
    config = hs.config.user_consent
    assert config is not None
    version = _version(config, request.query.get("v"))
    u = request.query.get("u")
    if u is None:
        return _render(request, version, has_consented=False, public_version=True, consent_version=version,
                       user="", userhmac="")
    h = request.query.get("h")
    user_id = await _user_from_link(request, u, h)
    has_consented = await hs.auth.users.get_consent_version(user_id) == version
    return _render(request, version, has_consented=has_consented, public_version=False,
                   consent_version=version, user=u, userhmac=h)


async def give_consent(request: web.Request) -> web.Response:
    """``POST /_matrix/consent`` (``v``, ``u``, ``h``): record the user's consent, show
    ``<template_dir>/en/success.html``."""
    hs = request.app[HS]
    config = hs.config.user_consent
    assert config is not None
    form = await request.post()
    version = _version(config, form.get("v"))
    user_id = await _user_from_link(request, form.get("u"), form.get("h"))
    import jinja2

    try:
        request.app[CONSENT_ENV].get_template(f"en/{version}.html")
    except jinja2.TemplateNotFound:
        raise MatrixError(404, Codes.NOT_FOUND, f"There is no policy version {version!r}") from None
    await hs.auth.users.set_consent_version(user_id, version, hs.clock_ms())
    return _render(request, "success", consent_version=version, user=form.get("u"))


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
    app.router.add_post("/_matrix/consent", give_consent)
