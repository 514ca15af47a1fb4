"""Push rules, pushers and the notifications list (thin handlers over ``hs.push``).

Spec: https://spec.matrix.org/latest/client-server-api/#push-rules-api,
https://spec.matrix.org/latest/client-server-api/#post_matrixclientv3pushersset and
https://spec.matrix.org/latest/client-server-api/#get_matrixclientv3notifications
"""

from __future__ import annotations

from aiohttp import web

from ..appkeys import HS
from ..http import MatrixError, json_response, read_json_body
from ..services.push import pusher_json
from .auth import requester

routes = web.RouteTableDef()

PREFIX = "/{ver:(r0|v3)}"
RULE = PREFIX + "/pushrules/{scope}/{kind}/{rule_id}"


def _rule_path(request: web.Request) -> tuple[str, str, str]:
    m = request.match_info
    request.app[HS].push.check_scope_kind(m["scope"], m["kind"])
    return requester(request).user_id, m["kind"], m["rule_id"]


@routes.get(PREFIX + "/pushrules/")
@routes.get(PREFIX + "/pushrules")
async def get_all(request: web.Request) -> web.Response:
    return json_response({"global": await request.app[HS].push.get_ruleset(requester(request).user_id)})


@routes.get(PREFIX + "/pushrules/global/")
@routes.get(PREFIX + "/pushrules/global")
async def get_global(request: web.Request) -> web.Response:
    return json_response(await request.app[HS].push.get_ruleset(requester(request).user_id))


@routes.get(RULE)
async def get_rule(request: web.Request) -> web.Response:
    return json_response(await request.app[HS].push.get_rule(*_rule_path(request)))


@routes.put(RULE)
async def put_rule(request: web.Request) -> web.Response:
    user_id, kind, rule_id = _rule_path(request)
    body = await read_json_body(request)
    await request.app[HS].push.put_rule(user_id, kind, rule_id, body, before=request.query.get("before"),
                                        after=request.query.get("after"))
    return json_response({})


@routes.delete(RULE)
async def delete_rule(request: web.Request) -> web.Response:
    await request.app[HS].push.delete_rule(*_rule_path(request))
    return json_response({})


@routes.get(RULE + "/{attr:(enabled|actions)}")
async def get_attr(request: web.Request) -> web.Response:
    rule = await request.app[HS].push.get_rule(*_rule_path(request))
    attr = request.match_info["attr"]
    return json_response({attr: rule[attr]})


@routes.put(RULE + "/{attr:(enabled|actions)}")
async def put_attr(request: web.Request) -> web.Response:
    push = request.app[HS].push
    user_id, kind, rule_id = _rule_path(request)
    body = await read_json_body(request)
    attr = request.match_info["attr"]
    if attr not in body:
        raise MatrixError.missing_param(f"'{attr}' is required")
    if attr == "enabled":
        await push.set_enabled(user_id, kind, rule_id, body["enabled"])
    else:
        await push.set_actions(user_id, kind, rule_id, body["actions"])
    return json_response({})


# --- pushers --------------------------------------------------------------------------


@routes.get(PREFIX + "/pushers")
async def get_pushers(request: web.Request) -> web.Response:
    found = await request.app[HS].push.get_pushers(requester(request).user_id)
    return json_response({"pushers": [pusher_json(p) for p in found]})


@routes.post(PREFIX + "/pushers/set")
async def set_pusher(request: web.Request) -> web.Response:
    who = requester(request)
    await request.app[HS].push.set_pusher(who.user_id, who.device_id, await read_json_body(request))
    return json_response({})


# --- notifications ----------------------------------------------------------------------


@routes.get(PREFIX + "/notifications")
async def notifications(request: web.Request) -> web.Response:
    hs = request.app[HS]
    user_id = requester(request).user_id
    q = request.query
    try:
        limit = max(1, min(int(q.get("limit", "20")), 100))
        before = int(q["from"]) if q.get("from") else None
    except ValueError:
        raise MatrixError.invalid_param("'limit' and 'from' must be integers") from None
    only = q.get("only")
    found = await hs.push.get_notifications(user_id, before=before, limit=limit, only_highlight=only == "highlight")
    pdus = await hs.events.get_pdus([a.event_id for a in found])
    events = await hs.events.serialize_for_client([pdus[a.event_id] for a in found if a.event_id in pdus])
    by_id = {e["event_id"]: e for e in events}
    read_upto = await hs.receipts.store.get_read_positions(user_id, sorted({a.room_id for a in found}))
    chunk = [{"actions": a.actions, "event": by_id[a.event_id], "room_id": a.room_id,
              "read": a.stream_ordering <= read_upto.get(a.room_id, 0),
              "ts": by_id[a.event_id]["origin_server_ts"]} for a in found if a.event_id in by_id]
    body = {"notifications": chunk}
    if len(found) == limit:
        body["next_token"] = str(found[-1].stream_ordering)
    return json_response(body)
