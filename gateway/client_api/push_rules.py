"""Push rules, pushers and the notifications list (thin handlers over ``hs.push``).

Spec: https://spec.matrix.org/latest/client-server-api/#push-rules-api,
https://spec.matrix.org/latest/client-server-api/#post_matrixclientv3pushersset and
https://spec.matrix.org/latest/client-server-api/#get_matrixclientv3notifications
"""

from __future__ import annotations

from urllib.parse import unquote

from aiohttp import web

from ..appkeys import HS
from ..http import Codes, MatrixError, json_response, read_json_body
from ..services.push import pusher_json
from ..services.threepids import canonical_email
from .auth import requester

routes = web.RouteTableDef()

PREFIX = "/{ver:(r0|v3)}"
ATTRS = ("enabled", "actions")


def _rule_path(request: web.Request) -> list[str]:
    """The segments after ``/pushrules/``, split on the raw path and each then decoded
    (a rule ID may hold an encoded ``/``; it is refused later, not taken as a separator).

    As the spec writes the paths (and as Synapse serves them), a trailing slash asks for
    a list: ``/pushrules/`` (everything), ``/pushrules/global/`` (the scope),
    ``/pushrules/global/room/`` (one kind); ``/pushrules/global`` names nothing."""
    raw = request.rel_url.raw_path
    tail = raw[raw.index("/pushrules/") + len("/pushrules/"):]
    return [unquote(part) for part in tail.split("/")]


def _scope_kind(request: web.Request, parts: list[str]) -> str:
    if len(parts) < 2 or (len(parts) == 2 and parts[1] != ""):
        raise MatrixError.invalid_param("Push rule paths are /pushrules/<scope>/ or "
                                        "/pushrules/<scope>/<kind>/[<rule_id>[/<attribute>]]")
    request.app[HS].push.check_scope_kind(parts[0], parts[1] or None)
    return parts[1]


def _rule_id(parts: list[str], *, allow_attr: bool) -> tuple[str, str | None]:
    """(rule_id, attribute or None) of ``<scope>/<kind>/<rule_id>[/<attribute>]``."""
    if len(parts) > 4 or (len(parts) == 4 and not allow_attr):
        raise MatrixError.invalid_param("Push rule IDs may not contain '/'")
    rule_id = parts[2]
    if not rule_id:
        raise MatrixError.invalid_param("The push rule ID is missing")
    attr = parts[3] if len(parts) == 4 else None
    if attr is not None and attr not in ATTRS:
        raise MatrixError.invalid_param("A push rule's attributes are 'enabled' and 'actions'")
    return rule_id, attr


@routes.get(PREFIX + "/pushrules/{tail:.*}")
async def get_rules(request: web.Request) -> web.Response:
    push = request.app[HS].push
    user_id = requester(request).user_id
    parts = _rule_path(request)
    if parts == [""]:
        return json_response({"global": await push.get_ruleset(user_id)})
    kind = _scope_kind(request, parts)
    ruleset = await push.get_ruleset(user_id)
    if not kind:
        return json_response(ruleset)
    if len(parts) == 3 and not parts[2]:
        return json_response(ruleset.get(kind, []))
    rule_id, attr = _rule_id(parts, allow_attr=True)
    rule = await push.get_rule(user_id, kind, rule_id)
    return json_response(rule if attr is None else {attr: rule[attr]})


@routes.put(PREFIX + "/pushrules/{tail:.*}")
async def put_rule(request: web.Request) -> web.Response:
    push = request.app[HS].push
    user_id = requester(request).user_id
    parts = _rule_path(request)
    kind = _scope_kind(request, parts)
    if not kind:
        raise MatrixError.invalid_param("The push rule kind is missing")
    rule_id, attr = _rule_id(parts, allow_attr=True)
    body = await read_json_body(request)
    if attr is None:
        await push.put_rule(user_id, kind, rule_id, body, before=request.query.get("before"),
                            after=request.query.get("after"))
    elif attr not in body:
        raise MatrixError.missing_param(f"'{attr}' is required")
    elif attr == "enabled":
        await push.set_enabled(user_id, kind, rule_id, body["enabled"])
    else:
        await push.set_actions(user_id, kind, rule_id, body["actions"])
    return json_response({})


@routes.delete(PREFIX + "/pushrules/{tail:.*}")
async def delete_rule(request: web.Request) -> web.Response:
    parts = _rule_path(request)
    kind = _scope_kind(request, parts)
    if not kind:
        raise MatrixError.invalid_param("The push rule kind is missing")
    rule_id, _ = _rule_id(parts, allow_attr=False)
    await request.app[HS].push.delete_rule(requester(request).user_id, kind, rule_id)
    return json_response({})


# --- pushers --------------------------------------------------------------------------


@routes.get(PREFIX + "/pushers")
async def get_pushers(request: web.Request) -> web.Response:
    found = await request.app[HS].push.get_pushers(requester(request).user_id)
    return json_response({"pushers": [pusher_json(p) for p in found]})


@routes.post(PREFIX + "/pushers/set")
async def set_pusher(request: web.Request) -> web.Response:
    who = requester(request)
    body = await read_json_body(request)
    hs = request.app[HS]
    if body.get("kind") == "email" and isinstance(body.get("pushkey"), str):
        # Missed-message mails go to an address of the account only (as Synapse).
        if await hs.threepids.user_of("email", body["pushkey"]) != who.user_id:
            raise MatrixError(400, Codes.THREEPID_NOT_FOUND, "This e-mail address is not on your account")
        body = {**body, "pushkey": canonical_email(body["pushkey"])}
    await hs.push.set_pusher(who.user_id, who.device_id, body)
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
    # profile_tag: rules no longer have profile tags; null as Synapse sends it.
    chunk = [{"actions": a.actions, "event": by_id[a.event_id], "room_id": a.room_id, "profile_tag": None,
              "read": a.stream_ordering <= read_upto.get(a.room_id, 0),
              "ts": by_id[a.event_id]["origin_server_ts"]} for a in found if a.event_id in by_id]
    body = {"notifications": chunk}
    if len(found) == limit:
        body["next_token"] = str(found[-1].stream_ordering)
    return json_response(body)
