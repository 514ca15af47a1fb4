"""Regenerate ``vectors.json``: events of every room version with the redacted form,
content hash and event ID that Synapse computes for them.

Synapse is used only as an independent oracle (its output is data, a set of test
vectors); our code never imports it. Run from the repository root with Synapse's venv:

    .cache/synapse-venv/bin/python tests/data/events/make_vectors.py

Differences from Synapse that are deliberate, and so normalised here:
- Synapse keeps some ``unsigned`` keys in a redacted event (for clients); the spec's
  redaction algorithm and the reference hash drop ``unsigned``, so it is removed
  from Synapse's redacted form before it is written.
"""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

from synapse.api.room_versions import KNOWN_ROOM_VERSIONS
from synapse.crypto.event_signing import compute_content_hash
from synapse.events import make_event_from_dict
from synapse.synapse_rust.events import redact_event_dict
from unpaddedbase64 import encode_base64

OUT = Path(__file__).with_name("vectors.json")
VERSIONS = [str(v) for v in range(1, 13)]

PL = {"ban": 50, "events": {"m.room.name": 50, "m.room.power_levels": 100}, "events_default": 0,
      "invite": 0, "kick": 50, "redact": 50, "state_default": 50, "users": {"@a:x": 100},
      "users_default": 0, "notifications": {"room": 50}, "historical": 100}

# (type, state_key, content, extra top-level keys)
TEMPLATES = [
    ("m.room.create", "", {"creator": "@a:x", "room_version": "{v}", "m.federate": True,
                           "predecessor": {"room_id": "!old:x", "event_id": "$old"}}, {}),
    ("m.room.create", "", {"room_version": "{v}", "additional_creators": ["@b:y"], "type": "m.space"}, {}),
    ("m.room.member", "@a:x", {"membership": "join", "displayname": "Alice", "avatar_url": "mxc://x/y",
                               "join_authorised_via_users_server": "@b:x"}, {"membership": "join"}),
    ("m.room.member", "@c:z", {"membership": "invite", "third_party_invite": {
        "display_name": "c...", "signed": {"mxid": "@c:z", "token": "tok", "signatures": {"id": {"ed25519:0": "s"}}}}}, {}),
    ("m.room.member", "@c:z", {"membership": "invite", "third_party_invite": {"display_name": "no signed"}}, {}),
    ("m.room.join_rules", "", {"join_rule": "restricted", "allow": [{"type": "m.room_membership", "room_id": "!s:x"}],
                               "other": 1}, {}),
    ("m.room.power_levels", "", PL, {}),
    ("m.room.aliases", "x", {"aliases": ["#a:x", "#b:x"], "other": True}, {}),
    ("m.room.history_visibility", "", {"history_visibility": "joined", "other": "x"}, {}),
    ("m.room.redaction", None, {"redacts": "$target", "reason": "spam"}, {"redacts": "$target"}),
    ("m.room.message", None, {"body": "hello", "msgtype": "m.text", "m.relates_to": {"rel_type": "m.thread"}}, {}),
    ("m.room.name", "", {"name": "a name"}, {"prev_state": [], "origin": "x"}),
    ("m.room.topic", "", {"topic": "t"}, {"some_unknown_key": {"a": 1}}),
    ("m.room.encrypted", None, {"algorithm": "m.megolm.v1.aes-sha2", "ciphertext": "abc"}, {}),
]


def _fill(obj, version):
    if isinstance(obj, str):
        return obj.replace("{v}", version)
    if isinstance(obj, dict):
        return {k: _fill(v, version) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_fill(v, version) for v in obj]
    return obj


def _event(version: str, rv, index: int, template, rng: random.Random) -> dict:
    type_, state_key, content, extra = template
    e = {
        "type": type_,
        "sender": "@a:x",
        "content": _fill(content, version),
        "depth": rng.randint(1, 10**6),
        "origin_server_ts": rng.randint(1, 2 * 10**12),
        "hashes": {"sha256": "placeholder"},
        "signatures": {"x": {"ed25519:a": "c2ln"}},
        "unsigned": {"age_ts": 1000, "age": 5},
        "origin": "x",
    }
    if state_key is not None:
        e["state_key"] = state_key
    e.update(extra)
    is_create = type_ == "m.room.create"
    if not (rv.msc4291_room_ids_as_hashes and is_create):
        e["room_id"] = "!" + "r" * 43 if rv.msc4291_room_ids_as_hashes else "!r:x"
    fmt = rv.event_format
    refs_p = [f"$p{index}{i}" for i in range(0 if is_create else rng.randint(1, 3))]
    refs_a = [f"$a{index}{i}" for i in range(0 if is_create else rng.randint(1, 3))]
    if fmt == 1:
        e["event_id"] = f"$e{index}:x"
        e["prev_events"] = [[r + ":x", {"sha256": "aGFzaA"}] for r in refs_p]
        e["auth_events"] = [[r + ":x", {"sha256": "aGFzaA"}] for r in refs_a]
    else:
        e["prev_events"] = refs_p
        e["auth_events"] = refs_a
    _, digest = compute_content_hash(e, hashlib.sha256)
    e["hashes"] = {"sha256": encode_base64(digest)}
    return e


def main() -> None:
    rng = random.Random(20261123)
    vectors = []
    for version in VERSIONS:
        rv = KNOWN_ROOM_VERSIONS[version]
        for i, template in enumerate(TEMPLATES):
            e = _event(version, rv, i, template, rng)
            redacted = redact_event_dict(rv, e)
            redacted.pop("unsigned", None)
            event = make_event_from_dict(dict(e), rv)
            vectors.append({
                "room_version": version,
                "event": e,
                "redacted": redacted,
                "event_id": event.event_id,
                "room_id": event.room_id,
                "content_hash": e["hashes"]["sha256"],
            })
    lines = ",\n".join(json.dumps(v, sort_keys=True, separators=(",", ":")) for v in vectors)
    OUT.write_text("[\n" + lines + "\n]\n")
    print(f"wrote {len(vectors)} vectors to {OUT}")


if __name__ == "__main__":
    main()
