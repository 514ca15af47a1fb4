"""import-synapse, application services: the last step. Every service starts at the
positions the import leaves (the imported history was sent by Synapse, or was not for
the service to see: it is never sent again as new), and its transaction IDs continue
after the ones Synapse used, so that a bridge that remembers the IDs it handled does not
drop our first transactions as repeats.

Spec: https://spec.matrix.org/latest/application-service-api/#pushing-events
(``txnId`` is unique per service: the service uses it to spot a transaction sent again).
"""

from __future__ import annotations

from ..storage.appservice import STREAMS
from ..storage.state import _placeholders
from .synapse_import import ImportContext
from .synapse_source import table_exists


async def synapse_last_txn_id(ctx: ImportContext) -> int:
    """The highest transaction ID Synapse handed out to any service. Synapse takes them from
    one sequence for all services (``application_services_txn_id_seq`` on PostgreSQL; on
    SQLite the highest ID still in ``application_services_txns``)."""
    src, last = ctx.source, 0
    if await table_exists(src, "application_services_txns"):
        last = int(await src.fetchval("SELECT MAX(txn_id) FROM application_services_txns") or 0)
    if src.engine == "postgres" and await src.fetchval(
            "SELECT 1 FROM information_schema.sequences WHERE sequence_schema = current_schema()"
            " AND sequence_name = 'application_services_txn_id_seq'") is not None:
        row = await src.fetchrow("SELECT last_value, is_called FROM application_services_txn_id_seq")
        if row is not None and row[1]:
            last = max(last, int(row[0]))
    return last


async def import_appservices(ctx: ImportContext) -> None:
    """Rebuild ``appservice_state``: the services we had already seen, the ones Synapse
    knew and the ones in our config all get the current stream positions, and a last
    transaction ID at least Synapse's. A transaction we made and the service has not
    acknowledged yet stays (it is sent again as it was)."""
    src, target = ctx.source, ctx.target
    as_ids = {r[0] for r in await target.fetch("SELECT as_id FROM appservice_state")}
    as_ids |= {s.id for s in ctx.config.appservice.services}
    for table in ("application_services_state", "application_services_txns"):
        if await table_exists(src, table):
            as_ids |= {r[0] for r in await src.fetch(f"SELECT DISTINCT as_id FROM {table}")}
    last_txn = await synapse_last_txn_id(ctx)
    columns = ", ".join(f"{s}_position" for s in STREAMS)
    async with target.transaction() as txn:
        rows = await txn.fetch("SELECT stream_name, position FROM stream_positions"
                               f" WHERE stream_name IN ({_placeholders(len(STREAMS))})", *STREAMS)
        now = {s: 0 for s in STREAMS} | {r[0]: int(r[1]) for r in rows}
        sets = ", ".join(f"{s}_position = EXCLUDED.{s}_position" for s in STREAMS)
        await txn.executemany(
            f"INSERT INTO appservice_state (as_id, {columns}, last_txn_id)"
            f" VALUES ($1, {_placeholders(len(STREAMS), 2)}, ${len(STREAMS) + 2})"
            f" ON CONFLICT (as_id) DO UPDATE SET {sets}, last_txn_id = CASE WHEN"
            " appservice_state.last_txn_id < EXCLUDED.last_txn_id THEN EXCLUDED.last_txn_id"
            " ELSE appservice_state.last_txn_id END",
            [(as_id, *(now[s] for s in STREAMS), last_txn) for as_id in sorted(as_ids)])
    ctx.count("application services", len(as_ids))
