"""Which process holds which role (gateway/roles.py), from the shared config and the
worker's name."""

from __future__ import annotations

from gateway.config import parse_config
from gateway.roles import roles_for

SHARED = {"server_name": "example.com", "database": {"name": "psycopg2", "args": {"database": "g"}},
          "redis": {"enabled": True}}


def roles(extra: dict, worker: str | None = None):
    worker_keys = {"worker_app": "synapse.app.generic_worker", "worker_name": worker} if worker else {}
    return roles_for(parse_config({**SHARED, **extra, **worker_keys}))


def test_a_single_process_holds_every_role():
    r = roles_for(parse_config({"server_name": "example.com"}))
    assert r.is_main and r.events_writer and r.federation_sender and r.pusher and r.background_tasks
    assert r.appservice_sender and r.user_directory and r.media_repo and r.media_background


def test_a_plain_worker_holds_none():
    r = roles({}, worker="sync1")
    assert r.instance_name == "sync1" and not r.is_main
    assert not (r.events_writer or r.federation_sender or r.pusher or r.background_tasks or r.appservice_sender
                or r.user_directory or r.media_background)


def test_placed_roles_move_to_their_workers():
    placed = {"federation_sender_instances": ["fs2"], "pusher_instances": ["p1"],
              "run_background_tasks_on": "bg", "notify_appservices_from_worker": "bg",
              "update_user_directory_from_worker": "bg", "enable_media_repo": False,
              "media_instance_running_background_jobs": "media1"}
    main = roles(placed)
    assert main.events_writer  # the events stream stays on main
    assert not (main.federation_sender or main.pusher or main.background_tasks or main.appservice_sender
                or main.user_directory or main.media_repo or main.media_background)
    assert roles(placed, "fs2").federation_sender and not roles(placed, "fs2").pusher
    assert roles(placed, "p1").pusher
    bg = roles(placed, "bg")
    assert bg.background_tasks and bg.appservice_sender and bg.user_directory and not bg.federation_sender
    media = roles({**placed, "enable_media_repo": True}, "media1")
    assert media.media_repo and media.media_background


def test_send_federation_false_and_start_pushers_false_stop_main():
    main = roles({"send_federation": False, "start_pushers": False})
    assert not main.federation_sender and not main.pusher


def test_stream_writers_on_workers():
    places = {n: {"host": "127.0.0.1", "port": 9100 + i} for i, n in enumerate(["p1", "p2", "t1"])}
    extra = {"instance_map": places, "stream_writers": {"events": ["p1", "p2"], "typing": "t1"}}
    main, p1, t1 = roles(extra), roles(extra, "p1"), roles(extra, "t1")
    assert not main.events_writer and main.writes == {"to_device", "account_data", "receipts", "presence",
                                                      "push_rules", "device_lists"}
    assert p1.events_writer and p1.writes == {"events"}
    assert not t1.events_writer and t1.writes == {"typing"}


def test_event_persisters_share_the_rooms_out_by_room_id():
    from gateway.roles import writer_of

    places = {n: {"host": "127.0.0.1", "port": 9100 + i} for i, n in enumerate(["p1", "p2"])}
    workers = parse_config({**SHARED, "instance_map": places,
                            "stream_writers": {"events": ["p1", "p2"]}}).workers
    rooms = [f"!room{i}:example.com" for i in range(40)]
    first = [writer_of(workers, "events", r) for r in rooms]
    assert set(first) == {"p1", "p2"}  # both get rooms
    assert [writer_of(workers, "events", r) for r in rooms] == first  # and always the same ones
    assert writer_of(workers, "typing", rooms[0]) == "main"
