"""Serving other servers' keys as a notary.

Spec: https://spec.matrix.org/latest/server-server-api/#querying-keys-through-another-server
Every returned key response is counter-signed by us.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from federation.keyring import valid_server_name
from federation.signing import sign_json

from ..appkeys import HS
from ..http import MatrixError, json_response, read_json_body
from ..server import HomeServer
from .keys import server_keys_response

routes = web.RouteTableDef()

MAX_SERVERS_PER_QUERY = 100


async def _docs_for(hs: HomeServer, server_name: str, minimum_valid_until_ts: int,
                    key_ids: list[str] | None = None) -> list[dict[str, Any]]:
    if server_name == hs.server_name:
        return [server_keys_response(hs)]
    if not valid_server_name(server_name):
        return []  # nothing to fetch; the spec's answer for an unreachable server
    docs = await hs.keyring.key_docs_for_notary(server_name, minimum_valid_until_ts, key_ids or ())
    return [sign_json(d, hs.server_name, hs.signing_key) for d in docs]


def _minimum(value: Any, where: str, now: int) -> int:
    """``minimum_valid_until_ts``, the current time when absent (spec: MUST)."""
    if value is None:
        return now
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
    now = hs.clock_ms()
    jobs = []
    for server_name, key_ids in wanted.items():
        if not isinstance(key_ids, dict):
            raise MatrixError.bad_json(f"server_keys.{server_name} must be an object")
        for key_id, criteria in key_ids.items():
            if criteria is not None and not isinstance(criteria, dict):
                raise MatrixError.bad_json(f"server_keys.{server_name}.{key_id} must be an object")
        minimum = max(
            [_minimum((c or {}).get("minimum_valid_until_ts"), f"server_keys.{server_name}", now)
             for c in key_ids.values()] or [now]
        )
        jobs.append(_docs_for(hs, server_name, minimum, list(key_ids)))
    # The servers are fetched concurrently (the key fetchers bound the concurrency).
    out = [doc for docs in await asyncio.gather(*jobs) for doc in docs]
    return json_response({"server_keys": out})


@routes.get("/v2/query/{server_name}")
@routes.get("/v2/query/{server_name}/{key_id}")
async def get_query(request: web.Request) -> web.Response:
    """``GET /query/{serverName}``; with a ``/{keyId}`` too, the form the spec had before
    (dropped from it, still served by Synapse and called by servers in the field)."""
    hs = request.app[HS]
    raw = request.query.get("minimum_valid_until_ts")
    try:
        minimum = int(raw) if raw is not None else hs.clock_ms()
    except ValueError:
        raise MatrixError.invalid_param("minimum_valid_until_ts must be an integer") from None
    key_id = request.match_info.get("key_id")
    docs = await _docs_for(hs, request.match_info["server_name"], minimum, [key_id] if key_id else None)
    return json_response({"server_keys": docs})
