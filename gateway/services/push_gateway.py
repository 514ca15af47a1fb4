"""Sending notifications to HTTP pushers' push gateways.

Spec: https://spec.matrix.org/latest/push-gateway-api/#post_matrixpushv1notify

Requests follow the outbound IP range rules (``ip_range_blacklist``/``ip_range_whitelist``,
as federation does), so a pusher URL cannot make the server reach a private address.
A push key the gateway reports as ``rejected`` removes that pusher. A gateway that cannot
be reached, or answers 5xx or 429, is tried again later (``notify`` returns None: the
pusher keeps its position, gateway/services/push.py); any other answer is final.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import aiohttp

from ..storage.push import Pusher

log = logging.getLogger(__name__)

TIMEOUT_S = 10


def tweaks_of(actions: Sequence[Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for a in actions:
        if isinstance(a, Mapping) and isinstance(a.get("set_tweak"), str):
            name = a["set_tweak"]
            out[name] = a.get("value", True if name == "highlight" else None)
    return out


def device_of(pusher: Pusher) -> dict[str, Any]:
    """The pusher as a notification's ``devices`` entry (its ``data`` without ``url``)."""
    data = {k: v for k, v in pusher.data.items() if k != "url"}
    return {"app_id": pusher.app_id, "pushkey": pusher.pushkey, "pushkey_ts": pusher.created_ts // 1000,
            "data": data}


def build_badge(pusher: Pusher, unread: int) -> dict[str, Any]:
    """A notification that only updates the app's badge (the user read something):
    no event, just ``counts`` and the device, as the spec's fields are all optional but
    ``devices``."""
    return {"notification": {"counts": {"unread": unread}, "devices": [device_of(pusher)]}}


def build_notification(pusher: Pusher, event: Mapping[str, Any], actions: Sequence[Any], *,
                       sender_display_name: str | None, room_name: str | None,
                       user_is_target: bool, unread: int | None = None,
                       room_alias: str | None = None) -> dict[str, Any]:
    """The body of ``/_matrix/push/v1/notify`` for one pusher (``event_id_only`` honoured).

    Beyond the spec's fields, as Synapse sends them for push gateways written against
    it: ``id`` (the event ID, the field's name before ``event_id``) and, for member
    events, ``membership``."""
    tweaks = tweaks_of(actions)
    device = {**device_of(pusher), "tweaks": tweaks}
    high = bool(tweaks.get("highlight")) or "sound" in tweaks
    n: dict[str, Any] = {"event_id": event["event_id"], "room_id": event["room_id"],
                         "prio": "high" if high else "low", "devices": [device]}
    if unread is not None:
        n["counts"] = {"unread": unread}
    if pusher.data.get("format") != "event_id_only":
        n.update(id=event["event_id"], type=event["type"], sender=event["sender"], content=event.get("content", {}),
                 user_is_target=user_is_target)
        if sender_display_name is not None:
            n["sender_display_name"] = sender_display_name
        if room_name is not None:
            n["room_name"] = room_name
        if room_alias is not None:
            n["room_alias"] = room_alias
        membership = event.get("content", {}).get("membership") if event["type"] == "m.room.member" else None
        if isinstance(membership, str):
            n["membership"] = membership
    return {"notification": n}


class PushGatewayClient:
    def __init__(self, connector: Callable[[], aiohttp.BaseConnector]):
        """``connector()``: a connector under the outbound IP rules (pushers' URLs are
        the users' choice)."""
        self.connector = connector
        self._session: aiohttp.ClientSession | None = None

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(connector=self.connector(), timeout=aiohttp.ClientTimeout(total=TIMEOUT_S),
                                                  headers={"User-Agent": "Gateway"})
        return self._session

    async def notify(self, pusher: Pusher, body: Mapping[str, Any]) -> list[str] | None:
        """POST to the pusher's URL; returns the rejected push keys, or None when the
        gateway did not take the notification and a later attempt may succeed."""
        url = pusher.data.get("url")
        if not isinstance(url, str):
            return []
        try:
            async with self._get_session().post(url, json=body, allow_redirects=False) as resp:
                if resp.status != 200:
                    log.info("push gateway %s answered %d for %s", url, resp.status, pusher.user_id)
                    return None if resp.status >= 500 or resp.status == 429 else []
                try:
                    answer = await resp.json(content_type=None)
                except ValueError:  # taken, with an answer that is not JSON
                    return []
        except (aiohttp.ClientError, OSError, TimeoutError) as e:
            log.info("push gateway %s unreachable for %s: %s", url, pusher.user_id, e)
            return None
        rejected = answer.get("rejected") if isinstance(answer, dict) else None
        return [k for k in rejected if isinstance(k, str)] if isinstance(rejected, list) else []

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
