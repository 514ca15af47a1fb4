"""Relationships and threads: ``GET /v1/rooms/{roomId}/relations/{eventId}[/{relType}[/{eventType}]]``
and ``GET /v1/rooms/{roomId}/threads``.

Spec: https://spec.matrix.org/latest/client-server-api/#relationships-api and
https://spec.matrix.org/latest/client-server-api/#querying-threads-in-a-room

/relations tokens are the ``s<position>`` tokens of /messages (a /messages or /sync
token works as ``from`` or ``to``). /threads tokens are ``t<position>``: the latest reply
of a page's last thread (threads continue below it).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from ..appkeys import HS
from ..http import MatrixError, json_response
from ..services.relations import RECURSION_DEPTH
from .auth import requester
from .rooms import MAX_MESSAGES_LIMIT, parse_token

routes = web.RouteTableDef()

#: Page sizes when the client gives none (as Synapse).
DEFAULT_LIMIT = 5


def _limit(request: web.Request, *, minimum: int) -> int:
    raw = request.query.get("limit")
    if raw is None:
        return DEFAULT_LIMIT
    try:
        limit = int(raw)
    except ValueError:
        raise MatrixError.invalid_param("'limit' must be an integer") from None
    if limit < minimum:
        raise MatrixError.invalid_param(f"'limit' must be at least {minimum}")
    return min(limit, MAX_MESSAGES_LIMIT)


def _device(request: web.Request) -> tuple[str, str]:
    who = requester(request)
    return (who.user_id, who.device_id or "")


@routes.get("/v1/rooms/{room_id}/relations/{event_id}")
@routes.get("/v1/rooms/{room_id}/relations/{event_id}/{rel_type}")
@routes.get("/v1/rooms/{room_id}/relations/{event_id}/{rel_type}/{event_type}")
async def relations(request: web.Request) -> web.Response:
    q = request.query
    direction = q.get("dir", "b")
    if direction not in ("b", "f"):
        raise MatrixError.invalid_param("'dir' must be 'b' or 'f'")
    recurse_raw = q.get("recurse", q.get("org.matrix.msc3981.recurse"))
    if recurse_raw not in (None, "true", "false"):
        raise MatrixError.invalid_param("'recurse' must be 'true' or 'false'")
    limit = _limit(request, minimum=0)
    from_pos = parse_token(q["from"]) if q.get("from") else None
    to_pos = parse_token(q["to"]) if q.get("to") else None
    page = await request.app[HS].relations.get_relations(
        requester(request).user_id, _device(request), request.match_info["room_id"], request.match_info["event_id"],
        rel_type=request.match_info.get("rel_type"), event_type=request.match_info.get("event_type"),
        from_pos=from_pos, to_pos=to_pos, backwards=direction == "b", limit=limit, recurse=recurse_raw == "true",
    )
    body: dict[str, Any] = {"chunk": page.events}
    if page.next_position is not None:
        body["next_batch"] = f"s{page.next_position}"
    if q.get("from"):
        body["prev_batch"] = q["from"]
    if recurse_raw is not None:
        body["recursion_depth"] = RECURSION_DEPTH if recurse_raw == "true" else 1
    return json_response(body)


def _thread_token(token: str) -> int:
    try:
        if token.startswith("t"):
            return int(token[1:])
    except ValueError:
        pass
    raise MatrixError.invalid_param("Unknown pagination token")


@routes.get("/v1/rooms/{room_id}/threads")
async def threads(request: web.Request) -> web.Response:
    q = request.query
    include = q.get("include", "all")
    if include not in ("all", "participated"):
        raise MatrixError.invalid_param("'include' must be 'all' or 'participated'")
    limit = _limit(request, minimum=1)
    before = _thread_token(q["from"]) if q.get("from") else None
    page = await request.app[HS].relations.list_threads(
        requester(request).user_id, _device(request), request.match_info["room_id"],
        participated=include == "participated", limit=limit, before=before)
    body: dict[str, Any] = {"chunk": page.roots}
    if page.next_position is not None:
        body["next_batch"] = f"t{page.next_position}"
    return json_response(body)
