"""Synapse (.cache/synapse-venv) as a main process and generic workers with a ``client``
listener, on PostgreSQL and Redis: the layout bench/workers.py runs our processes in, for
the same load through the same nginx routing. Not a benchmark on its own.

Synapse's worker settings (facts from its documentation, /work/shared/seeds): the main
process has a ``replication`` HTTP listener named ``main`` in ``instance_map``, every
process has ``redis.enabled``; its replication channels are named after ``server_name``,
so a random server name keeps concurrent clusters apart on one Redis. Its database must
use the C collation (``_create_pg_database(c_locale=True)``).
"""

from __future__ import annotations

import os
import secrets
import subprocess
from pathlib import Path

import yaml

from bench.client_load import wait_healthy
from tests.conftest import free_port
from tests.support.gateway_process import stop_process
from tests.support.synapse import ROOT, SYNAPSE_PYTHON, ensure_synapse_installed, write_signing_key

_HIGH = {"per_second": 100000, "burst_count": 100000}
LOCAL = ["127.0.0.1"]


class SynapseCluster:
    """``workers``: names of generic workers, each with one ``client`` listener."""

    def __init__(self, directory: Path, db_args: dict, workers: list[str]):
        self.dir = directory
        self.main_port, self.replication_port = free_port(), free_port()
        self.worker_ports = {name: free_port() for name in workers}
        self.server_name = f"bench-{secrets.token_hex(4)}.test"
        self.procs: dict[str, subprocess.Popen] = {}
        self.shared = directory / "homeserver.yaml"
        write_signing_key(directory / "signing.key")
        self.shared.write_text(yaml.safe_dump({
            "server_name": self.server_name,
            "public_baseurl": f"http://127.0.0.1:{self.main_port}/",
            "pid_file": str(directory / "main.pid"),
            "report_stats": False,
            "listeners": [
                {"port": self.main_port, "bind_addresses": LOCAL, "type": "http", "tls": False,
                 "resources": [{"names": ["client"]}]},
                {"port": self.replication_port, "bind_addresses": LOCAL, "type": "http", "tls": False,
                 "resources": [{"names": ["replication"]}]},
            ],
            "instance_map": {"main": {"host": "127.0.0.1", "port": self.replication_port}},
            "redis": {"enabled": True, "host": "127.0.0.1", "port": 6379},
            "database": {"name": "psycopg2", "args": {**db_args, "cp_min": 2, "cp_max": 10}},
            "media_store_path": str(directory / "media"),
            "signing_key_path": str(directory / "signing.key"),
            "log_config": str(self._log_config("main")),
            "macaroon_secret_key": secrets.token_hex(16), "form_secret": secrets.token_hex(16),
            "registration_shared_secret": secrets.token_hex(16),
            "enable_registration": True, "enable_registration_without_verification": True,
            "trusted_key_servers": [], "suppress_key_server_warning": True,
            "federation_ip_range_blacklist": [], "ip_range_blacklist": [],
            "ip_range_whitelist": ["127.0.0.0/8", "::1/128"],
            "rc_message": _HIGH, "rc_registration": _HIGH, "rc_room_creation": _HIGH,
            "rc_joins": {"local": _HIGH, "remote": _HIGH}, "rc_joins_per_room": _HIGH,
            "rc_invites": {"per_room": _HIGH, "per_user": _HIGH, "per_issuer": _HIGH},
            "rc_login": {"address": _HIGH, "account": _HIGH, "failed_attempts": _HIGH},
            "bcrypt_rounds": 4,
        }))
        for name, port in self.worker_ports.items():
            (directory / f"{name}.yaml").write_text(yaml.safe_dump({
                "worker_app": "synapse.app.generic_worker", "worker_name": name,
                "worker_listeners": [{"type": "http", "port": port, "bind_addresses": LOCAL,
                                      "resources": [{"names": ["client"]}]}],
                "worker_log_config": str(self._log_config(name)),
                "worker_pid_file": str(directory / f"{name}.pid"),
            }))

    def _log_config(self, name: str) -> Path:
        path = self.dir / f"{name}-log.yaml"
        path.write_text(yaml.safe_dump({
            "version": 1,
            "formatters": {"f": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
            "handlers": {"file": {"class": "logging.FileHandler", "filename": str(self.dir / f"{name}.log"),
                                  "formatter": "f"}},
            "root": {"level": "WARNING", "handlers": ["file"]},
            "disable_existing_loggers": False,
        }))
        return path

    def _spawn(self, name: str, app: str, *configs: Path) -> subprocess.Popen:
        args = [a for c in configs for a in ("-c", str(c))]
        with open(self.dir / f"{name}.stderr", "wb") as err:
            return subprocess.Popen([str(SYNAPSE_PYTHON), "-m", app, *args], cwd=self.dir,
                                    stdout=subprocess.DEVNULL, stderr=err,
                                    env={**os.environ, "SYNAPSE_ASYNC_IO_REACTOR": "0"})

    async def start(self, timeout: float = 180) -> None:
        """Main first (it creates the schema), then the workers together; each awaited on
        its ``/health``."""
        ensure_synapse_installed()
        # Idempotent and cached: adds the [redis] extra to a venv installed before it was asked for.
        subprocess.run([str(ROOT / "scripts" / "install-synapse")], check=True)
        self.procs["main"] = self._spawn("main", "synapse.app.homeserver", self.shared)
        await self._healthy("main", self.main_port, timeout)
        for name in self.worker_ports:
            self.procs[name] = self._spawn(name, "synapse.app.generic_worker", self.shared,
                                           self.dir / f"{name}.yaml")
        for name, port in self.worker_ports.items():
            await self._healthy(name, port, timeout)

    async def _healthy(self, name: str, port: int, timeout: float) -> None:
        await wait_healthy(f"http://127.0.0.1:{port}/health", lambda: self.procs[name].poll() is not None,
                           f"{self.dir}/{name}.stderr and {name}.log", timeout)

    def stop(self) -> None:
        """The workers (told together, then each awaited), then main."""
        workers = [p for n, p in self.procs.items() if n != "main" and p.poll() is None]
        for proc in workers:
            proc.terminate()
        for proc in workers:
            stop_process(proc)
        if "main" in self.procs and self.procs["main"].poll() is None:
            stop_process(self.procs["main"])

    def pids(self) -> dict[str, int]:
        return {name: proc.pid for name, proc in self.procs.items()}
