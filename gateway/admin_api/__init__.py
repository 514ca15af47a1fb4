"""/_synapse/admin: Synapse-compatible admin API (server admins only, except register)."""

from __future__ import annotations

from aiohttp import web

from ..appkeys import HS
from ..server import HomeServer
from . import federation, media, register, registration_tokens, reports, rooms, server_notices, users
from . import account_moderation, account_validity, background_updates, room_history, user_devices, user_lookup
from ..http.auth import token_auth_middleware


def build_app(hs: HomeServer) -> web.Application:
    app = web.Application(middlewares=[token_auth_middleware(admin_only=True)])
    app[HS] = hs
    app[background_updates.ENABLED] = {"enabled": True}
    for module in (register, users, registration_tokens, rooms, server_notices, federation, media, reports,
                   user_devices, user_lookup, account_moderation, account_validity, background_updates, room_history):
        app.add_routes(module.routes)
    return app
