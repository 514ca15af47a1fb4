// Edits, threads, reactions and references through matrix-js-sdk's own APIs, then what
// fresh clients (a new login and initial sync, as when Element starts) make of them.
// args: {alice: {user, password}, bob: {user, password}}; run by tests/support/js_sdk.py.

export default async function ({ sdk, args, login, until, errorOf }) {
  const alice = await login(args.alice.user, args.alice.password);
  const bob = await login(args.bob.user, args.bob.password);
  const { room_id: roomId } = await alice.createRoom({ preset: "public_chat", name: "Relations" });
  await bob.joinRoom(roomId);
  for (let i = 0; i < 5; i++) await alice.sendTextMessage(roomId, `filler ${i}`);

  // Eleven events from here on: a fresh client with initialSyncLimit 11 gets exactly these
  // in a limited timeline.
  const original = (await alice.sendTextMessage(roomId, "hello")).event_id;
  const edit = (body) => ({
    msgtype: "m.text", body: `* ${body}`, "m.new_content": { msgtype: "m.text", body },
    "m.relates_to": { rel_type: sdk.RelationType.Replace, event_id: original },
  });
  const edit1 = (await alice.sendMessage(roomId, edit("hello, edited"))).event_id;
  const edit2 = (await alice.sendMessage(roomId, edit("hello, edited twice"))).event_id;
  const root = (await alice.sendTextMessage(roomId, "thread root")).event_id;
  const replies = [
    (await alice.sendTextMessage(roomId, root, "reply 1")).event_id,
    (await bob.sendTextMessage(roomId, root, "reply 2")).event_id,
    (await alice.sendTextMessage(roomId, root, "reply 3")).event_id,
  ];
  const react = (client, key) => client.sendEvent(roomId, sdk.EventType.Reaction, {
    "m.relates_to": { rel_type: sdk.RelationType.Annotation, event_id: original, key },
  });
  const thumbs = (await react(alice, "👍")).event_id;
  const duplicate = await errorOf(react(alice, "👍"));
  await react(bob, "👍");
  const reference = (await bob.sendMessage(roomId, {
    msgtype: "m.text", body: "see above",
    "m.relates_to": { rel_type: sdk.RelationType.Reference, event_id: original },
  })).event_id;
  const last = (await alice.sendTextMessage(roomId, "last message")).event_id;

  // Bob's running client saw it all live.
  const bobRoom = bob.getRoom(roomId);
  await until(() => bobRoom.findEventById(last));
  await until(() => bobRoom.findEventById(original)?.replacingEventId() === edit2);
  const live = { body: bobRoom.findEventById(original).getContent().body };

  // A fresh client whose initial sync holds these eleven events (limited: bundles).
  const fresh = await login(args.bob.user, args.bob.password, { initialSyncLimit: 11 });
  const room = fresh.getRoom(roomId);
  const timeline = room.getLiveTimeline().getEvents().map((e) => e.getId());
  const hello = room.findEventById(original);
  const edited = {
    inTimeline: timeline.includes(original),
    body: hello?.getContent().body,
    replacingEventId: hello?.replacingEventId() ?? null,
    replacingEvent: hello?.replacingEvent()?.getId() ?? null,
    references: (hello?.getServerAggregatedRelation(sdk.RelationType.Reference)?.chunk ?? []).map((e) => e.event_id),
  };
  const rootEvent = room.findEventById(root);
  const bundled = rootEvent?.getServerAggregatedRelation(sdk.THREAD_RELATION_TYPE.name) ?? null;

  // The thread list panel (GET /threads) and the thread itself (GET /relations).
  await room.createThreadsTimelineSets();
  await room.fetchRoomThreads();
  const listed = room.threadsTimelineSets[0].getLiveTimeline().getEvents().map((e) => e.getId());
  const mine = room.threadsTimelineSets[1].getLiveTimeline().getEvents().map((e) => e.getId());
  const thread = room.getThread(root);
  await until(() => thread.initialEventsFetched);
  while (await fresh.paginateEventTimeline(thread.liveTimeline, { backwards: true, limit: 10 }));
  const threadState = {
    length: thread.length,
    latest: thread.replyToEvent?.getId() ?? null,
    participated: thread.hasCurrentUserParticipated,
    events: thread.events.map((e) => e.getId()),
  };

  // Reactions are aggregated by the client from /relations.
  const reactions = await fresh.relations(roomId, original, sdk.RelationType.Annotation, sdk.EventType.Reaction);
  const edits = await fresh.relations(roomId, original, sdk.RelationType.Replace, null);

  // Another fresh client whose initial sync holds only the last events: the original
  // comes with /messages (scrollback), edited.
  const late = await login(args.alice.user, args.alice.password, { initialSyncLimit: 2 });
  const lateRoom = late.getRoom(roomId);
  await until(async () => {
    if (lateRoom.findEventById(original)) return true;
    await late.scrollback(lateRoom, 5);
    return false;
  });
  const scrolled = lateRoom.findEventById(original);

  return {
    ids: { original, edit1, edit2, root, replies, thumbs, reference, last },
    duplicate,
    live,
    edited,
    bundled: bundled && { count: bundled.count, latest: bundled.latest_event?.event_id,
                          participated: bundled.current_user_participated },
    listed,
    mine,
    thread: threadState,
    reactions: reactions.events.map((e) => [e.getSender(), e.getRelation()?.key]),
    edits: edits.events.map((e) => e.getId()),
    scrolled: { body: scrolled.getContent().body, replacingEventId: scrolled.replacingEventId() ?? null },
  };
}
