"""Which of the spec's Client-Server operations a running server serves.

Reads every operation (path and method) of the OpenAPI files under
``../shared/spec/data/api/client-server`` and asks the server each one with a valid
access token, path parameters filled with real IDs where the server has them (a room the
user created, an event in it, the user's own ID and device). An operation counts as served
unless the answer is the "no such endpoint" one: 404 or 405 with ``M_UNRECOGNIZED``, or a
404/405 that is not a Matrix error at all. A 404 ``M_NOT_FOUND`` (no such filter, no such
backup) is a served endpoint saying the thing is not there.

Left out: the application-service files and the legacy endpoints (``/events``,
``/initialSync``, room ``initialSync``), as the conversations issue counts.

Also a command, to compare with another server (Synapse, say):

    python -m tests.support.spec_operations http://127.0.0.1:8008 USER PASSWORD
"""

from __future__ import annotations

import asyncio
import secrets
import sys
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import yaml

SPEC_API = Path(__file__).resolve().parents[3] / "shared" / "spec" / "data" / "api" / "client-server"
LEFT_OUT = {"appservice_ping.yaml", "appservice_room_directory.yaml",
            "old_sync.yaml", "peeking_events.yaml", "room_initial_sync.yaml"}
METHODS = ("get", "put", "post", "delete")


@dataclass(frozen=True, order=True)
class Operation:
    path: str  # the full path template, base path included
    method: str  # upper case
    file: str
    operation_id: str
    added_in: str | None = None  # the spec version that added it, where the spec says


def operations(spec_dir: Path = SPEC_API) -> list[Operation]:
    """Every operation of the Client-Server OpenAPI files (but the ones left out)."""
    found = []
    for file in sorted(spec_dir.glob("*.yaml")):
        if file.name in LEFT_OUT:
            continue
        doc = yaml.safe_load(file.read_text(encoding="utf-8"))
        if not isinstance(doc, dict) or "paths" not in doc:
            continue
        base = ""
        for server in doc.get("servers", []):
            base = server.get("variables", {}).get("basePath", {}).get("default", base)
        for path, ops in doc["paths"].items():
            for method, op in ops.items():
                if method in METHODS:
                    added = op.get("x-addedInMatrixVersion")
                    found.append(Operation(base + path.strip(), method.upper(), file.name, op.get("operationId", ""),
                                           None if added is None else str(added)))
    return sorted(found)


@dataclass
class Context:
    """Real values for path parameters."""

    user_id: str
    device_id: str
    room_id: str
    event_id: str
    server_name: str

    def value(self, name: str) -> str:
        values = {
            "roomId": self.room_id, "roomIdOrAlias": self.room_id, "eventId": self.event_id,
            "userId": self.user_id, "deviceId": self.device_id, "serverName": self.server_name,
            "roomAlias": f"#spec-walk-{secrets.token_hex(3)}:{self.server_name}",
            "eventType": "m.room.message", "stateKey": "", "txnId": secrets.token_hex(8),
            "type": "org.example.walk", "filterId": "1", "relType": "m.annotation", "tag": "u.walk",
            "scope": "global", "kind": "override", "ruleId": "org.example.walk", "version": "1",
            "sessionId": "session", "mediaId": "nothing", "keyName": "displayname",
            "loginType": "m.login.dummy", "idpId": "none", "protocol": "irc", "fileName": "f.txt",
            "token": "nothing", "networkId": "irc", "reportId": "1",
        }
        return values.get(name, "x")


def fill(template: str, ctx: Context) -> str:
    out, rest = [], template
    while "{" in rest:
        before, _, after = rest.partition("{")
        name, _, rest = after.partition("}")
        out.append(before + urllib.parse.quote(ctx.value(name), safe=""))
    return "".join(out) + rest


async def _served(session: aiohttp.ClientSession, base_url: str, op: Operation, ctx: Context, token: str) -> bool:
    url = base_url.rstrip("/") + fill(op.path, ctx)
    body = b"{}" if op.method in ("PUT", "POST") else None
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    async with session.request(op.method, url, data=body, headers=headers, allow_redirects=False) as resp:
        if resp.status not in (404, 405):
            return True
        try:
            errcode = (await resp.json(content_type=None)).get("errcode")
        except (ValueError, AttributeError):
            return False
        return errcode not in (None, "M_UNRECOGNIZED")


async def _login(session: aiohttp.ClientSession, base_url: str, user: str, password: str) -> dict:
    async with session.post(f"{base_url}/_matrix/client/v3/login", json={
            "type": "m.login.password", "identifier": {"type": "m.id.user", "user": user},
            "password": password}) as resp:
        body = await resp.json()
        if resp.status != 200:
            raise RuntimeError(f"login failed: {resp.status} {body}")
        return body


async def walk(base_url: str, user: str, password: str) -> dict[Operation, bool]:
    """Each operation, and whether the server at ``base_url`` serves it (as ``user``)."""
    base_url = base_url.rstrip("/")
    async with aiohttp.ClientSession() as session:
        login = await _login(session, base_url, user, password)
        token = login["access_token"]
        headers = {"Authorization": f"Bearer {token}"}
        async with session.post(f"{base_url}/_matrix/client/v3/createRoom", json={"name": "spec walk"},
                                headers=headers) as resp:
            room_id = (await resp.json())["room_id"]
        async with session.put(f"{base_url}/_matrix/client/v3/rooms/{urllib.parse.quote(room_id)}/send/"
                               f"m.room.message/walk{secrets.token_hex(4)}",
                               json={"msgtype": "m.text", "body": "hello"}, headers=headers) as resp:
            event_id = (await resp.json())["event_id"]
        ctx = Context(login["user_id"], login["device_id"], room_id, event_id, login["user_id"].split(":", 1)[1])
        result = {}
        for op in operations():
            # Logging out ends the token: those two get a session of their own.
            op_token = (await _login(session, base_url, user, password))["access_token"] \
                if op.file == "logout.yaml" else token
            result[op] = await _served(session, base_url, op, ctx, op_token)
        return result


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    result = asyncio.run(walk(*argv))
    missing = [op for op, served in result.items() if not served]
    for op in missing:
        print(f"missing {op.method} {op.path} ({op.file} {op.operation_id})")
    print(f"served {len(result) - len(missing)} of {len(result)} operations")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
