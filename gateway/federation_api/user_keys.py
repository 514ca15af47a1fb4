"""End-to-end encryption over federation: our users' devices and keys for other servers.

Spec: https://spec.matrix.org/latest/server-server-api/#end-to-end-encryption and
https://spec.matrix.org/latest/server-server-api/#get_matrixfederationv1userdevicesuserid
"""

from __future__ import annotations

from aiohttp import web

from ..appkeys import HS
from ..http import MatrixError, json_response, read_json_body

routes = web.RouteTableDef()


def _only_local(hs, users) -> None:
    if not isinstance(users, dict):
        raise MatrixError.bad_json("expected an object of user IDs")
    for user_id in users:
        if not hs.e2e_keys.is_mine(user_id):
            raise MatrixError.invalid_param(f"{str(user_id)[:64]} is not a user of this server")


@routes.get("/v1/user/devices/{user_id}")
async def user_devices(request: web.Request) -> web.Response:
    hs = request.app[HS]
    user_id = request.match_info["user_id"]
    if not hs.e2e_keys.is_mine(user_id):
        raise MatrixError.invalid_param("That user is not on this server")
    return json_response(await hs.e2e_keys.get_user_devices(user_id))


@routes.post("/v1/user/keys/query")
async def user_keys_query(request: web.Request) -> web.Response:
    hs = request.app[HS]
    body = await read_json_body(request)
    query = body.get("device_keys")
    _only_local(hs, query)
    answer = await hs.e2e_keys.query_keys(None, query, local_only=True)
    answer.pop("failures", None)
    return json_response(answer)


@routes.post("/v1/user/keys/claim")
async def user_keys_claim(request: web.Request) -> web.Response:
    hs = request.app[HS]
    body = await read_json_body(request)
    query = body.get("one_time_keys")
    _only_local(hs, query)
    answer = await hs.e2e_keys.claim_keys(query, local_only=True)
    return json_response({"one_time_keys": answer["one_time_keys"]})
