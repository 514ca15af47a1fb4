"""Benchmark: event signature verification and content hashing, against the physical floor.

Builds N signed events (messages and member events of a realistic size), then times:

- floor: ``nacl.signing.VerifyKey.verify`` on the exact bytes and signatures our code
  verifies (canonical JSON of the redacted event, precomputed), one call per event;
- ours: ``verify_event_signatures`` (redaction, canonical JSON, base64, key lookup,
  key validity, verify) plus ``check_content_hash`` (canonical JSON, SHA-256), i.e.
  steps 2 and 3 of PDU receipt as ``check_signatures_and_hashes`` runs them;
- Synapse (with ``--synapse``, if ``.cache/synapse-venv`` exists): the same events
  through what Synapse runs for these steps (redaction, ``verify_signed_json``,
  ``check_event_content_hash``) in its own venv, event objects built beforehand.

    .cache/venv/bin/python bench/signatures.py [--events N] [--repeat N] [--version 10]
        [--synapse]

Prints events/s for each and the ratio ours/floor (the aim is >= 0.8).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from federation.canonical_json import decode_base64  # noqa: E402
from federation.room_versions import get_room_version  # noqa: E402
from federation.signing import (  # noqa: E402
    KnownKey,
    redacted_signing_bytes,
    check_content_hash,
    generate_signing_key,
    sign_event,
    verify_event_signatures,
)

SERVER = "bench.example.org"
WORDS = "lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor".split()


def make_events(n: int, room_version, seed: int = 1) -> tuple[list[dict], object]:
    rng = random.Random(seed)
    key = generate_signing_key("bench")
    room_id = "!" + "r" * 18 + ":" + SERVER
    events = []
    prev = "$" + "a" * 43
    for i in range(n):
        sender = f"@user{rng.randrange(5000)}:{SERVER}"
        if i % 10 == 0:
            ev_type, state_key = "m.room.member", sender
            content = {"membership": "join", "displayname": " ".join(rng.choices(WORDS, k=3)),
                       "avatar_url": "mxc://" + SERVER + "/" + "x" * 24}
        else:
            ev_type, state_key = "m.room.message", None
            body = " ".join(rng.choices(WORDS, k=rng.randrange(5, 60)))
            content = {"msgtype": "m.text", "body": body,
                       "m.relates_to": {"rel_type": "m.thread", "event_id": prev}}
        ev = {
            "room_id": room_id,
            "sender": sender,
            "type": ev_type,
            "content": content,
            "origin_server_ts": 1_700_000_000_000 + i,
            "depth": 100 + i,
            "prev_events": [prev],
            "auth_events": ["$" + "c" * 43, "$" + "p" * 43, "$" + "m" * 43],
            "hashes": {},
            "signatures": {},
            "unsigned": {"age": rng.randrange(1000)},
        }
        if room_version.event_id_in_event:
            ev["event_id"] = f"${i}:{SERVER}"
        if state_key is not None:
            ev["state_key"] = state_key
        events.append(sign_event(ev, SERVER, key, room_version=room_version))
        prev = "$" + format(i, "043d")
    return events, key


def timed(fn, repeat: int) -> list[float]:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


SYNAPSE_SCRIPT = r"""
import json, sys, time
from signedjson.key import decode_verify_key_bytes
from signedjson.sign import verify_signed_json
from unpaddedbase64 import decode_base64
from synapse.api.room_versions import KNOWN_ROOM_VERSIONS
from synapse.crypto.event_signing import check_event_content_hash
from synapse.events import make_event_from_dict
try:  # Synapse 1.1xx: redaction in Rust
    from synapse.synapse_rust.events import redact_event
    prune = lambda ev: redact_event(ev).get_pdu_json()
except ImportError:
    from synapse.events.utils import prune_event
    prune = lambda ev: prune_event(ev).get_pdu_json()
data = json.load(sys.stdin)
rv = KNOWN_ROOM_VERSIONS[data["version"]]
vk = decode_verify_key_bytes("ed25519:bench", decode_base64(data["key"]))
server = data["server"]
# Event objects are built outside the timing (our side times JSON in, too).
events = [make_event_from_dict(e, rv) for e in data["events"]]
def run():
    for ev in events:
        verify_signed_json(prune(ev), server, vk)
        if not check_event_content_hash(ev):
            raise AssertionError("hash mismatch")
run()
times = []
for _ in range(data["repeat"]):
    t0 = time.perf_counter(); run(); times.append(time.perf_counter() - t0)
print(json.dumps(times))
"""


def run_synapse(events: list[dict], key, version: str, repeat: int) -> list[float] | None:
    py = ROOT / ".cache" / "synapse-venv" / "bin" / "python"
    if not py.exists():
        print("synapse: .cache/synapse-venv not found, skipped")
        return None
    from federation.signing import encode_verify_key

    payload = json.dumps({"version": version, "key": encode_verify_key(key.verify_key),
                          "events": events, "server": SERVER, "repeat": repeat})
    proc = subprocess.run([str(py), "-c", SYNAPSE_SCRIPT], input=payload, capture_output=True,
                          text=True, env={**os.environ, "PYTHONPATH": ""})
    if proc.returncode != 0:
        print("synapse: failed:", proc.stderr.strip().splitlines()[-1:] or proc.returncode)
        return None
    return json.loads(proc.stdout)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=3000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--version", default="10")
    ap.add_argument("--synapse", action="store_true", help="also time Synapse's code on the same events")
    args = ap.parse_args()

    rv = get_room_version(args.version)
    events, key = make_events(args.events, rv)
    known = KnownKey(key.verify_key, valid_until_ts=2_000_000_000_000, fetched_ts=1_700_000_000_000)
    table = {(SERVER, key.key_id): known}
    keys_for = lambda server, key_id: table.get((server, key_id))  # noqa: E731

    # The floor: exactly the bytes and signatures our code verifies, precomputed.
    vk = key.verify_key
    work = [
        (redacted_signing_bytes(e, rv), decode_base64(e["signatures"][SERVER][key.key_id]))
        for e in events
    ]

    def floor() -> None:
        verify = vk.verify
        for msg, sig in work:
            verify(msg, sig)

    def ours() -> None:
        for e in events:
            verify_event_signatures(e, rv, keys_for)
            if not check_content_hash(e, rv):
                raise AssertionError("hash mismatch")

    floor()
    ours()  # warm up, and check that everything verifies
    n = len(events)
    t_floor = timed(floor, args.repeat)
    t_ours = timed(ours, args.repeat)
    size = statistics.mean(len(json.dumps(e)) for e in events)
    print(f"room version {rv.identifier}, {n} events of ~{size:.0f} bytes, best of {args.repeat}")
    best_floor, best_ours = min(t_floor), min(t_ours)
    print(f"floor (nacl VerifyKey.verify):        {n / best_floor:10.0f} events/s"
          f"  ({best_floor / n * 1e6:.1f} us/event)")
    print(f"ours  (signatures + content hash):    {n / best_ours:10.0f} events/s"
          f"  ({best_ours / n * 1e6:.1f} us/event)")
    print(f"ratio ours/floor:                     {best_floor / best_ours:10.2f}")
    if args.synapse:
        t_syn = run_synapse(events, key, rv.identifier, args.repeat)
        if t_syn:
            best_syn = min(t_syn)
            print(f"synapse (prune + verify + hash):      {n / best_syn:10.0f} events/s"
                  f"  ({best_syn / n * 1e6:.1f} us/event)")
            print(f"ratio ours/synapse:                   {best_syn / best_ours:10.2f}")


if __name__ == "__main__":
    main()
