"""/_matrix/federation: the server-server API (thin handlers)."""

from __future__ import annotations

from aiohttp import web

from .. import __version__
from ..appkeys import HS
from ..http import json_response
from ..server import HomeServer
from .auth import public, x_matrix_middleware

routes = web.RouteTableDef()


@routes.get("/v1/version")
@public
async def get_version(request: web.Request) -> web.Response:
    """Spec: https://spec.matrix.org/latest/server-server-api/#get_matrixfederationv1version"""
    return json_response({"server": {"name": "Gateway", "version": __version__}})


def build_app(hs: HomeServer) -> web.Application:
    # The handlers' modules are imported by a listener that serves federation (a client
    # listener serves only federation media downloads: build_media_app).
    from . import media, membership, public_rooms, query, room_data, spaces, transactions, user_keys

    app = web.Application(middlewares=[x_matrix_middleware])
    app[HS] = hs
    app.add_routes(routes)
    app.add_routes(query.routes)
    app.add_routes(public_rooms.routes)
    if hs.roles.media_repo:  # enable_media_repo: false when a media worker serves them
        app.add_routes(media.routes)
    app.add_routes(transactions.routes)
    app.add_routes(room_data.routes)
    app.add_routes(membership.routes)
    app.add_routes(user_keys.routes)
    app.add_routes(spaces.routes)
    return app


def build_media_app(hs: HomeServer) -> web.Application:
    """/_matrix/federation for a listener serving ``media`` without ``federation`` (a
    media worker): other servers' downloads of our media."""
    from . import media

    app = web.Application(middlewares=[x_matrix_middleware])
    app[HS] = hs
    app.add_routes(media.routes)
    return app
