"""Reported content, for admins: Synapse's event and user report APIs, and room reports
beside them in the same shape.

- ``GET /_synapse/admin/v1/event_reports`` (``from``, ``limit``, ``dir``, ``user_id``,
  ``room_id``: substrings; ``event_sender_user_id``: exact), ``GET``/``DELETE
  .../event_reports/{report_id}`` (the detail adds ``event_json``);
- ``GET /_synapse/admin/v1/room_reports`` (``user_id``, ``room_id``), ``GET``/``DELETE
  .../room_reports/{report_id}`` (ours: Synapse stores room reports without an API);
- ``GET /_synapse/admin/v1/user_reports`` (``user_id``, ``target_user_id``),
  ``GET``/``DELETE .../user_reports/{report_id}``.

Lists answer ``{"<kind>": [...], "total": N}`` plus ``next_token`` (the ``from`` of the
next page) while there is more; ``dir=b`` (default) is newest first.
https://element-hq.github.io/synapse/latest/admin_api/event_reports.html
"""

from __future__ import annotations

from aiohttp import web

from ..appkeys import HS
from ..http import MatrixError, json_response
from ..storage.reports import EVENT_REPORTS, TABLES, ReportTable
from .users import _int_param

routes = web.RouteTableDef()

KINDS = "{kind:(event_reports|room_reports|user_reports)}"


def _kind(request: web.Request) -> ReportTable:
    return TABLES[request.match_info["kind"]]


def _report_id(request: web.Request) -> int:
    raw = request.match_info["report_id"]
    if not raw.isdigit():
        raise MatrixError.invalid_param("The report_id parameter must be a string representing a positive integer.")
    return int(raw)


@routes.get("/v1/" + KINDS)
async def list_reports(request: web.Request) -> web.Response:
    kind = _kind(request)
    start, limit = _int_param(request, "from", 0), _int_param(request, "limit", 100)
    direction = request.query.get("dir", "b")
    if direction not in ("f", "b"):
        raise MatrixError.invalid_param("'dir' must be 'f' or 'b'")
    names = [name for name, _ in kind.contains + kind.exact]
    reports, total = await request.app[HS].reports.store.list_reports(
        kind, start=start, limit=limit, newest_first=direction == "b",
        filters={n: request.query[n] for n in names if n in request.query},
    )
    body = {kind.table: reports, "total": total}
    if start + limit < total:
        body["next_token"] = start + len(reports)
    return json_response(body)


@routes.get("/v1/" + KINDS + "/{report_id}")
async def get_report(request: web.Request) -> web.Response:
    hs, kind = request.app[HS], _kind(request)
    report = await hs.reports.store.get_report(kind, _report_id(request))
    if report is None:
        raise MatrixError.not_found("Report not found")
    if kind is EVENT_REPORTS:
        stored = await hs.events.store.get_event(report["event_id"])
        report["event_json"] = stored.pdu.get_pdu_json() if stored is not None else None
    return json_response(report)


@routes.delete("/v1/" + KINDS + "/{report_id}")
async def delete_report(request: web.Request) -> web.Response:
    if not await request.app[HS].reports.store.delete_report(_kind(request), _report_id(request)):
        raise MatrixError.not_found("Report not found")
    return json_response({})
