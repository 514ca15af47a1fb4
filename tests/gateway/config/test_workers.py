"""The worker keys (gateway/config/workers.py) and the repeatable --config-path."""

from __future__ import annotations

import pytest
import yaml

from gateway.config import ConfigError, load_config, parse_config
from gateway.config.workers import GENERIC_WORKER, InstanceLocation

POSTGRES = {"name": "psycopg2", "args": {"database": "gateway", "host": "127.0.0.1"}}
SHARED = {
    "server_name": "example.com", "database": POSTGRES,
    "listeners": [{"port": 8008, "resources": [{"names": ["client"]}]},
                  {"port": 9093, "resources": [{"names": ["replication"]}]}],
    "instance_map": {"main": {"host": "127.0.0.1", "port": 9093}},
    "redis": {"enabled": True, "host": "redis", "port": 6380, "password": "pw", "dbid": 2},
    "worker_replication_secret": "s3cret",
}
WORKER = {
    "worker_app": "synapse.app.generic_worker", "worker_name": "sync1",
    "worker_listeners": [{"port": 8083, "resources": [{"names": ["client", "federation"]}]}],
}


def test_two_files_later_keys_win(tmp_path):
    shared, worker = tmp_path / "homeserver.yaml", tmp_path / "worker.yaml"
    shared.write_text(yaml.safe_dump({**SHARED, "enable_media_repo": False}))
    worker.write_text(yaml.safe_dump({**WORKER, "enable_media_repo": True}))
    config = load_config([str(shared), str(worker)])
    w = config.workers
    assert (w.worker_app, w.instance_name, w.is_worker) == (GENERIC_WORKER, "sync1", True)
    assert w.enable_media_repo is True  # the worker file's value
    assert [li.port for li in config.listeners] == [8083]  # worker_listeners, not the main process's
    assert {"client", "federation", "keys", "media", "openid"} <= config.listeners[0].resources
    assert w.instance_map == {"main": InstanceLocation("127.0.0.1", 9093)}
    assert (w.redis.host, w.redis.port, w.redis.password, w.redis.dbid) == ("redis", 6380, "pw", 2)
    assert w.worker_replication_secret == "s3cret"
    assert config.warnings == ()
    # Paths stay relative to the first file.
    assert config.config_path == str(shared)
    # The shared file alone is the main process.
    main = load_config(str(shared))
    assert (main.workers.is_worker, main.workers.instance_name) == (False, "main")
    assert [li.port for li in main.listeners] == [8008, 9093]


def test_placement_keys():
    config = parse_config({**SHARED, "federation_sender_instances": ["fs1"], "pusher_instances": "p1",
                           "start_pushers": False, "run_background_tasks_on": "bg",
                           "stream_writers": {"events": "main", "typing": ["main"]},
                           "notify_appservices_from_worker": "as1", "update_user_directory_from_worker": "ud1",
                           "media_instance_running_background_jobs": "media1"})
    w = config.workers
    assert w.federation_sender_instances == ("fs1",)
    assert w.pusher_instances == ("p1",) and w.start_pushers is False
    assert w.run_background_tasks_on == "bg"
    assert w.stream_writers["events"] == ("main",) and w.stream_writers["to_device"] == ("main",)
    assert (w.notify_appservices_from_worker, w.update_user_directory_from_worker,
            w.media_instance_running_background_jobs) == ("as1", "ud1", "media1")
    assert config.warnings == ()


def test_stream_writers_on_workers():
    """Event persisters (several shard the rooms) and one writer for each other stream,
    each in instance_map."""
    places = {name: {"host": "127.0.0.1", "port": 9100 + i}
              for i, name in enumerate(["persister1", "persister2", "typing1", "receipts1"])}
    config = parse_config({**SHARED, "instance_map": {**SHARED["instance_map"], **places},
                           "stream_writers": {"events": ["persister1", "persister2"], "typing": "typing1",
                                              "receipts": ["receipts1"], "account_data": "main"}})
    w = config.workers
    assert w.stream_writers["events"] == ("persister1", "persister2")
    assert (w.stream_writers["typing"], w.stream_writers["receipts"]) == (("typing1",), ("receipts1",))
    assert w.stream_writers["account_data"] == ("main",) and w.stream_writers["to_device"] == ("main",)
    assert config.warnings == ()


def test_the_older_replication_keys_fill_the_instance_map():
    shared = {k: v for k, v in SHARED.items() if k != "instance_map"}
    config = parse_config({**shared, **WORKER, "worker_replication_host": "main.internal",
                           "worker_replication_http_port": 9093, "worker_replication_port": 9092})
    assert config.workers.instance_map["main"] == InstanceLocation("main.internal", 9093)


@pytest.mark.parametrize("extra, key, words", [
    ({"worker_app": "synapse.app.mystery"}, "worker_app", "synapse.app.generic_worker"),
    ({"worker_app": "synapse.app.generic_worker"}, "worker_name", "needs a worker_name"),
    ({**WORKER, "worker_name": "main"}, "worker_name", "main process"),
    ({"worker_name": "w1"}, "worker_name", "worker_app is not"),
    ({**WORKER, "redis": {"enabled": False}}, "redis.enabled", "workers need Redis"),
    ({**WORKER, "database": {"name": "sqlite3"}}, "database", "workers need PostgreSQL"),
    ({"redis": {"port": "x"}}, "redis.port", "expected an integer"),
    ({"instance_map": {"main": {"host": "h"}}}, "instance_map.main.port", "required"),
    ({"instance_map": {"main": {"host": "h", "port": 70000}}}, "instance_map.main.port", "between"),
    ({"stream_writers": {"evnts": "main"}}, "stream_writers.evnts", "unknown stream"),
    ({"stream_writers": {"events": ["persister1"]}}, "stream_writers.events", "instance_map needs"),
    ({"stream_writers": {"receipts": "receipts1"}}, "stream_writers.receipts", "'receipts1'"),
    ({"stream_writers": {"events": ["main", "main"]}}, "stream_writers.events", "twice"),
    ({"stream_writers": {"events": []}}, "stream_writers.events", "at least one"),
    ({"stream_writers": {"typing": ["main", "w2"]}}, "stream_writers.typing", "several writers"),
    ({"federation_sender_instances": [1]}, "federation_sender_instances[0]", "expected a string"),
    ({"federation_sender_instances": ["fs1", "fs2", "fs1"]}, "federation_sender_instances", "names an instance twice"),
    ({"start_pushers": "yes"}, "start_pushers", "true or false"),
    ({"worker_replication_host": "h"}, "worker_replication_http_port", "go together"),
])
def test_errors_name_the_key(extra, key, words):
    with pytest.raises(ConfigError) as e:
        parse_config({**SHARED, **extra})
    assert e.value.path == key
    assert words in e.value.message


def test_destinations_are_shared_out_over_the_federation_senders():
    """``instance_for``: the same answer everywhere, from the server name alone (SHA-256,
    little-endian, modulo the number of senders), and every sender gets some."""
    import hashlib

    from gateway.config.workers import instance_for

    senders = ("fs1", "fs2")
    config = parse_config({**SHARED, "federation_sender_instances": list(senders)})
    assert config.workers.federation_sender_instances == senders
    names = [f"server{i}.example" for i in range(40)]
    owners = {n: instance_for(n, senders) for n in names}
    assert set(owners.values()) == set(senders)
    for n in names:
        expected = int.from_bytes(hashlib.sha256(n.encode()).digest(), "little") % 2
        assert owners[n] == senders[expected]
    assert instance_for("matrix.org", ("only",)) == "only"
