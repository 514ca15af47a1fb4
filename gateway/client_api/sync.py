"""GET /sync.

Spec: https://spec.matrix.org/latest/client-server-api/#get_matrixclientv3sync
"""

from __future__ import annotations


from aiohttp import web

from federation.canonical_json import parse_json
from ..appkeys import HS
from ..http import MatrixError, large_json_response
from ..services.filtering import SyncFilter
from ..storage.profiles import FilterStore
from .auth import guest_allowed, requester

routes = web.RouteTableDef()


async def _filter(request: web.Request, user_id: str) -> SyncFilter:
    """``filter``: inline JSON (starts with ``{``) or the ID of a stored filter."""
    raw = request.query.get("filter")
    if raw is None or raw == "":
        return SyncFilter()
    if raw.lstrip().startswith("{"):
        try:
            obj = parse_json(raw)
        except ValueError:
            raise MatrixError.invalid_param("'filter' is not valid JSON") from None
        try:
            return SyncFilter.parse(obj)
        except MatrixError as e:
            raise MatrixError.invalid_param(e.error) from None
    try:
        filter_id = int(raw)
    except ValueError:
        raise MatrixError.invalid_param(f"'filter' is neither JSON nor a filter ID: {raw[:64]!r}") from None
    stored = await FilterStore(request.app[HS].db).get_filter(user_id, filter_id)
    if stored is None:
        raise MatrixError.invalid_param(f"No filter with ID {filter_id}")
    try:
        return SyncFilter.parse(stored)
    except MatrixError as e:
        raise MatrixError.invalid_param(f"Stored filter {filter_id} is invalid: {e.error}") from None


@routes.get("/{ver:(r0|v3)}/sync")
@guest_allowed
async def sync(request: web.Request) -> web.Response:
    who = requester(request)
    q = request.query
    try:
        timeout = int(q.get("timeout", "0"))
    except ValueError:
        raise MatrixError.invalid_param("'timeout' must be an integer (milliseconds)") from None
    full_state = q.get("full_state", "false")
    if full_state not in ("true", "false"):
        raise MatrixError.invalid_param("'full_state' must be 'true' or 'false'")
    if q.get("set_presence", "online") not in ("online", "offline", "unavailable"):
        raise MatrixError.invalid_param("'set_presence' must be 'online', 'offline' or 'unavailable'")
    # v1.16's ``use_state_after``, or its unstable name (MSC4222) with unstable section names.
    unstable = "org.matrix.msc4222.use_state_after" in q and "use_state_after" not in q
    state_after = q.get("org.matrix.msc4222.use_state_after" if unstable else "use_state_after", "false")
    if state_after not in ("true", "false"):
        raise MatrixError.invalid_param("'use_state_after' must be 'true' or 'false'")
    flt = await _filter(request, who.user_id)
    await request.app[HS].user_directory.user_syncing(who.user_id, q.get("set_presence", "online"))
    body = await request.app[HS].sync.sync(
        who.user_id, who.device_id, since=q.get("since") or None, flt=flt, full_state=full_state == "true",
        timeout_ms=timeout, use_state_after=state_after == "true",
    )
    if unstable and state_after == "true":
        for section in ("join", "leave"):
            for room in body["rooms"][section].values():
                room["org.matrix.msc4222.state_after"] = room.pop("state_after")
    return large_json_response(body)
