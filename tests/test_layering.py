"""Layers, checked on the source's imports:

- the protocol core stays pure: nothing in federation/ outside federation/net/ does I/O
  or reaches the network edge (``federation.net``);
- services do not import the wiring (gateway/wiring.py builds them, not the other way);
- the other HTTP APIs (sso, admin, federation) do not import the client API: what they
  share lives in gateway/http/ or in a service;
- the federation services (gateway/services/federation/) import no HTTP API at all: the
  routes call them, not the other way round.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = {"aiohttp", "asyncpg", "aiosqlite", "socket", "ssl", "dns", "requests", "httpx",
             "gateway", "sso", "sqlite3", "subprocess", "urllib.request", "time", "datetime"}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, package: str | None = None) -> set[str]:
    """Absolute names of the modules ``path`` imports (relative imports resolved against
    its ``package``, and ``from package import module`` also counted as ``package.module``)."""
    tree = ast.parse(path.read_text(), str(path))
    if package is None:
        package = _module_name(path) if path.name == "__init__.py" else _module_name(path).rpartition(".")[0]
    parts = package.split(".") if package else []
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = parts[:len(parts) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            names.add(module)
            names.update(f"{module}.{a.name}" for a in node.names)
    return names


def _sources(*folders: str) -> list[Path]:
    paths = [p for folder in folders for p in (ROOT / folder).rglob("*.py")]
    assert paths, f"{folders} have modules"
    return paths


def _offenders(paths: list[Path], bad) -> dict[str, list[str]]:
    found = {}
    for path in paths:
        hits = sorted(n for n in _imports(path) if bad(n))
        if hits:
            found[str(path.relative_to(ROOT))] = hits
    return found


def _within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def test_core_imports_no_io_libraries():
    core = [p for p in _sources("federation") if "net" not in p.relative_to(ROOT / "federation").parts]
    assert _offenders(core, lambda n: n in FORBIDDEN or n.split(".")[0] in FORBIDDEN - {"urllib.request"}) == {}


def test_core_does_not_import_the_network_edge():
    core = [p for p in _sources("federation") if "net" not in p.relative_to(ROOT / "federation").parts]
    assert _offenders(core, lambda n: _within(n, "federation.net")) == {}


def test_services_do_not_import_the_wiring():
    assert _offenders(_sources("gateway/services"), lambda n: _within(n, "gateway.wiring")) == {}


#: Services that still take the HomeServer and reach their collaborators through it
#: (DESIGN.md, "Wiring and processes"). Every other service module gets what it uses
#: as constructor arguments from gateway/wiring.py: shrink this list, never grow it.
TAKE_THE_HOMESERVER = {
    "gateway/services/auth.py",
    "gateway/services/e2e_keys.py",
    "gateway/services/ephemeral_edus.py",
    "gateway/services/event_stream.py",
    "gateway/services/federation/backfill.py",
    "gateway/services/federation/receive.py",
    "gateway/services/federation/membership.py",
    "gateway/services/federation/room_data.py",
    "gateway/services/federation/sender.py",
    "gateway/services/federation/inbox.py",
    "gateway/services/initial_sync.py",
    "gateway/services/federation/partial_state.py",
    "gateway/services/room_admin.py",
    "gateway/services/rooms.py",
    "gateway/services/uia.py",
}


def _reaches_the_homeserver(path: Path) -> list[str]:
    """Where a module takes a parameter named ``hs`` or reads ``self.hs``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.arg) and node.arg == "hs":
            found.append(f"parameter hs, line {node.lineno}")
        elif isinstance(node, ast.Attribute) and node.attr == "hs" and isinstance(node.value, ast.Name) \
                and node.value.id == "self":
            found.append(f"self.hs, line {node.lineno}")
    return found


def test_services_get_their_collaborators_as_arguments():
    offenders = {}
    for path in _sources("gateway/services"):
        name = str(path.relative_to(ROOT))
        if name not in TAKE_THE_HOMESERVER and (where := _reaches_the_homeserver(path)):
            offenders[name] = where[:3]
    assert offenders == {}
    still = {n for n in TAKE_THE_HOMESERVER if not _reaches_the_homeserver(ROOT / n)}
    assert still == set(), "converted: remove them from TAKE_THE_HOMESERVER"


#: Modules that still borrow request handling from the client API (the admin API's
#: room history reuses /context and /messages): move what they share into a service,
#: then drop them from here. Shrink this list, never grow it.
STILL_IMPORT_THE_CLIENT_API = {"gateway/admin_api/room_history.py"}


def test_other_apis_do_not_import_the_client_api():
    paths = _sources("sso", "gateway/admin_api", "gateway/federation_api")
    found = _offenders(paths, lambda n: _within(n, "gateway.client_api"))
    assert {k: v for k, v in found.items() if k not in STILL_IMPORT_THE_CLIENT_API} == {}
    assert STILL_IMPORT_THE_CLIENT_API <= set(found), "fixed: remove them from STILL_IMPORT_THE_CLIENT_API"


def test_federation_services_import_no_http_api():
    apis = ("gateway.client_api", "gateway.federation_api", "gateway.admin_api", "gateway.app")
    found = _offenders(_sources("gateway/services/federation"), lambda n: any(_within(n, a) for a in apis))
    assert found == {}


def test_checker_catches_offenders(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("import aiohttp\nfrom asyncpg import connect\n")
    assert {"aiohttp", "asyncpg"} <= _imports(bad, package="")
    # Relative imports resolve to the module they name, as in a service module.
    service = tmp_path / "service.py"
    service.write_text("from .. import wiring\nfrom ..client_api.auth import requester\nfrom .rooms import X\n")
    names = _imports(service, package="gateway.services")
    assert {"gateway.wiring", "gateway.client_api.auth", "gateway.services.rooms.X"} <= names
    assert _offenders([ROOT / "gateway" / "admin_api" / "users.py"], lambda n: _within(n, "gateway.http")), \
        "a real module's relative imports resolve"
    service.write_text("class S:\n    def __init__(self, hs):\n        self.hs = hs\n")
    assert _reaches_the_homeserver(service) == ["parameter hs, line 2", "self.hs, line 3"]
