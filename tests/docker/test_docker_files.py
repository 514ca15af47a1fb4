"""No Docker engine runs here: check what can be checked about docker/ statically."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import yaml

from gateway.config import parse_config
from gateway.config.generate import render_config

ROOT = Path(__file__).resolve().parents[2]


def test_dockerfile_copies_every_package():
    dockerfile = (ROOT / "docker" / "Dockerfile").read_text()
    pyproject = (ROOT / "pyproject.toml").read_text()
    include = re.search(r"include = \[(.*?)\]", pyproject).group(1)
    packages = {p.strip().strip('"').rstrip("*") for p in include.split(",")}
    for pkg in packages:
        assert re.search(rf"^COPY {pkg} \./{pkg}$", dockerfile, re.M), pkg


def test_start_script_uses_the_cli_commands_the_tests_use():
    start = (ROOT / "docker" / "start.sh").read_text()
    assert "gateway generate-config --server-name" in start
    assert 'exec gateway run -c "$CONFIG"' in start
    subprocess.run(["sh", "-n", str(ROOT / "docker" / "start.sh")], check=True)


def test_start_script_rebind_matches_generated_config(tmp_path):
    start = (ROOT / "docker" / "start.sh").read_text()
    pattern = re.search(r"sed -i \"s/(.*?)/(.*?)/\"", start)
    find = pattern.group(1).replace("\\[", "[").replace("\\]", "]")
    text = render_config(server_name="example.com", data_dir="/data")
    assert find in text
    rebound = text.replace(find, pattern.group(2).replace("\\[", "[").replace("\\]", "]"))
    config = parse_config(yaml.safe_load(rebound), config_path="/data/homeserver.yaml")
    assert config.listeners[0].bind_addresses == ("0.0.0.0",)


def test_compose_file_is_consistent():
    compose = yaml.safe_load((ROOT / "docker" / "docker-compose.yml").read_text())
    gw = compose["services"]["gateway"]
    assert gw["build"]["dockerfile"] == "docker/Dockerfile"
    assert {"postgres", "redis"} <= set(compose["services"])
    assert "8008:8008" in gw["ports"]
