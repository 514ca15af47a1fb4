"""Serving other servers' keys as a notary.

Spec: https://spec.matrix.org/latest/server-server-api/#querying-keys-through-another-server
Every returned key response is counter-signed by us.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from federation.signing import sign_json

from ..appkeys import HS
from ..http import MatrixError, json_response, read_json_body
from ..server import HomeServer
from .keys import server_keys_response

routes = web.RouteTableDef()

MAX_SERVERS_PER_QUERY = 100


async def _docs_for(hs: HomeServer, server_name: str, minimum_valid_until_ts: int) -> list[dict[str, Any]]:
    if server_name == hs.server_name:
        return [server_keys_response(hs)]
    docs = await hs.keyring.key_docs_for_notary(server_name, minimum_valid_until_ts)
    return [sign_json(d, hs.server_name, hs.signing_key) for d in docs]


def _minimum(value: Any, where: str) -> int:
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int):
        raise MatrixError.bad_json(f"{where}: minimum_valid_until_ts must be an integer")
    return value


@routes.post("/v2/query")
async def post_query(request: web.Request) -> web.Response:
    hs = request.app[HS]
    body = await read_json_body(request)
    wanted = body.get("server_keys")
    if not isinstance(wanted, dict):
        raise MatrixError.bad_json("server_keys must be an object")
    if len(wanted) > MAX_SERVERS_PER_QUERY:
        raise MatrixError.bad_json(f"at most {MAX_SERVERS_PER_QUERY} servers per query")
    out: list[dict[str, Any]] = []
    for server_name, key_ids in wanted.items():
        if not isinstance(key_ids, dict):
            raise MatrixError.bad_json(f"server_keys.{server_name} must be an object")
        minimum = max(
            [_minimum(c.get("minimum_valid_until_ts") if isinstance(c, dict) else None, f"server_keys.{server_name}")
             for c in key_ids.values()] or [0]
        )
        out += await _docs_for(hs, server_name, minimum)
    return json_response({"server_keys": out})


@routes.get("/v2/query/{server_name}")
async def get_query(request: web.Request) -> web.Response:
    hs = request.app[HS]
    raw = request.query.get("minimum_valid_until_ts")
    try:
        minimum = int(raw) if raw is not None else 0
    except ValueError:
        raise MatrixError.invalid_param("minimum_valid_until_ts must be an integer") from None
    return json_response({"server_keys": await _docs_for(hs, request.match_info["server_name"], minimum)})
