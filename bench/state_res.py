"""Benchmark: state resolution of a big room with two forks.

Builds a synthetic room with 10,000 joined members, then two forks of a few
hundred events each (power level changes, kicks and bans, join rule changes,
topic changes, joins and leaves), and resolves the two fork states.

    .cache/venv/bin/python bench/state_res.py [--members N] [--fork-events N]
        [--versions 11,12] [--repeat N]

Prints, per room version: state size, conflicted keys, full conflicted set,
wall time (best and median of the repeats), and events/s (events of the full
conflicted set sorted and authorised per second; and state entries per second).
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from federation import auth_rules, state_res  # noqa: E402
from federation.events import PDU, build_event  # noqa: E402
from federation.room_versions import RoomVersion, get_room_version  # noqa: E402

CREATE, MEMBER, PL, JR, TOPIC = (
    "m.room.create",
    "m.room.member",
    "m.room.power_levels",
    "m.room.join_rules",
    "m.room.topic",
)


class RoomBuilder:
    def __init__(self, room_version: RoomVersion, seed: int = 1):
        self.rv = room_version
        self.rng = random.Random(seed)
        self.events: dict[str, PDU] = {}
        self.counter = 0
        self.room_id = "!bench:example.com"

    def add(self, state: dict, sender: str, type_: str, state_key: str | None, content: dict,
            prev: tuple[str, ...]) -> PDU:
        self.counter += 1
        v12_create = type_ == CREATE and self.rv.room_id_from_create_event
        keys = auth_rules.auth_types_for_event(self.rv, type_, sender, state_key, content)
        pdu_json = build_event(
            self.rv,
            type=type_,
            sender=sender,
            room_id=None if v12_create else self.room_id,
            content=content,
            prev_event_ids=prev,
            auth_event_ids=sorted(state[k] for k in keys if k in state),
            depth=self.counter,
            origin_server_ts=1_700_000_000_000 + self.counter,
            state_key=state_key,
            event_id=f"$e{self.counter}:example.com" if self.rv.event_id_in_event else None,
        )
        event = PDU.from_pdu_json(pdu_json, self.rv)
        if v12_create:
            self.room_id = event.room_id
        self.events[event.event_id] = event
        if state_key is not None:
            state[(type_, state_key)] = event.event_id
        return event


def user(i: int) -> str:
    return f"@user{i}:server{i % 50}.example.com"


def build(room_version: RoomVersion, members: int, fork_events: int, seed: int = 1):
    b = RoomBuilder(room_version, seed)
    rng = b.rng
    alice = "@alice:example.com"
    state: dict = {}
    content = {"room_version": room_version.identifier}
    if not room_version.implicit_room_creator:
        content["creator"] = alice
    last = b.add(state, alice, CREATE, "", content, ())
    last = b.add(state, alice, MEMBER, alice, {"membership": "join"}, (last.event_id,))
    mods = [user(i) for i in range(20)]
    users = {m: 50 for m in mods}
    if not room_version.privileged_creators:
        users[alice] = 100
    pl_content = {"users": users, "state_default": 50, "kick": 50, "ban": 50}
    last = b.add(state, alice, PL, "", pl_content, (last.event_id,))
    last = b.add(state, alice, JR, "", {"join_rule": "public"}, (last.event_id,))
    for i in range(members):
        last = b.add(state, user(i), MEMBER, user(i), {"membership": "join"}, (last.event_id,))
    base = dict(state)
    base_tip = last.event_id

    forks = []
    for fork in range(2):
        fstate = dict(base)
        prev = base_tip
        pl_users = dict(users)
        for n in range(fork_events):
            roll = rng.random()
            if roll < 0.05:  # power levels change by Alice
                mod = rng.choice(mods)
                pl_users = dict(pl_users)
                pl_users[mod] = rng.choice([0, 50, 60])
                ev = b.add(fstate, alice, PL, "", {**pl_content, "users": pl_users}, (prev,))
            elif roll < 0.07:  # join rules change by a moderator
                rule = rng.choice(["public", "invite"])
                ev = b.add(fstate, rng.choice(mods), JR, "", {"join_rule": rule}, (prev,))
            elif roll < 0.22:  # kick or ban by a moderator
                target = user(rng.randrange(20, members))
                membership = rng.choice(["leave", "ban"])
                ev = b.add(fstate, rng.choice(mods), MEMBER, target, {"membership": membership}, (prev,))
            elif roll < 0.45:  # a member leaves
                target = user(rng.randrange(20, members))
                ev = b.add(fstate, target, MEMBER, target, {"membership": "leave"}, (prev,))
            elif roll < 0.65:  # a new member joins
                newcomer = f"@new{fork}_{n}:example.org"
                ev = b.add(fstate, newcomer, MEMBER, newcomer, {"membership": "join"}, (prev,))
            elif roll < 0.80:  # a member re-joins (profile change)
                who = user(rng.randrange(20, members))
                ev = b.add(fstate, who, MEMBER, who, {"membership": "join", "displayname": f"n{n}"}, (prev,))
            else:  # a topic change by a moderator
                ev = b.add(fstate, rng.choice(mods), TOPIC, "", {"topic": f"fork {fork} #{n}"}, (prev,))
            prev = ev.event_id
        forks.append(fstate)
    return b.events, forks


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=10_000)
    parser.add_argument("--fork-events", type=int, default=200)
    parser.add_argument("--versions", default="11,12")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)

    for identifier in args.versions.split(","):
        rv = get_room_version(identifier.strip())
        events, sets = build(rv, args.members, args.fork_events)
        unconflicted, conflicted = state_res.separate_state(rv, sets)
        if rv.state_res.value == "v1":  # v1 has no auth difference
            full = {e for ids in conflicted.values() for e in ids}
        else:
            full = state_res.full_conflicted_set(rv, sets, events)
        times = []
        result: dict[Any, str] = {}
        for _ in range(args.repeat):
            start = time.perf_counter()
            result = state_res.resolve_state(rv, sets, events)
            times.append(time.perf_counter() - start)
        best, median = min(times), statistics.median(times)
        print(
            f"room v{rv.identifier} ({rv.state_res.value}): "
            f"{len(events)} events, state {len(result)} entries, "
            f"{len(conflicted)} conflicted keys, full conflicted set {len(full)}"
        )
        print(
            f"  wall time best {best * 1000:.1f} ms, median {median * 1000:.1f} ms; "
            f"{len(full) / best:,.0f} conflicted events/s, "
            f"{sum(len(s) for s in sets) / best:,.0f} state entries/s"
        )


if __name__ == "__main__":
    main()
