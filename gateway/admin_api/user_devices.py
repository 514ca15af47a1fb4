"""A user's devices, for admins (Synapse's "User devices" admin API).

Paths: GET /_synapse/admin/v2/users/{user_id}/devices, GET|PUT|DELETE
/v2/users/{user_id}/devices/{device_id}, POST /v2/users/{user_id}/delete_devices.
Deleting a device ends its sessions and its end-to-end keys, as a logout does.
https://element-hq.github.io/synapse/latest/admin_api/user_admin_api.html#user-devices
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from ..appkeys import HS
from ..http import MatrixError, json_response, read_json_body
from ..storage.devices import DeviceRow
from .users import existing_local_user

routes = web.RouteTableDef()

#: The longest device display name (as the client API's ``PUT /devices/{deviceId}``).
MAX_DISPLAY_NAME_LENGTH = 100


def _device_json(device: DeviceRow, user_agent: str | None) -> dict[str, Any]:
    out: dict[str, Any] = {"device_id": device.device_id, "user_id": device.user_id,
                           "last_seen_ip": device.last_seen_ip, "last_seen_ts": device.last_seen_ts,
                           "last_seen_user_agent": user_agent}
    if device.display_name is not None:
        out["display_name"] = device.display_name
    return out


async def _user_agents(request: web.Request, user_id: str) -> dict[str, str]:
    """Each device's latest user agent (its newest connection)."""
    agents: dict[str, str] = {}
    for c in await request.app[HS].auth.client_ips.store.connections(user_id):  # newest first
        agents.setdefault(c.device_id, c.user_agent)
    return agents


@routes.get("/v2/users/{user_id}/devices")
async def list_devices(request: web.Request) -> web.Response:
    user_id = await existing_local_user(request)
    devices = await request.app[HS].auth.devices.list_devices(user_id)
    agents = await _user_agents(request, user_id)
    return json_response({"devices": [_device_json(d, agents.get(d.device_id)) for d in devices],
                          "total": len(devices)})


async def _device(request: web.Request) -> DeviceRow:
    user_id = await existing_local_user(request)
    device = await request.app[HS].auth.devices.get_device(user_id, request.match_info["device_id"])
    if device is None:
        raise MatrixError.not_found("No device found")
    return device


@routes.get("/v2/users/{user_id}/devices/{device_id}")
async def get_device(request: web.Request) -> web.Response:
    device = await _device(request)
    agents = await _user_agents(request, device.user_id)
    return json_response(_device_json(device, agents.get(device.device_id)))


@routes.put("/v2/users/{user_id}/devices/{device_id}")
async def update_device(request: web.Request) -> web.Response:
    """Rename a device (``display_name``; without it nothing changes)."""
    device = await _device(request)
    body = await read_json_body(request, allow_empty=True)
    if "display_name" in body:
        name = body["display_name"]
        if name is not None and not isinstance(name, str):
            raise MatrixError.invalid_param("'display_name' must be a string")
        if name is not None and len(name) > MAX_DISPLAY_NAME_LENGTH:
            raise MatrixError.invalid_param(f"'display_name' is longer than {MAX_DISPLAY_NAME_LENGTH} characters")
        await request.app[HS].auth.devices.set_display_name(device.user_id, device.device_id, name)
    return json_response({})


@routes.delete("/v2/users/{user_id}/devices/{device_id}")
async def delete_device(request: web.Request) -> web.Response:
    """Log a device out (a device that does not exist is already gone: 200)."""
    user_id = await existing_local_user(request)
    await request.app[HS].auth.devices.delete_devices(user_id, [request.match_info["device_id"]])
    return json_response({})


@routes.post("/v2/users/{user_id}/delete_devices")
async def delete_devices(request: web.Request) -> web.Response:
    user_id = await existing_local_user(request)
    body = await read_json_body(request)
    if "devices" not in body:
        raise MatrixError.missing_param("'devices' is required")
    ids = body["devices"]
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        raise MatrixError.invalid_param("'devices' must be a list of device IDs")
    await request.app[HS].auth.devices.delete_devices(user_id, list(dict.fromkeys(ids)))
    return json_response({})
