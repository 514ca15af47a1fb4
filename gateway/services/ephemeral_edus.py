"""Typing and receipt EDUs from other servers, applied to the typing and receipts
services (registered with ``hs.edu_handlers`` when it is built).

A remote user's typing or receipt counts only if the user belongs to the sending
server, the server passes the room's ACL, and the user is joined to the room here.

Spec: https://spec.matrix.org/latest/server-server-api/#typing-notifications and
https://spec.matrix.org/latest/server-server-api/#receipts
"""

from __future__ import annotations

import logging
from typing import Any

from federation.ids import get_domain_from_id, is_valid_user_id

log = logging.getLogger(__name__)


async def _may_speak_for(hs, origin: str, room_id: Any, user_id: Any) -> bool:
    if not isinstance(room_id, str) or not isinstance(user_id, str) or not is_valid_user_id(user_id):
        return False
    if get_domain_from_id(user_id) != origin:
        log.info("%s sent an EDU for %s, who is not theirs", origin, user_id)
        return False
    if await hs.events.store.get_room(room_id) is None:
        return False
    if not await hs.federation_room_data.server_is_allowed(origin, room_id):
        return False
    member = await hs.events.state.get_membership(room_id, user_id)
    return member is not None and member.membership == "join"


async def on_typing_edu(hs, origin: str, content: Any) -> None:
    """``m.typing``: ``{room_id, user_id, typing}``."""
    if not isinstance(content, dict) or not isinstance(content.get("typing"), bool):
        return
    room_id, user_id = content.get("room_id"), content.get("user_id")
    if await _may_speak_for(hs, origin, room_id, user_id):
        await hs.typing.on_remote_typing(room_id, user_id, content["typing"])


async def on_receipt_edu(hs, origin: str, content: Any) -> None:
    """``m.receipt``: ``{room_id: {receipt_type: {user_id: {event_ids, data}}}}``."""
    if not isinstance(content, dict):
        return
    for room_id, by_type in content.items():
        if not isinstance(by_type, dict):
            continue
        for receipt_type, by_user in by_type.items():
            if not isinstance(by_user, dict):
                continue
            for user_id, receipt in by_user.items():
                if not isinstance(receipt, dict):
                    continue
                event_ids = receipt.get("event_ids")
                data = receipt.get("data") if isinstance(receipt.get("data"), dict) else {}
                if not isinstance(event_ids, list) or not all(isinstance(e, str) for e in event_ids):
                    continue
                if await _may_speak_for(hs, origin, room_id, user_id):
                    await hs.receipts.on_remote_receipt(room_id, receipt_type, user_id, event_ids, data)


def register(hs, handlers) -> None:
    handlers.register("m.typing", lambda origin, content: on_typing_edu(hs, origin, content))
    handlers.register("m.receipt", lambda origin, content: on_receipt_edu(hs, origin, content))
