"""Purging history reaches every table that names events: each table with an ``event_id``
column is either purged with the event or named as keeping its rows (both engines)."""

from __future__ import annotations

from gateway.storage.purge_history import KEPT_ON_HISTORY_PURGE, PURGED_WITH_EVENT, SEARCH_INDEX


async def _tables_with_event_ids(db) -> set[str]:
    if db.engine == "sqlite":
        rows = await db.fetch(
            "SELECT m.name FROM sqlite_master m JOIN pragma_table_info(m.name) p"
            " WHERE m.type = 'table' AND p.name = 'event_id'")
    else:
        rows = await db.fetch(
            "SELECT table_name FROM information_schema.columns WHERE column_name = 'event_id'"
            " AND table_schema = current_schema()")
    return {r[0] for r in rows}


async def test_every_table_naming_events_is_placed(database):
    tables = await _tables_with_event_ids(database)
    assert {"events", "event_edges", "receipts"} <= tables  # the query finds them
    placed = set(PURGED_WITH_EVENT) | KEPT_ON_HISTORY_PURGE | {SEARCH_INDEX}
    unplaced = sorted(tables - placed)
    assert not unplaced, (f"tables with an event_id column that a history purge neither cleans nor keeps: {unplaced};"
                          " place them in gateway/storage/purge_history.py")
    # And what is placed exists (no stale names).
    stale = sorted((set(PURGED_WITH_EVENT) | KEPT_ON_HISTORY_PURGE) - tables - {"threads"})
    assert not stale, stale
