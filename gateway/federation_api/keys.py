"""Publishing our server keys.

Spec: server-server API, "Publishing Keys".
https://spec.matrix.org/latest/server-server-api/#get_matrixkeyv2server
"""

from __future__ import annotations

from aiohttp import web

from federation.signing import encode_verify_key, sign_json

from ..appkeys import HS
from ..http import json_response
from ..server import HomeServer

routes = web.RouteTableDef()


def server_keys_response(hs: HomeServer) -> dict:
    """Our signed key document: current key, old keys, validity."""
    key = hs.signing_key
    doc = {
        "server_name": hs.server_name,
        "verify_keys": {key.key_id: {"key": encode_verify_key(key.verify_key)}},
        "old_verify_keys": {
            key_id: {"key": entry["key"], "expired_ts": entry["expired_ts"]}
            for key_id, entry in hs.config.old_signing_keys.items()
            if key_id != key.key_id
        },
        "valid_until_ts": hs.clock_ms() + hs.config.key_refresh_interval_ms,
    }
    return sign_json(doc, hs.server_name, key)


@routes.get("/v2/server")
@routes.get("/v2/server/{key_id}")
async def get_server_keys(request: web.Request) -> web.Response:
    # The key ID form is deprecated in the spec; servers answer with all keys.
    return json_response(server_keys_response(request.app[HS]))


def build_app(hs: HomeServer) -> web.Application:
    app = web.Application()
    app[HS] = hs
    app.add_routes(routes)
    from . import notary  # the notary endpoints live under /_matrix/key too

    app.add_routes(notary.routes)
    return app
