"""The aiohttp application factory: one app per listener, serving the resources it names.

Resources follow Synapse's names: ``client`` serves /_matrix/client, /_synapse/client and
/_synapse/admin; ``federation`` serves /_matrix/federation (and implies ``keys``);
``keys`` serves /_matrix/key; ``metrics`` serves /_synapse/metrics; ``health`` /health.
Each API is a sub-app so that its authentication middleware stays its own.
"""

from __future__ import annotations

import logging
from typing import Iterator

from aiohttp import web

from . import admin_api, client_api, federation_tester_api, wellknown
from .consent_api import add_consent_routes
from .threepid_pages import add_threepid_pages
from .sso_api import add_sso_routes
from .appkeys import HS, install_services
from .config import ListenerConfig
from .http.middleware import (
    access_log_middleware,
    add_cors_headers,
    body_limit_middleware,
    cors_middleware,
    error_middleware,
    x_forwarded_middleware,
)
from .metrics import metrics_handler, metrics_observer
from .server import HomeServer

log = logging.getLogger(__name__)


async def health(request: web.Request) -> web.Response:
    return web.Response(text="OK")


def build_listener_app(hs: HomeServer, listener: ListenerConfig) -> web.Application:
    tag = listener.tag or str(listener.port)
    middlewares = [x_forwarded_middleware] if listener.x_forwarded else []
    app = web.Application(
        middlewares=middlewares + [
            # Outermost, so it logs the status the client really gets.
            access_log_middleware(tag, observe=metrics_observer(tag)),
            error_middleware,
            cors_middleware,
            # Uploads are streamed to disk and have their own limit (max_upload_size).
            body_limit_middleware(hs.config.max_request_body_size,
                                  {"/_matrix/media/": hs.config.media.max_upload_size}),
        ],
        client_max_size=hs.config.max_request_body_size,
    )
    app.on_response_prepare.append(add_cors_headers)
    app[HS] = hs
    install_services(app, hs)
    res = listener.resources
    if "client" in res:
        add_sso_routes(app, hs)  # before /_matrix/client: its SSO redirect paths are more specific
        if hs.config.oauth.enabled:
            from .oauth_api import add_oauth_routes
            from .sso_api import SSO_HANDLER

            add_oauth_routes(app, hs, app[SSO_HANDLER])
        _add_module_resources(app, hs)
        add_threepid_pages(app)  # validation links of our mails, some under /_matrix/client
        app.add_subapp("/_matrix/client", client_api.build_app(hs))
        app.add_subapp("/_synapse/admin", admin_api.build_app(hs))
        app.add_subapp("/_gateway/federation-tester", federation_tester_api.build_app(hs))
    elif "media" in res and hs.roles.media_repo:  # a media worker: /_matrix/client/v1/media
        app.add_subapp("/_matrix/client", client_api.build_media_app(hs))
    if "client" in res or "consent" in res:
        add_consent_routes(app)  # /_matrix/consent, when user_consent is configured
    # The APIs below are imported only by a listener that serves them (fewer modules, less
    # memory for a client-only listener or worker: docs/performance.md, "Memory").
    if "federation" in res:
        from . import federation_api

        app.add_subapp("/_matrix/federation", federation_api.build_app(hs))
    elif "media" in res and hs.roles.media_repo:  # a media worker: /_matrix/federation/v1/media
        from . import federation_api

        app.add_subapp("/_matrix/federation", federation_api.build_media_app(hs))
    if "media" in res and hs.roles.media_repo:  # enable_media_repo: false when a media worker serves it
        from . import media_api

        app.add_subapp("/_matrix/media", media_api.build_app(hs))
    if "keys" in res:
        from .federation_api import keys as keys_api

        app.add_subapp("/_matrix/key", keys_api.build_app(hs))
    if "client" in res or "federation" in res:
        app.add_routes(wellknown.routes)
    if "replication" in res:  # writes other processes forward to this one's streams
        from . import replication_api

        app.add_subapp("/_synapse/replication", replication_api.build_app(hs.stream_writers))
    if "metrics" in res:
        app.router.add_get("/_synapse/metrics", metrics_handler)
        app.router.add_get("/metrics", metrics_handler)
    if "health" in res or listener.type == "http":
        app.router.add_get("/health", health)
    return app


def iter_routes(app: web.Application) -> Iterator[tuple[str, web.AbstractResource, web.AbstractRoute]]:
    """(method, resource, route) of every route ``app`` serves, sub-apps included (their
    resources carry the sub-app's prefix); HEAD, which aiohttp adds beside GET, is left out."""
    for resource in app.router.resources():
        info = resource.get_info()
        for res in info["app"].router.resources() if "app" in info else [resource]:
            for route in res:
                if route.method != "HEAD":
                    yield route.method, res, route


def _add_module_resources(app: web.Application, hs: HomeServer) -> None:
    """Pages modules registered (``ModuleApi.register_web_resource``), on client listeners."""
    for path, resource in hs.modules.web_resources.items():
        if isinstance(resource, web.Application):
            if resource.frozen:  # already mounted on another client listener
                log.warning("module pages at %s are served on the first client listener only", path)
                continue
            resource[HS] = hs
            app.add_subapp(path.rstrip("/"), resource)
        else:
            app.router.add_route("*", path, resource)
