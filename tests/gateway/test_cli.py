"""The `gateway` command line, run as a real subprocess, as an operator would."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys

import aiohttp
import pytest
import signedjson.key
import signedjson.sign
import yaml

from tests.conftest import free_port

GATEWAY = [sys.executable, "-m", "gateway"]


def run_cli(*args: str, check: bool = False) -> subprocess.CompletedProcess:
    return subprocess.run([*GATEWAY, *args], capture_output=True, text=True, timeout=60, check=check)


@pytest.fixture
def generated(tmp_path):
    port = free_port()
    cfg = tmp_path / "homeserver.yaml"
    r = run_cli("generate-config", "--server-name", "cli.test", "--config-path", str(cfg),
                "--data-dir", str(tmp_path / "data"), "--port", str(port))
    assert r.returncode == 0, r.stderr
    return cfg, port


def test_generate_config_writes_config_and_key(generated, tmp_path):
    cfg, port = generated
    data = yaml.safe_load(cfg.read_text())
    assert data["server_name"] == "cli.test"
    assert data["listeners"][0]["port"] == port
    key_file = tmp_path / "data" / "cli.test.signing.key"
    alg, version, seed = key_file.read_text().split()
    assert alg == "ed25519" and version.startswith("a_") and len(seed) == 43
    assert oct(key_file.stat().st_mode & 0o777) == "0o600"
    # Refuses to overwrite.
    r = run_cli("generate-config", "--server-name", "other.test", "--config-path", str(cfg))
    assert r.returncode == 1 and "already exists" in r.stderr
    assert yaml.safe_load(cfg.read_text())["server_name"] == "cli.test"


def test_check_config(generated, tmp_path):
    cfg, _ = generated
    r = run_cli("check-config", "-c", str(cfg))
    assert r.returncode == 0 and "OK" in r.stdout, r.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text(cfg.read_text().replace("port: ", "port: x", 1) + "\nmystery_key: 1\n")
    r = run_cli("check-config", "-c", str(bad))
    assert r.returncode == 1
    assert "listeners[0].port" in r.stderr and "expected an integer" in r.stderr
    assert "Traceback" not in r.stderr


def test_register_user(generated):
    cfg, _ = generated
    r = run_cli("register-user", "-c", str(cfg), "-u", "alice", "-p", "s3cret", "--admin")
    assert r.returncode == 0, r.stderr
    assert "@alice:cli.test" in r.stdout
    r = run_cli("register-user", "-c", str(cfg), "-u", "alice", "-p", "x")
    assert r.returncode == 1 and "already exists" in r.stderr
    r = run_cli("register-user", "-c", str(cfg), "-u", "Bad Name!", "-p", "x")
    assert r.returncode == 1 and "not a valid user name" in r.stderr
    r = run_cli("register-user", "-c", str(cfg), "-u", "@bob:elsewhere.test", "-p", "x")
    assert r.returncode == 1 and "not a user of cli.test" in r.stderr


async def _wait_until_up(proc: asyncio.subprocess.Process, url: str) -> None:
    # Generous: a loaded machine (the suite runs on several workers) starts Python slowly.
    deadline = asyncio.get_running_loop().time() + 60
    async with aiohttp.ClientSession() as session:
        while asyncio.get_running_loop().time() < deadline:
            if proc.returncode is not None:
                raise AssertionError(f"server exited with {proc.returncode}")
            try:
                async with session.get(url) as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientConnectionError:
                pass
            await asyncio.sleep(0.05)
    raise AssertionError("server did not come up")


async def test_run_serves_keys_and_stops_cleanly(generated):
    cfg, port = generated
    proc = await asyncio.create_subprocess_exec(
        *GATEWAY, "run", "-c", str(cfg), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    try:
        base = f"http://127.0.0.1:{port}"
        await _wait_until_up(proc, f"{base}/health")
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{base}/_matrix/key/v2/server") as resp:
                body = await resp.json()
        (key_id, entry), = body["verify_keys"].items()
        vk = signedjson.key.decode_verify_key_base64("ed25519", key_id.split(":")[1], entry["key"])
        signedjson.sign.verify_signed_json(body, "cli.test", vk)
        proc.send_signal(signal.SIGTERM)
        rc = await asyncio.wait_for(proc.wait(), 15)
        output = (await proc.stdout.read()).decode()
        assert rc == 0, output
        assert "stopped" in output
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_run_with_bad_config_fails_clearly(tmp_path):
    cfg = tmp_path / "homeserver.yaml"
    cfg.write_text("server_name: ok.test\ndatabase: {name: oracle}\n")
    proc = await asyncio.create_subprocess_exec(
        *GATEWAY, "run", "-c", str(cfg), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 1
    assert b"database.name" in out and b"Traceback" not in out


async def test_key_file_created_when_missing(tmp_path):
    # Synapse creates a missing signing key on startup; so do we.
    port = free_port()
    cfg = tmp_path / "homeserver.yaml"
    cfg.write_text(yaml.safe_dump({
        "server_name": "fresh.test",
        "listeners": [{"port": port, "bind_addresses": ["127.0.0.1"], "resources": [{"names": ["keys"]}]}],
        "database": {"name": "sqlite3", "args": {"database": str(tmp_path / "db.sqlite")}},
        "signing_key_path": str(tmp_path / "k.key"),
    }))
    proc = await asyncio.create_subprocess_exec(*GATEWAY, "run", "-c", str(cfg),
                                                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
    try:
        await _wait_until_up(proc, f"http://127.0.0.1:{port}/health")
        assert (tmp_path / "k.key").read_text().startswith("ed25519 ")
    finally:
        proc.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(proc.wait(), 15) == 0
