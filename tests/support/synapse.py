"""Run a real Synapse (from PyPI, in .cache/synapse-venv) on loopback for interop tests.

Its server name is an IP literal (``127.0.0.1:PORT``) so no DNS is needed; the
federation listener speaks TLS with a certificate from the test CA. Loopback is allowed
explicitly (Synapse blocks it by default) and rate limits are raised.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import subprocess
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
        }
        config.update(extra or {})
        path = self.dir / "homeserver.yaml"
        path.write_text(yaml.safe_dump(config))
        return path

    async def start(self, extra: dict | None = None, timeout: float = 90) -> None:
        python = ensure_synapse_installed()
        config_path = self.write_config(extra)
        subprocess.run(
            [str(python), "-m", "synapse.app.homeserver", "-c", str(config_path), "--generate-keys"],
            check=True, capture_output=True, cwd=self.dir,
        )
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

    async def stop(self) -> None:
        if self.proc and self.proc.returncode is None:
            self.proc.terminate()
            try:
                await asyncio.wait_for(self.proc.wait(), 20)
            except asyncio.TimeoutError:
                self.proc.kill()
                await self.proc.wait()


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
                              gateway_extra: dict | None = None):
    """A Synapse and our server (open registration) federating on loopback with one
    test CA, and a client session: yields (synapse, gateway, session)."""
    from tests.support.gateway_server import running_gateway

    ca = TestCA(directory / "ca")
    synapse = SynapseServer(directory / "synapse", ca)
    await synapse.start(synapse_extra)
    extra = {"federation_custom_ca_list": [str(ca.ca_path)], "ip_range_whitelist": ["127.0.0.0/8"],
             "enable_registration": True, "enable_registration_without_verification": True, "bcrypt_rounds": 4,
             **(gateway_extra or {})}
    try:
        async with running_gateway(directory, ca, extra) as gw, aiohttp.ClientSession() as session:
            yield synapse, gw, session
    finally:
        await synapse.stop()
