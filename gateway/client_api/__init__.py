"""/_matrix/client: the client-server API (thin handlers)."""

from __future__ import annotations

from aiohttp import web

from ..appkeys import HS
from ..http import json_response
from ..server import HomeServer
from . import account, directory, event_context, login, openid, profile, push_rules, register, rooms, user_directory
from . import account_data, keys, media, receipts, relations, room_keys, search, sync, to_device, typing
from . import admin, mutual_rooms, spaces
from . import report_content, room_upgrades
from . import legacy_sync
from . import oauth
from . import voip
from . import appservice
from .auth import access_token_middleware, public

routes = web.RouteTableDef()

#: Spec versions we aim to serve.
SUPPORTED_VERSIONS = ["v1.1", "v1.2", "v1.3", "v1.4", "v1.5", "v1.6", "v1.7", "v1.8", "v1.9",
                      "v1.10", "v1.11", "v1.12"]


@routes.get("/versions")
@public
async def get_versions(request: web.Request) -> web.Response:
    """Spec: https://spec.matrix.org/latest/client-server-api/#get_matrixclientversions"""
    return json_response({"versions": SUPPORTED_VERSIONS, "unstable_features": {}})


def build_app(hs: HomeServer) -> web.Application:
    app = web.Application(middlewares=[access_token_middleware])
    app[HS] = hs
    for module_routes in (routes, login.routes, register.routes, account.routes, profile.routes, openid.routes,
                          rooms.routes, directory.routes, event_context.routes, push_rules.routes,
                          user_directory.routes, sync.routes, typing.routes, receipts.routes,
                          account_data.routes, media.routes, keys.routes, room_keys.routes,
                          to_device.routes, room_upgrades.routes, report_content.routes, relations.routes, search.routes):
        app.add_routes(module_routes)
    for module_routes in (admin.routes, mutual_rooms.routes, spaces.routes, oauth.routes, appservice.routes):
        app.add_routes(module_routes)
    app.add_routes(legacy_sync.routes)
    app.add_routes(voip.routes)
    if hs.config.media.url_preview_enabled:
        app.add_routes(media.preview_routes)

    async def wake_long_polls(_app: web.Application) -> None:
        if "notifier" in hs.__dict__:
            hs.notifier.shutdown()  # waiting /sync requests answer now, not after their timeout

    app.on_shutdown.append(wake_long_polls)
    return app
