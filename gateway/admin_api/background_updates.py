"""Background updates, with Synapse's admin API paths.

Paths: GET /_synapse/admin/v1/background_updates/status, GET|POST
/v1/background_updates/enabled, POST /v1/background_updates/start_job.

Gateway has no background updates: its schema migrations all run at startup, before the
server answers (docs/upgrading.md), and what Synapse's two jobs rebuild (room statistics,
the user directory) is read from the current state when asked. So the status lists no
running update, as Synapse's does when it has none; pausing is remembered (per process,
not over a restart, as in Synapse) and has nothing to pause; a job of a known name is done
as soon as it is asked for.
https://element-hq.github.io/synapse/latest/usage/administration/admin_api/background_updates.html
"""

from __future__ import annotations

from aiohttp import web

from ..http import Codes, MatrixError, json_response, read_json_body

routes = web.RouteTableDef()

#: The jobs Synapse's ``start_job`` knows.
JOBS = ("populate_stats_process_rooms", "regenerate_directory")
#: Whether an admin paused background updates (``app[ENABLED]["enabled"]``).
ENABLED = web.AppKey("background_updates_enabled", dict)


@routes.get("/v1/background_updates/status")
async def status(request: web.Request) -> web.Response:
    return json_response({"enabled": request.app[ENABLED]["enabled"], "current_updates": {}})


@routes.get("/v1/background_updates/enabled")
async def get_enabled(request: web.Request) -> web.Response:
    return json_response({"enabled": request.app[ENABLED]["enabled"]})


@routes.post("/v1/background_updates/enabled")
async def set_enabled(request: web.Request) -> web.Response:
    body = await read_json_body(request)
    if not isinstance(body.get("enabled"), bool):
        raise MatrixError.invalid_param("'enabled' must be a boolean")
    request.app[ENABLED]["enabled"] = body["enabled"]
    return json_response({"enabled": body["enabled"]})


@routes.post("/v1/background_updates/start_job")
async def start_job(request: web.Request) -> web.Response:
    body = await read_json_body(request)
    job = body.get("job_name")
    if job is None:
        raise MatrixError.missing_param("'job_name' is required")
    if job not in JOBS:
        raise MatrixError(400, Codes.UNKNOWN, f"Invalid job_name: one of {', '.join(JOBS)}")
    return json_response({})
