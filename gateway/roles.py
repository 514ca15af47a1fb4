"""Which roles this process holds, derived from the shared config and its ``worker_name``.

The one place that answers "which process runs this?" (DESIGN.md, "Wiring and
processes"). Every process builds the same services (gateway/wiring.py) and serves the
resources its listeners name; the roles decide what it starts and writes:

=====================  ==========================================  =======================================
role                   held by                                     starts / does
=====================  ==========================================  =======================================
``events_writer``      ``stream_writers.events`` (``main``)        persists new events, local or received
                                                                   (checked where they arrived): several
                                                                   event persisters share the rooms out by
                                                                   a hash of the room ID (``writer_of``)
``writes``             ``stream_writers.<stream>``                 writes that stream (other servers' EDUs
                                                                   too); other processes forward its
                                                                   writes to the writer's replication
                                                                   listener
``federation_sender``  ``federation_sender_instances``, else main  FederationSender (outbound transactions;
                       when ``send_federation``                    on a worker, woken by others' events)
``pusher``             ``pusher_instances``, else main when        HTTP pushes and missed-message mails,
                       ``start_pushers``                           for the users of its shard
                                                                   (``pusher_for_user``)
``background_tasks``   ``run_background_tasks_on`` (``main``)      partial-state resyncs, profile
                                                                   propagation, the mail queue, the
                                                                   federation tester's self-check
``appservice_sender``  ``notify_appservices_from_worker``, else    application service transactions
                       main
``user_directory``     ``update_user_directory_from_worker``,      (user directory updates)
                       else main
``media_repo``         ``enable_media_repo`` (true by default; a   the media repository's routes
                       worker file may set it), or a
                       ``synapse.app.media_repository`` worker
``media_background``   ``media_instance_running_background_jobs``  media jobs (expired upload reservations)
                       else main (with ``enable_media_repo``)
every process          -                                           Redis pub/sub (when ``redis.enabled``):
                                                                   publishes its writes, wakes its /sync
=====================  ==========================================  =======================================

Spec of the model: Synapse's "Scaling synapse via workers" (seed 002).
"""

from __future__ import annotations

from dataclasses import dataclass

from .config import HomeserverConfig
from .config.workers import MAIN, STREAMS, WorkerConfig, instance_for

__all__ = ["Roles", "roles_for", "pusher_for_user", "writer_of"]


@dataclass(frozen=True)
class Roles:
    instance_name: str
    is_main: bool
    events_writer: bool
    #: The streams this process writes (for ``events``: the rooms ``writer_of`` gives it).
    writes: frozenset[str]
    federation_sender: bool
    pusher: bool
    background_tasks: bool
    appservice_sender: bool
    user_directory: bool
    media_repo: bool
    media_background: bool


def roles_for(config: HomeserverConfig) -> Roles:
    """The roles of the process ``config`` describes (both files merged)."""
    w = config.workers
    me = w.instance_name

    def named(instances: tuple[str, ...] | str | None, *, default_main: bool) -> bool:
        if not instances:
            return me == MAIN and default_main
        return me in ((instances,) if isinstance(instances, str) else instances)

    return Roles(
        instance_name=me,
        is_main=me == MAIN,
        events_writer=me in w.stream_writers["events"],
        writes=frozenset(s for s in STREAMS if me in w.stream_writers[s]),
        federation_sender=named(w.federation_sender_instances, default_main=config.send_federation),
        pusher=named(w.pusher_instances, default_main=w.start_pushers),
        background_tasks=me == w.run_background_tasks_on,
        appservice_sender=named(w.notify_appservices_from_worker, default_main=True),
        user_directory=named(w.update_user_directory_from_worker, default_main=True),
        media_repo=w.enable_media_repo,
        media_background=named(w.media_instance_running_background_jobs, default_main=w.enable_media_repo),
    )


def pusher_for_user(config: HomeserverConfig, user_id: str) -> str | None:
    """The instance that sends ``user_id``'s pushes (HTTP and email pushers): their shard of
    ``pusher_instances`` (``instance_for``, as Synapse shards them), else ``main`` when
    ``start_pushers``; None: nobody pushes."""
    w = config.workers
    if w.pusher_instances:
        return instance_for(user_id, w.pusher_instances)
    return MAIN if w.start_pushers else None


def writer_of(workers: WorkerConfig, stream: str, room_id: str | None = None) -> str:
    """The instance that writes ``stream`` (for ``events``, ``room_id``'s: one of the
    event persisters, by ``instance_for`` of the room ID, as Synapse shares rooms out)."""
    writers = workers.stream_writers[stream]
    if len(writers) == 1 or room_id is None:
        return writers[0]
    return instance_for(room_id, writers)
