"""The running homeserver: configuration, database and keys, opened and closed together."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from functools import cached_property
from typing import Callable

from federation.signing import ServerSigningKey

from .config import HomeserverConfig
from .signing_keys import load_signing_key
from .storage import Database, migrate, open_database

log = logging.getLogger(__name__)


def wall_clock_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class HomeServer:
    config: HomeserverConfig
    db: Database
    signing_key: ServerSigningKey
    clock_ms: Callable[[], int] = field(default=wall_clock_ms)

    @property
    def server_name(self) -> str:
        return self.config.server_name

    # Feature services, created on first use and shared by every listener.
    @cached_property
    def auth(self):
        from .services.auth import AuthService

        service = AuthService(self)
        # Deleted devices lose their end-to-end keys; the device list changes.
        service.devices.deleted_listeners.append(lambda user_id, ids: self.e2e_keys.on_devices_deleted(user_id, ids))
        service.devices.changed_listeners.append(lambda user_id, ids: self.e2e_keys.on_devices_changed(user_id, ids))
        # ... and their OAuth 2.0 sessions end (refresh tokens stop working).
        service.devices.deleted_listeners.append(lambda user_id, ids: self.oauth.on_devices_deleted(user_id, ids))
        return service

    @cached_property
    def oauth(self):
        """The OAuth 2.0 API: clients, grants, sessions and tokens (gateway/oauth/)."""
        from .oauth.service import OAuthService

        return OAuthService(db=self.db, config=self.config.oauth, baseurl=self.config.public_baseurl,
                            clock_ms=self.clock_ms, devices=self.auth.devices, users=self.auth.users)

    @cached_property
    def appservices(self):
        """Application services: identity assertion, exclusive namespaces, queries, third-party networks."""
        from .services.appservice_api import AppServiceApi
        from .services.appservices import AppServices
        from .storage.appservice import AppServiceStore

        cfg = self.config.appservice
        service = AppServices(server_name=self.server_name, config=cfg,
                              api=AppServiceApi(self.config.federation, legacy_authorization=cfg.use_legacy_authorization),
                              store=AppServiceStore(self.db), users=self.auth.users, devices=self.auth.devices,
                              clock_ms=lambda: self.clock_ms())
        # A service that shows it is alive gets its pending transaction at once.
        service.alive_listeners.append(lambda s: self.appservice_transactions.on_alive(s))
        return service

    @cached_property
    def appservice_transactions(self):
        """Transactions to application services: per-service stored queues, backoff."""
        from .services.appservice_transactions import AppServiceTransactions
        from .storage.destinations import DestinationStore

        sender = AppServiceTransactions(
            server_name=self.server_name, config=self.config.appservice, api=self.appservices.api,
            store=self.appservices.store, destinations=DestinationStore(self.db), e2e_store=self.e2e_keys.store,
            receipts=self.receipts.store, events=self.events, get_typing=self.typing.get_typing,
            clock_ms=lambda: self.clock_ms())
        self.events.add_new_events_listener(sender.on_new_events)
        self.typing.add_listener(lambda room_id, user_id, typing: sender.on_typing(room_id), remote=True)
        self.notifier.change_listeners.append(sender.on_ephemeral_change)
        self.e2e_keys.keys_claimed_listeners.append(sender.on_keys_claimed)
        return sender

    @cached_property
    def room_keys(self):
        """Server-side key backup (encrypted room keys per backup version)."""
        from .services.room_keys import RoomKeysService

        return RoomKeysService(self)

    @cached_property
    def e2e_keys(self):
        """End-to-end encryption keys, device lists and to-device messages (stored, never decrypted)."""
        from .services.e2e_keys import E2EKeysService

        service = E2EKeysService(self)
        self.events.add_new_events_listener(service.on_new_events)
        return service

    @cached_property
    def uia(self):
        from .services.uia import UIAService

        return UIAService(self)

    @cached_property
    def ratelimiters(self):
        from .services.ratelimit import RateLimiters

        exempt = None
        if self.config.appservice.services:  # application services' senders, and users when rate_limited: false
            exempt = lambda key: key.startswith("@") and self.appservices.exempt_from_ratelimit(key)  # noqa: E731
        return RateLimiters(self.config.rate_limits, exempt=exempt)

    @cached_property
    def ratelimit_overrides(self):
        from .services.ratelimit import RateLimitOverrides

        return RateLimitOverrides(self.db)

    async def ratelimit_message(self, user_id: str, *, admin_redaction: bool = False) -> None:
        """``rc_message`` for an event a local user sends (``rc_admin_redaction`` for an
        admin's redaction), with the user's override if an admin set one: 429
        ``M_LIMIT_EXCEEDED`` when over it."""
        name = "rc_admin_redaction" if admin_redaction else "rc_message"
        override = await self.ratelimit_overrides.get(user_id)
        self.ratelimiters[name].ratelimit(user_id, limit=override)

    @cached_property
    def federation_client(self):
        """Signed outbound federation requests, with the configured outbound rules."""
        from federation.net.client import FederationClient
        from federation.net.resolver import ServerResolver

        from .outbound import outbound_ip_policy, outbound_ssl_context

        fed = self.config.federation
        policy, ctx = outbound_ip_policy(fed), outbound_ssl_context(fed)
        resolver = ServerResolver(nameservers=list(fed.dns_nameservers) or None, ip_policy=policy, ssl_context=ctx)
        return FederationClient(server_name=self.server_name, signing_key=self.signing_key, resolver=resolver,
                                ssl_context=ctx, ip_policy=policy,
                                no_verify_patterns=fed.federation_certificate_verification_whitelist,
                                domain_whitelist=fed.federation_domain_whitelist)

    @cached_property
    def federation_sender(self):
        """Outbound transactions: per-destination queues, backoff, catch-up, EDUs."""
        from .services.federation_sender import FederationSender

        sender = FederationSender(self)
        # To-device messages for other servers are stored until a server takes them.
        sender.edus_sent_hooks.append(lambda destination, edus: self.e2e_keys.on_edus_sent(destination, edus))
        sender.started_hooks.append(lambda: self.e2e_keys.resend_outbox())
        return sender

    @cached_property
    def events(self):
        """Local event creation (the persistence pipeline) and event reads."""
        from .services.events import EventsService

        service = EventsService(self)
        # Push rules are evaluated for every new event (unread counts, pushers).
        service.add_new_events_listener(lambda room_id, positions: self.push.on_new_events(room_id, positions))
        # Guests leave rooms that stop admitting them.
        service.add_new_state_listener(lambda room_id, pdus: self.guest_access.on_new_state(room_id, pdus))
        return service

    @cached_property
    def push(self):
        """Push rules, their evaluation, unread counts and pushers."""
        from .services.push import PushService

        return PushService(self)

    @cached_property
    def relations(self):
        """Relationships between events: /relations, bundled aggregations, /threads."""
        from .services.relations import RelationsService
        from .storage.relations import RelationStore

        return RelationsService(self.events, RelationStore(self.db, self.events.store),
                                ignored_users=self.account_data.ignored_users)

    @cached_property
    def rooms(self):
        """createRoom and membership changes."""
        from .services.rooms import RoomsService

        return RoomsService(self)

    @cached_property
    def room_upgrades(self):
        """Room upgrades and the settings that follow users into replacement rooms."""
        from .services.room_upgrades import RoomUpgradeService

        return RoomUpgradeService(server_name=self.server_name, events=self.events, rooms=self.rooms,
                                  directory=self.directory, account_data_store=self.account_data.store,
                                  push=self.push, notifier=self.notifier, modules=self.modules.callbacks,
                                  clock_ms=self.clock_ms)

    @cached_property
    def reports(self):
        """Reports of events, rooms and users, for the admins."""
        from .services.reports import ReportsService

        return ReportsService(server_name=self.server_name, db=self.db, events=self.events, users=self.rooms.users,
                              ratelimiter=self.ratelimiters["rc_reports"], clock_ms=self.clock_ms)

    @cached_property
    def profiles(self):
        """Profiles: reads (also remote, over federation), changes, their propagation into rooms."""
        from .services.profiles import ProfileService

        return ProfileService(server_name=self.server_name, config=self.config.profiles, db=self.db,
                              state=self.events.state, rooms=self.rooms, federation_client=self.federation_client,
                              ratelimit_message=self.ratelimit_message, modules=self.modules.callbacks)

    @cached_property
    def room_admin(self):
        """Room administration (listing, blocking, shutting down, purging)."""
        from .services.room_admin import RoomAdminService

        return RoomAdminService(self)

    @cached_property
    def purge_history(self):
        """Purging a room's old history (the admin API)."""
        from .services.purge_history import PurgeHistoryService
        from .storage.purge_history import PurgeHistoryStore

        forget = [self.events.forget_events, lambda ids: self.federation_events.forget_events(ids)]
        return PurgeHistoryService(server_name=self.server_name, store=PurgeHistoryStore(self.db), events=self.events,
                                   forget=forget, clock_ms=lambda: self.clock_ms())

    @cached_property
    def directory(self):
        """Room aliases and the public room list."""
        from .services.directory import DirectoryService

        return DirectoryService(self)

    @cached_property
    def spaces(self):
        """The space hierarchy (clients and other servers) and room summaries."""
        from .services.spaces import SpacesService
        from .storage.spaces import SpacesStore

        return SpacesService(server_name=self.server_name, store=SpacesStore(self.db),
                             summaries=self.directory.store, events=self.events, directory=self.directory,
                             room_data=self.federation_room_data, federation_client=self.federation_client,
                             clock_ms=lambda: self.clock_ms())

    @cached_property
    def timestamp_to_event(self):
        """The event closest to a timestamp, asking the room's other servers when ours may lack it."""
        from .services.timestamp_to_event import TimestampToEvent

        return TimestampToEvent(server_name=self.server_name, db=self.db, events=self.events,
                                directory=self.directory, federation_client=self.federation_client,
                                federation_events=self.federation_events, backfill=self.federation_backfill)

    @cached_property
    def modules(self):
        """The configured modules and the callbacks they registered (gateway/modules/)."""
        from .modules import load_modules

        return load_modules(self, self.config.modules)

    @cached_property
    def server_notices(self):
        """Server notices to local users (gateway/services/server_notices.py)."""
        from .services.server_notices import ServerNoticesService

        return ServerNoticesService(self)

    @cached_property
    def search(self):
        """Server-side search (POST /search) over the full-text index."""
        from .services.search import SearchService
        from .storage.search import SearchStore

        return SearchService(SearchStore(self.db), self.events, self.relations.bundle_aggregations,
                             ignored_users=self.account_data.ignored_users)

    @cached_property
    def user_directory(self):
        """User directory search and presence."""
        from .services.user_directory import UserDirectoryService

        return UserDirectoryService(self)

    @cached_property
    def notifier(self):
        """Wakes long-polling /sync requests."""
        from .services.notifier import Notifier

        return Notifier(self)

    @cached_property
    def sync(self):
        from .services.sync import SyncService

        return SyncService(self)

    @cached_property
    def guest_access(self):
        """Guest accounts: registration, joins, upgrades, removal from rooms."""
        from .services.guest_access import GuestAccessService

        return GuestAccessService(self)

    @cached_property
    def event_stream(self):
        """The v1 event stream (GET /events), fed by the streams /sync reads."""
        from .services.event_stream import EventStreamService

        return EventStreamService(self)

    @cached_property
    def initial_sync(self):
        """The v1 initial syncs (GET /initialSync, GET /rooms/{roomId}/initialSync)."""
        from .services.initial_sync import InitialSyncService

        return InitialSyncService(self)

    @cached_property
    def typing(self):
        """Typing notifications (in memory); federation hooks documented in the module."""
        from .services.typing import TypingService

        return TypingService(self)

    @cached_property
    def receipts(self):
        """Receipts and read markers; federation hooks documented in the module."""
        from .services.receipts import ReceiptsService

        return ReceiptsService(self)

    @cached_property
    def account_data(self):
        from .services.account_data import AccountDataService

        return AccountDataService(self)

    @cached_property
    def media(self):
        """The media repository: uploads, downloads, thumbnails, remote media cache."""
        from .services.media import MediaService

        return MediaService(self)

    @cached_property
    def url_previewer(self):
        """URL previews (``url_preview_enabled``), under the preview IP range rules."""
        from .services.url_preview import UrlPreviewer

        return UrlPreviewer(self.media)

    @cached_property
    def keyring(self):
        from .services.keyring import KeyRing

        return KeyRing(self)

    @cached_property
    def federation_events(self):
        """Events received over federation: the PDU receipt pipeline, outliers, joins' state."""
        from .services.federation_events import FederationEventHandler

        return FederationEventHandler(self)

    @cached_property
    def federation_transactions(self):
        """Incoming /send transactions (dedup, limits, PDUs per room, EDUs)."""
        from .services.federation_transactions import TransactionHandler

        return TransactionHandler(self)

    @cached_property
    def edu_handlers(self):
        """EDU registry: ``hs.edu_handlers.register(edu_type, async handler(origin, content))``."""
        from .services import ephemeral_edus
        from .services.e2e_keys import EDU_HANDLERS
        from .services.federation_transactions import EduHandlers

        handlers = EduHandlers()
        ephemeral_edus.register(self, handlers)  # m.typing, m.receipt
        handlers.register("m.presence", lambda origin, content: self.user_directory.on_presence_edu(origin, content))
        # Device lists, signing keys, to-device: the E2E service is created on first use.
        for edu_type, method in EDU_HANDLERS.items():
            handlers.register(edu_type, lambda origin, content, m=method: getattr(self.e2e_keys, m)(origin, content))
        return handlers

    @cached_property
    def federation_room_data(self):
        """Serving events, state, auth chains, missing events and backfill to other servers."""
        from .services.federation_room_data import RoomDataService

        return RoomDataService(self)

    @cached_property
    def federation_membership(self):
        """Joins, leaves and invites across servers (both sides of make_/send_join etc.)."""
        from .services.federation_membership import FederationMembershipHandler

        return FederationMembershipHandler(self)

    @cached_property
    def partial_state(self):
        """Rooms joined with partial state (faster joins) and their background resync."""
        from .services.partial_state import PartialStateService

        return PartialStateService(self)

    @cached_property
    def federation_backfill(self):
        """Backfill as the requesting side (``/messages`` reaching the oldest event we hold)."""
        from .services.federation_backfill import BackfillHandler

        return BackfillHandler(self)

    @classmethod
    async def open(cls, config: HomeserverConfig, *, create_signing_key: bool = True) -> "HomeServer":
        """Load keys, open the database and bring its schema up to date."""
        signing_key = load_signing_key(config.signing_key_path, create=create_signing_key)
        db = await open_database(config.database)
        try:
            version = await migrate(db)
        except BaseException:
            await db.close()
            raise
        log.info("database (%s) at schema version %d", db.engine, version)
        hs = cls(config=config, db=db, signing_key=signing_key)
        try:
            hs.modules  # modules start with the server: a broken one stops it here, naming its config key
        except BaseException:
            await db.close()
            raise
        return hs

    async def close(self) -> None:
        if "partial_state" in self.__dict__:
            await self.partial_state.close()
        if "profiles" in self.__dict__:
            await self.profiles.close()
        if "federation_sender" in self.__dict__:
            await self.federation_sender.stop()
        if "appservice_transactions" in self.__dict__:
            await self.appservice_transactions.stop()
        if "appservices" in self.__dict__:
            await self.appservices.close()
        if "push" in self.__dict__:
            await self.push.close()
        if "typing" in self.__dict__:
            self.typing.close()
        if "notifier" in self.__dict__:
            await self.notifier.close()
        if "guest_access" in self.__dict__:
            await self.guest_access.close()
        if "e2e_keys" in self.__dict__:
            await self.e2e_keys.close()
        if "federation_client" in self.__dict__:
            await self.federation_client.close()
            await self.federation_client.resolver.close()
        if "url_previewer" in self.__dict__:
            await self.url_previewer.close()
        if "media" in self.__dict__:
            await self.media.close()
        await self.db.close()
