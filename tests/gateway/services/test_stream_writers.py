"""Forwarding writes to a stream's writer (gateway/services/stream_writers.py): the
caller's retries and errors, the writer's secret check, against a real replication
listener on loopback."""

from __future__ import annotations

import pytest
from aiohttp import web

from gateway.config.workers import InstanceLocation, WorkerConfig
from gateway.http import MatrixError
from gateway.replication_api import build_app
from gateway.services.stream_writers import RETRY_DELAYS_S, StreamWriters, forward_calls
from tests.conftest import free_port

SECRET = "s3cret"


def config(port: int, me: str, secret: str | None = SECRET) -> WorkerConfig:
    return WorkerConfig(worker_app="gateway.app.generic_worker" if me != "main" else None, instance_name=me,
                        instance_map={"main": InstanceLocation("127.0.0.1", port)},
                        worker_replication_secret=secret)


class Typing:
    """A stand-in service with one write method."""

    def __init__(self):
        self.calls: list[tuple] = []

    async def set_typing(self, user_id: str, room_id: str, typing: bool, timeout_ms: int | None) -> None:
        if room_id == "!nope:x":
            raise MatrixError.forbidden("You are not joined to !nope:x")
        if room_id == "!bug:x":
            raise RuntimeError("a bug in the writer")
        self.calls.append((user_id, room_id, typing, timeout_ms))


class Writer:
    """The main process's replication listener, serving ``Typing.set_typing``."""

    def __init__(self, port: int, secret: str | None = SECRET):
        self.port, self.service = port, Typing()
        self.writers = StreamWriters(config(port, "main", secret))
        forward_calls(self.writers, "typing", self.service, ("set_typing",), prefix="typing")
        self.runner: web.AppRunner | None = None

    async def start(self) -> None:
        from gateway.http.middleware import error_middleware

        app = web.Application(middlewares=[error_middleware])
        app.add_subapp("/_synapse/replication", build_app(self.writers))
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        await self.runner.cleanup()


@pytest.fixture
async def writer():
    w = Writer(free_port())
    await w.start()
    yield w
    await w.stop()


def worker(port: int, *, secret: str | None = SECRET, on_sleep=None) -> tuple[StreamWriters, Typing, list[float]]:
    slept: list[float] = []

    async def sleep(delay: float) -> None:
        slept.append(delay)
        if on_sleep is not None:
            await on_sleep(len(slept))

    writers = StreamWriters(config(port, "w1", secret), sleep=sleep)
    service = Typing()
    forward_calls(writers, "typing", service, ("set_typing",), prefix="typing")
    return writers, service, slept


async def test_a_write_runs_on_the_writer(writer):
    writers, local, slept = worker(writer.port)
    try:
        await local.set_typing("@a:x", "!r:x", True, 5000)
    finally:
        await writers.close()
    assert writer.service.calls == [("@a:x", "!r:x", True, 5000)] and local.calls == [] and slept == []


async def test_the_writers_matrix_errors_come_back_as_they_are_and_its_bugs_as_502(writer):
    writers, local, _ = worker(writer.port)
    try:
        with pytest.raises(MatrixError) as e:
            await local.set_typing("@a:x", "!nope:x", True, None)
        assert (e.value.status, e.value.errcode, e.value.error) == (403, "M_FORBIDDEN",
                                                                    "You are not joined to !nope:x")
        with pytest.raises(MatrixError) as e:
            await local.set_typing("@a:x", "!bug:x", True, None)
        assert (e.value.status, e.value.errcode) == (502, "M_UNKNOWN") and "typing" in e.value.error
    finally:
        await writers.close()


async def test_a_writer_that_comes_back_gets_the_call_again():
    port = free_port()
    w = Writer(port)

    async def on_sleep(n: int) -> None:
        if n == 2:  # the writer is back before the third attempt
            await w.start()

    writers, local, slept = worker(port, on_sleep=on_sleep)
    try:
        await local.set_typing("@a:x", "!r:x", False, None)
    finally:
        await writers.close()
        await w.stop()
    assert slept == list(RETRY_DELAYS_S[:2])
    assert w.service.calls == [("@a:x", "!r:x", False, None)]


async def test_a_writer_that_stays_down_is_a_503_naming_it():
    writers, local, slept = worker(free_port())
    try:
        with pytest.raises(MatrixError) as e:
            await local.set_typing("@a:x", "!r:x", True, None)
    finally:
        await writers.close()
    assert (e.value.status, e.value.errcode) == (503, "M_UNKNOWN")
    assert "typing" in e.value.error and "(main)" in e.value.error
    assert slept == list(RETRY_DELAYS_S)


async def test_no_instance_map_entry_is_a_503_naming_the_writer():
    writers = StreamWriters(WorkerConfig(worker_app="gateway.app.generic_worker", instance_name="w1"))
    with pytest.raises(MatrixError) as e:
        await writers.call("typing", "typing.set_typing", {})
    assert e.value.status == 503 and "instance_map" in e.value.error


@pytest.mark.parametrize("secret", [None, "wrong"])
async def test_a_caller_without_the_secret_is_refused(writer, secret):
    """Not the client's fault: a 502 naming the secret, not the writer's 403."""
    writers, local, slept = worker(writer.port, secret=secret)
    try:
        with pytest.raises(MatrixError) as e:
            await local.set_typing("@a:x", "!r:x", True, None)
    finally:
        await writers.close()
    assert (e.value.status, e.value.errcode) == (502, "M_UNKNOWN") and "worker_replication_secret" in e.value.error
    assert writer.service.calls == [] and slept == []


def test_the_secret_is_compared_whole():
    writers = StreamWriters(config(1, "main"))
    assert writers.authorized(f"Bearer {SECRET}")
    for header in (None, "", SECRET, f"Bearer {SECRET}x", f"Bearer {SECRET[:-1]}", f"bearer {SECRET}"):
        assert not writers.authorized(header)
    assert StreamWriters(config(1, "main", secret=None)).authorized(None)  # no secret: the network is trusted
