import gc

from gateway.services.bulk_work import gc_paused


def test_collection_waits_while_any_holder_is_in_and_resumes_after_the_last():
    assert gc.isenabled()
    first, second = gc_paused(), gc_paused()
    first.__enter__()
    assert not gc.isenabled()
    second.__enter__()
    first.__exit__(None, None, None)  # not nested: the other holder is still in
    assert not gc.isenabled()
    second.__exit__(None, None, None)
    assert gc.isenabled()


def test_a_collector_turned_off_before_stays_off():
    gc.disable()
    try:
        with gc_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_an_error_inside_turns_collection_back_on():
    try:
        with gc_paused():
            raise ValueError("boom")
    except ValueError:
        pass
    assert gc.isenabled()


# --- the check worker processes


def _signed_batch(n: int = 4):
    """A remote's room: ``n`` signed events, the key lookup, the room version."""
    from federation.events import build_event
    from federation.room_versions import get_room_version
    from federation.signing import KnownKey, generate_signing_key, sign_event

    rv = get_room_version("10")
    key = generate_signing_key("k1")
    room_id = "!room:remote.example"
    events = []
    for i in range(n):
        ev = build_event(rv, type="m.room.message", sender="@carol:remote.example", room_id=room_id,
                         content={"body": f"m{i}", "n": 2 ** 70 if i == 0 else i}, prev_event_ids=[],
                         auth_event_ids=[], depth=i + 1, origin_server_ts=1_700_000_000_000)
        events.append(sign_event(ev, "remote.example", key, room_version=rv))
    keys = {("remote.example", f"ed25519:{key.version}"): KnownKey(key.verify_key)}
    return rv, room_id, events, keys


async def test_worker_processes_give_the_verdicts_of_this_process():
    """A slice checked in a worker process gets the verdicts ``check_batch`` gives here:
    a good event, a forged signature, a tampered content (the redacted copy comes
    back), another room's event, malformed ones (one with an integer beyond the
    canonical JSON range, which orjson cannot encode either)."""
    from federation.signing import generate_signing_key, sign_event
    from gateway.services import bulk_work
    from gateway.services.bulk_work import CheckProcesses, check_batch

    rv, room_id, events, keys = _signed_batch()
    forged = sign_event({**events[1], "content": {"body": "forged"}, "signatures": {}}, "remote.example",
                        generate_signing_key("k1"), room_version=rv)
    tampered = {**events[2], "content": {"body": "changed"}}
    other_room = {**events[3], "room_id": "!other:remote.example"}
    batch = [events[0], forged, tampered, other_room, {"type": "m.room.message"}, events[3]]

    def lookup(server, key_id):
        return keys.get((server, key_id))

    here = check_batch(batch, rv, room_id, lookup, "remote.example")
    assert [v[1] for v in here] == [bulk_work.MALFORMED, bulk_work.BAD_SIGNATURE, bulk_work.REDACTED,
                                    bulk_work.OTHER_ROOM, bulk_work.MALFORMED, bulk_work.OK]
    procs = CheckProcesses(2)
    procs.start()
    try:
        there = await procs.check(batch, rv, room_id, keys, "remote.example")
    finally:
        await procs.close()
    assert [v[:3] for v in there] == [v[:3] for v in here]
    assert there[2][3] == here[2][3] and there[2][3]["content"] == {}


async def test_a_dead_worker_is_replaced_and_a_cancelled_call_frees_its_worker():
    import asyncio

    from gateway.services.bulk_work import CheckProcesses, WorkerGone

    rv, room_id, events, keys = _signed_batch()
    procs = CheckProcesses(1)
    try:
        assert await procs.run("ping") == "pong"  # started on first use
        worker = procs._workers[0]
        worker.proc.kill()
        await worker.proc.wait()
        assert await procs.run("ping") == "pong"  # a new one
        assert procs._workers[0] is not worker
        # A call cancelled mid-way: its answer is drained, the worker serves the next.
        call = asyncio.ensure_future(procs.check(events * 200, rv, room_id, keys, None))
        worker = procs._workers[0]
        while worker.answer is None or worker.answer.done():  # until the job is out
            await asyncio.sleep(0.001)
        call.cancel()
        verdicts = await procs.check(events, rv, room_id, keys, None)
        assert len(verdicts) == len(events)
    finally:
        await procs.close()
    try:
        await procs.run("ping")
    except WorkerGone:
        pass
    else:
        raise AssertionError("a closed pool answered")


async def test_idle_workers_exit_and_start_again_when_wanted():
    """Without a job for ``idle_seconds`` the workers exit (a server not joining big
    rooms holds no memory for them); the next job, or a warm-up, starts them again; a
    job running meanwhile keeps them."""
    import asyncio

    from gateway.services.bulk_work import CheckProcesses

    rv, room_id, events, keys = _signed_batch()
    procs = CheckProcesses(1, idle_seconds=0.2)
    try:
        assert await procs.run("ping") == "pong"
        worker = procs._workers[0]
        await asyncio.wait_for(worker.proc.wait(), 60)  # retired, not killed
        assert worker.proc.returncode == 0 and procs.running == 0
        assert await procs.run("ping") == "pong"
        assert procs._workers[0] is not worker and procs.running == 1
        await asyncio.wait_for(procs._workers[0].proc.wait(), 60)

        procs.start()  # a warm-up (a join begins) that no batch follows
        while procs.running == 0:
            await asyncio.sleep(0.01)
        warmed = procs._workers[0]
        await asyncio.wait_for(warmed.proc.wait(), 60)
        assert procs.running == 0

        slow = CheckProcesses(1, idle_seconds=0.001)
        try:
            verdicts = await slow.check(events * 300, rv, room_id, keys, None)
            assert len(verdicts) == len(events) * 300  # not retired under the job
        finally:
            await slow.close()
    finally:
        await procs.close()


async def test_no_processes_means_the_caller_checks():
    from gateway.services.bulk_work import CheckProcesses, WorkerGone

    procs = CheckProcesses(0)
    assert not procs.enabled
    try:
        await procs.run("ping")
    except WorkerGone:
        return
    raise AssertionError("a pool of no processes answered")
