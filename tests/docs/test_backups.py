"""docs/backups.md and docs/upgrading.md, done for real: the documented backup commands,
run while the server serves, give databases a new server starts on with the accounts and
rooms intact; and an upgrade's migrations and an older Gateway's refusal look as the doc
says."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shlex
import shutil
import sqlite3
import subprocess
import sys
import urllib.error
import urllib.request

import pytest

from tests.conftest import SKIP_POSTGRES, create_postgres_database, drop_postgres_database
from tests.support.gateway_process import ROOT, gateway_process

DOCS = os.path.join(ROOT, "docs")
PASSWORD = "a long password for backups"
CLIENT = {"listeners": [{"port": 0, "bind_addresses": ["127.0.0.1"], "resources": [{"names": ["client"]}]}],
          "server_name": "backup.test", "enable_registration": True,
          "enable_registration_without_verification": True}


def _command(doc: str, program: str) -> list[str]:
    """The documented command line that starts with ``program``."""
    with open(os.path.join(DOCS, doc), encoding="utf-8") as f:
        lines = [line.strip() for line in f if line.strip().startswith(program + " ")]
    assert len(lines) == 1, f"docs/{doc} should show one `{program}` command, found {lines}"
    return shlex.split(lines[0])


def _call(base: str, method: str, path: str, body=None, token: str | None = None) -> tuple[int, dict]:
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})}
    request = urllib.request.Request(base + path, json.dumps(body).encode() if body is not None else None,
                                     headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:
            return resp.status, json.load(resp)
    except urllib.error.HTTPError as e:
        return e.code, json.load(e)


def _populate(base: str) -> str:
    """Alice and a room of hers; the room ID."""
    status, body = _call(base, "POST", "/_matrix/client/v3/register",
                         {"username": "alice", "password": PASSWORD, "auth": {"type": "m.login.dummy"}})
    assert status == 200, body
    status, room = _call(base, "POST", "/_matrix/client/v3/createRoom", {"name": "kept"}, body["access_token"])
    assert status == 200, room
    return room["room_id"]


def _check_restored(base: str, room_id: str) -> None:
    status, body = _call(base, "POST", "/_matrix/client/v3/login", {
        "type": "m.login.password", "identifier": {"type": "m.id.user", "user": "alice"}, "password": PASSWORD})
    assert status == 200, body
    status, rooms = _call(base, "GET", "/_matrix/client/v3/joined_rooms", token=body["access_token"])
    assert status == 200 and rooms["joined_rooms"] == [room_id], rooms


def test_sqlite_online_backups_restore(tmp_path):
    live = tmp_path / "live"
    live.mkdir()
    copies = {"cli": tmp_path / "cli.db", "python": tmp_path / "python.db"}
    documented = "/var/lib/gateway/homeserver.db"
    with gateway_process(live, CLIENT) as port:
        room_id = _populate(f"http://127.0.0.1:{port}")
        # While the server runs, as the doc says.
        cli = [a.replace(documented, str(live / "hs.db")).replace("/backups/homeserver.db", str(copies["cli"]))
               for a in _command("backups.md", "sqlite3")]
        subprocess.run(cli, check=True, timeout=60)
        python = _command("backups.md", "python3")
        script = python[2].replace(documented, str(live / "hs.db")).replace("/backups/homeserver.db",
                                                                             str(copies["python"]))
        subprocess.run([sys.executable, "-c", script], check=True, timeout=60)
    for name, copy in copies.items():
        assert sqlite3.connect(copy).execute("PRAGMA integrity_check").fetchone()[0] == "ok", name
        restored = tmp_path / f"restored-{name}"
        restored.mkdir()
        shutil.copy(live / "hs.signing.key", restored / "hs.signing.key")
        config = {**CLIENT, "database": {"name": "sqlite3", "args": {"database": str(copy)}}}
        with gateway_process(restored, config) as port:
            _check_restored(f"http://127.0.0.1:{port}", room_id)


@pytest.mark.skipif(SKIP_POSTGRES, reason="GATEWAY_TEST_SKIP_POSTGRES=1: no PostgreSQL reachable")
def test_pg_dump_and_pg_restore_restore(tmp_path):
    (source, args), (target, target_args) = asyncio.run(create_postgres_database()), \
        asyncio.run(create_postgres_database())
    dump = tmp_path / "gateway.dump"

    def documented(program: str, database: str) -> list[str]:
        cmd = _command("backups.md", program)
        out = []
        for i, a in enumerate(cmd):
            before = cmd[i - 1] if i else ""
            if before == "--host":
                a = args["host"]
            elif before == "--username":
                a = args["user"]
            elif before == "--dbname" or (program == "pg_dump" and i == len(cmd) - 1):
                a = database
            out.append(a.replace("/backups/gateway.dump", str(dump)))
        return [*out[:1], "--port", str(args["port"]), *out[1:]]

    env = {**os.environ, **({"PGPASSWORD": args["password"]} if args.get("password") else {})}
    try:
        live = tmp_path / "live"
        live.mkdir()
        with gateway_process(live, {**CLIENT, "database": {"name": "psycopg2", "args": args}}) as port:
            room_id = _populate(f"http://127.0.0.1:{port}")
            subprocess.run(documented("pg_dump", source), check=True, timeout=120, env=env)
        subprocess.run(documented("pg_restore", target), check=True, timeout=120, env=env)
        restored = tmp_path / "restored"
        restored.mkdir()
        shutil.copy(live / "hs.signing.key", restored / "hs.signing.key")
        with gateway_process(restored, {**CLIENT, "database": {"name": "psycopg2", "args": target_args}}) as port:
            _check_restored(f"http://127.0.0.1:{port}", room_id)
    finally:
        for name in (source, target):
            asyncio.run(drop_postgres_database(name))


def test_migrations_are_logged_and_a_newer_schema_is_refused(tmp_path):
    with gateway_process(tmp_path, CLIENT):
        pass
    log = (tmp_path / "gateway.log").read_text()
    with open(os.path.join(DOCS, "upgrading.md"), encoding="utf-8") as f:
        upgrading = f.read()
    example = re.search(r"`(applying schema migration \d{4}_\w+)`", upgrading).group(1)
    assert "applying schema migration 0001_" in log and example in log, log[-3000:]
    db = sqlite3.connect(tmp_path / "hs.db")
    with db:
        db.execute("INSERT INTO schema_version (version) VALUES (9999)")
    db.close()
    r = subprocess.run([sys.executable, "-m", "gateway", "run", "-c", str(tmp_path / "homeserver.yaml")],
                       cwd=ROOT, env={**os.environ, "PYTHONPATH": ROOT}, capture_output=True, text=True, timeout=60)
    assert r.returncode == 1
    quoted = re.search(r'\*\*"(the database schema is at version) N, (but this Gateway only knows up to) M"\*\*',
                       upgrading)
    assert quoted, "docs/upgrading.md no longer quotes the refusal"
    assert f"{quoted.group(1)} 9999, {quoted.group(2)}" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr
