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
    """Our signed key document: current key, old keys, validity; and the keys of the
    federation tester's runs in progress (gateway/services/tester_keys.py), each signing too."""
    key = hs.signing_key
    run_keys = hs.tester_keys.published()
    doc = {
        "server_name": hs.server_name,
        "verify_keys": {k.key_id: {"key": encode_verify_key(k.verify_key)} for k in [key, *run_keys]},
        "old_verify_keys": {
            key_id: {"key": entry["key"], "expired_ts": entry["expired_ts"]}
            for key_id, entry in hs.config.old_signing_keys.items()
            if key_id != key.key_id
        },
        "valid_until_ts": hs.clock_ms() + hs.config.key_refresh_interval_ms,
    }
    signed = sign_json(doc, hs.server_name, key)
    for run_key in run_keys:
        signed = sign_json(signed, hs.server_name, run_key)
    return signed


@routes.get("/v2/server")
@routes.get("/v2/server/{key_id}")
async def get_server_keys(request: web.Request) -> web.Response:
    # The key ID form is deprecated in the spec; servers answer with all keys.
    hs = request.app[HS]
    hs.tester_keys.note_fetch(request.remote, request.headers.get("User-Agent"), request.match_info.get("key_id"))
    return json_response(server_keys_response(hs))


def build_app(hs: HomeServer) -> web.Application:
    app = web.Application()
    app[HS] = hs
    app.add_routes(routes)
    from . import notary  # the notary endpoints live under /_matrix/key too

    app.add_routes(notary.routes)
    return app
