"""/_synapse/admin: Synapse-compatible admin API."""

from __future__ import annotations

from aiohttp import web

from ..appkeys import HS
from ..server import HomeServer
from . import register


def build_app(hs: HomeServer) -> web.Application:
    app = web.Application()
    app[HS] = hs
    app.add_routes(register.routes)
    return app
