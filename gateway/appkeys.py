"""Typed aiohttp application keys: the homeserver, and the services routes call.

Service keys are set once on each listener's app (from what gateway/wiring.py built
for this process) and read as ``request.config_dict[KEY]``, which sub-apps see too.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from .server import HomeServer

if TYPE_CHECKING:
    from .services.account_data import AccountDataService
    from .services.email_notifs import EmailNotifier
    from .services.media import MediaService
    from .services.receipts import ReceiptsService
    from .services.room_keys import RoomKeysService
    from .services.threepids import ThreepidService
    from .services.typing import TypingService
    from .services.url_preview import UrlPreviewer

HS = web.AppKey("homeserver", HomeServer)

ACCOUNT_DATA: web.AppKey[AccountDataService] = web.AppKey("account_data")
#: None unless ``email.enable_notifs``.
EMAIL_NOTIFS: web.AppKey["EmailNotifier | None"] = web.AppKey("email_notifs")
MEDIA: web.AppKey[MediaService] = web.AppKey("media")
RECEIPTS: web.AppKey[ReceiptsService] = web.AppKey("receipts")
ROOM_KEYS: web.AppKey[RoomKeysService] = web.AppKey("room_keys")
THREEPIDS: web.AppKey[ThreepidService] = web.AppKey("threepids")
TYPING: web.AppKey[TypingService] = web.AppKey("typing")
URL_PREVIEWER: web.AppKey[UrlPreviewer] = web.AppKey("url_previewer")


def install_services(app: web.Application, hs: HomeServer) -> None:
    """Put the services the wiring provides to routes on a listener's ``app``."""
    for key, service in hs.app_services.items():
        app[key] = service
