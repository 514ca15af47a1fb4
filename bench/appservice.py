"""Application service transactions: how fast a bridge gets messages, and how fast it
catches up after an outage, on Gateway and on Synapse side by side.

Each server runs as its own process on loopback (``client_load.running_server``), with
one registration file pointing at an application service in this process that records
when each event arrives. A user sends ``--messages`` messages one after the other into a
room the service's bot joined: the delivery latency of each is the time from the send's
answer to its arrival at the service. Then the service answers 503 for a while, the user
sends ``--backlog`` messages, the service comes back and pings (as bridges do when they
start): the catch-up time is from the ping to the last message's arrival, with the
number of transactions it took.

    .cache/venv/bin/python bench/appservice.py [--messages 200] [--backlog 2000]
        [--engines sqlite,postgres] [--servers gateway,synapse]

Numbers only: nothing here asserts a timing.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import yaml
from aiohttp import web

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.client_load import pct, running_server  # noqa: E402
from tests.conftest import free_port  # noqa: E402
from tests.support.synapse import register_synapse_user  # noqa: E402

AS_ID = "bench-bridge"


class Bridge:
    """The application service: records arrival times; ``down`` answers 503."""

    def __init__(self, hs_token: str):
        self.hs_token = hs_token
        self.port = free_port()
        self.arrived: dict[str, float] = {}
        self.transactions = 0
        self.down = False
        self.changed = asyncio.Event()

    async def handle(self, request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != f"Bearer {self.hs_token}":
            return web.json_response({"errcode": "M_FORBIDDEN"}, status=403)
        if self.down:
            return web.json_response({"errcode": "M_UNKNOWN"}, status=503)
        if "/transactions/" in request.path:
            body = await request.json()
            now = time.monotonic()
            self.transactions += 1
            for event in body.get("events", []):
                self.arrived.setdefault(event["event_id"], now)
            self.changed.set()
        return web.json_response({})

    async def wait_for(self, event_ids: list[str], timeout: float = 600) -> float:
        """When the last of ``event_ids`` arrived."""
        deadline = time.monotonic() + timeout
        while not all(e in self.arrived for e in event_ids):
            self.changed.clear()
            await asyncio.wait_for(self.changed.wait(), max(0.1, deadline - time.monotonic()))
        return max(self.arrived[e] for e in event_ids)


@dataclass
class Result:
    label: str
    delivery_ms: list[float] = field(default_factory=list)
    send_rate: float = 0.0
    catch_up_s: float = 0.0
    catch_up_txns: int = 0


async def bench_one(server: str, engine: str, args, workdir: Path, bridge: Bridge, as_token: str) -> Result:
    label = f"{server}/{engine}"
    directory = workdir / label.replace("/", "-")
    directory.mkdir(parents=True)
    registration = directory / "bridge.yaml"
    registration.write_text(yaml.safe_dump({
        "id": AS_ID, "url": f"http://127.0.0.1:{bridge.port}", "as_token": as_token, "hs_token": bridge.hs_token,
        "sender_localpart": "benchbot", "rate_limited": False,
        "namespaces": {"users": [{"exclusive": True, "regex": "@_bench_.*"}]}}))
    extra = {"app_service_config_files": [str(registration)]}
    bridge.arrived.clear()
    async with running_server(server, engine, directory, synapse_extra=extra, gateway_extra=extra) as proc, \
            aiohttp.ClientSession() as http:
        token = await register_synapse_user(proc, "alice", password="bench-pass")
        base = proc.client_url + "/_matrix/client/v3"
        user = {"Authorization": f"Bearer {token}"}
        bot = {"Authorization": f"Bearer {as_token}"}
        async with http.post(f"{base}/createRoom", headers=user, json={"preset": "public_chat"}) as r:
            room_id = (await r.json())["room_id"]
        async with http.post(f"{base}/join/{room_id}", headers=bot, json={}) as r:
            assert r.status == 200, await r.text()
        txn = 0

        async def send(body: str) -> tuple[str, float]:
            nonlocal txn
            txn += 1
            async with http.put(f"{base}/rooms/{room_id}/send/m.room.message/b{txn}", headers=user,
                                json={"msgtype": "m.text", "body": body}) as r:
                return (await r.json())["event_id"], time.monotonic()

        result = Result(label)
        start = time.monotonic()
        for i in range(args.messages):
            event_id, answered = await send(f"live {i}")
            arrived = await bridge.wait_for([event_id])
            result.delivery_ms.append(max(0.0, arrived - answered) * 1000)
        result.send_rate = args.messages / (time.monotonic() - start)

        bridge.down = True
        backlog = [(await send(f"backlog {i}"))[0] for i in range(args.backlog)]
        bridge.down = False
        txns_before = bridge.transactions
        pinged = time.monotonic()
        async with http.post(proc.client_url + f"/_matrix/client/v1/appservice/{AS_ID}/ping", headers=bot,
                             json={}) as r:
            assert r.status == 200, await r.text()
        last = await bridge.wait_for(backlog)
        result.catch_up_s = last - pinged
        result.catch_up_txns = bridge.transactions - txns_before
        return result


def describe(r: Result) -> str:
    return (f"{r.label:18} delivery p50 {pct(r.delivery_ms, 50):7.1f} ms  p99 {pct(r.delivery_ms, 99):7.1f} ms"
            f"  ({r.send_rate:5.1f} msg/s sent and delivered one by one)   catch-up {r.catch_up_s:6.2f} s"
            f" in {r.catch_up_txns} transactions")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=200)
    parser.add_argument("--backlog", type=int, default=2000)
    parser.add_argument("--engines", default="sqlite,postgres")
    parser.add_argument("--servers", default="gateway,synapse")
    args = parser.parse_args()
    as_token, hs_token = secrets.token_hex(16), secrets.token_hex(16)
    bridge = Bridge(hs_token)
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", bridge.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", bridge.port).start()
    results: dict[tuple[str, str], Result] = {}
    try:
        with tempfile.TemporaryDirectory(prefix="appservice-bench-") as tmp:
            for engine in args.engines.split(","):
                for server in args.servers.split(","):
                    r = await bench_one(server, engine, args, Path(tmp), bridge, as_token)
                    results[(server, engine)] = r
                    print(describe(r), flush=True)
    finally:
        await runner.cleanup()
    print(f"\n{args.messages} messages one by one, then a backlog of {args.backlog} while the service was down")
    for engine in args.engines.split(","):
        g, s = results.get(("gateway", engine)), results.get(("synapse", engine))
        if g and s and s.delivery_ms and s.catch_up_s:
            print(f"{engine:9} gateway/synapse: delivery p50 x{pct(g.delivery_ms, 50) / pct(s.delivery_ms, 50):.2f}, "
                  f"p99 x{pct(g.delivery_ms, 99) / pct(s.delivery_ms, 99):.2f}, "
                  f"catch-up time x{g.catch_up_s / s.catch_up_s:.2f}  (lower is better)")


if __name__ == "__main__":
    asyncio.run(main())
