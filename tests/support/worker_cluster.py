"""A main process and any workers, run as an operator runs them (``gateway run -c
homeserver.yaml [-c worker.yaml]``), on a real PostgreSQL and Redis, optionally behind
docs/workers.md's nginx example. Used by the worker tests (tests/gateway/test_workers_*.py,
tests/gateway/test_stream_writers.py) and by bench/workers.py."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import yaml

from tests.conftest import GENEROUS_RATE_LIMITS, create_postgres_database, drop_postgres_database, free_port
from tests.support.gateway_process import ROOT, stop_process, wait_for_port

WORKER_APP = "synapse.app.generic_worker"
DOC = Path(ROOT) / "docs" / "workers.md"
LOCAL = ["127.0.0.1"]


@dataclass
class Worker:
    name: str
    #: Resource names of its main listener (``client``, ``media``...); ``metrics`` is added.
    resources: list[str]
    #: Other keys of its worker file (``enable_media_repo: true`` for a media worker).
    extra: dict[str, Any] = field(default_factory=dict)
    port: int = field(default_factory=free_port)
    #: True: a second listener of its own with the ``replication`` resource (a stream
    #: writer reached there, as docs/workers.md lays one out), named in ``instance_map``.
    replication_listener: bool = False
    replication_port: int = field(default_factory=free_port)
    #: Its listener serves TLS (the shared file's certificate): an inbound federation
    #: worker on the server name's port.
    tls: bool = False
    proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def replication_url(self) -> str:
        return f"http://127.0.0.1:{self.replication_port}"

    @property
    def listeners(self) -> list[dict]:
        out = [{"port": self.port, "bind_addresses": LOCAL, **({"tls": True} if self.tls else {}),
                "resources": [{"names": [*self.resources, "metrics"]}]}]
        if self.replication_listener:
            out.append({"port": self.replication_port, "bind_addresses": LOCAL,
                        "resources": [{"names": ["replication"]}]})
        return out

    @property
    def instance_location(self) -> dict | None:
        """Its ``instance_map`` entry: where its replication resource listens (if any)."""
        if self.replication_listener:
            return {"host": "127.0.0.1", "port": self.replication_port}
        return {"host": "127.0.0.1", "port": self.port} if "replication" in self.resources else None

    @property
    def ports(self) -> list[int]:
        return [listener["port"] for listener in self.listeners]


class WorkerCluster:
    """``shared``: keys added to (or replacing) the shared homeserver.yaml's."""

    def __init__(self, directory: Path, db_args: dict, workers: list[Worker], shared: dict[str, Any] | None = None,
                 *, main_resources: tuple[str, ...] = ("client", "metrics")):
        self.dir = directory
        self.db_args = db_args
        self.main_port, self.replication_port = free_port(), free_port()
        self.workers = {w.name: w for w in workers}
        self.shared = directory / "homeserver.yaml"
        self.shared.write_text(yaml.safe_dump({
            "server_name": "workers.test",
            "public_baseurl": f"http://127.0.0.1:{self.main_port}/",
            "database": {"name": "psycopg2", "args": {**db_args, "cp_min": 1, "cp_max": 5}},
            "signing_key_path": str(directory / "signing.key"), "media_store_path": str(directory / "media"),
            "listeners": [
                {"port": self.main_port, "bind_addresses": LOCAL, "resources": [{"names": list(main_resources)}]},
                {"port": self.replication_port, "bind_addresses": LOCAL, "resources": [{"names": ["replication"]}]},
            ],
            # Workers with a ``replication`` resource (stream writers) are reachable there.
            "instance_map": {"main": {"host": "127.0.0.1", "port": self.replication_port},
                             **{w.name: w.instance_location for w in workers if w.instance_location}},
            "redis": {"enabled": True, "host": "127.0.0.1", "port": 6379,
                      "channel_prefix": f"gateway-test-{uuid.uuid4().hex}"},
            "enable_registration": True, "enable_registration_without_verification": True,
            "bcrypt_rounds": 4, "send_federation": False, **GENEROUS_RATE_LIMITS, **(shared or {}),
        }))
        for w in workers:
            (directory / f"{w.name}.yaml").write_text(yaml.safe_dump({
                "worker_app": WORKER_APP, "worker_name": w.name,
                "worker_listeners": w.listeners,
                **w.extra,
            }))
        self.main: subprocess.Popen | None = None

    def _spawn(self, name: str, *configs: Path) -> subprocess.Popen:
        args = [a for c in configs for a in ("--config-path", str(c))]
        with open(self.dir / f"{name}.log", "ab") as out:  # a file: a full pipe nobody reads would block it
            return subprocess.Popen([sys.executable, "-m", "gateway", "run", *args], cwd=ROOT,
                                    env={**os.environ, "PYTHONPATH": ROOT}, stdout=out, stderr=subprocess.STDOUT)

    def _start(self, name: str, ports: list[int], *configs: Path) -> subprocess.Popen:
        proc = self._spawn(name, *configs)
        for port in ports:
            wait_for_port(port, proc, name, self.dir / f"{name}.log")
        return proc

    def start(self) -> None:
        """Main first (it brings the schema up to date), then every worker (started
        together, then each awaited on its port)."""
        self.main = self._start("main", [self.main_port, self.replication_port], self.shared)
        for w in self.workers.values():
            w.proc = self._spawn(w.name, self.shared, self.dir / f"{w.name}.yaml")
        for w in self.workers.values():
            for port in w.ports:
                wait_for_port(port, w.proc, w.name, self.dir / f"{w.name}.log")

    def start_worker(self, name: str) -> None:
        """Start the worker ``name`` (again, after ``kill``)."""
        w = self.workers[name]
        w.proc = self._start(w.name, w.ports, self.shared, self.dir / f"{w.name}.yaml")

    def start_main(self) -> None:
        """Start the main process again, after ``kill("main")``."""
        self.main = self._start("main", [self.main_port, self.replication_port], self.shared)

    def kill(self, name: str) -> None:
        """SIGKILL the worker ``name`` (or ``main``): whatever it held in memory is gone."""
        proc = self.main if name == "main" else self.workers[name].proc
        assert proc is not None and proc.poll() is None, f"{name} is not running"
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        if name == "main":
            self.main = None
        else:
            self.workers[name].proc = None

    def stop(self) -> None:
        """The workers (told to stop together, then each awaited), then main."""
        workers = [w.proc for w in self.workers.values() if w.proc is not None and w.proc.poll() is None]
        for proc in workers:
            proc.terminate()
        for proc in workers:
            stop_process(proc)  # already told: this waits, and kills one that does not stop
        if self.main is not None and self.main.poll() is None:
            stop_process(self.main)

    def pids(self) -> dict[str, int]:
        out = {"main": self.main.pid} if self.main is not None else {}
        return {**out, **{w.name: w.proc.pid for w in self.workers.values() if w.proc is not None}}

    @property
    def main_url(self) -> str:
        return f"http://127.0.0.1:{self.main_port}"

    def url(self, name: str) -> str:
        """The main listener of ``name`` (a worker, or ``main``)."""
        return self.main_url if name == "main" else self.workers[name].url


@contextlib.contextmanager
def running_cluster(directory: Path, workers: list[Worker], shared: dict[str, Any] | None = None,
                    **cluster_options: Any) -> Iterator[WorkerCluster]:
    """A started WorkerCluster on a PostgreSQL database of its own, stopped and the
    database dropped afterwards (for a module-scoped fixture)."""
    name, args = asyncio.run(create_postgres_database())
    c = WorkerCluster(directory, args, workers, shared, **cluster_options)
    try:
        c.start()
        yield c
    finally:
        c.stop()
        asyncio.run(drop_postgres_database(name))


def documented_nginx() -> str:
    """The server configuration of docs/workers.md's one nginx example."""
    blocks = re.findall(r"^```nginx\n(.*?)^```", DOC.read_text(encoding="utf-8"), re.MULTILINE | re.DOTALL)
    assert len(blocks) == 1, "docs/workers.md has one nginx example"
    return blocks[0]


def replace_documented(text: str, old: str, new: str) -> str:
    """Replace, insisting the documented text is there (a doc change fails loudly here)."""
    assert old in text, f"docs/workers.md no longer contains {old!r}: update this test with it"
    return text.replace(old, new)


def documented_nginx_for(main_port: int, reader_port: int, media_port: int) -> str:
    """docs/workers.md's nginx example with its upstreams' ports changed: main, the client
    readers and the media worker (pass main's port where a layout has no such worker)."""
    server = documented_nginx()
    for documented, port in ((8008, main_port), (8083, reader_port), (8085, media_port)):
        server = replace_documented(server, f"server 127.0.0.1:{documented};", f"server 127.0.0.1:{port};")
    return server


@contextlib.contextmanager
def run_nginx(directory: Path, server: str, port: int | None = None) -> Iterator[str]:
    """nginx with ``server`` (upstreams, maps and a ``server`` block whose ``listen`` line
    is ``listen 8080;`` or ``listen 8080 ssl;``, its port replaced by ``port`` or a free
    one); yields its base URL."""
    port = port or free_port()
    server = replace_documented(server, "listen 8080", f"listen 127.0.0.1:{port}")
    temp = "\n".join(f"    {k}_temp_path {directory}/{k};" for k in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    conf = directory / "nginx.conf"
    conf.write_text(("user root;\n" if os.geteuid() == 0 else "")
                    + f"daemon off;\npid {directory}/nginx.pid;\nerror_log {directory}/error.log;\n"
                    f"events {{}}\nhttp {{\n    access_log off;\n{temp}\n{server}\n}}\n")
    log = directory / "nginx.out"
    with open(log, "wb") as out:
        proc = subprocess.Popen([shutil.which("nginx") or "/usr/sbin/nginx", "-p", str(directory), "-c", str(conf),
                                 "-e", str(directory / "error.log")], stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_for_port(port, proc, "nginx", log)
        yield f"{'https' if f'listen 127.0.0.1:{port} ssl;' in server else 'http'}://127.0.0.1:{port}"
    finally:
        stop_process(proc)


async def requests_served(session: Any, base: str, route: str) -> float:
    """How many requests for routes matching ``route`` (a regex) the process at ``base``
    answered (its metrics)."""
    async with session.get(f"{base}/_synapse/metrics") as r:
        text = await r.text()
    return sum(float(m.group(2)) for m in re.finditer(r'^gateway_http_requests_total\{(.*)\} (\S+)$', text, re.M)
               if re.search(rf'route="{route}"', m.group(1)))


def process_of_connection(local_port: int, remote_port: int, pids: dict[str, int]) -> str | None:
    """Which of ``pids`` (name -> pid) holds the TCP socket from port ``local_port`` to port
    ``remote_port`` (the far end of a connection a test server on ``remote_port`` accepted):
    read from /proc. Both ports count: Linux reuses a local port towards other addresses."""
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == local_port and int(fields[2].rsplit(":", 1)[1], 16) == remote_port:
                inodes.add(fields[9])
    for name, pid in pids.items():
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:[") and target[8:-1] in inodes:
                return name
    return None
