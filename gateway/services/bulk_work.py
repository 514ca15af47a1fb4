"""Bulk work (a big room's state and auth chain): the garbage collector waits, and the
checks of each event run in worker processes.

Checking tens of thousands of events allocates hundreds of thousands of containers,
which triggers full collections (each a walk of the whole heap: a tenth of a second and
more per collection, several per join, finding next to nothing: the events are trees).
``gc_paused`` turns automatic collection off while such work runs; the collector runs
again as usual afterwards. Nestable and shared by concurrent tasks: it is on again when
the last of them is done.

``CheckProcesses``: steps 1-3 of the PDU receipt checks (format and event ID,
signatures, content hash: ``federation.pdu_checks``) are pure and mostly Python, so
worker threads share one core (the GIL); worker processes, started with the server,
check slices of a big batch on every core while this process parses, authorises and
writes. A slice goes out as the events' JSON (bytes) with the verify keys the batch
needs, and comes back as one verdict per event (event ID, outcome, reason); nothing of
the event is trusted from the worker but what this process asked it to compute. A
worker that dies or answers nonsense is replaced, and its slice is checked here.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import pickle
import struct
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

_holders = 0
_was_enabled = False


@contextmanager
def gc_paused() -> Iterator[None]:
    global _holders, _was_enabled
    if _holders == 0:
        _was_enabled = gc.isenabled()
        gc.disable()
    _holders += 1
    try:
        yield
    finally:
        _holders -= 1
        if _holders == 0 and _was_enabled:
            gc.enable()


# --- the checks a worker runs (pure: JSON and keys in, verdicts out) -------------------------

#: Outcomes of ``check_batch``: the event passed steps 1-3; it is not a valid event
#: (no ID known); it is for another room; its signatures fail; its content hash fails
#: (the redacted copy comes with the verdict).
OK, MALFORMED, OTHER_ROOM, BAD_SIGNATURE, REDACTED = range(5)

#: (event ID or None, outcome, reason or None, the redacted JSON for REDACTED or None)
Verdict = tuple[str | None, int, str | None, dict | None]


def check_batch(pdu_jsons: Sequence[Any], room_version: Any, room_id: str, keys_for: Any,
                origin: str | None) -> list[Verdict]:
    """Steps 1-3 (``federation.pdu_checks``) for each event of a batch of outliers,
    as verdicts (see ``Verdict``). The signature check reuses the redacted, canonical
    bytes the format check made for the event ID."""
    from federation.pdu_checks import Drop, Redacted, check_format, check_signatures_and_hashes

    out: list[Verdict] = []
    for pdu_json in pdu_jsons:
        fmt = check_format(pdu_json, room_version)
        if isinstance(fmt, Drop):
            out.append((None, MALFORMED, fmt.reason, None))
            continue
        pdu = fmt.pdu
        if pdu.room_id != room_id:
            out.append((pdu.event_id, OTHER_ROOM, "event is for another room", None))
            continue
        checked = check_signatures_and_hashes(pdu_json, room_version, keys_for, origin=origin,
                                              signed_bytes=fmt.signed_bytes)
        if isinstance(checked, Drop):
            out.append((pdu.event_id, BAD_SIGNATURE, checked.reason, None))
        elif isinstance(checked, Redacted):
            out.append((pdu.event_id, REDACTED, checked.reason, checked.pdu_json))
        else:
            out.append((pdu.event_id, OK, None, None))
    return out


def encode_event(pdu_json: Any) -> bytes:
    """An event's JSON for a worker, which parses back the very same values: orjson,
    or, for what orjson does not keep (integers beyond 64 bits, lone surrogates, NaN),
    the standard library's, marked by a leading space (see ``decode_event``)."""
    import json

    import orjson

    try:
        return orjson.dumps(pdu_json)
    except (TypeError, orjson.JSONEncodeError):
        return b" " + json.dumps(pdu_json, allow_nan=True).encode("ascii")


def decode_event(raw: bytes | str) -> Any:
    """The JSON of one event: as ``encode_event`` made it, or as received."""
    import orjson

    from federation.canonical_json import parse_json

    if raw[:1] in (b" ", " "):
        return parse_json(raw, allow_constants=True)
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return parse_json(raw, allow_constants=True)


def _check_job(raw_events: Sequence[bytes], room_version_id: str, room_id: str,
               keys: Mapping[tuple[str, str], tuple[bytes, int | None, int | None]],
               origin: str | None) -> list[Verdict]:
    """What a worker does with one slice: parse, build the key lookup, check."""
    import nacl.signing

    from federation.room_versions import get_room_version
    from federation.signing import KnownKey

    known = {k: KnownKey(nacl.signing.VerifyKey(raw), until, fetched) for k, (raw, until, fetched) in keys.items()}
    rv = get_room_version(room_version_id)
    return check_batch([decode_event(r) for r in raw_events], rv, room_id,
                       lambda server, key_id: known.get((server, key_id)), origin)


# --- the worker processes ------------------------------------------------------------------

_HEADER = struct.Struct("!I")


class WorkerGone(Exception):
    """The worker died, or its answer was not one."""


class _Worker:
    """One worker process: a job at a time, pickled, length-prefixed, over its stdin and
    stdout (a child of this process: its answers are as trusted as our own code)."""

    def __init__(self, proc: asyncio.subprocess.Process):
        self.proc = proc
        #: The answer being read (its own task: a caller cancelled meanwhile does not
        #: leave half a frame read).
        self.answer: asyncio.Future | None = None

    @classmethod
    async def spawn(cls) -> "_Worker":
        root = str(Path(__file__).resolve().parents[2])
        code = f"import sys; sys.path.insert(0, {root!r}); from gateway.services.bulk_work import _serve; _serve()"
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", code, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
        worker = cls(proc)
        try:
            answer = await worker.call("ping")
        except BaseException:  # cancelled (the server stopping) or gone: no orphan left
            worker.kill()
            raise
        if answer != "pong":
            worker.kill()
            raise WorkerGone("the worker did not answer its first call")
        return worker

    @property
    def alive(self) -> bool:
        return self.proc.returncode is None

    async def call(self, *job: Any) -> Any:
        self.answer = None
        body = pickle.dumps(job, protocol=pickle.HIGHEST_PROTOCOL)
        try:
            self.proc.stdin.write(_HEADER.pack(len(body)) + body)
        except OSError as e:
            self.kill()
            raise WorkerGone(str(e)) from None
        self.answer = asyncio.ensure_future(self._read())
        try:
            await self.proc.stdin.drain()
        except OSError:
            pass  # the read reports it
        ok, answer = await asyncio.shield(self.answer)
        if not ok:
            raise WorkerGone(f"the worker failed: {answer}")
        return answer

    async def _read(self) -> tuple[bool, Any]:
        try:
            size, = _HEADER.unpack(await self.proc.stdout.readexactly(_HEADER.size))
            return pickle.loads(await self.proc.stdout.readexactly(size))
        except (OSError, EOFError, asyncio.IncompleteReadError, pickle.UnpicklingError, ValueError) as e:
            self.kill()
            raise WorkerGone(str(e)) from None

    def kill(self) -> None:
        if self.alive:
            try:
                self.proc.kill()
            except ProcessLookupError:
                pass

    async def close(self) -> None:
        if self.alive:
            try:
                self.proc.stdin.close()
                await asyncio.wait_for(self.proc.wait(), 5)
            except (OSError, asyncio.TimeoutError):
                self.kill()
                await self.proc.wait()


#: Seconds without a job after which the worker processes exit (each holds ~26 MiB;
#: the next big batch, or ``start`` as a join begins, starts them again).
IDLE_SECONDS = 120.0


class CheckProcesses:
    """A pool of ``count`` worker processes (0: none, the callers check in threads),
    started when wanted (``start``, in the background: a remote join calls it as it
    begins, so they are ready when its answer comes; a big batch starts them otherwise)
    and retired after ``idle_seconds`` without a job, so a server that is not joining
    big rooms does not hold their memory."""

    def __init__(self, count: int, *, idle_seconds: float = IDLE_SECONDS):
        self.count = max(0, count)
        self.idle_seconds = idle_seconds
        self._idle: asyncio.Queue[_Worker | None] = asyncio.Queue()
        self._workers: list[_Worker] = []
        self._starting: asyncio.Task | None = None
        self._closed = False
        self._users = 0  # callers inside run_lazy
        self._retire_timer: asyncio.TimerHandle | None = None
        self._retiring: set[asyncio.Future] = set()

    def start(self) -> None:
        if self.count and self._starting is None and not self._closed:
            self._starting = asyncio.ensure_future(self._spawn(self.count))
        if self._users == 0:
            self._retire_later()  # a warm-up no batch follows still ends

    @property
    def running(self) -> int:
        """Worker processes alive now."""
        return self._live()

    def _retire_later(self) -> None:
        if self._retire_timer is not None:
            self._retire_timer.cancel()
            self._retire_timer = None
        if self._starting is not None and not self._closed:
            self._retire_timer = asyncio.get_running_loop().call_later(self.idle_seconds, self._retire)

    def _retire(self) -> None:
        """No job for ``idle_seconds``: the workers exit (their stdin closes)."""
        self._retire_timer = None
        if self._users or self._closed or self._starting is None:
            return
        if not self._starting.done():
            self._retire_later()
            return
        workers, self._workers = self._workers, []
        self._idle = asyncio.Queue()
        self._starting = None
        for w in workers:
            task = asyncio.ensure_future(w.close())
            self._retiring.add(task)
            task.add_done_callback(self._retiring.discard)

    async def _spawn(self, n: int) -> None:
        for _ in range(n):
            if self._closed:
                return
            try:
                worker = await _Worker.spawn()
            except (OSError, WorkerGone) as e:
                log.warning("a check worker process could not start: %s", e)
                continue
            self._workers.append(worker)
            self._idle.put_nowait(worker)
        if self._live() == 0:
            log.warning("no check worker process is running: big batches are checked in threads")
            self.count = 0
            self._idle.put_nowait(None)  # wakes whoever waits for a worker

    @property
    def enabled(self) -> bool:
        return self.count > 0 and not self._closed

    def _live(self) -> int:
        return sum(1 for w in self._workers if w.alive)

    async def run(self, *job: Any) -> Any:
        """The answer of one worker to ``job`` (see ``_serve``); ``WorkerGone`` when no
        worker could do it (none started, or it died: the caller does the work)."""
        return await self.run_lazy(lambda: job)

    async def run_lazy(self, make_job: Callable[[], tuple]) -> Any:
        """``run(*make_job())``, the job made once a worker is free (a big batch's slices
        are not all encoded at once)."""
        if not self.enabled:
            raise WorkerGone("no worker processes")
        self._users += 1
        if self._retire_timer is not None:
            self._retire_timer.cancel()
            self._retire_timer = None
        try:
            return await self._run_lazy(make_job)
        finally:
            self._users -= 1
            if self._users == 0:
                self._retire_later()

    async def _run_lazy(self, make_job: Callable[[], tuple]) -> Any:
        if self._starting is None:
            self.start()
        while True:
            self._reap()
            if self._idle.empty() and not self._starting.done():
                await asyncio.shield(self._starting)
            if self._live() == 0:
                raise WorkerGone("no worker process is running")
            worker = await self._idle.get()
            if worker is None:
                self._idle.put_nowait(None)
                raise WorkerGone("no worker process is running")
            if worker.alive:
                break
        done = False
        try:
            answer = await worker.call(*make_job())
            done = True
            return answer
        except WorkerGone:
            done = True
            self._replace(worker)
            raise
        finally:
            if not done:  # cancelled mid-call: its answer is read and dropped, then it is free
                asyncio.ensure_future(self._drain(worker))
            elif worker.alive:
                self._idle.put_nowait(worker)

    def _reap(self) -> None:
        """Workers found dead (killed, crashed) are replaced."""
        dead = [w for w in self._workers if not w.alive]
        if dead and (self._starting is None or self._starting.done()) and not self._closed:
            log.warning("%d check worker processes died; starting others", len(dead))
            for w in dead:
                self._workers.remove(w)
            idle = []
            while not self._idle.empty():
                idle.append(self._idle.get_nowait())
            for w in idle:
                if w is None or w.alive:
                    self._idle.put_nowait(w)
            self._starting = asyncio.ensure_future(self._spawn(len(dead)))

    async def _drain(self, worker: _Worker) -> None:
        try:
            if worker.answer is not None:
                await worker.answer
        except WorkerGone:
            self._replace(worker)
            return
        if worker.alive and worker in self._workers:  # not retired meanwhile
            self._idle.put_nowait(worker)

    def _replace(self, worker: _Worker) -> None:
        worker.kill()
        if worker not in self._workers:  # retired meanwhile: nothing to replace
            return
        self._workers.remove(worker)
        if not self._closed and (self._starting is None or self._starting.done()):
            log.warning("a check worker process died; starting another")
            self._starting = asyncio.ensure_future(self._spawn(1))

    async def check(self, pdu_jsons: Sequence[Any], room_version: Any, room_id: str,
                    keys: Mapping[tuple[str, str], Any], origin: str | None) -> list[Verdict]:
        """``check_batch`` in a worker. ``pdu_jsons``: events' JSON, or their JSON text
        (sent as it is). ``keys``: (server, key ID) -> ``KnownKey``."""
        wire_keys = {k: (bytes(v.verify_key), v.valid_until_ts, v.fetched_ts) for k, v in keys.items()}
        verdicts = await self.run_lazy(lambda: ("check", [j if isinstance(j, (bytes, str)) else encode_event(j) for j in pdu_jsons],
                                                room_version.identifier, room_id, wire_keys, origin))
        if not isinstance(verdicts, list) or len(verdicts) != len(pdu_jsons):
            raise WorkerGone("the worker's answer does not match the batch")
        return verdicts

    async def close(self) -> None:
        self._closed = True
        if self._retire_timer is not None:
            self._retire_timer.cancel()
            self._retire_timer = None
        if self._starting is not None:
            self._starting.cancel()
            try:
                await self._starting
            except (asyncio.CancelledError, Exception):  # noqa: BLE001 - stopping anyway
                pass
        workers, self._workers = self._workers, []
        await asyncio.gather(*(w.close() for w in workers), *self._retiring)


_JOBS = {"check": _check_job, "ping": lambda: "pong"}


def _serve() -> None:
    """A worker process's loop: one job a time from stdin, its answer to stdout, until
    stdin closes (the server stopped or died)."""
    # Only frames go to the real stdout: anything printed goes to stderr.
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    inp = sys.stdin.buffer
    import federation.pdu_checks  # noqa: F401 - loaded before the first job
    gc.freeze()
    while True:
        header = inp.read(_HEADER.size)
        if len(header) < _HEADER.size:
            return
        size, = _HEADER.unpack(header)
        kind, *args = pickle.loads(inp.read(size))
        try:
            answer = (True, _JOBS[kind](*args))
        except Exception as e:  # noqa: BLE001 - reported to the server, which does the work itself
            answer = (False, f"{type(e).__name__}: {e}")
        body = pickle.dumps(answer, protocol=pickle.HIGHEST_PROTOCOL)
        out.write(_HEADER.pack(len(body)) + body)
        out.flush()
