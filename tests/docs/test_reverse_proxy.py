"""The nginx and Caddy examples of docs/reverse-proxy.md, run for real in front of Gateway.

Each proxy runs as our own process with the documented configuration, changed only where
a test must (ports, certificate paths, Caddy's global options), in front of a Gateway
configured with the documented listener. Through each: the encoded path reaches Gateway
untouched, federation's port serves the keys, delegation answers, and a client cannot
choose the address it is recorded under.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import socket
import ssl
import subprocess
import urllib.parse

import pytest
import yaml

from tests.conftest import free_port
from tests.support.gateway_process import gateway_process, stop_process, wait_for_port
from tests.support.tls import TestCA

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DOC = os.path.join(ROOT, "docs", "reverse-proxy.md")
SPOOFED = "203.0.113.9"  # what a client claims in its own X-Forwarded-For
BEHIND_PROXY = "198.51.100.7"


def _block(language: str, index: int = 0) -> str:
    with open(DOC, encoding="utf-8") as f:
        blocks = re.findall(rf"^```{language}\n(.*?)^```", f.read(), re.MULTILINE | re.DOTALL)
    return blocks[index]


def _replace(text: str, old: str, new: str, *, regex: bool = False) -> str:
    """Replace, insisting the documented text is there (so a doc change fails loudly here)."""
    out, n = re.subn(old if regex else re.escape(old), lambda _: new, text, flags=re.MULTILINE)
    assert n, f"docs/reverse-proxy.md no longer contains {old!r}: update this test with it"
    return out


class _LoopbackHTTPS(http.client.HTTPSConnection):
    """HTTPS to a host name, connected to 127.0.0.1 (SNI and Host stay the name)."""

    def connect(self):
        sock = socket.create_connection(("127.0.0.1", self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)


def request(ctx, host: str, port: int, method: str, path: str, body=None, headers=None):
    conn = _LoopbackHTTPS(host, port, context=ctx, timeout=30)
    try:
        conn.request(method, path, body=json.dumps(body) if body is not None else None,
                     headers={"Content-Type": "application/json", **(headers or {})})
        resp = conn.getresponse()
        raw = resp.read()
        try:
            return resp.status, json.loads(raw)
        except ValueError:
            return resp.status, raw.decode(errors="replace")
    finally:
        conn.close()


@pytest.fixture(scope="module")
def gateway(tmp_path_factory):
    """Gateway with the documented listener (on a free port) and registration open."""
    config = yaml.safe_load(_block("yaml", 0))
    config.update({"enable_registration": True, "enable_registration_without_verification": True})
    with gateway_process(tmp_path_factory.mktemp("proxied"), config) as port:
        yield port


@pytest.fixture(scope="module")
def tls(tmp_path_factory):
    ca = TestCA(tmp_path_factory.mktemp("ca"))
    cert = ca.issue("matrix.example.com", "example.com")
    return cert, ssl.create_default_context(cafile=str(ca.ca_path))


def _nginx(tmp, backend: int, cert) -> tuple[list[str], dict[str, int]]:
    ports = {"matrix.example.com": free_port(), "federation": free_port()}
    server = _block("nginx")
    server = _replace(server, "listen 443 ssl http2;", f"listen 127.0.0.1:{ports['matrix.example.com']} ssl http2;")
    server = _replace(server, "listen 8448 ssl http2;", f"listen 127.0.0.1:{ports['federation']} ssl http2;")
    server = _replace(server, r"^\s*listen \[::\]:\d+ ssl http2;\n", "", regex=True)  # no IPv6 needed here
    server = _replace(server, "/etc/letsencrypt/live/matrix.example.com/fullchain.pem", str(cert.cert_path))
    server = _replace(server, "/etc/letsencrypt/live/matrix.example.com/privkey.pem", str(cert.key_path))
    server = _replace(server, "http://127.0.0.1:8008", f"http://127.0.0.1:{backend}")
    temp = "\n".join(f"    {k}_temp_path {tmp}/{k};" for k in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    conf = tmp / "nginx.conf"
    conf.write_text(
        ("user root;\n" if os.geteuid() == 0 else "")
        + f"daemon off;\npid {tmp}/nginx.pid;\nerror_log {tmp}/error.log;\nevents {{}}\n"
        f"http {{\n    access_log off;\n{temp}\n{server}\n}}\n")
    return [shutil.which("nginx") or "/usr/sbin/nginx", "-p", str(tmp), "-c", str(conf), "-e", str(tmp / "error.log")], ports


def _caddy(tmp, backend: int, cert) -> tuple[list[str], dict[str, int]]:
    ports = {"matrix.example.com": free_port(), "federation": free_port(), "example.com": free_port()}
    tls_line = f"\ttls {cert.cert_path} {cert.key_path}"
    text = _block("caddy")
    text = _replace(text, "matrix.example.com, matrix.example.com:8448 {",
                    f"https://matrix.example.com:{ports['matrix.example.com']}, "
                    f"https://matrix.example.com:{ports['federation']} {{\n{tls_line}")
    text = _replace(text, r"^example\.com \{", f"https://example.com:{ports['example.com']} {{\n{tls_line}",
                    regex=True)
    text = _replace(text, "127.0.0.1:8008", f"127.0.0.1:{backend}")
    conf = tmp / "Caddyfile"
    # No admin endpoint, no HTTP->HTTPS redirect server on port 80, state under tmp.
    conf.write_text(f"{{\n\tadmin off\n\tauto_https disable_redirects\n\tstorage file_system {tmp}/data\n}}\n\n{text}")
    return [shutil.which("caddy") or "/usr/bin/caddy", "run", "--config", str(conf), "--adapter", "caddyfile"], ports


@pytest.fixture(scope="module", params=["nginx", "caddy"])
def proxy(request, gateway, tls, tmp_path_factory):
    name = request.param
    if shutil.which(name) is None and not os.path.exists(f"/usr/sbin/{name}"):
        pytest.fail(f"{name} is not installed: scripts/install-system-deps installs it")
    cert, ctx = tls
    tmp = tmp_path_factory.mktemp(name)
    command, ports = (_nginx if name == "nginx" else _caddy)(tmp, gateway, cert)
    env = {**os.environ, "HOME": str(tmp), "XDG_DATA_HOME": str(tmp), "XDG_CONFIG_HOME": str(tmp)}
    log = tmp / "output.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        for port in ports.values():
            wait_for_port(port, proc, name, log)
        yield name, ports, ctx
    finally:
        stop_process(proc)


def test_clients_reach_gateway_with_the_path_untouched(proxy):
    _, ports, ctx = proxy
    port = ports["matrix.example.com"]
    status, body = request(ctx, "matrix.example.com", port, "GET", "/_matrix/client/versions")
    assert status == 200 and "v1.1" in body["versions"], body
    # An alias with an encoded "/": decoded on the way, it would match no route (M_UNRECOGNIZED).
    alias = urllib.parse.quote("#a/b:example.com", safe="")
    status, body = request(ctx, "matrix.example.com", port, "GET", f"/_matrix/client/v3/directory/room/{alias}")
    assert (status, body["errcode"]) == (404, "M_NOT_FOUND"), body


def test_federation_port_serves_the_keys_and_delegation_answers(proxy):
    name, ports, ctx = proxy
    status, body = request(ctx, "matrix.example.com", ports["federation"], "GET", "/_matrix/key/v2/server")
    assert status == 200 and body["server_name"] == "example.com", body
    hosts = ["matrix.example.com"] + (["example.com"] if "example.com" in ports else [])
    for host in hosts:
        status, body = request(ctx, host, ports[host], "GET", "/.well-known/matrix/server")
        assert (status, body) == (200, {"m.server": "matrix.example.com:443"}), (host, body)


def test_the_admin_api_is_not_proxied(proxy):
    _, ports, ctx = proxy
    status, body = request(ctx, "matrix.example.com", ports["matrix.example.com"], "GET",
                           "/_synapse/admin/v1/server_version")
    assert "server_version" not in str(body), (status, body)


def test_a_client_cannot_choose_its_recorded_address(proxy, gateway):
    name, ports, ctx = proxy
    port = ports["matrix.example.com"]
    status, body = request(ctx, "matrix.example.com", port, "POST", "/_matrix/client/v3/register",
                           {"username": f"xff-{name}", "password": "a-long-password", "auth": {"type": "m.login.dummy"}},
                           headers={"X-Forwarded-For": SPOOFED})
    assert status == 200, body
    user_id, token = body["user_id"], body["access_token"]
    auth = {"Authorization": f"Bearer {token}", "X-Forwarded-For": SPOOFED}
    status, _ = request(ctx, "matrix.example.com", port, "GET", "/_matrix/client/v3/account/whoami", headers=auth)
    assert status == 200
    # Straight to the listener (where only the proxy should be able to connect), the header is believed.
    conn = http.client.HTTPConnection("127.0.0.1", gateway, timeout=30)
    conn.request("GET", f"/_matrix/client/v3/admin/whois/{urllib.parse.quote(user_id)}",
                 headers={"Authorization": f"Bearer {token}", "X-Forwarded-For": BEHIND_PROXY})
    resp = conn.getresponse()
    whois = json.loads(resp.read())
    conn.close()
    assert resp.status == 200, whois
    ips = {c["ip"] for d in whois["devices"].values() for s in d["sessions"] for c in s["connections"]}
    assert ips == {"127.0.0.1", BEHIND_PROXY}, ips
