// Server-side search as Element does it, through matrix-js-sdk's own calls:
// searchRoomEvents (order by recent, one event of context each side, profiles) and
// backPaginateRoomEventsSearch over next_batch until the end.
// args: {alice: {user, password}, bob: {user, password}}; run by tests/support/js_sdk.py.

export default async function ({ args, login }) {
  const alice = await login(args.alice.user, args.alice.password);
  const bob = await login(args.bob.user, args.bob.password);
  const { room_id: roomId } = await alice.createRoom({ preset: "public_chat", name: "Search" });
  await bob.joinRoom(roomId);
  const sent = [];
  for (let i = 0; i < 25; i++) {
    sent.push((await (i % 2 ? bob : alice).sendTextMessage(roomId, `needle number ${i}`)).event_id);
  }
  const last = (await alice.sendTextMessage(roomId, "haystack only")).event_id;
  const { room_id: otherRoom } = await alice.createRoom({ preset: "private_chat" });
  await alice.sendTextMessage(otherRoom, "needle elsewhere");

  const search = await alice.searchRoomEvents({ term: "needles", filter: { rooms: [roomId] } });
  const pages = [search.results.length];
  while (search.next_batch) {
    await alice.backPaginateRoomEventsSearch(search);
    pages.push(search.results.length);
  }
  const newest = search.results[0].context;
  return {
    sent, last, pages, count: search.count, highlights: search.highlights,
    ids: search.results.map((r) => r.context.getEvent().getId()),
    ranks: search.results.map((r) => r.rank),
    newestTimeline: newest.getTimeline().map((e) => e.getId()),
    newestIndex: newest.getOurEventIndex(),
    everywhere: (await alice.searchRoomEvents({ term: "needle" })).count,
  };
}
