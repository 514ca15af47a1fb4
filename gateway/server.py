"""The running homeserver: configuration, database and keys, opened and closed together,
and the container of the services gateway/wiring.py builds (``hs.events`` etc.)."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from functools import cached_property  # noqa: F401 - services not built by the wiring yet
from typing import TYPE_CHECKING, Any, Callable

from aiohttp import web

from federation.signing import ServerSigningKey

from . import wiring
from .config import HomeserverConfig
from .signing_keys import load_signing_key
from .storage import Database, check_schema, migrate, open_database

if TYPE_CHECKING:
    from federation.net.client import FederationClient

    from .modules import LoadedModules
    from .oauth.service import OAuthService
    from .roles import Roles
    from .services.replication import RedisReplication
    from .services.stream_writers import StreamWriters
    from .services.account_data import AccountDataService
    from .services.account_moderation import ShadowBanDelay
    from .services.appservice_transactions import AppServiceTransactions
    from .services.appservices import AppServices
    from .services.auth import AuthService
    from .services.bulk_work import CheckProcesses
    from .services.directory import DirectoryService
    from .services.e2e_keys import E2EKeysService
    from .services.event_stream import EventStreamService
    from .services.events import EventsService
    from .services.federation.backfill import BackfillHandler
    from .services.federation.receive import FederationEventHandler
    from .services.federation.membership import FederationMembershipHandler
    from .services.federation.room_data import RoomDataService
    from .services.federation.sender import FederationSender
    from .services.federation.inbox import EduHandlers, TransactionHandler
    from .services.guest_access import GuestAccessService
    from .services.initial_sync import InitialSyncService
    from .services.federation.keyring import KeyRing
    from .services.tester_keys import TesterKeys
    from .services.tester_self_check import SelfCheck
    from .services.media import MediaService
    from .services.notifier import Notifier
    from .services.federation.partial_state import PartialStateService
    from .services.pagination import RoomPagination
    from .services.profiles import ProfileService
    from .services.purge_history import PurgeHistoryService
    from .services.push import PushService
    from .services.ratelimit import RateLimiters, RateLimitOverrides
    from .services.receipts import ReceiptsService
    from .services.relations import RelationsService
    from .services.reports import ReportsService
    from .services.room_admin import RoomAdminService
    from .services.room_keys import RoomKeysService
    from .services.room_upgrades import RoomUpgradeService
    from .services.rooms import RoomsService
    from .services.search import SearchService
    from .services.server_notices import ServerNoticesService
    from .services.spaces import SpacesService
    from .services.sync import SyncService
    from .services.timestamp_to_event import TimestampToEvent
    from .services.identity_servers import IdentityServerClient
    from .services.mailer import Mailer
    from .services.threepids import ThreepidService
    from .services.email_notifs import EmailNotifier
    from .services.recaptcha import RecaptchaVerifier
    from .services.self_destruct import SelfDestructingEvents
    from .services.third_party_invites import ThirdPartyInvites
    from .services.typing import TypingService
    from .services.uia import UIAService
    from .services.url_preview import UrlPreviewer
    from .services.user_directory import UserDirectoryService
    from .services.usernames import Usernames

log = logging.getLogger(__name__)


def _shadow_ban_delay() -> "ShadowBanDelay":
    from .services.account_moderation import ShadowBanDelay  # imports services.auth, which imports us

    return ShadowBanDelay()


def wall_clock_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class HomeServer:
    config: HomeserverConfig
    db: Database
    signing_key: ServerSigningKey
    clock_ms: Callable[[], int] = field(default=wall_clock_ms)
    #: Awaited before a shadow-banned user's dropped action is answered (tests give a no-wait one).
    shadow_ban_delay: "ShadowBanDelay" = field(default_factory=_shadow_ban_delay)
    #: The services routes reach by their AppKey (gateway/appkeys.py), as the wiring built them.
    app_services: dict[web.AppKey, Any] = field(default_factory=dict)

    if TYPE_CHECKING:  # set by wiring.build (not dataclass fields)
        modules: LoadedModules
        ratelimiters: RateLimiters
        ratelimit_overrides: RateLimitOverrides
        federation_client: FederationClient
        tester_keys: TesterKeys
        tester_self_check: SelfCheck | None
        events: EventsService
        auth: AuthService
        mailer: Mailer | None
        identity_servers: IdentityServerClient
        threepids: ThreepidService
        email_notifs: EmailNotifier | None
        third_party_invites: ThirdPartyInvites
        self_destruct: SelfDestructingEvents | None
        recaptcha: RecaptchaVerifier
        oauth: OAuthService
        appservices: AppServices
        appservice_transactions: AppServiceTransactions
        roles: Roles
        replication: RedisReplication | None
        stream_writers: StreamWriters
        usernames: Usernames
        uia: UIAService
        account_data: AccountDataService
        notifier: Notifier
        push: PushService
        directory: DirectoryService
        rooms: RoomsService
        room_admin: RoomAdminService
        profiles: ProfileService
        guest_access: GuestAccessService
        relations: RelationsService
        search: SearchService
        room_upgrades: RoomUpgradeService
        reports: ReportsService
        server_notices: ServerNoticesService
        user_directory: UserDirectoryService
        typing: TypingService
        receipts: ReceiptsService
        e2e_keys: E2EKeysService
        room_keys: RoomKeysService
        sync: SyncService
        event_stream: EventStreamService
        initial_sync: InitialSyncService
        keyring: KeyRing
        check_processes: CheckProcesses
        federation_room_data: RoomDataService
        federation_events: FederationEventHandler
        partial_state: PartialStateService
        federation_membership: FederationMembershipHandler
        federation_backfill: BackfillHandler
        pagination: RoomPagination
        federation_sender: FederationSender
        edu_handlers: EduHandlers
        federation_transactions: TransactionHandler
        purge_history: PurgeHistoryService
        spaces: SpacesService
        timestamp_to_event: TimestampToEvent
        media: MediaService
        url_previewer: UrlPreviewer

    @property
    def server_name(self) -> str:
        return self.config.server_name

    async def ratelimit_message(self, user_id: str, *, admin_redaction: bool = False) -> None:
        """``rc_message`` for an event a local user sends (``rc_admin_redaction`` for an
        admin's redaction), with the user's override if an admin set one: 429
        ``M_LIMIT_EXCEEDED`` when over it."""
        name = "rc_admin_redaction" if admin_redaction else "rc_message"
        override = await self.ratelimit_overrides.get(user_id)
        self.ratelimiters[name].ratelimit(user_id, limit=override)

    @classmethod
    async def open(cls, config: HomeserverConfig, *, create_signing_key: bool = True) -> "HomeServer":
        """Load keys, open the database and bring its schema up to date."""
        signing_key = load_signing_key(config.signing_key_path, create=create_signing_key)
        db = await open_database(config.database)
        try:
            # The main process upgrades the schema; a worker only checks it is current.
            version = await (check_schema(db) if config.workers.is_worker else migrate(db))
        except BaseException:
            await db.close()
            raise
        log.info("database (%s) at schema version %d", db.engine, version)
        hs = cls(config=config, db=db, signing_key=signing_key)
        try:
            # Modules start with the server: a broken one stops it here, naming its config key.
            wiring.build(hs)
        except BaseException:
            await db.close()
            raise
        return hs

    async def close(self) -> None:
        await wiring.stop(self)
        await self.db.close()
