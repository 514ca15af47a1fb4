"""What modules see of an event: the attributes Synapse modules read (``type``, ``sender``,
``content``, ``room_id``, ``state_key``, ``event_id``, ``redacts``, ``origin_server_ts``,
``get_dict()``, ``is_state()``), over our immutable PDU."""

from __future__ import annotations

import copy
from typing import Any

from federation.events import PDU


class ModuleEvent:
    __slots__ = ("_pdu",)

    def __init__(self, pdu: PDU):
        self._pdu = pdu

    @property
    def pdu(self) -> PDU:
        return self._pdu

    type = property(lambda self: self._pdu.type)
    sender = property(lambda self: self._pdu.sender)
    room_id = property(lambda self: self._pdu.room_id)
    state_key = property(lambda self: self._pdu.state_key)
    event_id = property(lambda self: self._pdu.event_id)
    redacts = property(lambda self: self._pdu.redacts)
    origin_server_ts = property(lambda self: self._pdu.origin_server_ts)
    depth = property(lambda self: self._pdu.depth)

    @property
    def content(self) -> dict[str, Any]:
        # A copy: a module that changes it must not change the stored event.
        return copy.deepcopy(dict(self._pdu.content))

    def is_state(self) -> bool:
        return self._pdu.state_key is not None

    def get_dict(self) -> dict[str, Any]:
        """The event as a JSON dict (a copy; changing it changes nothing)."""
        body: dict[str, Any] = {
            "event_id": self.event_id, "type": self.type, "sender": self.sender, "room_id": self.room_id,
            "content": self.content, "origin_server_ts": self.origin_server_ts,
        }
        if self.state_key is not None:
            body["state_key"] = self.state_key
        if self.redacts is not None:
            body["redacts"] = self.redacts
        return body

    def __repr__(self) -> str:
        return f"<ModuleEvent {self.event_id} {self.type}>"
