"""After ``gateway import-synapse`` the rooms Synapse shared with another server go on:
a real Synapse (from PyPI) and one of our servers in the role of "another server" share
a room on each side and a pending invite; Synapse is stopped and imported into a new
server of ours under its name and key; the other server keeps talking to it, both ways,
and the invite is accepted through the other server."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import aiohttp
import yaml

from gateway.config import DatabaseConfig
from gateway.storage import open_database
from tests.conftest import free_port
from tests.support.client_api import Client, has_text, invited_to, member_event, q, register_user
from tests.support.gateway_server import running_gateway
from tests.support.synapse import SynapseServer, register_synapse_user
from tests.support.tls import TestCA

ROOT = Path(__file__).resolve().parents[3]


async def test_rooms_shared_with_another_server_go_on_after_the_import(tmp_path):
    ca = TestCA(tmp_path / "ca")
    synapse = SynapseServer(tmp_path / "synapse", ca)
    await synapse.start({"room_list_publication_rules": [{"action": "allow"}]})
    (tmp_path / "other").mkdir()
    federation = {"federation_custom_ca_list": [str(ca.ca_path)], "ip_range_whitelist": ["127.0.0.0/8"]}
    try:
        async with running_gateway(tmp_path / "other", ca, {
                **federation, "enable_registration": True, "enable_registration_without_verification": True,
                "bcrypt_rounds": 4}) as other, aiohttp.ClientSession() as s:
            carol = await register_user(s, other.client_url, "carol")
            bob_token = await register_synapse_user(synapse, "bob", "bob-pass")
            bob = Client(s, synapse.client_url, bob_token, f"@bob:{synapse.server_name}")
            for c in (bob, carol):
                await c.sync_until(lambda body: True)
            # A room of the other server that Synapse joins (its state arrives as outliers).
            theirs = (await carol.call("POST", "/createRoom", {"preset": "public_chat", "room_alias_name": "garden",
                                                               "name": "Garden"}))["room_id"]
            await carol.send_text(theirs, "before bob came")
            await bob.call("POST", f"/join/{q(f'#garden:{other.server_name}')}", {})
            await carol.sync_until(member_event(theirs, bob.user_id, "join"))
            await bob.send_text(theirs, "bob in the garden")
            await carol.sync_until(has_text(theirs, "bob in the garden"))
            # A room of Synapse's that the other server's user joins.
            ours = (await bob.call("POST", "/createRoom", {"preset": "private_chat", "name": "Shed",
                                                           "invite": [carol.user_id]}))["room_id"]
            await carol.sync_until(invited_to(ours))
            await carol.call("POST", f"/join/{q(ours)}", {})
            await bob.sync_until(member_event(ours, carol.user_id, "join"))
            await carol.send_text(ours, "carol in the shed")
            await bob.sync_until(has_text(ours, "carol in the shed"))
            # An invite from the other server that bob has not answered yet.
            pending = (await carol.call("POST", "/createRoom", {"preset": "private_chat", "name": "Attic",
                                                                "invite": [bob.user_id]}))["room_id"]
            await bob.sync_until(invited_to(pending))
            await synapse.stop()

            ours_dir = tmp_path / "imported"
            ours_dir.mkdir()
            config = {"server_name": synapse.server_name,
                      "database": {"name": "sqlite3", "args": {"database": str(ours_dir / "gateway.db")}},
                      "signing_key_path": str(synapse.dir / "signing.key"),
                      "media_store_path": str(ours_dir / "media"), **federation}
            (ours_dir / "homeserver.yaml").write_text(yaml.safe_dump(config))
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "gateway", "import-synapse", "--synapse-config",
                str(synapse.dir / "homeserver.yaml"), "--config-path", str(ours_dir / "homeserver.yaml"), cwd=ROOT,
                env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE)
            out, err = await proc.communicate()
            assert proc.returncode == 0, err.decode()
            assert "2 rooms" in out.decode() and "1 out-of-band memberships" in out.decode(), out.decode()
            db = await open_database(DatabaseConfig("sqlite", config["database"]["args"]))
            try:  # Synapse's copy of the other server's room began with outliers (the state of the join)
                assert await db.fetchval("SELECT COUNT(*) FROM events WHERE room_id = $1 AND outlier = TRUE"
                                         " AND stream_ordering < 0", theirs) > 0
            finally:
                await db.close()

            async with running_gateway(ours_dir, ca, config, ports=(synapse.fed_port, free_port())) as gw:
                bob = Client(s, gw.client_url, bob_token, bob.user_id)
                first = await bob.call("GET", "/sync")
                assert {theirs, ours} <= set(first["rooms"]["join"]) and pending in first["rooms"]["invite"]
                # Both ways, in both rooms.
                await bob.send_text(theirs, "bob, moved")
                await carol.sync_until(has_text(theirs, "bob, moved"))
                await carol.send_text(ours, "carol, to the moved server")
                bob.since = first["next_batch"]
                await bob.sync_until(has_text(ours, "carol, to the moved server"))
                await bob.send_text(ours, "bob answers")
                await carol.sync_until(has_text(ours, "bob answers"))
                # The pending invite is accepted through the other server.
                await bob.call("POST", f"/join/{q(pending)}", {})
                await carol.sync_until(member_event(pending, bob.user_id, "join"))
    finally:
        await synapse.stop()
