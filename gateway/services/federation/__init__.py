"""The federation services, one module per step of the path a received PDU takes.

Spec: https://spec.matrix.org/latest/server-server-api/#checks-performed-on-receipt-of-a-pdu
(the pure decision of each step is in ``federation.pdu_checks``; these modules fetch
what a step needs and store the outcome).

In the order an event goes through them:

- ``inbox``: ``PUT /send``: the 50 PDU / 100 EDU limits, a retried transaction answered
  again without reprocessing, PDUs grouped by room (in order), EDUs to their handlers.
- ``receive``: the receipt pipeline: format, signatures and hashes, auth against the
  event's auth events, against the state before it, soft failure against the current
  state; gaps filled (``get_missing_events``, ``/state_ids``); persistence.
- ``keyring``: the server keys the signature check needs, valid at the event's time.
- ``partial_state``: rooms joined with partial state (faster joins), completed in the
  background.
- ``membership``: joins, leaves, invites and knocks across servers, both as the server
  of the user and as a server resident in the room.
- ``backfill``: history before what we have, from the room's other servers.
- ``room_data``: what other servers read from us (``/event``, ``/state``,
  ``/state_ids``, ``/event_auth``, ``get_missing_events``).
- ``sender``: outgoing transactions, per-destination queues kept in the database.
"""
