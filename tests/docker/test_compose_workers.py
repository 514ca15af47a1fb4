"""The compose file's ``workers`` profile (docs/workers.md), checked without a Docker engine:
the services and their health checks, the configs of docker/workers/ read by our config
loader as each container reads them, the entry point's choice of files, and the nginx
configuration (the documented map, and ``nginx -t``)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from gateway.config import load_config
from gateway.roles import roles_for

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
COMPOSE = yaml.safe_load((DOCKER / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
WORKERS = {"generic1": "generic1.yaml", "generic2": "generic2.yaml", "federation-sender1": "federation_sender1.yaml"}
IN_CONTAINER = "/etc/gateway/workers/"


def profile(name: str) -> dict:
    return {k: s for k, s in SERVICES.items() if name in s.get("profiles", [])}


def test_the_workers_profile_adds_the_workers_redis_and_nginx_each_with_a_health_check():
    assert set(profile("workers")) == {*WORKERS, "redis", "nginx"}
    assert not SERVICES["gateway"].get("profiles") and not SERVICES["postgres"].get("profiles")
    for name, service in profile("workers").items():
        assert service["restart"] == "unless-stopped", name
        check = service["healthcheck"]
        assert check["test"][0] == "CMD" and check["retries"] >= 3, name
    assert "redis-cli" in SERVICES["redis"]["healthcheck"]["test"]
    assert "http://127.0.0.1:8080/health" in SERVICES["nginx"]["healthcheck"]["test"]
    assert SERVICES["nginx"]["ports"] == ["8080:8080"]
    assert SERVICES["nginx"]["depends_on"] == {n: {"condition": "service_healthy"}
                                               for n in ("gateway", "generic1", "generic2")}


def _config_files(service: dict) -> list[str]:
    args = service["entrypoint"]
    assert args[:2] == ["gateway", "run"]
    return [args[i + 1] for i, a in enumerate(args) if a == "-c"]


def test_each_worker_reads_mains_file_the_shared_additions_and_its_own_and_is_checked_on_its_port():
    mounts = {"gateway-data:/data:ro", f"./workers:{IN_CONTAINER.rstrip('/')}:ro"}
    assert f"./workers:{IN_CONTAINER.rstrip('/')}:ro" in SERVICES["gateway"]["volumes"]
    for name, file in WORKERS.items():
        service = SERVICES[name]
        assert _config_files(service) == ["/data/homeserver.yaml", f"{IN_CONTAINER}shared.yaml",
                                          f"{IN_CONTAINER}{file}"], name
        assert set(service["volumes"]) == mounts, name
        assert service["depends_on"] == {"gateway": {"condition": "service_healthy"},
                                         "redis": {"condition": "service_healthy"}}, name
        worker = yaml.safe_load((DOCKER / "workers" / file).read_text())
        (listener,) = worker["worker_listeners"]
        assert "health" in listener["resources"][0]["names"], name
        assert f"http://127.0.0.1:{listener['port']}/health" in " ".join(service["healthcheck"]["test"]), name


def _generated_homeserver_yaml(tmp_path: Path) -> Path:
    """What docker/start.sh writes on main's first start (PostgreSQL at the postgres service)."""
    config = tmp_path / "homeserver.yaml"
    subprocess.run([sys.executable, "-m", "gateway", "generate-config", "--server-name", "example.com",
                    "--config-path", str(config), "--data-dir", str(tmp_path), "--port", "8008",
                    "--bind-address", "0.0.0.0", "--public-baseurl", "https://example.com/",
                    "--postgres-host", "postgres", "--postgres-port", "5432", "--postgres-user", "gateway",
                    "--postgres-password", "pw", "--postgres-database", "gateway"],
                   cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, check=True, capture_output=True)
    return config


def test_the_configs_give_each_container_its_roles(tmp_path):
    base = _generated_homeserver_yaml(tmp_path)
    shared = str(DOCKER / "workers" / "shared.yaml")
    main = load_config([str(base), shared])
    main_roles = roles_for(main)
    assert main_roles.is_main and main_roles.events_writer and not main_roles.federation_sender
    assert main.workers.redis.enabled and main.workers.redis.host == "redis" and "redis" in SERVICES
    replication = [li for li in main.listeners if "replication" in li.resources]
    (location,) = main.workers.instance_map.values()
    assert main.workers.instance_map.keys() == {"main"} and location.host == "gateway"
    assert [li.port for li in replication] == [location.port]
    assert [li.port for li in main.listeners if "client" in li.resources] == [8008]
    for name, file in WORKERS.items():
        config = load_config([str(base), shared, str(DOCKER / "workers" / file)])
        assert config.warnings == (), name
        roles = roles_for(config)
        assert not roles.is_main and roles.federation_sender == (name == "federation-sender1"), name
        assert not (roles.events_writer or roles.background_tasks or roles.pusher), name


def test_the_entry_point_adds_the_shared_file_only_in_the_workers_profile(tmp_path):
    """docker/start.sh with a stand-in ``gateway`` that prints its arguments."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "gateway").write_text('#!/bin/sh\necho "$@"\n')
    (bin_dir / "gateway").chmod(0o755)
    (tmp_path / "homeserver.yaml").write_text("server_name: example.com\n")
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "DATA_DIR": str(tmp_path)}
    run = subprocess.run(["sh", str(DOCKER / "start.sh")], env=env, capture_output=True, text=True, check=True)
    assert run.stdout.split() == ["run", "-c", str(tmp_path / "homeserver.yaml")]
    assert SERVICES["gateway"]["environment"]["GATEWAY_PROFILES"] == "${COMPOSE_PROFILES:-}"
    run = subprocess.run(["sh", str(DOCKER / "start.sh")], env={**env, "GATEWAY_PROFILES": "debug,workers"},
                         capture_output=True, text=True, check=True)
    assert run.stdout.split() == ["run", "-c", str(tmp_path / "homeserver.yaml"), "-c", f"{IN_CONTAINER}shared.yaml"]


def _map(text: str) -> list[str]:
    block = re.search(r"^\s*map \$uri \$gateway_backend \{\n(.*?)^\s*\}", text, re.M | re.S).group(1)
    return [" ".join(line.split()) for line in block.splitlines() if line.strip()]


def test_nginx_routes_as_documented_to_the_compose_services_and_its_config_is_valid(tmp_path):
    conf = (DOCKER / "workers" / "nginx.conf").read_text()
    doc = re.findall(r"^```nginx\n(.*?)^```", (ROOT / "docs" / "workers.md").read_text(), re.M | re.S)[0]
    assert _map(conf) == _map(doc)
    servers = dict(re.findall(r"^upstream (\w+) \{\n(.*?)^\}", conf, re.M | re.S))
    assert re.findall(r"server (\S+);", servers["gateway_client_readers"]) == ["generic1:8083", "generic2:8083"]
    assert re.findall(r"server (\S+);", servers["gateway_main"]) == ["gateway:8008"]
    assert SERVICES["nginx"]["volumes"] == ["./workers/nginx.conf:/etc/nginx/conf.d/default.conf:ro"]
    # nginx -t, the service names standing for loopback (nothing resolves them here).
    local = re.sub(r"server (gateway|generic\d):", "server 127.0.0.1:", conf)
    (tmp_path / "default.conf").write_text(local)
    (tmp_path / "nginx.conf").write_text(
        ("user root;\n" if os.geteuid() == 0 else "")
        + f"pid {tmp_path}/nginx.pid;\nerror_log {tmp_path}/error.log;\nevents {{}}\n"
        f"http {{\n    access_log off;\n    client_body_temp_path {tmp_path}/body;\n"
        f"    proxy_temp_path {tmp_path}/proxy;\n    include {tmp_path}/default.conf;\n}}\n")
    run = subprocess.run([shutil.which("nginx") or "/usr/sbin/nginx", "-t", "-p", str(tmp_path), "-c",
                          str(tmp_path / "nginx.conf"), "-e", str(tmp_path / "error.log")],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
