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
from . import threepids
from .auth import access_token_middleware, public

routes = web.RouteTableDef()

#: Spec versions whose Client-Server API we serve in full (the r0 ones: their paths are
#: served beside v3). v1.16: /sync's ``use_state_after``, the state endpoint's ``format``,
#: extended profile fields and ``m.profile_fields``, ``additional_creators`` in createRoom
#: and /upgrade, the create event in stripped state. Issue 15 owns this list: advertise a
#: version only when everything it requires is served.
SUPPORTED_VERSIONS = ["r0.0.1", "r0.1.0", "r0.2.0", "r0.3.0", "r0.4.0", "r0.5.0", "r0.6.0", "r0.6.1",
                      "v1.1", "v1.2", "v1.3", "v1.4", "v1.5", "v1.6", "v1.7", "v1.8", "v1.9",
                      "v1.10", "v1.11", "v1.12", "v1.13", "v1.14", "v1.15", "v1.16"]

#: Proposals we implement that clients look for here (matrix-js-sdk, Element), by the
#: names Synapse uses.
UNSTABLE_FEATURES = {
    "org.matrix.e2e_cross_signing": True,  # cross-signing keys
    "org.matrix.msc2285.stable": True,  # private read receipts (m.read.private)
    "uk.half-shot.msc2666.query_mutual_rooms": True,  # /unstable/uk.half-shot.msc2666/user/mutual_rooms
    "uk.half-shot.msc2666.query_mutual_rooms.stable": True,  # /v1/mutual_rooms
    "org.matrix.msc3440.stable": True,  # threads
    "org.matrix.msc3771": True,  # threaded read receipts
    "org.matrix.msc3773": True,  # threaded unread counts in /sync
    "org.matrix.msc3827.stable": True,  # room_types in the public room list filter
    "org.matrix.msc3981": True,  # /relations recurse
    "org.matrix.msc4222": True,  # /sync's state_after (also by its stable v1.16 name)
    "uk.tcpip.msc4133.stable": True,  # extended profile fields
}


@routes.get("/versions")
@public
async def get_versions(request: web.Request) -> web.Response:
    """Spec: https://spec.matrix.org/latest/client-server-api/#get_matrixclientversions"""
    return json_response({"versions": SUPPORTED_VERSIONS, "unstable_features": UNSTABLE_FEATURES})


def add_media_routes(app: web.Application, hs: HomeServer) -> None:
    """The authenticated media endpoints (``/v1/media/...``)."""
    app.add_routes(media.routes)
    if hs.config.media.url_preview_enabled:
        app.add_routes(media.preview_routes)


def build_media_app(hs: HomeServer) -> web.Application:
    """/_matrix/client for a listener serving ``media`` without ``client`` (a media
    worker): the authenticated media endpoints only."""
    app = web.Application(middlewares=[access_token_middleware])
    app[HS] = hs
    add_media_routes(app, hs)
    return app


def build_app(hs: HomeServer) -> web.Application:
    app = web.Application(middlewares=[access_token_middleware])
    app[HS] = hs
    for module_routes in (routes, login.routes, register.routes, account.routes, profile.routes, openid.routes,
                          rooms.routes, directory.routes, event_context.routes, push_rules.routes,
                          user_directory.routes, sync.routes, typing.routes, receipts.routes,
                          account_data.routes, keys.routes, room_keys.routes,
                          to_device.routes, room_upgrades.routes, report_content.routes, relations.routes, search.routes):
        app.add_routes(module_routes)
    for module_routes in (admin.routes, mutual_rooms.routes, spaces.routes, oauth.routes, appservice.routes):
        app.add_routes(module_routes)
    app.add_routes(legacy_sync.routes)
    app.add_routes(voip.routes)
    app.add_routes(threepids.routes)
    if hs.roles.media_repo:  # enable_media_repo: false when a media worker serves them
        add_media_routes(app, hs)

    async def wake_long_polls(_app: web.Application) -> None:
        if "notifier" in hs.__dict__:
            hs.notifier.shutdown()  # waiting /sync requests answer now, not after their timeout

    app.on_shutdown.append(wake_long_polls)
    return app
