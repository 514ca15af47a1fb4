"""The Jinja environment for every page Gateway renders (SSO pages, the federation tester).

Templates are looked up in ``templates.custom_template_directory`` first, then in our
defaults (the ``templates`` package), one file at a time, so an operator can override a
single page. Autoescaping is on for HTML. Synapse's filters are available:
``format_ts``, ``mxc_to_http`` and ``localpart_from_email``.

Template names and variables: https://element-hq.github.io/synapse/latest/templates.html

A server builds its environments with ``lazy_environment``: Jinja is imported, and the
environment made, by the first page rendered (docs/performance.md, "Memory").
"""

from __future__ import annotations

import time
import urllib.parse
from typing import TYPE_CHECKING, Any

from .mapping import localpart_from_email

if TYPE_CHECKING:
    import jinja2

__all__ = ["build_environment", "lazy_environment", "LazyEnvironment", "SAMPLE_CONTEXTS", "check_templates",
           "format_ts", "make_mxc_to_http"]


def format_ts(value: int, format: str = "%Y-%m-%d %H:%M:%S") -> str:
    """A millisecond timestamp as text (UTC)."""
    return time.strftime(format, time.gmtime(int(value) / 1000))


def make_mxc_to_http(public_baseurl: str):
    """The ``mxc_to_http`` filter: an ``mxc://`` URI -> a thumbnail URL on our media API."""

    def mxc_to_http(value: str | None, width: int = 64, height: int = 64, resize_method: str = "crop") -> str:
        if not value or not value.startswith("mxc://"):
            return ""
        server_and_media = value[len("mxc://"):]
        fragment = ""
        if "#" in server_and_media:
            server_and_media, fragment = server_and_media.split("#", 1)
            fragment = "#" + fragment
        query = urllib.parse.urlencode({"width": width, "height": height, "method": resize_method})
        return f"{public_baseurl}_matrix/media/v1/thumbnail/{server_and_media}?{query}{fragment}"

    return mxc_to_http


def build_environment(custom_template_directory: str | None = None, *,
                      public_baseurl: str = "/") -> jinja2.Environment:
    import jinja2

    loaders: list[jinja2.BaseLoader] = []
    if custom_template_directory:
        loaders.append(jinja2.FileSystemLoader(custom_template_directory))
    loaders.append(jinja2.PackageLoader("templates", "."))
    env = jinja2.Environment(
        loader=jinja2.ChoiceLoader(loaders),
        autoescape=jinja2.select_autoescape(["html", "htm", "xml"], default_for_string=True),
    )
    env.filters["format_ts"] = format_ts
    env.filters["mxc_to_http"] = make_mxc_to_http(public_baseurl)
    env.filters["localpart_from_email"] = localpart_from_email
    return env


class LazyEnvironment:
    """Stands for the environment ``build_environment`` returns, built at its first use
    (any attribute: ``get_template``, ``from_string``...)."""

    def __init__(self, custom_template_directory: str | None = None, *, public_baseurl: str = "/"):
        self._args = (custom_template_directory, public_baseurl)
        self._env: jinja2.Environment | None = None

    def __getattr__(self, name: str) -> Any:
        if self._env is None:
            directory, public_baseurl = self._args
            self._env = build_environment(directory, public_baseurl=public_baseurl)
        return getattr(self._env, name)


def lazy_environment(custom_template_directory: str | None = None, *,
                     public_baseurl: str = "/") -> jinja2.Environment:
    """``build_environment``'s environment, made (and Jinja imported) at its first use."""
    return LazyEnvironment(custom_template_directory, public_baseurl=public_baseurl)  # type: ignore[return-value]


_IDP = {"idp_id": "oidc-example", "idp_name": "Example SSO", "idp_icon": "mxc://example.com/icon",
        "idp_brand": None}

#: Sample data for each page, with Synapse's variable names (used by ``check-templates``).
SAMPLE_CONTEXTS: dict[str, dict[str, Any]] = {
    "sso_login_idp_picker.html": {
        "redirect_url": "https://app.example.com/?x=1", "server_name": "example.com",
        "providers": [_IDP, {"idp_id": "oidc-github", "idp_name": "GitHub", "idp_icon": None,
                             "idp_brand": "github"}],
    },
    "sso_auth_account_details.html": {
        "server_name": "example.com", "idp": _IDP,
        "user_attributes": {"display_name": "Alice Liddell", "emails": ["alice@example.com"], "localpart": "alice"},
        "error": None,
    },
    "sso_new_user_consent.html": {
        "server_name": "example.com", "user_id": "@alice:example.com",
        "user_profile": {"display_name": "Alice Liddell"}, "consent_version": "1.0",
        "terms_url": "https://example.com/terms",
    },
    "sso_redirect_confirm.html": {
        "redirect_url": "https://app.example.com/?loginToken=abc", "display_url": "https://app.example.com/",
        "server_name": "example.com", "new_user": True, "user_id": "@alice:example.com",
        "user_profile": {"display_name": "Alice Liddell", "avatar_url": "mxc://example.com/avatar"},
    },
    "sso_auth_confirm.html": {
        "redirect_url": "https://example.com/_matrix/client/v3/login/sso/redirect/oidc-example",
        "description": "remove a device from your account", "idp": _IDP,
        "providers": [{**_IDP, "redirect_url": "/_matrix/client/v3/auth/m.login.sso/fallback/web?idp_id=a"},
                      {"idp_id": "oidc-github", "idp_name": "GitHub", "idp_icon": None, "idp_brand": "github",
                       "redirect_url": "/_matrix/client/v3/auth/m.login.sso/fallback/web?idp_id=b"}],
    },
    "sso_auth_success.html": {},
    "terms.html": {
        "server_name": "example.com", "policy_name": "Privacy Policy", "consent_version": "1.0",
        "terms_url": "https://example.com/_matrix/consent?v=1.0", "session": "abc",
        "myurl": "/_matrix/client/v3/auth/m.login.terms/fallback/web",
    },
    "sso_auth_bad_user.html": {"server_name": "example.com", "user_id_to_verify": "@alice:example.com"},
    "sso_account_deactivated.html": {},
    "sso_error.html": {"error": "session_expired", "error_description": "This login took too long."},
    # E-mail validation mails and the pages their links lead to (gateway/threepid_pages.py).
    **{f"{mail}.{ext}": {"link": "https://matrix.example.com/_matrix/client/unstable/registration/email/submit_token"
                                 "?token=t&client_secret=c&sid=s", "server_name": "example.com", "app_name": "Matrix"}
       for mail in ("registration", "add_threepid", "password_reset") for ext in ("html", "txt")},
    "password_reset_confirmation.html": {"server_name": "example.com", "sid": "s", "token": "t", "client_secret": "c"},
    **{f"{page}_success.html": {"server_name": "example.com", "next_link": "https://app.example.com/#/done",
                                "next_link_host": "app.example.com"}
       for page in ("registration", "add_threepid", "password_reset")},
    **{f"{page}_failure.html": {"server_name": "example.com", "failure_reason": "This link has expired."}
       for page in ("registration", "add_threepid", "password_reset")},
    # The OAuth 2.0 API's pages (gateway/oauth/pages.py).
    "oauth_login.html": {
        "server_name": "example.com", "csrf_token": "c", "next": "/_gateway/oauth2/consent?grant=g", "error": None,
        "username": "", "password_enabled": True, "register_url": "/_gateway/register?next=x",
        "providers": [{**_IDP, "url": "/_gateway/login/upstream/oidc-example?next=x"}],
    },
    "oauth_register.html": {
        "server_name": "example.com", "csrf_token": "c", "next": "/_gateway/account/", "error": "Taken.",
        "username": "alice", "token_required": True, "terms_url": "https://example.com/_matrix/consent?v=1.0",
        "policy_name": "Privacy Policy", "login_url": "/_gateway/login",
    },
    "oauth_consent.html": {
        "server_name": "example.com", "csrf_token": "c", "grant_id": "g", "user_id": "@alice:example.com",
        "display_name": "Alice", "device_id": "ABCDEFGHIJ", "device_grant": False,
        "scopes": ["urn:matrix:client:api:*"], "switch_url": "/_gateway/login?force=1",
        "client": {"client_name": "Element", "logo_uri": "https://app.example.org/logo.png",
                   "client_uri": "https://app.example.org/", "host": "app.example.org",
                   "tos_uri": "https://app.example.org/tos", "policy_uri": "https://app.example.org/privacy"},
    },
    "oauth_link.html": {"server_name": "example.com", "csrf_token": "c", "code": "BCDF-GHJK", "error": None},
    "oauth_device_done.html": {"server_name": "example.com", "approved": True},
    "oauth_account.html": {
        "server_name": "example.com", "csrf_token": "c", "user_id": "@alice:example.com", "display_name": "Alice",
        "action": "org.matrix.device_view", "notice": None, "error": None, "account_url": "/_gateway/account/",
        "reset_allowed": False, "needs_recent_sign_in": True,
        "devices": [{"device_id": "ABCDEFGHIJ", "display_name": "Phone", "last_seen_ts": 1700000000000,
                     "last_seen_ip": "192.0.2.1"}],
        "device": {"device_id": "ABCDEFGHIJ", "display_name": "Phone", "last_seen_ts": 1700000000000,
                   "last_seen_ip": "192.0.2.1"},
    },
}


def check_templates(env: jinja2.Environment) -> list[str]:
    """Render every page with sample data; the errors found, one line each (empty if fine)."""
    import jinja2

    errors = []
    for name, context in SAMPLE_CONTEXTS.items():
        try:
            html = env.get_template(name).render(**context)
        except jinja2.TemplateError as e:
            where = f" line {e.lineno}" if getattr(e, "lineno", None) else ""
            errors.append(f"{name}{where}: {type(e).__name__}: {e}")
            continue
        except Exception as e:  # a filter or a template bug: report, do not crash
            errors.append(f"{name}: {type(e).__name__}: {e}")
            continue
        if not html.strip():
            errors.append(f"{name}: renders as an empty page")
    return errors
