"""Memberships across servers: joining, leaving and inviting over federation, both as
the server of the user and as a server resident in the room.

Spec:
- https://spec.matrix.org/latest/server-server-api/#joining-rooms (make_join, send_join v1/v2)
- https://spec.matrix.org/latest/server-server-api/#leaving-rooms-rejecting-invites
  (make_leave, send_leave v1/v2)
- https://spec.matrix.org/latest/server-server-api/#inviting-to-a-room (invite v2)
- https://spec.matrix.org/latest/server-server-api/#knocking-rooms (make_knock, send_knock v1)

Interface (``hs.federation_membership``):

- :meth:`FederationMembershipHandler.join_remote` (user, room, candidate servers):
  make_join -> sign -> send_join on each server until one works; the state and auth
  chain it returns go through ``FederationEventHandler.persist_outliers`` (bad events
  dropped or rejected, never trusted), the join through the receipt pipeline with that
  state. MatrixError when every server fails.
- :meth:`leave_remote`: make_leave/send_leave (rejecting an invite to, or retracting a
  knock on, a room we are not in); when no server takes it, a leave kept here only.
- :meth:`knock_remote`: make_knock -> sign -> send_knock on each server until one works.
- :meth:`send_invite`: an invite of a user of another server, co-signed by that server.
- ``on_*`` methods: the resident/invited side of each request.

Invites to and knocks on rooms this server is not in, and the leaves that end them
(ours, or a rescinded invite or denied knock a server of the room sends us:
:meth:`take_out_of_band`), are stored as *out-of-band memberships*: the event is an
outlier, but the user's membership row takes a new events-stream position so that /sync
shows it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from federation.auth_rules import (
    AuthError,
    auth_types_for_event,
    check_auth_rules,
    get_named_level,
    get_user_power_level,
)
from federation.canonical_json import CanonicalJSONError, check_strict_values
from federation.events import PDU, InvalidEventError
from federation.ids import get_domain_from_id
from federation.pdu_checks import Accept, check_format
from federation.keyring import KeyRequest
from federation.net.client import FederationRequestError
from federation.partial_state import partial_join_servers
from federation.room_membership import (
    MembershipError,
    check_countersigned,
    check_invite_event,
    check_membership_event,
    check_out_of_band_retraction,
    event_from_template,
    is_full_pdu,
    membership_template,
    parse_send_join_response,
    restricted_allow_room_ids,
    room_version_of_template,
    stripped_state_event,
    supported_room_versions,
    template_auth_pdu,
)
from federation.room_versions import KNOWN_ROOM_VERSIONS, RoomVersion, get_room_version
from federation.signing import quote_path_segment, sign_event

from ...http import Codes, MatrixError
from ...storage.out_of_band import OutOfBandStore
from ...storage.state import StateKey
from ..bulk_work import gc_paused
from .room_data import wire_events_oldest_first, wire_json

log = logging.getLogger(__name__)

#: Seconds a send_join may take (big rooms answer slowly).
SEND_JOIN_TIMEOUT = 300


def _domain(user_id: str) -> str | None:
    try:
        return get_domain_from_id(user_id)
    except ValueError:
        return None


def _errcode(e: FederationRequestError) -> str | None:
    return e.body.get("errcode") if isinstance(e.body, dict) else None


#: A resident's 400 errors that are about our request, not for the client to see (the
#: spec: "the Client-Server API request SHOULD fail with a 5xx error" for these).
_NOT_PASSED_THROUGH = (Codes.MISSING_PARAM, Codes.INVALID_PARAM, Codes.UNRECOGNIZED)


def _unknown_endpoint(e: FederationRequestError) -> bool:
    """Whether a server answered as one that does not have the endpoint (a 404 or 405
    without a Matrix error, or ``M_UNRECOGNIZED``), rather than refusing the request."""
    errcode = _errcode(e)
    return errcode == Codes.UNRECOGNIZED or (e.status in (404, 405) and errcode is None)


class FederationMembershipHandler:
    def __init__(self, hs):
        self.hs = hs
        self.events = hs.events
        self.store = hs.events.store
        self.out_of_band = OutOfBandStore(hs.db)

    @property
    def client(self):
        return self.hs.federation_client

    # =================================================================================
    # As the user's server
    # =================================================================================

    def _candidates(self, servers: Iterable[str]) -> list[str]:
        out: list[str] = []
        for s in servers:
            if isinstance(s, str) and s and s != self.hs.server_name and s not in out:
                out.append(s)
        return out

    async def join_remote(self, user_id: str, room_id: str, servers: Sequence[str],
                          content: Mapping[str, Any]) -> str:
        """Join ``room_id`` through the first of ``servers`` that lets us; returns the
        join's event ID once stored (the user is then joined here)."""
        candidates = self._candidates(servers)
        if not candidates:
            raise MatrixError.not_found(f"No server to join {room_id} through")
        self.hs.federation_events.warm_checks()  # the answer may hold a big room's state
        errors: list[str] = []
        forbidden: MatrixError | None = None
        unable: MatrixError | None = None
        passed: MatrixError | None = None
        for server in candidates:
            try:
                return await self._join_via(server, user_id, room_id, content)
            except MatrixError as e:
                if e.errcode == Codes.FORBIDDEN:
                    forbidden = e
                elif e.errcode == Codes.INCOMPATIBLE_ROOM_VERSION:
                    passed = e
                errors.append(f"{server}: {e.error}")
            except FederationRequestError as e:
                code = _errcode(e)
                msg = e.body.get("error") if isinstance(e.body, dict) and isinstance(e.body.get("error"), str) \
                    else str(code)
                if code == Codes.FORBIDDEN:
                    forbidden = MatrixError.forbidden(f"{server} refused the join: {msg}")
                elif code in (Codes.UNABLE_TO_AUTHORISE_JOIN, Codes.UNABLE_TO_GRANT_JOIN):
                    # Restricted rooms: this resident cannot vouch for the join; others may.
                    unable = MatrixError(400, code, f"{server}: {msg}")
                elif e.status == 400 and isinstance(code, str) and code not in _NOT_PASSED_THROUGH:
                    # The spec: the resident's error "should be passed through to clients so
                    # that they may give better feedback to users".
                    passed = MatrixError(400, code, f"{server}: {msg}")
                errors.append(str(e))
            except MembershipError as e:
                errors.append(f"{server}: {e}")
            log.info("joining %s via %s failed: %s", room_id, server, errors[-1])
        for error in (forbidden, unable, passed):
            if error is not None:
                raise error
        raise MatrixError(404, Codes.NOT_FOUND, f"Could not join {room_id} through any server: "
                          + "; ".join(errors[:5]))

    async def _make(self, server: str, kind: str, room_id: str, user_id: str) -> tuple[RoomVersion, dict]:
        query = [("ver", v) for v in supported_room_versions()] if kind in ("join", "knock") else None
        try:
            answer = await self.client.request(
                "GET", server,
                f"/_matrix/federation/v1/make_{kind}/{quote_path_segment(room_id)}/{quote_path_segment(user_id)}",
                query=query,
            )
        except FederationRequestError as e:
            if _errcode(e) in (Codes.INCOMPATIBLE_ROOM_VERSION, Codes.UNSUPPORTED_ROOM_VERSION):
                version = e.body.get("room_version") if isinstance(e.body, dict) else None
                raise MatrixError(400, Codes.INCOMPATIBLE_ROOM_VERSION,
                                  f"{server} says the room's version is not one we support",
                                  **({"room_version": version} if isinstance(version, str) else {})) from None
            raise
        rv = room_version_of_template(answer)
        return rv, answer["event"]

    async def _send(self, server: str, kind: str, room_id: str, event: dict, rv: RoomVersion, *,
                    omit_members: bool = False) -> tuple[Any, bool]:
        """``send_join``/``send_leave`` v2 (``omit_members``: a join asking for partial
        state), or v1 if the server does not know v2. Returns (answer, was_v1)."""
        event_id = PDU.from_pdu_json(event, rv).event_id
        path = f"/{quote_path_segment(room_id)}/{quote_path_segment(event_id)}"
        try:
            answer = await self.client.request("PUT", server, f"/_matrix/federation/v2/send_{kind}{path}",
                                               content=event, timeout=SEND_JOIN_TIMEOUT,
                                               query={"omit_members": "true"} if omit_members else None)
            return answer, False
        except FederationRequestError as e:
            unrecognised = e.status == 404 and _errcode(e) in (None, Codes.UNRECOGNIZED) or \
                (e.status == 400 and _errcode(e) == Codes.UNRECOGNIZED)
            if not unrecognised:
                raise
        answer = await self.client.request("PUT", server, f"/_matrix/federation/v1/send_{kind}{path}",
                                           content=event, timeout=SEND_JOIN_TIMEOUT)
        return answer, True

    async def _join_via(self, server: str, user_id: str, room_id: str, content: Mapping[str, Any]) -> str:
        rv, template = await self._make(server, "join", room_id, user_id)
        extra = {k: v for k, v in content.items() if k in ("displayname", "avatar_url", "reason")}
        event = event_from_template(
            template, rv, membership="join", user_id=user_id, room_id=room_id, server_name=self.hs.server_name,
            signing_key=self.hs.signing_key, origin_server_ts=self.hs.clock_ms(), extra_content=extra,
        )
        partial = self.hs.partial_state.enabled
        with gc_paused():  # a big room's answer is parsed: see bulk_work
            answer, v1 = await self._send(server, "join", room_id, event, rv, omit_members=partial)
        state, chain, returned = parse_send_join_response(answer, v1=v1)
        authoriser = event["content"].get("join_authorised_via_users_server")
        if authoriser is not None:
            # A restricted join: the authoriser's server must send our event back with
            # its signature (checked here; the auth rules need it).
            authorising = _domain(authoriser) if isinstance(authoriser, str) else None
            if authorising is None:
                raise MembershipError(f"{server} named no valid user to authorise the join")
            if authorising != self.hs.server_name:
                keys = await self._keys_for(returned if isinstance(returned, dict) else {}, authorising)
                event = check_countersigned(event, returned, rv, authorising, keys)
        if await self.is_resident(room_id):
            # We are in the room already (another resident authorised a restricted
            # join): the join is one more event of the room.
            (outcome,) = await self.hs.federation_events.receive_pdus(server, room_id, [event])
            if outcome.error is not None or outcome.rejected is not None or outcome.soft_failed:
                raise MatrixError.forbidden(f"The join was not accepted here: "
                                            f"{outcome.error or outcome.rejected or 'soft-failed'}")
            return outcome.event_id
        # Faster joins: the answer may lack most member events; the resync fetches them.
        servers = partial_join_servers(answer, joined_via=server, own_server=self.hs.server_name) \
            if partial and not v1 else None
        event_id = await self._store_join(server, room_id, rv, event, state, chain, partial_servers=servers)
        if servers is not None:
            self.hs.partial_state.start_resync(room_id)
        return event_id

    async def _keys_for(self, event: Mapping[str, Any], server: str):
        sigs = event.get("signatures", {}).get(server) if isinstance(event.get("signatures"), dict) else None
        ids = [k for k in sigs if isinstance(k, str)] if isinstance(sigs, dict) else []
        found = await self.hs.keyring.get_keys([KeyRequest(server, k) for k in ids])
        lookup = {k: key.known_key() for k, key in found.items()}
        return lambda s, k: lookup.get((s, k))

    async def _store_join(self, origin: str, room_id: str, rv: RoomVersion, event: dict,
                          state: list, chain: list, *, partial_servers: list[str] | None = None) -> str:
        """Store the state and auth chain a send_join returned, then our join event with
        that state. ``partial_servers`` (a partial-state answer): the room is marked
        partial first (``hs.partial_state``), so that the join is checked as in a partial
        room and a crash before it is stored leaves a marker the startup drops."""
        fed = self.hs.federation_events
        partial = self.hs.partial_state
        async with self.events.room_lock(room_id):
            await self.store.ensure_room(room_id, rv, creator=None, created_ts=self.hs.clock_ms())
            room = await self.store.get_room(room_id)
            if room.room_version.identifier != rv.identifier:
                raise MatrixError(502, Codes.UNKNOWN, f"{origin} says {room_id} is a version {rv.identifier}"
                                  f" room; we know it as version {room.room_version.identifier}")
            result = await fed.persist_outliers(origin, room_id, rv, [*chain, *state])
            if result.dropped or result.rejected:
                log.warning("join of %s via %s: %d events dropped, %d rejected (e.g. %s)", room_id, origin,
                            len(result.dropped), len(result.rejected),
                            next(iter({**result.dropped, **result.rejected}.items()), None))
            state_map: dict[StateKey, str] = {}
            for event_id in result.event_ids[len(chain):]:
                pdu = result.accepted.get(event_id or "")
                if pdu is not None and pdu.state_key is not None:
                    state_map[(pdu.type, pdu.state_key)] = pdu.event_id
            if ("m.room.create", "") not in state_map:
                raise MatrixError(502, Codes.UNKNOWN, f"{origin} sent no valid create event for {room_id}")
            from .receive import PDUError

            join_id = PDU.from_pdu_json(event, rv).event_id
            if partial_servers is not None:
                await partial.mark(room_id, join_id, origin, partial_servers)
            elif await partial.is_partial(room_id):
                await partial.unmark(room_id)  # a full join replaces the partial state we had
            stored = False
            try:
                try:
                    outcome = await fed.persist_event_with_state_locked(origin, room_id, event, state_map,
                                                                        known_events=result.accepted)
                except PDUError as e:
                    raise MatrixError(502, Codes.UNKNOWN, f"Our join event was not accepted: {e}") from None
                if outcome.rejected or outcome.soft_failed:
                    raise MatrixError.forbidden(f"The room's state does not allow the join: {outcome.rejected}")
                stored = True
            finally:
                if partial_servers is not None and not stored:
                    await partial.unmark(room_id, join_id)
        return outcome.event_id

    async def leave_remote(self, user_id: str, room_id: str, servers: Sequence[str],
                           reason: str | None = None) -> str:
        """Leave (reject an invite to) a room this server is not in, through
        make_leave/send_leave; the leave is stored as an out-of-band membership."""
        errors: list[str] = []
        for server in self._candidates(servers):
            try:
                rv, template = await self._make(server, "leave", room_id, user_id)
                event = event_from_template(
                    template, rv, membership="leave", user_id=user_id, room_id=room_id,
                    server_name=self.hs.server_name, signing_key=self.hs.signing_key,
                    origin_server_ts=self.hs.clock_ms(), extra_content={"reason": reason} if reason else None,
                )
                await self._send(server, "leave", room_id, event, rv)
            except (FederationRequestError, MembershipError, MatrixError) as e:
                errors.append(f"{server}: {e}")
                continue
            pdu = PDU.from_pdu_json(event, rv)
            await self._store_out_of_band(pdu)
            return pdu.event_id
        log.info("leaving %s: no server took the leave (%s); ending %s's membership here only", room_id,
                 "; ".join(errors[:5]) or "no server to ask", user_id)
        return await self._local_leave(user_id, room_id, reason)

    async def _local_leave(self, user_id: str, room_id: str, reason: str | None) -> str:
        """An out-of-band leave made and kept here, when no server of the room takes our
        leave (they are unreachable, or the room already ended the invite or knock, e.g. a
        denied knock nobody told us about): the user is no longer stuck with it. It
        follows the invite or knock it ends and is never sent (an outlier)."""
        current = await self.events.state.get_membership(room_id, user_id)
        if current is None or current.membership not in ("invite", "knock"):
            raise MatrixError(502, Codes.UNKNOWN, f"Could not leave {room_id} through any server")
        prev = (await self.events.get_pdus([current.event_id])).get(current.event_id)
        if prev is None:
            raise MatrixError(502, Codes.UNKNOWN, f"Could not leave {room_id} through any server")
        rv = prev.room_version
        template = membership_template(
            rv, room_id=room_id, user_id=user_id, content={"membership": "leave"}, prev_event_ids=[prev.event_id],
            auth_event_ids=[prev.event_id], depth=prev.depth + 1, origin=self.hs.server_name,
            origin_server_ts=self.hs.clock_ms(),
        )
        event = event_from_template(
            template, rv, membership="leave", user_id=user_id, room_id=room_id, server_name=self.hs.server_name,
            signing_key=self.hs.signing_key, origin_server_ts=self.hs.clock_ms(),
            extra_content={"reason": reason} if reason else None,
        )
        pdu = PDU.from_pdu_json(event, rv)
        await self._store_out_of_band(pdu)
        return pdu.event_id

    async def _store_out_of_band(self, pdu: PDU) -> None:
        await self.store.ensure_room(pdu.room_id, pdu.room_version, creator=None, created_ts=self.hs.clock_ms())
        await self.out_of_band.store_membership(pdu, received_ts=self.hs.clock_ms())
        self.events.remember(pdu)
        self.hs.notifier.notify_users([pdu.state_key])

    async def send_invite(self, pdu: PDU, invite_room_state: list[dict[str, Any]]) -> PDU:
        """Send our invite of a remote user to their server (``PUT /invite/v2``) and
        return the event with their signature added. MatrixError if they refuse."""
        target_server = _domain(pdu.state_key or "")
        rv = pdu.room_version
        ours = wire_json(pdu)
        path = f"{quote_path_segment(pdu.room_id)}/{quote_path_segment(pdu.event_id)}"
        try:
            try:
                answer = await self.client.request(
                    "PUT", target_server, f"/_matrix/federation/v2/invite/{path}",
                    content={"room_version": rv.identifier, "event": ours, "invite_room_state": invite_room_state},
                )
            except FederationRequestError as e:
                if not _unknown_endpoint(e):
                    raise
                if not rv.event_id_in_event:  # v1 invites only carry rooms 1 and 2
                    raise MatrixError(400, Codes.INCOMPATIBLE_ROOM_VERSION,
                                      f"{target_server} does not support this room's version") from None
                # A server from before v2 invites: the v1 form (the event, with the stripped
                # state in its unsigned, and an answer wrapped in [200, ...]).
                wrapped = await self.client.request(
                    "PUT", target_server, f"/_matrix/federation/v1/invite/{path}",
                    content={**ours, "unsigned": {**(ours.get("unsigned") or {}),
                                                  "invite_room_state": invite_room_state}},
                )
                answer = wrapped[1] if isinstance(wrapped, list) and len(wrapped) == 2 else None
        except FederationRequestError as e:
            if _errcode(e) == Codes.FORBIDDEN:
                raise MatrixError.forbidden(f"{target_server} refused the invite") from None
            if _errcode(e) in (Codes.INCOMPATIBLE_ROOM_VERSION, Codes.UNSUPPORTED_ROOM_VERSION):
                raise MatrixError(400, Codes.INCOMPATIBLE_ROOM_VERSION,
                                  f"{target_server} does not support this room's version") from None
            raise MatrixError(502, Codes.UNKNOWN, f"Could not send the invite to {target_server}: {e}") from None
        theirs = answer.get("event") if isinstance(answer, dict) else None
        if isinstance(theirs, dict) and rv.strict_canonicaljson:
            try:
                check_strict_values(theirs)
            except CanonicalJSONError as e:  # as Synapse answers (the spec names no error)
                raise MatrixError.bad_json(f"{target_server} sent back an event that is not valid "
                                           f"for this room version: {e}") from None
        try:
            merged = check_countersigned(ours, theirs, rv, target_server,
                                         await self._keys_for(theirs if isinstance(theirs, dict) else {},
                                                              target_server))
        except MembershipError as e:
            raise MatrixError(502, Codes.UNKNOWN, str(e)) from None
        if pdu.unsigned:
            merged["unsigned"] = dict(pdu.unsigned)
        return PDU(merged, rv, pdu.event_id)

    async def invite_room_state(self, room_id: str, sender: str | None) -> list[dict[str, Any]]:
        """``invite_room_state`` (or ``knock_room_state``) for another server: the full
        PDUs of the stripped-state events (the create event included, as rooms 12 need),
        and the membership of ``sender`` if given."""
        from ..rooms import STRIPPED_STATE_TYPES

        current = await self.events.state.get_current_state_ids(room_id)
        keys = [(t, "") for t in STRIPPED_STATE_TYPES] + ([("m.room.member", sender)] if sender else [])
        pdus = await self.events.get_pdus([current[k] for k in keys if k in current])
        return [wire_json(pdus[current[k]]) for k in keys if k in current and current[k] in pdus]

    # --- knocking ---------------------------------------------------------------------

    async def knock_remote(self, user_id: str, room_id: str, servers: Sequence[str],
                           content: Mapping[str, Any]) -> str:
        """Knock on a room this server is not in: ``make_knock`` -> sign -> ``send_knock``
        through the first of ``servers`` that takes it. The knock is kept as an
        out-of-band membership with the room's stripped state (``knock_room_state``) for
        /sync; returns its event ID. MatrixError when no server takes it: the refusal a
        server gave (M_FORBIDDEN, M_INCOMPATIBLE_ROOM_VERSION) if any, else M_NOT_FOUND.

        Spec: https://spec.matrix.org/latest/server-server-api/#knocking-rooms"""
        candidates = self._candidates(servers)
        if not candidates:
            raise MatrixError.not_found(f"No server to knock on {room_id} through")
        errors: list[str] = []
        refusal: MatrixError | None = None
        for server in candidates:
            try:
                return await self._knock_via(server, user_id, room_id, content)
            except MatrixError as e:
                refusal = refusal or (e if e.errcode in (Codes.FORBIDDEN, Codes.INCOMPATIBLE_ROOM_VERSION) else None)
                errors.append(f"{server}: {e.error}")
            except FederationRequestError as e:
                if _errcode(e) == Codes.FORBIDDEN and refusal is None:
                    why = e.body.get("error") if isinstance(e.body.get("error"), str) else "forbidden"
                    refusal = MatrixError.forbidden(f"{server} refused the knock: {why}")
                errors.append(str(e))
            except MembershipError as e:
                errors.append(f"{server}: {e}")
            log.info("knocking on %s via %s failed: %s", room_id, server, errors[-1])
        if refusal is not None:
            raise refusal
        raise MatrixError(404, Codes.NOT_FOUND, f"Could not knock on {room_id} through any server: "
                          + "; ".join(errors[:5]))

    async def _knock_via(self, server: str, user_id: str, room_id: str, content: Mapping[str, Any]) -> str:
        rv, template = await self._make(server, "knock", room_id, user_id)
        if not rv.knock_join_rule:
            raise MatrixError(400, Codes.INCOMPATIBLE_ROOM_VERSION,
                              f"{room_id} is a version {rv.identifier} room: knocking needs version 7 or later",
                              room_version=rv.identifier)
        extra = {k: v for k, v in content.items() if k in ("displayname", "avatar_url", "reason")}
        event = event_from_template(
            template, rv, membership="knock", user_id=user_id, room_id=room_id, server_name=self.hs.server_name,
            signing_key=self.hs.signing_key, origin_server_ts=self.hs.clock_ms(), extra_content=extra,
        )
        pdu = PDU.from_pdu_json(event, rv)
        answer = await self.client.request(
            "PUT", server,
            f"/_matrix/federation/v1/send_knock/{quote_path_segment(room_id)}/{quote_path_segment(pdu.event_id)}",
            content=event, timeout=SEND_JOIN_TIMEOUT,
        )
        # The room has the knock now: a poor answer costs the client the room's preview, not the knock.
        entries = answer.get("knock_room_state") if isinstance(answer, dict) else None
        stored = dict(event)
        stored["unsigned"] = {"knock_room_state": await self.checked_stripped_state(entries, room_id, rv)}
        await self._store_out_of_band(PDU(stored, rv, pdu.event_id))
        return pdu.event_id

    async def checked_stripped_state(self, entries: Any, room_id: str, rv: RoomVersion) -> list[dict[str, Any]]:
        """``knock_room_state``/``invite_room_state`` from another server as stripped
        state for clients. Full PDUs must be well formed, of this room and properly
        signed, else they are left out (spec: "entries which are improperly signed or
        formatted SHOULD be removed"); bare stripped events, which servers sent before
        Matrix 1.16, are kept for rooms before version 12 only."""
        if not isinstance(entries, list):
            return []
        well_formed: dict[int, dict] = {}
        for i, entry in enumerate(entries):
            if is_full_pdu(entry):
                fmt = check_format(entry, rv)
                if isinstance(fmt, Accept) and fmt.pdu.room_id == room_id:
                    well_formed[i] = entry
        signed = await self.hs.federation_events.check_signatures(list(well_formed.values()), rv, None) \
            if well_formed else []
        good = {i for i, decision in zip(well_formed, signed) if isinstance(decision, Accept)}
        legacy = not rv.room_id_from_create_event  # rooms 1-11
        out = []
        for i, entry in enumerate(entries):
            if i in good or (legacy and not is_full_pdu(entry)):
                stripped = stripped_state_event(entry)
                if stripped is not None:
                    out.append(stripped)
        return out

    async def knock_servers(self, room_id: str, event_id: str) -> list[str]:
        """Servers to retract a knock through: those of the senders of the room's
        stripped state we were given with it (they were in the room)."""
        pdu = (await self.events.get_pdus([event_id])).get(event_id)
        entries = pdu.unsigned.get("knock_room_state") if pdu is not None else None
        senders = [e.get("sender") for e in entries if isinstance(e, dict)] if isinstance(entries, list) else []
        return [d for d in dict.fromkeys(_domain(s) for s in senders if isinstance(s, str)) if d]

    # =================================================================================
    # As a resident server
    # =================================================================================

    async def is_resident(self, room_id: str) -> bool:
        """Whether this server takes part in the room: we know its state and one of our
        users is joined."""
        room = await self.store.get_room(room_id)
        if room is None or room.current_state_group is None:
            return False
        return await self.events.state.has_joined_member_of(room_id, self.hs.server_name)

    async def _resident_room(self, origin: str, room_id: str):
        room = await self.store.get_room(room_id)
        if room is None or room.current_state_group is None:
            raise MatrixError.not_found(f"Unknown room {room_id}")
        if await self.hs.partial_state.is_partial(room_id):
            # Without the room's member events we cannot answer correctly (MSC3902): the
            # asking server tries another one.
            raise MatrixError.not_found(f"This server is not fully joined to {room_id} yet; try another server")
        if not await self.events.state.has_joined_member_of(room_id, self.hs.server_name):
            raise MatrixError.not_found(f"This server is not in {room_id}")
        await self.hs.federation_room_data.check_server_acl(origin, room_id)
        return room

    async def on_make(self, origin: str, kind: str, room_id: str, user_id: str,
                      versions: Sequence[str] | None) -> dict[str, Any]:
        """``make_join``/``make_leave``/``make_knock``: a template the requesting server may
        sign. A knock is refused up front when the room's version does not allow knocking
        or is not in ``ver``; then, as for a join, when the auth rules would refuse it."""
        if _domain(user_id) != origin:
            raise MatrixError.forbidden("The user is not on the requesting server")
        if kind == "knock":
            await self._knockable_room(room_id, versions)
        room = await self._resident_room(origin, room_id)
        rv = room.room_version
        if kind == "join" and rv.identifier not in (versions or ["1"]):
            raise MatrixError(400, Codes.INCOMPATIBLE_ROOM_VERSION,
                              f"The room is version {rv.identifier}, which your server does not support",
                              room_version=rv.identifier)
        state = dict((await self.events.state.get_state(room.current_state_group)).state)
        content: dict[str, Any] = {"membership": kind}
        if kind == "join":
            authoriser = await self.restricted_authoriser(room_id, rv, state, user_id)
            if authoriser is not None:
                content["join_authorised_via_users_server"] = authoriser
        prev_ids = await self.store.get_forward_extremities(room_id)
        depths = await self.store.get_depths(prev_ids)
        prev_ids = sorted(prev_ids, key=lambda e: -depths.get(e, 0))[:10]
        auth_keys = auth_types_for_event(rv, "m.room.member", user_id, user_id, content)
        auth_ids = [state[k] for k in sorted(auth_keys) if k in state]
        template = membership_template(
            rv, room_id=room_id, user_id=user_id, content=content, prev_event_ids=prev_ids,
            auth_event_ids=auth_ids, depth=max(depths.values(), default=0) + 1, origin=self.hs.server_name,
            origin_server_ts=self.hs.clock_ms(),
        )
        # Refuse now what the auth rules would refuse anyway.
        keys = set(auth_keys) | {("m.room.create", "")}
        auth_pdus = await self.events.get_state_events({k: state[k] for k in keys if k in state})
        try:
            # Signed by the joining server, and by us as the authoriser of a restricted join.
            check_auth_rules(rv, template_auth_pdu(template, rv), auth_pdus,
                             is_signed_by=lambda _event, server: server in (origin, self.hs.server_name))
        except AuthError as e:
            raise MatrixError.forbidden(f"You may not {kind} this room: {e}") from None
        return {"room_version": rv.identifier, "event": template}

    async def restricted_authoriser(self, room_id: str, rv: RoomVersion, state: Mapping[StateKey, str],
                                    user_id: str) -> str | None:
        """The local member to name in ``join_authorised_via_users_server`` for a join of
        ``user_id`` (neither invited nor joined) to a restricted room; None when the join
        needs no authorisation. Spec:
        https://spec.matrix.org/latest/server-server-api/#restricted-rooms

        403 ``M_FORBIDDEN``: the user meets none of the ``allow`` conditions;
        400 ``M_UNABLE_TO_AUTHORISE_JOIN``: none met, but a condition names a room this
        server is not in (another server may know better);
        400 ``M_UNABLE_TO_GRANT_JOIN``: a condition is met but no local member may invite."""
        if not rv.restricted_join_rule or ("m.room.join_rules", "") not in state:
            return None
        jr_id = state[("m.room.join_rules", "")]
        jr = (await self.events.get_pdus([jr_id])).get(jr_id)
        rule = jr.content.get("join_rule") if jr is not None else None
        if rule not in ("restricted", "knock_restricted") or \
                (rule == "knock_restricted" and not rv.knock_restricted_join_rule):
            return None
        mine = await self.events.state.get_membership(room_id, user_id)
        if mine is not None and mine.membership in ("join", "invite"):
            return None
        met = unknown = False
        for other in restricted_allow_room_ids(jr.content):
            if not await self.is_resident(other):
                unknown = True
                continue
            m = await self.events.state.get_membership(other, user_id)
            if m is not None and m.membership == "join":
                met = True
                break
        if not met and unknown:
            raise MatrixError(400, Codes.UNABLE_TO_AUTHORISE_JOIN,
                              "This server cannot tell whether you meet the room's join conditions")
        if not met:
            raise MatrixError.forbidden("You do not meet any of the room's join conditions")
        pl_id = state.get(("m.room.power_levels", ""))
        create_id = state.get(("m.room.create", ""))
        got = await self.events.get_pdus([i for i in (pl_id, create_id) if i])
        pl = got[pl_id].content if pl_id in got else None
        create = got.get(create_id) if create_id else None
        needed = get_named_level("invite", pl, rv)
        able = [(get_user_power_level(m.user_id, pl, create, rv), m.user_id)
                for m in await self.events.state.get_members(room_id, "join")
                if _domain(m.user_id) == self.hs.server_name]
        able = [(level, u) for level, u in able if level >= needed]
        if not able:
            raise MatrixError(400, Codes.UNABLE_TO_GRANT_JOIN, "No user of this server may authorise the join")
        return min(able, key=lambda a: (-a[0], a[1]))[1]  # the most powerful

    async def on_send(self, origin: str, kind: str, room_id: str, event_id: str, body: Any, *,
                      omit_members: bool = False, v1: bool = False) -> dict[str, Any]:
        """``send_join``/``send_leave``: the signed event, checked and accepted through
        the receipt pipeline; for a join, the room's state and auth chain. An event that
        is malformed, unsigned or not the origin's user's: 400 ``M_INVALID_PARAM`` (what
        the v2 endpoints' spec asks), 403 ``M_FORBIDDEN`` on the v1 endpoints (whose spec
        names no error; what Synapse, and servers written against it, answer)."""
        room = await self._resident_room(origin, room_id)
        rv = room.room_version
        if rv.strict_canonicaljson:
            try:
                check_strict_values(body)
            except CanonicalJSONError as e:  # not JSON the room's events may hold
                raise MatrixError.bad_json(f"Invalid {kind} event: {e}") from None
        try:
            pdu = PDU.from_pdu_json(body, rv)
            check_membership_event(pdu, room_id=room_id, origin=origin, membership=kind, event_id=event_id)
        except (InvalidEventError, MembershipError, TypeError, KeyError) as e:
            message = f"Invalid {kind} event: {e}"
            raise (MatrixError.forbidden(message) if v1 else MatrixError.invalid_param(message)) from None
        event = body
        if kind == "join":
            authoriser = pdu.content.get("join_authorised_via_users_server")
            if isinstance(authoriser, str) and _domain(authoriser) == self.hs.server_name:
                # We vouch for the join with our signature: only if the user still meets
                # the room's conditions (raises the spec's errors otherwise).
                state = (await self.events.state.get_state(room.current_state_group)).state
                await self.restricted_authoriser(room_id, rv, state, pdu.sender)
                event = sign_event(body, self.hs.server_name, self.hs.signing_key, room_version=rv)
        (outcome,) = await self.hs.federation_events.receive_pdus(origin, room_id, [event])
        if outcome.error is not None:
            raise MatrixError.forbidden(f"The {kind} event was not accepted: {outcome.error}")
        if outcome.rejected is not None or outcome.soft_failed:
            raise MatrixError.forbidden(f"The {kind} event is not allowed: {outcome.rejected or 'soft-failed'}")
        await self._forward(origin, room_id, outcome.stream_ordering, pdu.event_id)
        if kind != "join":
            return {}
        return await self._send_join_answer(room_id, pdu, event, omit_members)

    async def _send_join_answer(self, room_id: str, pdu: PDU, event: dict, omit_members: bool) -> dict[str, Any]:
        """The state before the join and the auth chain (send_join v2). With
        ``omit_members`` the member events are left out of ``state`` except the heroes'
        (rooms without a name or canonical alias) and the joiner's own, and ``auth_chain``
        leaves out what ``state`` already has; ``servers_in_room`` are the servers with
        joined members before the join."""
        state = await self.hs.federation_room_data.state_before(room_id, pdu.event_id)
        if omit_members:
            kept = await self._kept_members(room_id, state, pdu.sender)
            state = {k: e for k, e in state.items() if k[0] != "m.room.member" or k[1] in kept}
        state_ids = sorted(set(state.values()))
        chain = await self.store.get_auth_chain_ids([*state_ids, pdu.event_id])
        if omit_members:
            chain -= set(state_ids)
        chain_ids = sorted(chain)
        pdus = await self.events.get_pdus([*state_ids, *chain_ids])
        servers: list[str] = []
        for m in await self.events.state.get_members(room_id, "join"):
            server = _domain(m.user_id)
            if m.user_id != pdu.sender and server and server not in servers:
                servers.append(server)
        return {
            "origin": self.hs.server_name,
            "state": wire_events_oldest_first(state_ids, pdus),
            "auth_chain": wire_events_oldest_first(chain_ids, pdus),
            "event": event,
            "members_omitted": omit_members,
            "servers_in_room": servers,
        }

    async def _kept_members(self, room_id: str, state: Mapping[StateKey, str], joiner: str) -> set[str]:
        """The users whose member events a reduced send_join answer keeps: the joiner and,
        when the room has no name nor canonical alias, the heroes of its summary."""
        from ..sync import HEROES

        kept = {joiner}
        named = [state[k] for k in (("m.room.name", ""), ("m.room.canonical_alias", "")) if k in state]
        for p in (await self.events.get_pdus(named)).values():
            if p.content.get("name") or p.content.get("alias") or p.content.get("alt_aliases"):
                return kept
        candidates = (await self.hs.sync.store.get_hero_candidates([room_id], HEROES + 1)).get(room_id, [])
        kept.update([u for u, _ in candidates if u != joiner][:HEROES])
        return kept

    async def _forward(self, origin: str, room_id: str, position: int | None, event_id: str) -> None:
        """The federation sender sends only our events: hand it the joining server's
        event for the other servers in the room."""
        if position is None:
            return
        sender = self.hs.federation_sender
        others = [s for s in await sender.joined_servers(room_id) if s not in (origin, self.hs.server_name)]
        for d in others:
            sender._queue(d).add_pdus([(position, event_id)])

    async def on_invite(self, origin: str, room_id: str, event_id: str, body: Any) -> dict[str, Any]:
        """``PUT /invite/v2``: check the invite, sign it as the invitee's server, store it
        (an out-of-band membership with the stripped state for /sync)."""
        if not isinstance(body, dict) or not isinstance(body.get("event"), dict):
            raise MatrixError.bad_json("'event' must be an object")
        version = body.get("room_version", "1")
        if not isinstance(version, str) or version not in KNOWN_ROOM_VERSIONS:
            raise MatrixError(400, Codes.INCOMPATIBLE_ROOM_VERSION,
                              f"Room version {version!r} is not supported here", room_version=str(version))
        rv = get_room_version(version)
        raw = {k: v for k, v in body["event"].items() if k != "unsigned"}
        try:
            pdu = PDU.from_pdu_json(raw, rv)
            check_invite_event(pdu, room_id=room_id, event_id=event_id, origin=origin,
                               local_server=self.hs.server_name)
        except (InvalidEventError, MembershipError, TypeError, KeyError) as e:
            raise MatrixError.bad_json(f"Invalid invite: {e}") from None
        # The ACL first: a denied server learns nothing, not even whether the user exists.
        if not await self.hs.federation_room_data.server_is_allowed(origin, room_id):
            raise MatrixError.forbidden("Your server is denied by the room's server ACL")
        user = await self.hs.rooms.users.get_user(pdu.state_key)
        if user is None and self.hs.config.appservice.services and \
                await self.hs.appservices.query_user_exists(pdu.state_key):
            user = await self.hs.rooms.users.get_user(pdu.state_key)  # a bridge's puppet, made just now
        # A user who does not exist (yet) may be invited, as Synapse lets them be: the spec
        # names no error for it (and a 404 here reads as "no v2 invites, try v1" to the
        # sender). A deactivated user can never answer: refused.
        if user is not None and user.deactivated:
            raise MatrixError.forbidden(f"{pdu.state_key} is deactivated and cannot be invited")
        from federation.pdu_checks import Drop, Redacted

        (checked,) = await self.hs.federation_events.check_signatures([raw], rv, origin)
        if isinstance(checked, (Drop, Redacted)):
            raise MatrixError.forbidden(f"The invite's signatures or hashes are not valid: "
                                        f"{getattr(checked, 'reason', 'content hash mismatch')}")
        await self.hs.modules.callbacks.spam_check("user_may_invite", "This invite", pdu.sender, pdu.state_key,
                                                   room_id)
        signed = sign_event(raw, self.hs.server_name, self.hs.signing_key, room_version=rv)
        stripped = [s for s in (stripped_state_event(e) for e in body.get("invite_room_state") or []
                                if isinstance(body.get("invite_room_state"), list)) if s is not None]
        if await self.is_resident(room_id):
            # The invite reaches our timeline through /send like any event of the room.
            return {"event": signed}
        stored = dict(signed)
        stored["unsigned"] = {"invite_room_state": stripped}
        await self._store_out_of_band(PDU(stored, rv, pdu.event_id))
        self.hs.push.on_out_of_band_invite(pdu, stripped)
        return {"event": signed}

    # --- knocking, as a resident ------------------------------------------------------

    async def _knockable_room(self, room_id: str, versions: Sequence[str] | None):
        """The room, if its version allows knocking and (``make_knock``) is among the
        versions the knocking server supports; M_INCOMPATIBLE_ROOM_VERSION otherwise."""
        room = await self.store.get_room(room_id)
        if room is None or room.current_state_group is None:
            raise MatrixError.not_found(f"Unknown room {room_id}")
        rv = room.room_version
        if versions is not None and rv.identifier not in versions:
            raise MatrixError(400, Codes.INCOMPATIBLE_ROOM_VERSION,
                              f"The room is version {rv.identifier}, which your server does not support",
                              room_version=rv.identifier)
        if not rv.knock_join_rule:
            raise MatrixError(400, Codes.INCOMPATIBLE_ROOM_VERSION,
                              f"The room is version {rv.identifier}, which does not allow knocking",
                              room_version=rv.identifier)
        return room

    async def on_send_knock(self, origin: str, room_id: str, event_id: str, body: Any) -> dict[str, Any]:
        """``send_knock``: the knock event, checked (M_INVALID_PARAM for a malformed or
        badly signed one, as the spec asks), accepted through the receipt pipeline and
        sent on to the room's other servers; answers the room's stripped state as full
        PDUs (``knock_room_state``)."""
        room = await self._knockable_room(room_id, None)
        rv = room.room_version
        if not isinstance(body, dict):
            raise MatrixError.invalid_param("The knock event must be a JSON object")
        try:
            pdu = PDU.from_pdu_json(body, rv)
            check_membership_event(pdu, room_id=room_id, origin=origin, membership="knock", event_id=event_id)
        except (InvalidEventError, MembershipError, TypeError, KeyError) as e:
            raise MatrixError.invalid_param(f"Invalid knock event: {e}") from None
        (signed,) = await self.hs.federation_events.check_signatures([body], rv, origin)
        if not isinstance(signed, Accept):
            raise MatrixError.invalid_param(f"The knock's signatures or hashes are not valid: "
                                            f"{getattr(signed, 'reason', 'content hash mismatch')}")
        await self.on_send(origin, "knock", room_id, event_id, body)
        return {"knock_room_state": await self.invite_room_state(room_id, None)}

    # --- the end of an invite or knock, in a room this server is not in ---------------

    async def take_out_of_band(self, origin: str, room_id: str, pdus: Sequence[Any]) -> tuple[list, list[Any]]:
        """Of a transaction's PDUs for one room, take those that end a local user's
        out-of-band invite or knock (a rescinded invite, a denied knock: a leave or ban
        the room's servers send to the user's server) in a room this server is not in;
        they are checked and stored as the user's new out-of-band membership, so that
        /sync shows the room as left. Returns (their outcomes, the other PDUs, for the
        receipt pipeline). Costs nothing unless a PDU is a leave or ban of a local user."""
        suffix = ":" + self.hs.server_name
        ends = [p for p in pdus if isinstance(p, dict) and p.get("type") == "m.room.member"
                and isinstance(p.get("state_key"), str) and p["state_key"].endswith(suffix)
                and isinstance(p.get("content"), dict) and p["content"].get("membership") in ("leave", "ban")]
        if not ends:
            return [], list(pdus)
        room = await self.store.get_room(room_id)
        if room is None or await self.is_resident(room_id):
            return [], list(pdus)
        done, rest = [], []
        for p in pdus:
            outcome = await self._end_out_of_band(origin, room.room_version, room_id, p) \
                if any(p is e for e in ends) else None
            if outcome is None:
                rest.append(p)
            else:
                done.append(outcome)
        return done, rest

    async def _end_out_of_band(self, origin: str, rv: RoomVersion, room_id: str, pdu_json: dict):
        """The outcome of a leave/ban of a local user's out-of-band invite or knock, or
        None when it is not one (the receipt pipeline judges it)."""
        from .receive import PDUOutcome

        fmt = check_format(pdu_json, rv)
        if not isinstance(fmt, Accept) or fmt.pdu.room_id != room_id:
            return None
        pdu: PDU = fmt.pdu
        current = await self.events.state.get_membership(room_id, pdu.state_key)
        if current is not None and current.event_id == pdu.event_id:
            return PDUOutcome(pdu.event_id)  # sent again
        if current is None or current.membership not in ("invite", "knock"):
            return None
        try:
            check_out_of_band_retraction(pdu, origin=origin, local_server=self.hs.server_name,
                                         current_event_id=current.event_id)
        except MembershipError as e:
            return PDUOutcome(pdu.event_id, f"Not accepted: {e}")
        (signed,) = await self.hs.federation_events.check_signatures([pdu_json], rv, origin)
        if not isinstance(signed, Accept):
            return PDUOutcome(pdu.event_id, f"Not accepted: {getattr(signed, 'reason', 'content hash mismatch')}")
        await self._store_out_of_band(pdu)
        log.info("%s's %s in %s ended by %s (%s)", pdu.state_key, current.membership, room_id, pdu.sender,
                 pdu.content.get("membership"))
        return PDUOutcome(pdu.event_id)
