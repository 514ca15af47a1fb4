"""End-to-end encryption key traffic: N users each upload device keys and one-time keys,
then /keys/query for every user at once, /keys/claim of one key from every device
(several claimers at once), and /sendToDevice to every user's devices followed by their
/sync; against Gateway and Synapse side by side, on SQLite and PostgreSQL.

    .cache/venv/bin/python bench/e2e_keys.py [--users 200] [--otks 20] [--rounds 10]
        [--engines sqlite,postgres] [--servers gateway,synapse]

Prints per server: p50 latency of each request kind and the server CPU seconds of the
whole run, then Gateway/Synapse ratios (lower is better). Numbers only.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.client_load import cpu_seconds, pct, running_server  # noqa: E402
from federation.signing import encode_verify_key, sign_json, signing_key_from_seed  # noqa: E402
from tests.support.synapse import register_synapse_user  # noqa: E402


@dataclass
class Result:
    label: str
    ms: dict[str, list[float]] = field(default_factory=dict)
    server_cpu_s: float = 0.0
    claimed: int = 0
    wanted: int = 0
    duplicates: int = 0  # the same one-time key handed out twice

    def add(self, kind: str, ms: float) -> None:
        self.ms.setdefault(kind, []).append(ms)


KINDS = ("upload", "query_all", "claim_all", "send_to_all", "sync_to_device")


async def timed(result: Result, kind: str, coro):
    t0 = time.perf_counter()
    out = await coro
    result.add(kind, (time.perf_counter() - t0) * 1000)
    return out


async def run(url: str, tokens: list[str], args, result: Result) -> None:
    async with aiohttp.ClientSession() as s:
        async def call(token, method, path, body=None):
            async with s.request(method, f"{url}/_matrix/client/v3{path}", json=body,
                                 headers={"Authorization": f"Bearer {token}"}) as r:
                data = await r.json()
                assert r.status == 200, (path, data)
                return data

        who = [await call(t, "GET", "/account/whoami") for t in tokens]
        users = [(w["user_id"], w["device_id"]) for w in who]

        async def upload(token, user_id, device_id):
            key = signing_key_from_seed(device_id, os.urandom(32))
            keys = sign_json({"user_id": user_id, "device_id": device_id,
                              "algorithms": ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"],
                              "keys": {f"ed25519:{device_id}": encode_verify_key(key.verify_key),
                                       f"curve25519:{device_id}": "c" * 43}}, user_id, key)
            otks = {f"signed_curve25519:K{i}": sign_json({"key": f"{device_id}{i}"}, user_id, key)
                    for i in range(args.otks)}
            await timed(result, "upload", call(token, "POST", "/keys/upload",
                                               {"device_keys": keys, "one_time_keys": otks}))

        sem = asyncio.Semaphore(10)

        async def limited(coro):
            async with sem:
                return await coro

        await asyncio.gather(*(limited(upload(t, u, d)) for t, (u, d) in zip(tokens, users)))
        everyone = {u: [] for u, _ in users}
        for _ in range(args.rounds):
            q = await timed(result, "query_all", call(tokens[0], "POST", "/keys/query", {"device_keys": everyone}))
            assert len(q["device_keys"]) == len(users)
        claim = {u: {d: "signed_curve25519"} for u, d in users}
        claims = await asyncio.gather(*(timed(result, "claim_all", call(tokens[i % len(tokens)], "POST", "/keys/claim",
                                                                        {"one_time_keys": claim}))
                                        for i in range(min(args.rounds, args.otks))))
        got = [(u, d, k) for c in claims for u, ds in c["one_time_keys"].items() for d, ks in ds.items() for k in ks]
        result.claimed, result.wanted = len(got), len(claims) * len(users)
        result.duplicates = len(got) - len(set(got))
        tokens_since = {}
        for t in tokens:
            tokens_since[t] = (await call(t, "GET", "/sync?timeout=0&filter=" +
                                          '{"room":{"rooms":[]},"presence":{"not_types":["*"]}}'))["next_batch"]
        for i in range(args.rounds):
            await timed(result, "send_to_all", call(tokens[0], "PUT", f"/sendToDevice/m.bench/t{i}",
                                                    {"messages": {u: {"*": {"i": i}} for u, _ in users}}))
        for t in tokens:
            body = await timed(result, "sync_to_device", call(
                t, "GET", f"/sync?timeout=0&since={tokens_since[t]}&filter="
                '{"room":{"rooms":[]},"presence":{"not_types":["*"]}}'))
            assert len(body["to_device"]["events"]) == args.rounds, body["to_device"]


async def bench_one(server: str, engine: str, args, workdir: Path) -> Result:
    label = f"{server}/{engine}"
    directory = workdir / label.replace("/", "-")
    directory.mkdir(parents=True)
    high = {"rc_key_requests": {"per_second": 100000, "burst_count": 100000}}
    async with running_server(server, engine, directory, synapse_extra=high) as proc:
        tokens = [await register_synapse_user(proc, f"user{i}", password="bench-pass") for i in range(args.users)]
        result = Result(label)
        cpu0 = cpu_seconds(proc.proc.pid)
        await run(proc.client_url, tokens, args, result)
        result.server_cpu_s = cpu_seconds(proc.proc.pid) - cpu0
        return result


def describe(r: Result) -> str:
    parts = [f"{k} p50 {pct(r.ms[k], 50):7.1f} ms" for k in KINDS if r.ms.get(k)]
    return (f"{r.label:18} " + "  ".join(parts) + f"  server CPU {r.server_cpu_s:.1f} s"
            f"  keys claimed {r.claimed}/{r.wanted} (duplicates {r.duplicates})")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("--otks", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--engines", default="sqlite,postgres")
    parser.add_argument("--servers", default="gateway,synapse")
    args = parser.parse_args()
    results: dict[tuple[str, str], Result] = {}
    with tempfile.TemporaryDirectory(prefix="e2e-keys-") as tmp:
        for engine in args.engines.split(","):
            for server in args.servers.split(","):
                r = await bench_one(server, engine, args, Path(tmp))
                results[(server, engine)] = r
                print(describe(r), flush=True)
    print(f"\n{args.users} users, {args.otks} one-time keys each, {args.rounds} rounds")
    for engine in args.engines.split(","):
        g, s = results.get(("gateway", engine)), results.get(("synapse", engine))
        if g and s:
            ratios = "  ".join(f"{k} x{pct(g.ms[k], 50) / pct(s.ms[k], 50):.2f}" for k in KINDS
                               if g.ms.get(k) and s.ms.get(k))
            print(f"{engine:9} gateway/synapse p50: {ratios}  server CPU x{g.server_cpu_s / s.server_cpu_s:.2f}"
                  "  (lower is better)")


if __name__ == "__main__":
    asyncio.run(main())
