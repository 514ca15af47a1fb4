"""Builds every service of the process once, eagerly, in dependency order.

This is the one place that says which service talks to which: each service gets the
collaborators it needs as constructor arguments, and every listener and hook between
services is registered here (DESIGN.md, "Wiring and processes"). ``start`` and ``stop``
own the lifecycles: background work begins after every listener is bound and ends
before the database closes.

Services not converted yet still take the ``HomeServer`` and reach their collaborators
through it at call time; they are built here all the same, so that the order and the
hooks are visible in this file. ``HomeServer`` is the container the wiring fills:
``hs.<service>`` keeps working for routes and tests.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .server import HomeServer

log = logging.getLogger(__name__)


def build(hs: "HomeServer") -> None:
    """Build the services of ``hs`` and connect them. Modules are loaded last, when
    everything they may call exists; a broken one raises ``ConfigError`` naming its key."""
    from federation.net.client import FederationClient
    from federation.net.resolver import ServerResolver, create_connector

    from .modules import LoadedModules, load_modules
    from .oauth.service import OAuthService
    from .outbound import outbound_ip_policy, outbound_ssl_context
    from .services import ephemeral_edus
    from .services.account_data import AccountDataService
    from .services.appservice_api import AppServiceApi
    from .services.appservice_transactions import AppServiceTransactions
    from .services.appservices import AppServices
    from .services.auth import AuthService
    from .services.directory import DirectoryService
    from .services.e2e_keys import EDU_HANDLERS, E2EKeysService
    from .services.event_stream import EventStreamService
    from .services.events import EventsService
    from .services.bulk_work import CheckProcesses
    from .services.federation.backfill import BackfillHandler
    from .services.federation.receive import FederationEventHandler
    from .services.federation.membership import FederationMembershipHandler
    from .services.federation.room_data import RoomDataService
    from .services.federation.sender import FederationSender
    from .services.federation.inbox import EduHandlers, TransactionHandler
    from .services.pagination import RoomPagination
    from .services.guest_access import GuestAccessService
    from .services.initial_sync import InitialSyncService
    from .services.federation.keyring import KeyRing, network_fetchers, own_server_keys
    from .services.media import MediaService, idp_icons
    from .services.notifier import Notifier
    from .services.federation.partial_state import PartialStateService
    from .services.profiles import ProfileService
    from .services.purge_history import PurgeHistoryService
    from .services.push import PushService
    from .services.push_gateway import PushGatewayClient
    from .services.ratelimit import RateLimiters, RateLimitOverrides
    from .services.receipts import ReceiptsService
    from .services.relations import RelationsService
    from .services.reports import ReportsService
    from .services.room_admin import RoomAdminService
    from .services.room_keys import RoomKeysService
    from .services.room_upgrades import RoomUpgradeService
    from .services.rooms import RoomsService
    from .services.search import SearchService
    from .services.self_destruct import SelfDestructingEvents
    from .services.server_notices import ServerNoticesService
    from .services.spaces import SpacesService
    from .services.sync import SyncService
    from .services.timestamp_to_event import TimestampToEvent
    from .services.identity_servers import IdentityServerClient
    from .services.recaptcha import RecaptchaVerifier
    from .services.mailer import Mailer
    from .services.tester_keys import TesterKeys
    from .services.tester_self_check import SelfCheck, build_tester
    from .services.threepids import ThreepidService
    from .services.email_notifs import EmailNotifier
    from .storage.email_pushers import EmailPusherStore
    from .services.third_party_invites import ThirdPartyInvites
    from .services.typing import TypingService
    from .services.uia import UIAService
    from .services.url_preview import UrlPreviewer
    from .services.user_directory import UserDirectoryService
    from .services.usernames import Usernames
    from .storage.account_data import AccountDataStore
    from .storage.appservice import AppServiceStore
    from .storage.destinations import DestinationStore
    from .storage.email_outbox import EmailOutboxStore
    from .storage.threepids import ThreepidStore
    from .storage.directory import DirectoryStore
    from .storage.keys import ServerKeyStore
    from .storage.media import MediaStore
    from .storage.purge_history import PurgeHistoryStore
    from .storage.receipts import ReceiptStore
    from .storage.relations import RelationStore
    from .storage.room_keys import RoomKeyStore
    from .storage.search import SearchStore
    from .storage.spaces import SpacesStore
    from .storage.sync import SyncStore

    from sso.pages import lazy_environment

    from .appkeys import ACCOUNT_DATA, EMAIL_NOTIFS, MEDIA, RECEIPTS, ROOM_KEYS, THREEPIDS, TYPING, URL_PREVIEWER

    from .config.workers import MAIN
    from .roles import pusher_for_user, roles_for
    from .services.event_persisters import EventPersisters, register_endpoints
    from .services.replication import RedisReplication
    from .services.stream_writers import StreamWriters

    config, db, server_name = hs.config, hs.db, hs.server_name
    hs.roles = roles = roles_for(config)  # what this process starts (gateway/roles.py)

    def provide(key, service):
        """A service routes call: set on each listener's app under ``key``."""
        hs.app_services[key] = service
        return service

    def clock_ms() -> int:
        return hs.clock_ms()  # read at each call: tests move the server's clock

    # Filled by the modules at the end; services hold its callbacks from the start.
    hs.modules = modules = LoadedModules()
    exempt = None
    if config.appservice.services:  # application services' senders, and users when rate_limited: false
        exempt = lambda key: key.startswith("@") and appservices.exempt_from_ratelimit(key)  # noqa: E731
    hs.ratelimiters = ratelimiters = RateLimiters(config.rate_limits, exempt=exempt)
    hs.ratelimit_overrides = RateLimitOverrides(db)

    fed = config.federation
    policy, ctx = outbound_ip_policy(fed), outbound_ssl_context(fed)
    resolver = ServerResolver(nameservers=list(fed.dns_nameservers) or None, ip_policy=policy, ssl_context=ctx)

    def outbound_connector():
        """Connections to other servers' HTTP endpoints, under the outbound IP rules."""
        return create_connector(policy=policy, ssl_context=ctx)

    hs.tester_keys = TesterKeys()  # the federation tester's keys of one run, published by our key server
    hs.tester_self_check = None
    if config.federation_tester_self_check_ms is not None:  # our own server name, tested on a schedule
        self_tester = build_tester(config, clock_ms)
        hs.tester_self_check = SelfCheck(server_name=server_name, run=self_tester.run,
                                         interval_s=config.federation_tester_self_check_ms / 1000,
                                         cleanup=self_tester.resolver.close)
    hs.federation_client = federation_client = FederationClient(
        server_name=server_name, signing_key=hs.signing_key, resolver=resolver, ssl_context=ctx, ip_policy=policy,
        no_verify_patterns=fed.federation_certificate_verification_whitelist,
        domain_whitelist=fed.federation_domain_whitelist)

    # Which process writes each stream; writes of the others' streams are forwarded to them.
    hs.stream_writers = writers = StreamWriters(config.workers)

    # --- rooms and events ---------------------------------------------------------
    multi_process = config.workers.redis.enabled  # other processes write to the same rooms
    hs.events = events = EventsService(
        db=db, server_name=server_name, signing_key=hs.signing_key, modules=modules.callbacks, clock_ms=clock_ms,
        shared_room_locks=multi_process,
        persisters=EventPersisters(writers) if config.workers.stream_writers["events"] != (roles.instance_name,)
        else None)
    w = config.workers
    hs.federation_sender = sender = FederationSender(
        hs, instance_name=roles.instance_name,
        sender_instances=w.federation_sender_instances or ((MAIN,) if config.send_federation else ()))
    hs.auth = auth = AuthService(hs)
    hs.oauth = oauth = OAuthService(db=db, config=config.oauth, baseurl=config.public_baseurl, clock_ms=clock_ms,
                                    devices=auth.devices, users=auth.users)
    hs.appservices = appservices = AppServices(
        server_name=server_name, config=config.appservice,
        api=AppServiceApi(config.federation, legacy_authorization=config.appservice.use_legacy_authorization),
        store=AppServiceStore(db), users=auth.users, devices=auth.devices, clock_ms=clock_ms)
    hs.usernames = Usernames(server_name=server_name, users=auth.users, appservices=appservices)
    hs.uia = UIAService(hs)
    sync_store = SyncStore(db, events.store)
    hs.notifier = notifier = Notifier(sync_store)
    # Other processes hear of this one's changes, and this one of theirs (workers).
    hs.replication = RedisReplication(config.workers.redis, server_name=server_name,
                                      instance_name=roles.instance_name, notifier=notifier) \
        if config.workers.redis.enabled else None

    def pushes_here(user_id: str) -> bool:
        """This process sends the user's pushes and mails (their shard of the pushers)."""
        return roles.pusher and pusher_for_user(config, user_id) == roles.instance_name

    hs.account_data = account_data = provide(ACCOUNT_DATA, AccountDataService(
        store=AccountDataStore(db), events=events, notifier=notifier))
    hs.push = push = PushService(db=db, server_name=server_name, events=events, account_data_store=account_data.store,
                                 notifier=notifier, gateway=PushGatewayClient(outbound_connector), clock_ms=clock_ms,
                                 pushes_here=pushes_here)
    hs.directory = directory = DirectoryService(
        config=config.directory, store=DirectoryStore(db), server_name=server_name, events=events,
        federation_client=federation_client, appservices=appservices, modules=modules.callbacks, clock_ms=clock_ms)
    hs.rooms = rooms = RoomsService(hs)
    hs.room_admin = RoomAdminService(hs)
    hs.profiles = profiles = ProfileService(
        server_name=server_name, config=config.profiles, db=db, state=events.state, rooms=rooms,
        federation_client=federation_client, ratelimit_message=hs.ratelimit_message, modules=modules.callbacks,
        media=MediaStore(db, server_name))
    hs.guest_access = guest_access = GuestAccessService(
        enabled=config.allow_guest_access, server_name=server_name, auth=auth, events=events, rooms=rooms,
        clock_ms=clock_ms)
    hs.relations = relations = RelationsService(events, RelationStore(db, events.store), ignored_users=account_data.ignored_users)
    hs.room_upgrades = RoomUpgradeService(
        server_name=server_name, events=events, rooms=rooms, directory=directory,
        account_data_store=account_data.store, push=push, notifier=notifier, modules=modules.callbacks,
        clock_ms=clock_ms)
    hs.search = SearchService(SearchStore(db), events, relations.bundle_aggregations,
                              ignored_users=account_data.ignored_users)
    hs.reports = ReportsService(server_name=server_name, db=db, events=events, users=rooms.users,
                                ratelimiter=ratelimiters["rc_reports"], clock_ms=clock_ms)
    hs.server_notices = ServerNoticesService(
        config=config.server_notices, db=db, server_name=server_name, users=auth.users, events=events, rooms=rooms,
        account_data=account_data, clock_ms=clock_ms)
    hs.user_directory = user_directory = UserDirectoryService(
        config=config.directory, db=db, server_name=server_name, events=events, notifier=notifier,
        federation_sender=sender, ratelimiter=ratelimiters["rc_presence.per_user"], modules=modules.callbacks,
        clock_ms=clock_ms)

    # --- mail and e-mail addresses --------------------------------------------------
    hs.mailer = mailer = Mailer(config.email, EmailOutboxStore(db), clock_ms, server_name=server_name) \
        if config.email.enabled else None
    hs.recaptcha = RecaptchaVerifier(config.captcha, outbound_connector)  # the m.login.recaptcha stage
    hs.identity_servers = identity_servers = IdentityServerClient(
        server_name=server_name, signing_key=hs.signing_key, connector=outbound_connector)
    hs.threepids = threepids = provide(THREEPIDS, ThreepidService(
        ThreepidStore(db), auth.users, mailer, identity_servers, email=config.email, config=config.threepids,
        server_name=server_name, public_baseurl=config.public_baseurl,
        pages=lazy_environment(config.custom_template_directory, public_baseurl=config.public_baseurl),
        clock_ms=clock_ms, modules=modules.callbacks, ratelimiter=ratelimiters["rc_3pid_validation"]))
    hs.email_notifs = email_notifs = provide(EMAIL_NOTIFS, EmailNotifier(
        config=config.email, server_name=server_name, public_baseurl=config.public_baseurl,
        store=EmailPusherStore(db), pushers=push.pushers, events=events, profiles=rooms.profiles, mailer=mailer,
        pages=threepids.pages, secret=mail_link_secret(config, hs.signing_key), clock_ms=clock_ms,
        mails_here=pushes_here)
        if mailer is not None and config.email.enable_notifs else None)

    # --- ephemeral data, sync ------------------------------------------------------
    hs.typing = typing = provide(TYPING, TypingService(events=events, notifier=notifier))
    hs.receipts = receipts = provide(RECEIPTS, ReceiptsService(store=ReceiptStore(db), events=events, account_data=account_data,
                                                    notifier=notifier, clock_ms=clock_ms))
    receipts.add_listener(push.on_receipt)  # read receipts update pushers' badges
    hs.e2e_keys = e2e_keys = E2EKeysService(hs)
    hs.appservice_transactions = appservice_transactions = AppServiceTransactions(
        server_name=server_name, config=config.appservice, api=appservices.api, store=appservices.store,
        destinations=DestinationStore(db), e2e_store=e2e_keys.store, receipts=receipts.store, events=events,
        get_typing=typing.get_typing, clock_ms=clock_ms)
    hs.room_keys = provide(ROOM_KEYS, RoomKeysService(RoomKeyStore(db)))
    hs.sync = SyncService(store=sync_store, events=events, notifier=notifier, typing=typing, receipts=receipts,
                          account_data=account_data, e2e_keys=e2e_keys, push=push, presence=user_directory.presence_store,
                          relations=relations, clock_ms=clock_ms)
    hs.event_stream = EventStreamService(hs)
    hs.initial_sync = InitialSyncService(hs)

    # --- federation ------------------------------------------------------------------
    fetcher, direct_fetcher = network_fetchers(federation_client, fed, clock_ms)
    hs.keyring = KeyRing(store=ServerKeyStore(db), server_name=server_name,
                         own_keys=own_server_keys(server_name, hs.signing_key, config.old_signing_keys),
                         fetcher=fetcher, direct_fetcher=direct_fetcher, clock_ms=clock_ms)
    hs.federation_room_data = room_data = RoomDataService(hs)
    hs.check_processes = CheckProcesses(min(os.cpu_count() or 1, 4) if fed.check_processes is None
                                        else fed.check_processes)
    hs.federation_events = federation_events = FederationEventHandler(hs, check_processes=hs.check_processes)
    hs.partial_state = PartialStateService(hs)
    hs.federation_membership = FederationMembershipHandler(hs)
    hs.federation_backfill = backfill = BackfillHandler(hs)
    hs.pagination = RoomPagination(events.store, backfill)
    membership = hs.federation_membership
    hs.third_party_invites = ThirdPartyInvites(
        server_name=server_name, identity_servers=identity_servers, events=events, rooms=rooms,
        profiles=rooms.profiles, users=auth.users, federation_client=federation_client,
        is_resident=membership.is_resident, ratelimiter=ratelimiters["rc_third_party_invite"],
        modules=modules.callbacks)
    hs.edu_handlers = edu_handlers = EduHandlers()
    hs.federation_transactions = TransactionHandler(hs, shared_locks=multi_process)
    hs.purge_history = PurgeHistoryService(
        server_name=server_name, store=PurgeHistoryStore(db), events=events,
        forget=[events.forget_events, federation_events.forget_events], clock_ms=clock_ms)
    hs.spaces = SpacesService(server_name=server_name, store=SpacesStore(db), summaries=directory.store,
                              events=events, directory=directory, room_data=room_data,
                              federation_client=federation_client, clock_ms=clock_ms)
    hs.timestamp_to_event = TimestampToEvent(server_name=server_name, db=db, events=events, directory=directory,
                                             federation_client=federation_client,
                                             federation_events=federation_events, backfill=backfill)

    # --- media -------------------------------------------------------------------------
    hs.media = media = provide(MEDIA, MediaService(config=config.media, store=MediaStore(db, server_name), server_name=server_name,
                                    federation_client=federation_client, outbound_connector=outbound_connector,
                                    public_media=idp_icons(config.sso), clock_ms=clock_ms))
    hs.url_previewer = provide(URL_PREVIEWER, UrlPreviewer(media))

    # --- stream writers -----------------------------------------------------------------
    # A stream's writes run on its writer: there they are served to the other processes,
    # elsewhere they become calls to it (before the hooks below take the methods).
    if roles.events_writer:
        register_endpoints(writers, events)
    forward_stream_writes(writers, hs)

    # --- listeners and hooks -----------------------------------------------------------
    # Push rules are evaluated for every new event (unread counts, pushers).
    events.add_new_events_listener(push.on_new_events)
    # New device list positions for local users' rooms.
    events.add_new_events_listener(e2e_keys.on_new_events)
    # Long-polling /sync requests wake (after the two above have their tasks).
    events.add_new_events_listener(notifier.on_new_events)
    hs.self_destruct = None
    if config.enable_ephemeral_messages:
        hs.self_destruct = SelfDestructingEvents(db=db, events=events, clock_ms=clock_ms)
        events.add_new_events_listener(hs.self_destruct.on_new_events)
    # A federation sender looks for events other processes stored (on a worker, or on
    # main while inbound federation workers store events).
    if roles.federation_sender:
        notifier.remote_events_listeners.append(lambda room_id, positions: sender.notify_new_events())
    # A pusher process sends the pushes other processes' events and receipts cause (workers).
    if roles.pusher:
        from .services.push import BADGE, INVITE, PUSH

        notifier.on_data(PUSH, push.on_remote_push)
        notifier.on_data(BADGE, push.on_remote_badge)
        notifier.on_data(INVITE, push.on_remote_invite)
        # Hand-overs missed (a Redis subscription, a publisher's reset): pushers whose
        # stored position is behind send what follows it.
        notifier.missed_listeners.append(push.on_missed)
    # Local typing and public receipts become EDUs for the room's other servers; with
    # federation senders on workers, EDUs made here reach the destination's sender over
    # Redis, and a started sender that may have missed some (a Redis resubscription, a
    # publisher's reset) looks for new events and queues its stored EDUs again.
    typing.add_listener(sender.on_local_typing)
    receipts.add_listener(sender.on_local_receipt)
    if hs.replication is not None:
        sender.forward = lambda message: notifier.publish_data("federation_sender", message)
        notifier.on_data("federation_sender", sender.on_forwarded)
        if roles.federation_sender:
            async def catch_up() -> None:
                if sender.started:  # its start does the same
                    sender.notify_new_events()
                    await e2e_keys.resend_outbox()
            notifier.missed_listeners.append(catch_up)
    # Guests leave rooms that stop admitting them.
    events.add_new_state_listener(guest_access.on_new_state)
    # Joins share presence with the room's servers at once.
    events.add_new_state_listener(user_directory.on_new_state)
    # Deleted devices lose their end-to-end keys; the device list changes.
    auth.devices.deleted_listeners.append(e2e_keys.on_devices_deleted)
    auth.devices.changed_listeners.append(e2e_keys.on_devices_changed)
    # ... and their OAuth 2.0 sessions end (refresh tokens stop working).
    auth.devices.deleted_listeners.append(oauth.on_devices_deleted)
    # Notifications for users with email pushers: mailed if still unread a while later.
    if email_notifs is not None:
        push.email_listeners.append(email_notifs.on_notified)
    # A deactivated account's addresses go (modules hear of each).
    auth.deactivation_listeners.append(threepids.remove_all)
    # To-device messages for other servers are stored until a server takes them.
    sender.edus_sent_hooks.append(e2e_keys.on_edus_sent)
    sender.started_hooks.append(e2e_keys.resend_outbox)
    # Application services: new events, typing (also remote), ephemeral changes, claimed
    # keys; a service that shows it is alive gets its pending transaction at once.
    events.add_new_events_listener(appservice_transactions.on_new_events)
    typing.add_listener(lambda room_id, user_id, is_typing: appservice_transactions.on_typing(room_id), remote=True)
    notifier.change_listeners.append(appservice_transactions.on_ephemeral_change)
    e2e_keys.keys_claimed_listeners.append(appservice_transactions.on_keys_claimed)
    appservices.alive_listeners.append(appservice_transactions.on_alive)
    # EDUs from other servers.
    # Partial-state rooms marked, or resynced, by another process (workers).
    notifier.on_data("partial_state", hs.partial_state.on_replicated)
    ephemeral_edus.register(hs, edu_handlers)  # m.typing, m.receipt
    edu_handlers.register("m.presence", user_directory.on_presence_edu)
    for edu_type, method in EDU_HANDLERS.items():  # device lists, signing keys, to-device
        edu_handlers.register(edu_type, getattr(e2e_keys, method))

    load_modules(hs, config.modules, into=modules)


async def start(hs: "HomeServer") -> None:
    """Background work of a serving process, once its listeners are bound; what runs
    where is decided by the roles (gateway/roles.py)."""
    roles = hs.roles
    if hs.replication is not None:
        await hs.replication.start()  # first: nothing published from here on is lost to the others
    if roles.federation_sender:
        if hs.replication is not None:  # EDUs other processes hand over from now on reach it
            try:
                await asyncio.wait_for(hs.replication.subscribed.wait(), 10)
            except asyncio.TimeoutError:
                log.warning("Redis is not answering; the federation sender starts without it")
        await hs.federation_sender.start()
    if roles.background_tasks:
        await hs.partial_state.start()  # unfinished resyncs of partial joins
        await hs.profiles.start()  # profile changes not yet in every room
        if hs.mailer is not None:
            await hs.mailer.start()  # mail an earlier run left queued
        if hs.self_destruct is not None:
            hs.self_destruct.start()  # self-destructing events, pruned when due
    if hs.config.appservice.services and roles.appservice_sender:
        await hs.appservices.ensure_senders()
        await hs.appservice_transactions.start()  # and what services have not acknowledged
    if roles.pusher:
        await hs.push.start()  # notifications HTTP pushers were not sent before a restart
    if hs.email_notifs is not None and roles.pusher:
        await hs.email_notifs.start()  # missed-message mails an earlier run had not sent yet
    if roles.media_background:
        hs.media.start_background_jobs()  # expired upload reservations
    if hs.tester_self_check is not None and roles.background_tasks:  # one process checks
        hs.tester_self_check.start()


async def stop(hs: "HomeServer") -> None:
    """Stop background work and release connections, dependants first. Each service may
    be stopped whether or not it was started."""
    if hs.tester_self_check is not None:
        await hs.tester_self_check.close()
    await hs.partial_state.close()
    await hs.profiles.close()
    if hs.self_destruct is not None:
        await hs.self_destruct.close()
    await hs.federation_sender.stop()
    await hs.appservice_transactions.stop()
    await hs.appservices.close()
    await hs.push.close()
    hs.typing.close()
    await hs.notifier.close()
    await hs.guest_access.close()
    await hs.e2e_keys.close()
    await hs.federation_client.close()
    await hs.check_processes.close()
    await hs.federation_client.resolver.close()
    await hs.url_previewer.close()
    await hs.media.close()
    if hs.email_notifs is not None:
        await hs.email_notifs.close()
    if hs.mailer is not None:
        await hs.mailer.close()
    await hs.identity_servers.close()
    await hs.recaptcha.close()
    if hs.replication is not None:
        await hs.replication.close()
    await hs.stream_writers.close()


#: The write methods forwarded to each stream's writer: (stream, service, methods).
#: Other servers' EDUs (``on_remote_*``, ``on_*_edu``, ``on_*_update``, ``on_direct_to_device``)
#: are checked where they arrive (the origin is the authenticated sender) and written by
#: their stream's writer like a client's.
FORWARDED_WRITES = (
    ("typing", "typing", ("set_typing", "on_remote_typing")),
    ("receipts", "receipts", ("send_receipt", "set_read_markers", "on_remote_receipt")),
    ("account_data", "account_data", ("put", "put_room_internal", "add_tag", "remove_tag")),
    ("to_device", "e2e_keys", ("send_to_device", "on_direct_to_device")),
    ("presence", "user_directory", ("set_presence", "mark_syncing", "on_presence_edu")),
    ("push_rules", "push", ("put_rule", "delete_rule", "set_enabled", "set_actions", "copy_room_rules")),
    ("device_lists", "e2e_keys", ("upload_keys", "upload_signatures", "store_signing_keys", "on_devices_changed",
                                  "on_devices_deleted", "on_device_list_update", "on_signing_key_update")),
)


def forward_stream_writes(writers, hs: "HomeServer") -> None:
    from .services.stream_writers import forward_calls

    for stream, service, methods in FORWARDED_WRITES:
        forward_calls(writers, stream, getattr(hs, service), methods, prefix=service)
    if not writers.is_mine("account_data"):
        # Our copy of an ignore list goes at once (the writer's Redis message follows).
        account_data, forwarded_put = hs.account_data, hs.account_data.put

        async def put(user_id: str, room_id: str | None, data_type: str, content: dict) -> None:
            await forwarded_put(user_id, room_id, data_type, content)
            account_data.forget_ignored(user_id)

        account_data.put = put


def mail_link_secret(config, signing_key) -> bytes:
    """The key of the HMACs in our mails' links (unsubscribing): ``form_secret``, else
    ``macaroon_secret_key``, else derived from the server's signing key (stable across restarts)."""
    import hashlib

    secret = config.form_secret or config.macaroon_secret_key
    if secret:
        return hashlib.sha256(b"gateway mail links\n" + secret.encode()).digest()
    return hashlib.sha256(b"gateway mail links\n" + signing_key.signing_key.encode()).digest()
