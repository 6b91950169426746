"""The HTTP listeners' connections (`receive/connections.py`) against raw clients on loopback:
the cap and what makes room at it, the request-head timeout (driven by a manual clock), and
accepting when descriptors run out. A small aiohttp app stands for the receivers: `/hello`
answers at once, `/slow` holds its request until the test lets it go."""

from __future__ import annotations

import asyncio
import errno
import logging
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import pytest
from aiohttp import web

from sampler.receive import connections
from sampler.receive.connections import (
    ConnectionGuard,
    ConnectionLimits,
    ConnectionStats,
    DescriptorShortage,
    GuardedSite,
)
from sampler.tls import ServerTls
from tests.certificates import Certificates, make_certificates
from tests.unit.receive._support import run

HEAD = b"GET /hello HTTP/1.1\r\nHost: x\r\n"  # a request head without its final empty line


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Served:
    guard: ConnectionGuard
    port: int
    release: asyncio.Event  # lets the /slow requests answer
    clock: Clock
    clients: list[Client] = field(default_factory=list)

    @property
    def stats(self) -> ConnectionStats:
        return self.guard.stats

    async def connect(self, first: bytes = b"") -> Client:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        client = Client(reader, writer)
        self.clients.append(client)
        if first:
            await client.send(first)
        return client

    async def settle(self) -> None:
        """Lets the server take in what the clients did."""
        for _ in range(20):
            await asyncio.sleep(0.005)


@dataclass
class Client:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def status(self) -> int:
        line = await asyncio.wait_for(self.reader.readline(), 5)
        status = int(line.split()[1])
        while (await self.reader.readline()) not in (b"\r\n", b""):
            pass  # the headers
        return status

    async def closed_by_server(self, within_s: float = 2.0) -> bool:
        """True if the server closes the connection within ``within_s`` (reading what it
        sent before)."""
        try:
            async with asyncio.timeout(within_s):
                while await self.reader.read(65536):
                    pass
        except TimeoutError:
            return False
        except ConnectionError:
            pass
        return True

    async def close(self) -> None:
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except ConnectionError:
            pass


@asynccontextmanager
async def guarded(
    max_connections: int = 2,
    header_timeout_s: float = 5.0,
    ssl_context: ssl.SSLContext | None = None,
) -> AsyncIterator[Served]:
    release = asyncio.Event()
    clock = Clock()

    async def hello(_: web.Request) -> web.Response:
        return web.Response(text="hello")

    async def slow(_: web.Request) -> web.Response:
        await release.wait()
        return web.Response(text="done")

    guard = ConnectionGuard(
        "test", ConnectionLimits(max_connections, header_timeout_s), DescriptorShortage(), clock
    )
    app = web.Application(middlewares=[guard.middleware])
    app.router.add_get("/hello", hello)
    app.router.add_get("/slow", slow)
    runner = web.AppRunner(app, access_log=None, keepalive_timeout=600)
    await runner.setup()
    site = GuardedSite(runner, "127.0.0.1", 0, guard, ssl_context=ssl_context)
    await site.start()
    served = Served(guard, site.port, release, clock)
    try:
        yield served
    finally:
        release.set()
        for client in served.clients:
            await client.close()
        await runner.cleanup()


# -- the cap ---------------------------------------------------------------------------------


def test_at_the_cap_the_connection_waiting_longest_is_closed_for_the_new_one() -> None:
    async def scenario() -> None:
        async with guarded(max_connections=2) as served:
            oldest = await served.connect(HEAD)
            served.clock.now += 1
            younger = await served.connect(HEAD)
            await served.settle()
            newest = await served.connect(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")
            assert await newest.status() == 200
            assert await oldest.closed_by_server()
            assert not await younger.closed_by_server(0.2)
            assert served.stats == ConnectionStats(open=2, evicted=1)

    run(scenario())


def test_an_idle_keep_alive_connection_makes_room_like_a_waiting_one() -> None:
    async def scenario() -> None:
        async with guarded(max_connections=1) as served:
            idle = await served.connect(HEAD + b"\r\n")
            assert await idle.status() == 200
            newest = await served.connect(HEAD + b"\r\n")
            assert await newest.status() == 200
            assert await idle.closed_by_server()
            assert served.stats.evicted == 1

    run(scenario())


def test_at_the_cap_with_every_request_in_progress_a_new_connection_is_closed_at_once() -> None:
    async def scenario() -> None:
        async with guarded(max_connections=2) as served:
            busy = [await served.connect(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n") for _ in "ab"]
            await served.settle()
            refused = await served.connect()
            assert await refused.closed_by_server(0.5)
            assert served.stats == ConnectionStats(open=2, refused=1)
            served.release.set()
            assert [await client.status() for client in busy] == [200, 200]

    run(scenario())


# -- the request-head timeout ----------------------------------------------------------------


def test_a_request_head_not_complete_in_time_closes_the_connection() -> None:
    async def scenario() -> None:
        async with guarded(max_connections=10, header_timeout_s=5.0) as served:
            slowloris = await served.connect(HEAD[:10])
            busy = await served.connect(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
            await served.settle()
            served.clock.now += 4.9
            served.guard.sweep()
            await slowloris.send(HEAD[10:])  # more bytes do not buy more time
            served.clock.now += 0.2
            served.guard.sweep()
            assert await slowloris.closed_by_server()
            served.clock.now += 100  # a request in progress is not timed out
            served.guard.sweep()
            assert not await busy.closed_by_server(0.1)
            assert served.stats == ConnectionStats(open=1, timed_out=1)
            served.release.set()
            assert await busy.status() == 200

    run(scenario())


def test_between_requests_the_head_timeout_starts_at_the_next_first_byte() -> None:
    async def scenario() -> None:
        async with guarded(max_connections=10, header_timeout_s=5.0) as served:
            client = await served.connect(HEAD + b"\r\n")
            assert await client.status() == 200
            served.clock.now += 100  # idle: aiohttp's keepalive_timeout applies, not this
            served.guard.sweep()
            await client.send(HEAD)
            await served.settle()
            served.clock.now += 4.9
            served.guard.sweep()
            await client.send(b"\r\n")
            assert await client.status() == 200
            served.clock.now += 0.2
            served.guard.sweep()
            assert not await client.closed_by_server(0.1)
            assert served.stats.timed_out == 0

    run(scenario())


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("certs"))


def test_a_tls_connection_that_never_shakes_hands_is_closed_at_the_head_timeout(
    certs: Certificates, caplog: pytest.LogCaptureFixture
) -> None:
    tls = ServerTls(str(certs.server_cert), str(certs.server_key), "")

    async def scenario() -> None:
        async with guarded(header_timeout_s=0.3, ssl_context=tls.ssl_context) as served:
            silent = await served.connect()
            assert await silent.closed_by_server(2.0)
            assert served.stats.open == 0

    with caplog.at_level(logging.DEBUG):
        run(scenario())
    loud = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert not loud, [(r.name, r.getMessage()) for r in loud]


# -- out of descriptors ----------------------------------------------------------------------


def test_running_out_of_descriptors_is_one_warning_per_episode(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    shortage = DescriptorShortage(clock, quiet_s=10.0)
    error = OSError(errno.EMFILE, "Too many open files")
    with caplog.at_level(logging.INFO, logger=connections.__name__):
        for _ in range(1000):
            shortage.failed("OTLP/HTTP", error)
            clock.now += 0.25
            shortage.check()
        clock.now += 9.9
        shortage.check()
        clock.now += 0.2
        shortage.check()
        shortage.check()
        shortage.failed("metrics", error)  # a new episode
    messages = [(r.levelname, r.getMessage()) for r in caplog.records]
    assert [level for level, _ in messages] == ["WARNING", "INFO", "WARNING"]
    assert "Too many open files" in messages[0][1]
    assert "1000 accept(s) failed" in messages[1][1]
    assert shortage.failures == 1001


class _Exhausted:
    """A listening socket whose accept() fails as at the file-descriptor limit."""

    def accept(self) -> object:
        raise OSError(errno.EMFILE, "Too many open files")


def test_accepting_pauses_when_descriptors_run_out_and_resumes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(connections, "ACCEPT_PAUSE_S", 0.05)

    async def scenario() -> None:
        async with guarded() as served:
            guard, shortage = served.guard, served.guard._shortage
            assert not guard.accept(_Exhausted(), lambda: asyncio.Protocol(), None)  # type: ignore[arg-type]
            assert shortage.failures == 1
            original = guard.accept
            calls = []

            def exhausted_once(*args: object) -> bool:
                calls.append(args)
                if len(calls) == 1:
                    shortage.failures += 1
                    return False
                return original(*args)  # type: ignore[arg-type]

            monkeypatch.setattr(guard, "accept", exhausted_once)
            client = await served.connect(HEAD + b"\r\n")  # waits in the backlog, then served
            assert await client.status() == 200
            assert len(calls) >= 2

    run(scenario())
