"""import-synapse, application services: ``appservice_state`` is rebuilt at the end of the
import (our database on both engines; Synapse's tables as its SQLite schema has them; its
PostgreSQL sequence is covered by test_import_synapse.py)."""

from __future__ import annotations

import yaml

from gateway.config import DatabaseConfig, parse_config
from gateway.porting.synapse_appservices import import_appservices
from gateway.porting.synapse_import import ImportContext
from gateway.porting.synapse_source import SynapseDeployment
from gateway.storage import open_database
from gateway.storage.appservice import STREAMS, AppServiceStore

REGISTRATION = {
    "id": "irc", "url": "http://127.0.0.1:9/", "as_token": "as-irc", "hs_token": "hs-irc",
    "sender_localpart": "_irc_bot", "namespaces": {"users": [{"exclusive": True, "regex": "@_irc_.*"}]},
}


async def _synapse_db(path):
    db = await open_database(DatabaseConfig("sqlite", {"database": str(path)}))
    await db.execute("CREATE TABLE application_services_state (as_id TEXT PRIMARY KEY NOT NULL, state VARCHAR(5),"
                     " read_receipt_stream_id BIGINT, presence_stream_id BIGINT, to_device_stream_id BIGINT,"
                     " device_list_stream_id BIGINT)")
    await db.execute("CREATE TABLE application_services_txns (as_id TEXT NOT NULL, txn_id INTEGER NOT NULL,"
                     " event_ids TEXT NOT NULL, UNIQUE (as_id, txn_id))")
    return db


async def test_positions_move_to_the_end_of_the_import_and_txn_ids_continue(database, tmp_path):
    (tmp_path / "irc.yaml").write_text(yaml.safe_dump(REGISTRATION))
    config = parse_config({"server_name": "hs.test", "listeners": [],
                           "app_service_config_files": [str(tmp_path / "irc.yaml")]},
                          config_path=str(tmp_path / "homeserver.yaml"))
    store = AppServiceStore(database)
    # A service Gateway saw on the empty database before the import: positions from then.
    await store.get_positions("telegram")
    await store.create_txn("telegram", ["$pending"], {}, {}, 0)  # not acknowledged: kept
    # The import moved the streams on (Synapse's history).
    for i, stream in enumerate(STREAMS):
        await database.execute("UPDATE stream_positions SET position = $1 WHERE stream_name = $2",
                               1000 + i, stream)
    source = await _synapse_db(tmp_path / "synapse.db")
    try:
        await source.execute("INSERT INTO application_services_state (as_id, state) VALUES ('telegram', 'up')")
        await source.execute("INSERT INTO application_services_txns VALUES ('whatsapp', 41, '[\"$e\"]')")
        deployment = SynapseDeployment("", "hs.test", DatabaseConfig("sqlite", {}), "", "", "")
        ctx = ImportContext(source, database, deployment, config)
        await import_appservices(ctx)
        assert ctx.counts["application services"] == 3
        await import_appservices(ctx)  # a rerun changes nothing
    finally:
        await source.close()

    expected = {s: 1000 + i for i, s in enumerate(STREAMS)}
    for as_id in ("irc", "telegram", "whatsapp"):  # configured, seen by us, known to Synapse
        assert await store.get_positions(as_id) == expected, as_id
    rows = {r[0]: int(r[1]) for r in await database.fetch("SELECT as_id, last_txn_id FROM appservice_state")}
    assert rows == {"irc": 41, "telegram": 41, "whatsapp": 41}
    assert (await store.get_txn("telegram")).event_ids == ["$pending"]
    # The next transaction comes after every ID Synapse used.
    assert (await store.create_txn("irc", [], {}, {}, 0)).txn_id == 42
