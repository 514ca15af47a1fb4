"""Run a real Synapse (from PyPI, in .cache/synapse-venv) on loopback for interop tests.

Its server name is an IP literal (``127.0.0.1:PORT``) so no DNS is needed; the
federation listener speaks TLS with a certificate from the test CA. Loopback is allowed
explicitly (Synapse blocks it by default) and rate limits are raised.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import secrets
import sqlite3
import subprocess
import time
import urllib.request
import uuid
from pathlib import Path

import aiohttp
import yaml

from tests.conftest import free_port
from tests.support.tls import TestCA

ROOT = Path(__file__).resolve().parents[2]
SYNAPSE_PYTHON = ROOT / ".cache" / "synapse-venv" / "bin" / "python"

_HIGH = {"per_second": 1000, "burst_count": 1000}


def ensure_synapse_installed() -> Path:
    if not SYNAPSE_PYTHON.exists():
        subprocess.run([str(ROOT / "scripts" / "install-synapse")], check=True)
    return SYNAPSE_PYTHON


def synapse_version() -> str:
    """The installed Synapse's version, from its dist-info directory (no import: that costs seconds)."""
    (dist,) = (SYNAPSE_PYTHON.parent.parent / "lib").glob("python3*/site-packages/matrix_synapse-*.dist-info")
    return dist.name[len("matrix_synapse-"):-len(".dist-info")]


def write_signing_key(path: Path) -> None:
    """A fresh ed25519 signing key in Synapse's key file format (``ed25519 <version>
    <unpadded base64 seed>``), instead of a ``--generate-keys`` run, which starts a
    whole Synapse process (seconds on a loaded machine) just to write this line."""
    seed = base64.b64encode(secrets.token_bytes(32)).decode().rstrip("=")
    path.write_text(f"ed25519 a_{secrets.token_hex(2)} {seed}\n")


def empty_database_template(config_path: Path) -> Path:
    """An empty SQLite database with Synapse's schema (and its background updates run),
    built once per Synapse version under .cache and copied for each server: the schema
    is the same for every server (it names none until users exist), and building it is
    a good part of a Synapse start. ``config_path``: a config of ours to build it with."""
    cache = ROOT / ".cache" / "synapse-db-template"
    template = cache / f"synapse-{synapse_version()}.db"
    if template.exists():
        return template
    cache.mkdir(parents=True, exist_ok=True)
    build = cache / f"build-{uuid.uuid4().hex}"
    build.mkdir()
    try:
        config = yaml.safe_load(config_path.read_text())
        config["database"] = {"name": "sqlite3", "args": {"database": str(build / "homeserver.db")}}
        build_config = build / "homeserver.yaml"
        build_config.write_text(yaml.safe_dump(config))
        updater = SYNAPSE_PYTHON.parent / "update_synapse_database"
        subprocess.run([str(SYNAPSE_PYTHON), str(updater), "--database-config", str(build_config),
                        "--run-background-updates"], check=True, capture_output=True, cwd=build)
        # One self-contained file (no -wal beside it), then put in place atomically:
        # several xdist workers may build it at once.
        staged = build / "template.db"
        with contextlib.closing(sqlite3.connect(build / "homeserver.db")) as src, \
                contextlib.closing(sqlite3.connect(staged)) as dst:
            src.backup(dst)
        os.replace(staged, template)
    finally:
        for f in sorted(build.rglob("*"), reverse=True):
            f.rmdir() if f.is_dir() else f.unlink()
        build.rmdir()
    return template


class SynapseServer:
    def __init__(self, directory: Path, ca: TestCA):
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.fed_port = free_port()
        self.client_port = free_port()
        self.server_name = f"127.0.0.1:{self.fed_port}"
        self.client_url = f"http://127.0.0.1:{self.client_port}"
        self.shared_secret = secrets.token_hex(16)
        self.ca = ca
        self.proc: asyncio.subprocess.Process | None = None
        self.log_path = self.dir / "synapse.log"

    def write_config(self, extra: dict | None = None) -> Path:
        cert = self.ca.issue("127.0.0.1", filename="synapse")
        log_config = self.dir / "log.yaml"
        log_config.write_text(yaml.safe_dump({
            "version": 1,
            "formatters": {"f": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
            "handlers": {"file": {"class": "logging.FileHandler", "filename": str(self.log_path), "formatter": "f"}},
            "root": {"level": "INFO", "handlers": ["file"]},
            "disable_existing_loggers": False,
        }))
        config = {
            "server_name": self.server_name,
            "public_baseurl": self.client_url + "/",
            "pid_file": str(self.dir / "synapse.pid"),
            "report_stats": False,
            "listeners": [
                {"port": self.fed_port, "bind_addresses": ["127.0.0.1"], "type": "http", "tls": True,
                 "resources": [{"names": ["federation"]}]},
                {"port": self.client_port, "bind_addresses": ["127.0.0.1"], "type": "http", "tls": False,
                 "resources": [{"names": ["client"]}]},
            ],
            "tls_certificate_path": str(cert.cert_path),
            "tls_private_key_path": str(cert.key_path),
            "database": {"name": "sqlite3", "args": {"database": str(self.dir / "homeserver.db")}},
            "media_store_path": str(self.dir / "media"),
            "signing_key_path": str(self.dir / "signing.key"),
            "log_config": str(log_config),
            "registration_shared_secret": self.shared_secret,
            "macaroon_secret_key": secrets.token_hex(16),
            "form_secret": secrets.token_hex(16),
            "enable_registration": False,
            "trusted_key_servers": [],
            "suppress_key_server_warning": True,
            "federation_verify_certificates": False,
            "federation_ip_range_blacklist": [],
            "ip_range_blacklist": [],
            "ip_range_whitelist": ["127.0.0.0/8", "::1/128"],
            "rc_message": _HIGH, "rc_registration": _HIGH, "rc_room_creation": _HIGH,
            "rc_joins": {"local": _HIGH, "remote": _HIGH}, "rc_joins_per_room": _HIGH,
            "rc_invites": {"per_room": _HIGH, "per_user": _HIGH, "per_issuer": _HIGH},
            "rc_login": {"address": _HIGH, "account": _HIGH, "failed_attempts": _HIGH},
            "rc_federation": {"window_size": 1000, "sleep_limit": 1000, "reject_limit": 1000, "concurrent": 100},
            "federation_rr_transactions_per_room_per_second": 1000,
            # Test users' passwords need no strength, and registering at the default
            # cost takes seconds on a loaded machine.
            "bcrypt_rounds": 4,
        }
        config.update(extra or {})
        path = self.dir / "homeserver.yaml"
        path.write_text(yaml.safe_dump(config))
        return path

    def prepare(self, extra: dict | None = None) -> Path:
        """Config, signing key and an empty database from the template; returns the config path."""
        ensure_synapse_installed()
        config_path = self.write_config(extra)
        config = yaml.safe_load(config_path.read_text())
        key_path = Path(config["signing_key_path"])
        if not key_path.exists():
            write_signing_key(key_path)
        database = config["database"]
        if database["name"] == "sqlite3" and not Path(database["args"]["database"]).exists():
            with contextlib.closing(sqlite3.connect(empty_database_template(config_path))) as src, \
                    contextlib.closing(sqlite3.connect(database["args"]["database"])) as dst:
                src.backup(dst)
        return config_path

    async def start(self, extra: dict | None = None, timeout: float = 90) -> None:
        python = ensure_synapse_installed()
        config_path = self.prepare(extra)
        self.proc = await asyncio.create_subprocess_exec(
            str(python), "-m", "synapse.app.homeserver", "-c", str(config_path),
            cwd=self.dir, stdout=asyncio.subprocess.DEVNULL, stderr=open(self.dir / "stderr.log", "wb"),
            env={**os.environ, "SYNAPSE_ASYNC_IO_REACTOR": "0"},
        )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        async with aiohttp.ClientSession() as s:
            while True:
                if self.proc.returncode is not None:
                    raise RuntimeError(f"Synapse exited ({self.proc.returncode}); see {self.dir}/stderr.log")
                try:
                    async with s.get(f"{self.client_url}/health") as r:
                        if r.status == 200:
                            return
                except aiohttp.ClientConnectionError:
                    pass
                if loop.time() > deadline:
                    raise RuntimeError(f"Synapse did not start in {timeout}s; see {self.log_path}")
                await asyncio.sleep(0.2)

    def start_blocking(self, extra: dict | None = None, timeout: float = 90) -> None:
        """``start`` without an event loop, for a session-scoped fixture (which outlives
        the loops of the modules that use it)."""
        config_path = self.prepare(extra)
        with open(self.dir / "stderr.log", "wb") as stderr:
            self.proc = subprocess.Popen(
                [str(SYNAPSE_PYTHON), "-m", "synapse.app.homeserver", "-c", str(config_path)],
                cwd=self.dir, stdout=subprocess.DEVNULL, stderr=stderr,
                env={**os.environ, "SYNAPSE_ASYNC_IO_REACTOR": "0"},
            )
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"Synapse exited ({self.proc.returncode}); see {self.dir}/stderr.log")
            try:
                with urllib.request.urlopen(f"{self.client_url}/health", timeout=5) as r:
                    if r.status == 200:
                        return
            except OSError:  # refused, reset, timed out (URLError is one)
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"Synapse did not start in {timeout}s; see {self.log_path}")
            time.sleep(0.2)

    def stop_blocking(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    async def stop(self) -> None:
        if self.proc and self.proc.returncode is None:
            self.proc.terminate()
            try:
                await asyncio.wait_for(self.proc.wait(), 20)
            except asyncio.TimeoutError:
                self.proc.kill()
                await self.proc.wait()


#: Config for a Synapse shared by several modules (tests/interop/conftest.py): what
#: those modules need between them. Its failed destinations (servers of modules that
#: finished) are retried soon, in case a later module's server gets the same port.
SHARED_SYNAPSE_EXTRA = {
    "allow_public_rooms_over_federation": True,
    "room_list_publication_rules": [{"action": "allow"}],
    "federation": {"destination_min_retry_interval": "1s", "destination_max_retry_interval": "5s"},
}


def unique_localpart(prefix: str) -> str:
    """A localpart that no other module's user has, on a Synapse shared by modules."""
    return f"{prefix}-{secrets.token_hex(3)}"


async def register_synapse_user(server: "SynapseServer", localpart: str, password: str = "synapse-pass",
                                admin: bool = False) -> str:
    """Create a user through Synapse's shared-secret admin API; returns an access token."""
    import hashlib
    import hmac

    url = f"{server.client_url}/_synapse/admin/v1/register"
    async with aiohttp.ClientSession() as s:
        async with s.get(url) as r:
            nonce = (await r.json())["nonce"]
        mac = hmac.new(server.shared_secret.encode(), digestmod=hashlib.sha1)
        mac.update(b"\x00".join([nonce.encode(), localpart.encode(), password.encode(),
                                 b"admin" if admin else b"notadmin"]))
        async with s.post(url, json={"nonce": nonce, "username": localpart, "password": password,
                                     "admin": admin, "mac": mac.hexdigest()}) as r:
            body = await r.json()
            if r.status != 200:
                raise RuntimeError(f"Synapse registration failed: {body}")
            return body["access_token"]


@contextlib.asynccontextmanager
async def synapse_and_gateway(directory: Path, synapse_extra: dict | None = None,
                              gateway_extra: dict | None = None, synapse: SynapseServer | None = None):
    """A Synapse and our server (open registration) federating on loopback with one
    test CA, and a client session: yields (synapse, gateway, session).
    ``synapse``: an already running one (shared by modules) to use, and leave running;
    then ``synapse_extra`` must be None."""
    from tests.support.gateway_server import running_gateway

    owned = synapse is None
    if owned:
        synapse = SynapseServer(directory / "synapse", TestCA(directory / "ca"))
        await synapse.start(synapse_extra)
    else:
        assert synapse_extra is None, "a shared Synapse has the config it started with"
    ca = synapse.ca
    extra = {"federation_custom_ca_list": [str(ca.ca_path)], "ip_range_whitelist": ["127.0.0.0/8"],
             "enable_registration": True, "enable_registration_without_verification": True, "bcrypt_rounds": 4,
             **(gateway_extra or {})}
    try:
        async with running_gateway(directory, ca, extra) as gw, aiohttp.ClientSession() as session:
            yield synapse, gw, session
    finally:
        if owned:
            await synapse.stop()
