"""No Docker engine runs here: check what can be checked about docker/ statically (the
image's contents are run for real by test_wheel.py)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = (ROOT / "docker" / "Dockerfile").read_text()
COMPOSE = yaml.safe_load((ROOT / "docker" / "docker-compose.yml").read_text())


def _instructions(name: str) -> list[str]:
    """The arguments of each ``name`` instruction, continuation lines joined."""
    return re.findall(rf"^{name} ((?:[^\n]*\\\n)*[^\n]*)$", DOCKERFILE, re.M)


def test_dockerfile_builds_the_wheel_from_every_package():
    pyproject = (ROOT / "pyproject.toml").read_text()
    include = re.search(r"include = \[(.*?)\]", pyproject).group(1)
    packages = {p.strip().strip('"').rstrip("*") for p in include.split(",")}
    for pkg in packages:
        assert re.search(rf"^COPY {pkg} \./{pkg}$", DOCKERFILE, re.M), pkg
    assert "scripts/build-wheel /wheels" in DOCKERFILE
    assert "pip install --no-cache-dir /wheels/*.whl" in DOCKERFILE


def test_image_runs_as_a_user_with_a_health_check_and_only_the_port_it_serves():
    users = _instructions("USER")
    assert users and users[-1] not in ("root", "0")
    assert "--home-dir /data" in DOCKERFILE and "chown gateway:gateway /data" in DOCKERFILE
    (health,) = _instructions("HEALTHCHECK")
    assert "/health" in health
    start = (ROOT / "docker" / "start.sh").read_text()
    port = re.search(r"PORT=\$\{PORT:-(\d+)\}", start).group(1)
    assert _instructions("EXPOSE") == [port]
    assert f"127.0.0.1:{port}/health" in health


def test_start_script_is_valid_sh_and_requires_a_server_name():
    subprocess.run(["sh", "-n", str(ROOT / "docker" / "start.sh")], check=True)
    start = (ROOT / "docker" / "start.sh").read_text()
    assert ': "${SERVER_NAME:?' in start
    assert 'exec gateway run -c "$CONFIG"' in start


def test_compose_waits_for_a_healthy_postgres_and_restarts():
    services = COMPOSE["services"]
    gw, pg = services["gateway"], services["postgres"]
    assert gw["build"]["dockerfile"] == "docker/Dockerfile"
    assert gw["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    assert "pg_isready" in " ".join(pg["healthcheck"]["test"])
    assert "/health" in " ".join(gw["healthcheck"]["test"])
    for name, service in services.items():
        assert service.get("restart") == "unless-stopped", name
    assert gw["environment"]["SERVER_NAME"].startswith("${SERVER_NAME:?")  # no silent localhost
    assert gw["environment"]["POSTGRES_HOST"] == "postgres"
    assert gw["environment"]["POSTGRES_PASSWORD"] == pg["environment"]["POSTGRES_PASSWORD"]
    assert "8008:8008" in gw["ports"]
    # Redis only serves workers: no service runs it in the default profile.
    assert all("redis" not in s.get("image", "") or s.get("profiles") for s in services.values())
