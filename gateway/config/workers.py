"""Worker processes: the worker file's keys and the shared file's ``instance_map``,
``redis``, ``stream_writers`` and the keys that place background work (Synapse's names).

A worker runs ``gateway run --config-path homeserver.yaml --config-path worker.yaml``: the
worker file sets ``worker_app``, ``worker_name`` and ``worker_listeners``; everything else
comes from the shared file. Which services each process then runs is derived in
gateway/roles.py.

Docs: Synapse's "Scaling synapse via workers" and "Configuration: Workers" (seed 002).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from typing import Any, Callable

from ._values import ConfigError, Section, string_item

__all__ = ["WorkerConfig", "RedisConfig", "InstanceLocation", "STREAMS", "WORKER_APPS", "MAIN",
           "parse_worker_config", "instance_for"]

#: The name of the main process in ``instance_map``, ``stream_writers`` and friends.
MAIN = "main"
#: Our worker app and the names Synapse operators write (its deprecated single-purpose apps
#: are generic workers too).
GENERIC_WORKER = "gateway.app.generic_worker"
WORKER_APPS = {
    GENERIC_WORKER: GENERIC_WORKER,
    "synapse.app.generic_worker": GENERIC_WORKER,
    "synapse.app.federation_sender": GENERIC_WORKER,
    "synapse.app.pusher": GENERIC_WORKER,
    "synapse.app.media_repository": GENERIC_WORKER,
    "synapse.app.client_reader": GENERIC_WORKER,
    "synapse.app.federation_reader": GENERIC_WORKER,
    "synapse.app.user_dir": GENERIC_WORKER,
    "synapse.app.frontend_proxy": GENERIC_WORKER,
    # The main process, named explicitly.
    "gateway.app.homeserver": None,
    "synapse.app.homeserver": None,
}
#: Streams ``stream_writers`` may assign (Synapse's names).
STREAMS = ("events", "typing", "to_device", "account_data", "receipts", "presence", "push_rules", "device_lists")


@dataclass(frozen=True)
class InstanceLocation:
    """Where a process's ``replication`` listener is (an ``instance_map`` entry)."""

    host: str
    port: int
    tls: bool = False


@dataclass(frozen=True)
class RedisConfig:
    """``redis``: the pub/sub server processes tell each other about new data through."""

    enabled: bool = False
    host: str = "localhost"
    port: int = 6379
    password: str | None = None
    dbid: int | None = None
    use_tls: bool = False
    #: Ours: prefix of the pub/sub channel names. Channels ignore ``dbid``, so two
    #: deployments on one Redis need different prefixes; the default is the server name.
    channel_prefix: str | None = None


@dataclass(frozen=True)
class WorkerConfig:
    #: ``worker_app`` as ours (None: the main process).
    worker_app: str | None = None
    #: This process's instance name: ``worker_name``, or ``main``.
    instance_name: str = MAIN
    instance_map: dict[str, InstanceLocation] = field(default_factory=dict)
    worker_replication_secret: str | None = None
    redis: RedisConfig = field(default_factory=RedisConfig)
    #: stream -> the instances writing it (``main`` unless configured).
    stream_writers: dict[str, tuple[str, ...]] = field(default_factory=lambda: {s: (MAIN,) for s in STREAMS})
    #: ``federation_sender_instances``; empty: the main process sends (if ``send_federation``).
    #: Several: each destination is sent to by one of them (``instance_for``).
    federation_sender_instances: tuple[str, ...] = ()
    run_background_tasks_on: str = MAIN
    start_pushers: bool = True
    pusher_instances: tuple[str, ...] = ()
    enable_media_repo: bool = True
    media_instance_running_background_jobs: str | None = None
    update_user_directory_from_worker: str | None = None
    notify_appservices_from_worker: str | None = None

    @property
    def is_worker(self) -> bool:
        return self.worker_app is not None


def instance_for(key: str, instances: tuple[str, ...]) -> str:
    """The instance of ``instances`` that handles ``key`` (a destination server name for
    ``federation_sender_instances``): the SHA-256 of the key's UTF-8 bytes, read as a
    little-endian integer, modulo the number of instances, indexes the list. Every process
    computes the same answer from the shared config; the list's order matters, so adding
    or removing an instance moves some destinations to another sender."""
    if not instances:
        raise ValueError("no instances")
    digest = hashlib.sha256(key.encode("utf-8")).digest()
    return instances[int.from_bytes(digest, "little") % len(instances)]


def _instance_names(s: Section, name: str, default: Any) -> tuple[str, ...]:
    """A list of instance names; Synapse also accepts a single name for these keys."""
    v = s.raw(name, None)
    if isinstance(v, str):
        return (v,)
    return tuple(s.list(name, default, of=string_item))


def _parse_instance_map(s: Section) -> dict[str, InstanceLocation]:
    out: dict[str, InstanceLocation] = {}
    for name in list(s.data):
        entry = s.section(name)
        entry.ignore("path")  # Unix sockets: not supported, the host and port are used
        out[name] = InstanceLocation(host=entry.str("host"), port=entry.int("port", minimum=1, maximum=65535),
                                     tls=entry.bool("tls", False))
    return out


def _parse_redis(s: Section) -> RedisConfig:
    for k in ("path", "certificate_file", "private_key_file", "ca_file", "ca_path"):
        s.ignore(k)
    return RedisConfig(
        enabled=s.bool("enabled", False),
        host=s.str("host", "localhost"),
        port=s.int("port", 6379, minimum=1, maximum=65535),
        password=s.str("password", None),
        dbid=s.int("dbid", None, minimum=0),
        use_tls=s.bool("use_tls", False),
        channel_prefix=s.str("channel_prefix", None),
    )


def _parse_stream_writers(s: Section) -> dict[str, tuple[str, ...]]:
    out = {stream: (MAIN,) for stream in STREAMS}
    for stream in list(s.data):
        if stream not in STREAMS:
            raise ConfigError(s.key(stream), f"unknown stream; expected some of {', '.join(STREAMS)}")
    for stream in STREAMS:
        writers = _instance_names(s, stream, [MAIN])
        if not writers:
            raise ConfigError(s.key(stream), "needs at least one writer")
        if stream != "events" and len(writers) > 1:
            raise ConfigError(s.key(stream), "only the events stream may have several writers")
        if len(set(writers)) != len(writers):
            raise ConfigError(s.key(stream), "names a writer twice")
        out[stream] = writers
    return out


def parse_worker_config(root: Section, listener_parser: Callable[[Any, str], Any]) -> tuple[WorkerConfig, tuple]:
    """The worker keys of ``root`` (both files merged); returns the config and, for a
    worker, its ``worker_listeners`` (parsed by ``listener_parser``), else ``()``."""
    raw_app = root.str("worker_app", None)
    if raw_app is not None and raw_app not in WORKER_APPS:
        raise ConfigError("worker_app", f"expected {GENERIC_WORKER} (or synapse.app.generic_worker), got {raw_app!r}")
    worker_app = WORKER_APPS.get(raw_app) if raw_app else None
    worker_name = root.str("worker_name", None)
    listeners = tuple(listener_parser(item, f"worker_listeners[{i}]")
                      for i, item in enumerate(root.list("worker_listeners", [])))
    root.ignore("worker_log_config")  # logging goes to standard error, as for the main process
    root.ignore("worker_daemonize")
    root.ignore("worker_pid_file")
    instance_map = _parse_instance_map(root.section("instance_map"))
    # The older form (Synapse before 1.84): where main's replication listener is, in the worker file.
    old_host = root.str("worker_replication_host", None)
    old_port = root.int("worker_replication_http_port", None, minimum=1, maximum=65535)
    root.ignore("worker_replication_port")  # the TCP replication port of old Synapse: Redis replaces it
    root.ignore("worker_replication_http_tls")
    if (old_host is None) != (old_port is None):
        raise ConfigError("worker_replication_host" if old_host is None else "worker_replication_http_port",
                          "worker_replication_host and worker_replication_http_port go together")
    if old_host is not None and MAIN not in instance_map:
        instance_map[MAIN] = InstanceLocation(old_host, old_port)
    config = WorkerConfig(
        worker_app=worker_app,
        instance_name=MAIN,
        instance_map=instance_map,
        worker_replication_secret=root.str("worker_replication_secret", None),
        redis=_parse_redis(root.section("redis")),
        stream_writers=_parse_stream_writers(root.section("stream_writers")),
        federation_sender_instances=_instance_names(root, "federation_sender_instances", []),
        run_background_tasks_on=root.str("run_background_tasks_on", MAIN),
        start_pushers=root.bool("start_pushers", True),
        pusher_instances=_instance_names(root, "pusher_instances", []),
        # A media worker: its own file says ``enable_media_repo: true`` (it replaces the
        # shared file's false), or it is Synapse's media_repository app.
        enable_media_repo=root.bool("enable_media_repo", True) or raw_app == "synapse.app.media_repository",
        media_instance_running_background_jobs=root.str("media_instance_running_background_jobs", None),
        update_user_directory_from_worker=root.str("update_user_directory_from_worker", None),
        notify_appservices_from_worker=root.str("notify_appservices_from_worker", None),
    )
    for stream, writers in config.stream_writers.items():
        # Other processes forward this stream's writes to its writers' replication listeners.
        for name in writers:
            if name != MAIN and name not in instance_map:
                raise ConfigError(f"stream_writers.{stream}", f"{name!r} writes the {stream} stream, so "
                                  f"instance_map needs its replication listener ({name}: {{host, port}})")
    if len(set(config.federation_sender_instances)) != len(config.federation_sender_instances):
        raise ConfigError("federation_sender_instances", "names an instance twice")
    if worker_app is None:
        if worker_name is not None and raw_app is None:
            raise ConfigError("worker_name", "is set but worker_app is not: a worker needs both")
        return config, ()
    if not worker_name:
        raise ConfigError("worker_name", "a worker (worker_app is set) needs a worker_name")
    if worker_name == MAIN:
        raise ConfigError("worker_name", f"{MAIN!r} is the main process's name; choose another")
    if not config.redis.enabled:
        raise ConfigError("redis.enabled", "workers need Redis (redis: {enabled: true, host: ..., port: ...}) "
                                           "to hear of other processes' writes")
    return replace(config, instance_name=worker_name), listeners
