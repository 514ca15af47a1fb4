"""Federation of a cluster of ours with a real Synapse (issue 18): the main process, two
federation senders (``federation_sender_instances``, destinations shared out by
``instance_for``) and two inbound federation workers behind nginx (TLS at the server
name's port, requests shared round-robin), real processes on PostgreSQL and Redis. A
second server of ours (in this process, SQLite) is a destination owned by the other
sender.

- Synapse's user joins a room of the cluster by its alias (directory query, make_join and
  send_join answered by the workers); messages go both ways; the other server joins too;
  each destination's transactions come from its own sender only; both federation workers
  took transactions.
- A sender killed with SIGKILL in the middle of a burst and started again: Synapse gets
  every message the cluster acknowledged, and the to-device message sent while it was down.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio
import yaml

from gateway.config.workers import instance_for
from tests.conftest import GENEROUS_RATE_LIMITS, SKIP_POSTGRES, create_postgres_database, drop_postgres_database, \
    free_port
from tests.support.client_api import Client, has_text, invited_to, member_event, q, register_user, \
    timeline_bodies
from tests.support.gateway_process import ROOT, stop_process, wait_for_port
from tests.support.gateway_server import running_gateway
from tests.support.synapse import register_synapse_user, unique_localpart

pytestmark = [pytest.mark.skipif(SKIP_POSTGRES, reason="workers need PostgreSQL"),
              pytest.mark.asyncio(loop_scope="module")]

SENDERS = ("fedsender1", "fedsender2")
READERS = ("fedreader1", "fedreader2")


class FederatedCluster:
    """main (client API), two federation senders, two inbound federation workers and
    nginx in front of those."""

    def __init__(self, directory: Path, db_args: dict, ca):
        self.dir = directory
        self.client_port, self.replication_port, self.fed_port = free_port(), free_port(), free_port()
        self.server_name = f"127.0.0.1:{self.fed_port}"
        cert = ca.issue("127.0.0.1", filename=f"cluster-{self.fed_port}")
        local = ["127.0.0.1"]
        self.shared = directory / "homeserver.yaml"
        self.shared.write_text(yaml.safe_dump({
            "server_name": self.server_name,
            "public_baseurl": f"http://127.0.0.1:{self.client_port}/",
            "database": {"name": "psycopg2", "args": {**db_args, "cp_min": 1, "cp_max": 5}},
            "signing_key_path": str(directory / "signing.key"), "media_store_path": str(directory / "media"),
            "tls_certificate_path": str(cert.cert_path), "tls_private_key_path": str(cert.key_path),
            "listeners": [
                {"port": self.client_port, "bind_addresses": local, "resources": [{"names": ["client"]}]},
                {"port": self.replication_port, "bind_addresses": local, "resources": [{"names": ["replication"]}]},
            ],
            "instance_map": {"main": {"host": "127.0.0.1", "port": self.replication_port}},
            "redis": {"enabled": True, "host": "127.0.0.1", "port": 6379,
                      "channel_prefix": f"gateway-test-{uuid.uuid4().hex}"},
            "send_federation": False, "federation_sender_instances": list(SENDERS),
            "federation_custom_ca_list": [str(ca.ca_path)], "ip_range_whitelist": ["127.0.0.0/8"],
            "enable_registration": True, "enable_registration_without_verification": True,
            "bcrypt_rounds": 4, **GENEROUS_RATE_LIMITS,
        }))
        self.cert = cert
        self.metrics_ports: dict[str, int] = {}
        self.reader_ports = {name: free_port() for name in READERS}
        self.worker_files: dict[str, Path] = {}
        for name in (*SENDERS, *READERS):
            port = self.metrics_ports[name] = free_port()
            listeners = [{"port": port, "bind_addresses": local, "resources": [{"names": ["metrics"]}]}]
            if name in READERS:
                listeners.append({"port": self.reader_ports[name], "bind_addresses": local,
                                  "resources": [{"names": ["federation"]}]})
            path = self.worker_files[name] = directory / f"{name}.yaml"
            path.write_text(yaml.safe_dump({"worker_app": "synapse.app.generic_worker", "worker_name": name,
                                            "worker_listeners": listeners}))
        self.procs: dict[str, subprocess.Popen] = {}

    def start(self, name: str) -> None:
        configs = [self.shared] if name == "main" else [self.shared, self.worker_files[name]]
        port = self.client_port if name == "main" else self.metrics_ports[name]
        log = self.dir / f"{name}.log"
        args = [a for c in configs for a in ("--config-path", str(c))]
        with open(log, "ab") as out:
            proc = subprocess.Popen([sys.executable, "-m", "gateway", "run", *args], cwd=ROOT,
                                    env={**os.environ, "PYTHONPATH": ROOT}, stdout=out, stderr=subprocess.STDOUT)
        wait_for_port(port, proc, name, log)
        if name in READERS:
            wait_for_port(self.reader_ports[name], proc, name, log)
        self.procs[name] = proc

    def start_nginx(self) -> None:
        """TLS on the server name's port; federation and key requests round-robin to the
        federation workers (the request URI as sent: signatures cover it)."""
        d = self.dir / "nginx"
        d.mkdir()
        temp = "\n".join(f"    {k}_temp_path {d}/{k};" for k in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
        servers = "\n".join(f"        server 127.0.0.1:{p};" for p in self.reader_ports.values())
        conf = d / "nginx.conf"
        conf.write_text(("user root;\n" if os.geteuid() == 0 else "")
                        + f"daemon off;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\nevents {{}}\n"
                        f"http {{\n    access_log off;\n{temp}\n"
                        f"    upstream federation_readers {{\n{servers}\n    }}\n"
                        f"    server {{\n        listen 127.0.0.1:{self.fed_port} ssl;\n"
                        f"        ssl_certificate {self.cert.cert_path};\n"
                        f"        ssl_certificate_key {self.cert.key_path};\n"
                        f"        location ~ ^/_matrix/(federation|key)/ {{\n"
                        f"            proxy_pass http://federation_readers;\n"
                        f"            proxy_set_header Host $host;\n"
                        f"            proxy_set_header X-Forwarded-For $remote_addr;\n"
                        f"            proxy_http_version 1.1;\n"
                        f"            client_max_body_size 50M;\n"
                        f"        }}\n    }}\n}}\n")
        log = d / "nginx.out"
        with open(log, "wb") as out:
            proc = subprocess.Popen([shutil.which("nginx") or "/usr/sbin/nginx", "-p", str(d), "-c", str(conf),
                                     "-e", str(d / "error.log")], stdout=out, stderr=subprocess.STDOUT)
        wait_for_port(self.fed_port, proc, "nginx", log)
        self.procs["nginx"] = proc

    def kill(self, name: str) -> None:
        proc = self.procs.pop(name)
        proc.send_signal(signal.SIGKILL)
        proc.wait()

    def stop_all(self) -> None:
        for name in [n for n in self.procs if n != "main"] + ["main"]:  # nginx first
            proc = self.procs.pop(name, None)
            if proc is not None and proc.poll() is None:
                stop_process(proc)

    @property
    def client_url(self) -> str:
        return f"http://127.0.0.1:{self.client_port}"

    async def served(self, session: aiohttp.ClientSession, name: str, route: str) -> float:
        """Requests for routes matching ``route`` (a regex) process ``name`` answered."""
        async with session.get(f"http://127.0.0.1:{self.metrics_ports[name]}/_synapse/metrics") as r:
            text = await r.text()
        return sum(float(m.group(2)) for m in re.finditer(r'^gateway_http_requests_total\{(.*)\} (\S+)$', text, re.M)
                   if re.search(rf'route="{route}"', m.group(1)))

    async def sent_transactions(self, session: aiohttp.ClientSession, name: str) -> dict[str, float]:
        """Transactions each destination took from process ``name`` (its metrics)."""
        async with session.get(f"http://127.0.0.1:{self.metrics_ports[name]}/_synapse/metrics") as r:
            text = await r.text()
        return {m.group(1): float(m.group(2)) for m in re.finditer(
            r'^gateway_federation_sent_transactions_total\{destination="([^"]+)"\} (\S+)$', text, re.M)}


def _port_owned_by(sender: str) -> int:
    """A free port whose server name ``127.0.0.1:<port>`` belongs to ``sender``."""
    while True:
        port = free_port()
        if instance_for(f"127.0.0.1:{port}", SENDERS) == sender:
            return port


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def setup(tmp_path_factory, shared_synapse):
    synapse = shared_synapse
    name, args = await create_postgres_database()
    cluster = FederatedCluster(tmp_path_factory.mktemp("cluster"), args, synapse.ca)
    synapse_owner = instance_for(synapse.server_name, SENDERS)
    other_owner = next(s for s in SENDERS if s != synapse_owner)
    other_dir = tmp_path_factory.mktemp("other_gateway")
    extra = {"federation_custom_ca_list": [str(synapse.ca.ca_path)], "ip_range_whitelist": ["127.0.0.0/8"],
             "enable_registration": True, "enable_registration_without_verification": True, "bcrypt_rounds": 4}
    try:
        await asyncio.to_thread(cluster.start, "main")  # first: it brings the schema up to date
        for worker in (*SENDERS, *READERS):
            await asyncio.to_thread(cluster.start, worker)
        await asyncio.to_thread(cluster.start_nginx)
        async with running_gateway(other_dir, synapse.ca, extra, ports=(_port_owned_by(other_owner), free_port())) \
                as other, aiohttp.ClientSession() as session:
            alice = await register_user(session, cluster.client_url, "alice")
            carol = await register_user(session, other.client_url, "carol")
            localpart = unique_localpart("bob")
            bob = Client(session, synapse.client_url, await register_synapse_user(synapse, localpart),
                         f"@{localpart}:{synapse.server_name}")
            yield cluster, synapse, other, session, alice, bob, carol, synapse_owner, other_owner
    finally:
        await asyncio.to_thread(cluster.stop_all)
        await drop_postgres_database(name)


async def test_synapse_joins_a_cluster_room_and_each_destination_has_one_sender(setup):
    cluster, synapse, other, session, alice, bob, carol, synapse_owner, other_owner = setup
    room = (await alice.call("POST", "/createRoom", {"preset": "public_chat", "name": "Cluster",
                                                     "room_alias_name": "cluster"}))["room_id"]
    # Synapse resolves the alias and joins through the inbound federation worker.
    joined = await bob.call("POST", f"/join/{q(f'#cluster:{cluster.server_name}')}", {})
    assert joined["room_id"] == room
    await alice.sync_until(member_event(room, bob.user_id, "join"))  # stored on the worker, seen on main
    await carol.call("POST", f"/join/{q(room)}?server_name={q(cluster.server_name)}", {})
    await alice.sync_until(member_event(room, carol.user_id, "join"))
    await alice.send_text(room, "hello from the cluster")
    await bob.sync_until(has_text(room, "hello from the cluster"))
    await carol.sync_until(has_text(room, "hello from the cluster"))
    for i in range(4):  # each its own transaction, to one worker or the other
        await bob.send_text(room, f"hello from synapse {i}")
        await alice.sync_until(has_text(room, f"hello from synapse {i}"))
    await carol.sync_until(has_text(room, "hello from synapse 3"))
    await carol.send_text(room, "hello from the other server")
    await alice.sync_until(has_text(room, "hello from the other server"))
    # Typing on main (an EDU made there) reaches Synapse through its sender.
    await alice.call("PUT", f"/rooms/{q(room)}/typing/{q(alice.user_id)}", {"typing": True, "timeout": 30000})

    def typing(body):
        events = body.get("rooms", {}).get("join", {}).get(room, {}).get("ephemeral", {}).get("events", [])
        return any(e["type"] == "m.typing" and alice.user_id in e["content"]["user_ids"] for e in events)

    await bob.sync_until(typing)
    sent = {s: await cluster.sent_transactions(session, s) for s in SENDERS}
    assert sent[synapse_owner].get(synapse.server_name, 0) > 0
    assert sent[other_owner].get(other.server_name, 0) > 0
    assert synapse.server_name not in sent[other_owner]
    assert other.server_name not in sent[synapse_owner]
    for reader in READERS:  # nginx shared the transactions out: each worker stored some
        assert await cluster.served(session, reader, r"[^\"]*/send/[^\"]*") > 0


async def test_a_sender_killed_mid_burst_loses_nothing_acknowledged(setup):
    cluster, synapse, other, session, alice, bob, carol, synapse_owner, other_owner = setup
    room = (await alice.call("POST", "/createRoom", {"preset": "public_chat"}))["room_id"]
    await bob.call("POST", f"/join/{q(room)}?server_name={q(cluster.server_name)}", {})
    await alice.sync_until(member_event(room, bob.user_id, "join"))
    bob_device = (await bob.call("GET", "/account/whoami"))["device_id"]
    bob.sync_filter = '{"room": {"timeline": {"limit": 100}}}'  # no gap in a sync: every message shows
    await bob.sync_until(lambda body: True)  # from here on, incremental
    expected = [f"burst {i}" for i in range(30)]
    for body in expected[:10]:
        await alice.send_text(room, body)
    await asyncio.to_thread(cluster.kill, synapse_owner)  # SIGKILL: whatever it held in memory is gone
    for body in expected[10:20]:
        await alice.send_text(room, body)
    # A to-device message acknowledged while Synapse's sender is down.
    await alice.call("PUT", f"/sendToDevice/m.cluster.test/{uuid.uuid4().hex}",
                     {"messages": {bob.user_id: {bob_device: {"n": 1}}}})
    await asyncio.to_thread(cluster.start, synapse_owner)
    for body in expected[20:]:
        await alice.send_text(room, body)
    seen: list[str] = []
    to_device: list[dict] = []

    def everything(body: dict) -> bool:
        seen.extend(b for b in timeline_bodies(room)(body) if b.startswith("burst "))
        to_device.extend(e for e in body.get("to_device", {}).get("events", []) if e["type"] == "m.cluster.test")
        return set(seen) >= set(expected) and bool(to_device)

    await bob.sync_until(everything, timeout=180)
    assert sorted(set(seen), key=expected.index) == expected
    assert [e["content"] for e in to_device] == [{"n": 1}] and to_device[0]["sender"] == alice.user_id


async def test_invites_and_leaves_both_ways_through_the_federation_workers(setup):
    """Synapse's /invite and make_leave/send_leave land on the workers; what they store
    shows in /sync on main."""
    cluster, synapse, other, session, alice, bob, carol, synapse_owner, other_owner = setup
    # Synapse invites our user (/invite on a worker, signed there); she accepts from main.
    theirs = (await bob.call("POST", "/createRoom", {"preset": "private_chat", "name": "Theirs"}))["room_id"]
    await bob.call("POST", f"/rooms/{q(theirs)}/invite", {"user_id": alice.user_id})
    invite = await alice.sync_until(invited_to(theirs))
    assert {e["type"]: e for e in invite["invite_state"]["events"]}["m.room.name"]["content"] == {"name": "Theirs"}
    await alice.call("POST", f"/join/{q(theirs)}", {})
    await bob.sync_until(member_event(theirs, alice.user_id, "join"))
    await bob.send_text(theirs, "welcome")
    await alice.sync_until(has_text(theirs, "welcome"))
    # Our user invites Synapse's; he joins, then leaves (make_leave/send_leave... or a
    # leave PDU over /send, whichever Synapse picks: both reach a worker).
    ours = (await alice.call("POST", "/createRoom", {"preset": "private_chat", "name": "Ours"}))["room_id"]
    await alice.call("POST", f"/rooms/{q(ours)}/invite", {"user_id": bob.user_id})
    await bob.sync_until(invited_to(ours))
    await bob.call("POST", f"/join/{q(ours)}", {})
    await alice.sync_until(member_event(ours, bob.user_id, "join"))
    await bob.call("POST", f"/rooms/{q(ours)}/leave", {})
    await alice.sync_until(member_event(ours, bob.user_id, "leave"))
    # Invited again, he rejects: a leave he has to ask the room (a worker) to build.
    await alice.call("POST", f"/rooms/{q(ours)}/invite", {"user_id": bob.user_id})
    await bob.sync_until(invited_to(ours))
    await bob.call("POST", f"/rooms/{q(ours)}/leave", {})
    await alice.sync_until(member_event(ours, bob.user_id, "leave"))
    assert await cluster.served(session, READERS[0], r"[^\"]*send_leave[^\"]*") + \
        await cluster.served(session, READERS[1], r"[^\"]*send_leave[^\"]*") >= 1


async def test_synapse_backfills_a_cluster_rooms_history_from_the_workers(setup):
    cluster, synapse, other, session, alice, bob, carol, synapse_owner, other_owner = setup
    room = (await alice.call("POST", "/createRoom", {"preset": "public_chat", "name": "History"}))["room_id"]
    for i in range(40):
        await alice.send_text(room, f"old {i}")
    await bob.call("POST", f"/join/{q(room)}?server_name={q(cluster.server_name)}", {})
    await bob.sync_until(member_event(room, bob.user_id, "join"))
    seen: list[dict] = []
    token = None
    for _ in range(20):  # back to the create event (Synapse backfills from us on the way)
        params = {"dir": "b", "limit": "50", **({"from": token} if token else {})}
        page = await bob.call("GET", f"/rooms/{q(room)}/messages", params=params)
        seen += page["chunk"]
        if not page["chunk"] or page["chunk"][-1]["type"] == "m.room.create" or "end" not in page:
            break
        token = page["end"]
    bodies = [e["content"]["body"] for e in reversed(seen) if e["type"] == "m.room.message"]
    assert bodies == [f"old {i}" for i in range(40)]
    assert seen[-1]["type"] == "m.room.create"
    assert sum([await cluster.served(session, r, r"[^\"]*/backfill/[^\"]*") for r in READERS]) >= 1
