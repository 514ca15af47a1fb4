"""The image's contents, run for real: the wheel scripts/build-wheel makes (what the
Dockerfile installs), installed into a fresh venv, started by docker/start.sh as the
container would start it, against a real PostgreSQL."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import aiohttp
import asyncpg
import pytest

from tests.conftest import SKIP_POSTGRES, create_postgres_database, drop_postgres_database, free_port

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.skipif(SKIP_POSTGRES, reason="GATEWAY_TEST_SKIP_POSTGRES=1: no PostgreSQL reachable")


@pytest.fixture(scope="module")
def wheel_venv(tmp_path_factory) -> Path:
    """A venv holding only our wheel; its dependencies come from the test venv (a .pth)."""
    tmp = tmp_path_factory.mktemp("wheel")
    subprocess.run([str(ROOT / "scripts" / "build-wheel"), str(tmp / "dist")], check=True,
                   env={**os.environ, "PYTHON": sys.executable})
    (wheel,) = (tmp / "dist").glob("gateway-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert any(n.startswith("gateway/storage/schema/0001_") for n in names)
    assert "templates/sso_error.html" in names
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = Path(subprocess.run([str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               check=True, capture_output=True, text=True).stdout.strip())
    (site / "test-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    # Without PYTHONPATH: a checkout on it (its gateway.egg-info) would make pip think the wheel installed.
    clean_env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    subprocess.run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "--quiet",
                    "--disable-pip-version-check", "--no-deps", "--no-index", str(wheel)], check=True, env=clean_env)
    return venv


def _env(venv: Path, data: Path, **extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "SERVER_NAME", "POSTGRES_HOST")}
    return {**env, "PATH": f"{venv / 'bin'}:{env['PATH']}", "DATA_DIR": str(data), **extra}


def test_first_start_needs_a_server_name(wheel_venv, tmp_path):
    run = subprocess.run(["sh", str(ROOT / "docker" / "start.sh")], cwd=tmp_path, capture_output=True, text=True,
                         env=_env(wheel_venv, tmp_path / "data"), timeout=60)
    assert run.returncode != 0
    assert "set SERVER_NAME" in run.stderr
    assert not (tmp_path / "data" / "homeserver.yaml").exists()


async def test_start_script_runs_the_wheel_on_postgres(wheel_venv, tmp_path):
    name, pg = await create_postgres_database()
    port = free_port()
    data = tmp_path / "data"
    data.mkdir()
    env = _env(wheel_venv, data, SERVER_NAME="docker.test", PORT=str(port), POSTGRES_HOST=pg["host"],
               POSTGRES_PORT=str(pg["port"]), POSTGRES_USER=pg["user"], POSTGRES_DB=name,
               POSTGRES_PASSWORD=pg.get("password", ""))
    proc = await asyncio.create_subprocess_exec("sh", str(ROOT / "docker" / "start.sh"), cwd=tmp_path, env=env,
                                                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    try:
        async with aiohttp.ClientSession() as http:
            for _ in range(600):
                if proc.returncode is not None:
                    pytest.fail(f"start.sh exited: {(await proc.stderr.read()).decode()[-2000:]}")
                try:
                    async with http.get(f"http://127.0.0.1:{port}/health") as r:
                        if r.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.1)
            else:
                pytest.fail("no /health answer in 60 s")
            async with http.get(f"http://127.0.0.1:{port}/_matrix/client/versions") as r:
                assert "v1.1" in (await r.json())["versions"]
        # The installed CLI makes the first account, into the PostgreSQL database.
        subprocess.run([str(wheel_venv / "bin" / "gateway"), "register-user", "-c", str(data / "homeserver.yaml"),
                        "-u", "first", "-p", "first-password", "--admin"], check=True, env=env, cwd=tmp_path)
        conn = await asyncpg.connect(**{k: v for k, v in pg.items() if k != "database"}, database=name)
        try:
            assert await conn.fetchval("SELECT COUNT(*) FROM users WHERE user_id = '@first:docker.test'") == 1
        finally:
            await conn.close()
        # The code that ran is the wheel's, not the checkout's.
        where = subprocess.run([str(wheel_venv / "bin" / "python"), "-c", "import gateway; print(gateway.__file__)"],
                               capture_output=True, text=True, cwd=tmp_path, env=env).stdout
        assert str(wheel_venv) in where
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 30) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await drop_postgres_database(name)
