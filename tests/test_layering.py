"""The protocol core stays pure: nothing in federation/ outside federation/net/ does I/O."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = {"aiohttp", "asyncpg", "aiosqlite", "socket", "ssl", "dns", "requests", "httpx",
             "gateway", "sso", "sqlite3", "subprocess", "urllib.request", "time", "datetime"}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_core_imports_no_io_libraries():
    core = [p for p in (ROOT / "federation").rglob("*.py") if "net" not in p.relative_to(ROOT / "federation").parts]
    assert core, "the core has modules"
    offenders = {}
    for path in core:
        bad = {n for n in _imports(path) if n in FORBIDDEN or n.split(".")[0] in FORBIDDEN - {"urllib.request"}}
        if bad:
            offenders[str(path.relative_to(ROOT))] = sorted(bad)
    assert offenders == {}


def test_checker_catches_an_offender(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("import aiohttp\nfrom asyncpg import connect\n")
    assert {"aiohttp", "asyncpg"} <= _imports(bad)
