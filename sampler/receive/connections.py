"""Connections of the HTTP listeners (OTLP/HTTP and the metrics endpoint), accepted here within
a budget before aiohttp sees them.

asyncio's own server (``loop.create_server``) accepts every connection that arrives and keeps
it for as long as the client likes: 1,100 idle connections took a sampler to its 1,024
file-descriptor limit, after which no listener, the metrics one included, could accept, and
asyncio logged a traceback for every failed accept (372 MB of log in 80 s). Here:

- **a cap per listener** (``ConnectionLimits.max_connections``). At the cap, the connection that
  has waited longest *without a request in progress* (waiting for a request's head, or idle
  between requests) is closed to make room for the new one; when every connection has a
  request in progress, the new one is closed as soon as it is accepted. So a flood of idle or
  slow connections cannot lock a sender out, and never holds more descriptors than the cap;
- **a header timeout** (``header_timeout_s``): a request's head (and, on a new connection, the
  TLS handshake) must arrive within it, counted from the connection's opening or from the
  request's first byte; otherwise the connection is closed (a slowloris client trickling
  header bytes holds it no longer). Between requests, aiohttp's ``keepalive_timeout`` applies;
- **out of descriptors**, accepting pauses briefly and the episode is logged once
  (``DescriptorShortage``), not once per failed accept.

Where a request's head ends is known from aiohttp itself: ``ConnectionGuard.middleware`` runs
when aiohttp hands a parsed request to the application, and returns when the handler is done.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
import ssl
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

_log = logging.getLogger(__name__)

# accept() errors that mean "no descriptor or buffer for now", not a broken listener
_SHORTAGE_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
ACCEPT_BATCH = 8  # connections accepted per wake-up: each costs ~0.5 ms (aiohttp's protocol)
ACCEPT_PAUSE_S = 0.25  # out of descriptors: accept again after this long
SWEEP_PERIOD_S = 0.25  # how often header timeouts are looked for (their resolution)
SHORTAGE_QUIET_S = 10.0  # a shortage episode is over after this long without a failed accept
BACKLOG = 128


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    max_connections: int
    header_timeout_s: float

    def __post_init__(self) -> None:
        if self.max_connections < 1:
            raise ValueError(f"max_connections must be at least 1, got {self.max_connections}")
        if self.header_timeout_s <= 0:
            raise ValueError(f"header_timeout_s must be positive, got {self.header_timeout_s}")


@dataclass(slots=True)
class ConnectionStats:
    """Counters of one listener (read by the metrics layer)."""

    open: int = 0  # connections held now
    refused: int = 0  # closed as soon as accepted: at the cap, every connection busy
    evicted: int = 0  # closed to make room for a new one: no request in progress
    timed_out: int = 0  # closed for not sending a request's head within the header timeout


@dataclass(slots=True)
class DescriptorShortage:
    """Accepts that failed for want of file descriptors (or kernel buffers), process-wide,
    logged as episodes: a warning when the first fails, a line when accepting has worked again
    for ``quiet_s``. Never one line per failed accept."""

    clock: Callable[[], float] = time.monotonic
    quiet_s: float = SHORTAGE_QUIET_S
    failures: int = 0  # accepts failed so far
    _started: float | None = None  # the current episode
    _last: float = 0.0
    _failures_before: int = 0

    def failed(self, listener: str, error: OSError) -> None:
        now = self.clock()
        self.failures += 1
        self._last = now
        if self._started is None:
            self._started = now
            self._failures_before = self.failures - 1
            _log.warning(
                "cannot accept connections on the %s listener: %s; new connections wait in "
                "the kernel's queue until descriptors are free (raise the file-descriptor "
                "limit, or lower max_connections: docs/operations.md)",
                listener,
                error.strerror or error,
            )

    def check(self) -> None:
        """Ends the episode once no accept has failed for ``quiet_s``."""
        if self._started is not None and self.clock() - self._last >= self.quiet_s:
            _log.info(
                "accepting connections again: %d accept(s) failed for want of descriptors "
                "over %.1fs",
                self.failures - self._failures_before,
                self._last - self._started,
            )
            self._started = None


class _Connection(asyncio.Protocol):
    """One accepted connection: aiohttp's protocol behind a thin layer that tells the guard
    when a new request begins (a byte arrives on an idle connection) and when it is gone."""

    __slots__ = ("guard", "inner", "transport", "sock", "task", "since", "active")

    def __init__(self, guard: ConnectionGuard, inner: asyncio.Protocol, sock: socket.socket):
        self.guard = guard
        self.inner = inner
        self.sock = sock
        self.transport: asyncio.Transport | None = None
        self.task: asyncio.Task[Any] | None = None  # the handshake, until connection_made
        self.since = 0.0  # when it began waiting (for a head) or became idle
        self.active = False  # a request is in progress

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        self.guard._bytes_arrived(self)
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self.guard._forget(self)
        self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()

    def close_now(self) -> None:
        """Closes at once, without a goodbye: for connections that sent no request."""
        if self.transport is not None:
            self.transport.abort()
        elif self.task is not None:
            self.task.cancel()  # still in its TLS handshake: the socket is closed with it
        else:
            self.sock.close()


class ConnectionGuard:
    """The connections of one listener: the cap, the header timeout, the counts.

    Invariant: every connection accepted and not yet closed is in ``_open``, and in exactly one
    of ``_waiting`` (no complete request head yet), ``_idle`` (between requests) or neither
    (a request in progress); ``_waiting`` and ``_idle`` are ordered by ``since``.
    """

    def __init__(
        self,
        name: str,
        limits: ConnectionLimits,
        shortage: DescriptorShortage,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.limits = limits
        self.stats = ConnectionStats()
        self._shortage = shortage
        self._clock = clock
        self._open: set[_Connection] = set()
        self._by_protocol: dict[asyncio.BaseProtocol, _Connection] = {}
        self._waiting: OrderedDict[_Connection, None] = OrderedDict()
        self._idle: OrderedDict[_Connection, None] = OrderedDict()

    @property
    def middleware(self) -> Middleware:
        """An aiohttp middleware marking a connection's request as begun and ended: give it to
        the listener's ``web.Application``."""

        @web.middleware
        async def track_requests(request: web.Request, handler: Handler) -> web.StreamResponse:
            connection = self._by_protocol.get(request.protocol)
            if connection is None:  # not accepted through this guard (a test's own server)
                return await handler(request)
            self._begin(connection)
            try:
                return await handler(request)
            finally:
                self._end(connection)

        return track_requests

    # -- accepting ---------------------------------------------------------------------------

    def accept(
        self,
        listening: socket.socket,
        protocol_factory: Callable[[], asyncio.Protocol],
        ssl_context: ssl.SSLContext | None,
    ) -> bool:
        """Accepts what is waiting on ``listening`` (a batch at most); False when accepting
        must pause because descriptors ran out."""
        loop = asyncio.get_running_loop()
        for _ in range(ACCEPT_BATCH):
            try:
                sock, _ = listening.accept()
            except (BlockingIOError, InterruptedError):
                break
            except ConnectionAbortedError:
                continue
            except OSError as error:
                if error.errno in _SHORTAGE_ERRNOS:
                    self._shortage.failed(self.name, error)
                    return False
                _log.debug("accept on the %s listener failed: %s", self.name, error)
                break
            if len(self._open) >= self.limits.max_connections and not self._make_room():
                self.stats.refused += 1
                sock.close()
                continue
            sock.setblocking(False)
            connection = _Connection(self, protocol_factory(), sock)
            self._open.add(connection)
            self._by_protocol[connection.inner] = connection
            self._wait(connection)
            connection.task = loop.create_task(self._connect(loop, connection, ssl_context))
        self._shortage.check()
        self.stats.open = len(self._open)
        return True

    async def _connect(
        self,
        loop: asyncio.AbstractEventLoop,
        connection: _Connection,
        ssl_context: ssl.SSLContext | None,
    ) -> None:
        try:
            await loop.connect_accepted_socket(
                lambda: connection,
                connection.sock,
                ssl=ssl_context,
                ssl_handshake_timeout=self.limits.header_timeout_s if ssl_context else None,
            )
        except (OSError, asyncio.CancelledError) as error:
            # a failed or abandoned TLS handshake: the client gets nothing, the log a line at
            # DEBUG (the sender's mistake, or a scanner)
            _log.debug(
                "connection to the %s listener closed before a request: %r", self.name, error
            )
            connection.sock.close()
            self._forget(connection)
        finally:
            connection.task = None

    def _make_room(self) -> bool:
        """Closes the connection that has waited longest without a request in progress."""
        candidates = [q for q in (self._waiting, self._idle) if q]
        if not candidates:
            return False
        oldest = min((next(iter(q)) for q in candidates), key=lambda c: c.since)
        self.stats.evicted += 1
        self._close(oldest)
        return True

    # -- states ------------------------------------------------------------------------------

    def _wait(self, connection: _Connection) -> None:
        self._idle.pop(connection, None)
        self._waiting.pop(connection, None)
        connection.since = self._clock()
        self._waiting[connection] = None

    def _bytes_arrived(self, connection: _Connection) -> None:
        if connection in self._idle:
            self._wait(connection)  # the next request begins: its head has the timeout

    def _begin(self, connection: _Connection) -> None:
        self._waiting.pop(connection, None)
        self._idle.pop(connection, None)
        connection.active = True

    def _end(self, connection: _Connection) -> None:
        connection.active = False
        if connection in self._open:
            connection.since = self._clock()
            self._idle[connection] = None

    def _forget(self, connection: _Connection) -> None:
        self._open.discard(connection)
        self._by_protocol.pop(connection.inner, None)
        self._waiting.pop(connection, None)
        self._idle.pop(connection, None)
        self.stats.open = len(self._open)

    def _close(self, connection: _Connection) -> None:
        self._forget(connection)
        connection.close_now()

    def sweep(self) -> None:
        """Closes the connections whose request head is overdue."""
        deadline = self._clock() - self.limits.header_timeout_s
        while self._waiting:
            connection = next(iter(self._waiting))
            if connection.since > deadline:
                break
            self.stats.timed_out += 1
            self._close(connection)
        self._shortage.check()

    def close_all_handshakes(self) -> None:
        """At shutdown: connections that never completed their TLS handshake (aiohttp does not
        know them) are closed; the others are aiohttp's to close."""
        for connection in list(self._open):
            if connection.transport is None:
                self._close(connection)


class GuardedSite(web.BaseSite):
    """An aiohttp site listening on ``host:port`` whose connections go through a
    ``ConnectionGuard`` (instead of ``web.TCPSite``'s ``loop.create_server``)."""

    __slots__ = ("_host", "_port", "_guard", "_sockets", "_paused", "_sweeper")

    def __init__(
        self,
        runner: web.BaseRunner,
        host: str,
        port: int,
        guard: ConnectionGuard,
        *,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        super().__init__(runner, ssl_context=ssl_context, backlog=BACKLOG)
        self._host = host
        self._port = port
        self._guard = guard
        self._sockets: list[socket.socket] = []
        self._paused: set[socket.socket] = set()
        self._sweeper: asyncio.TimerHandle | None = None

    @property
    def name(self) -> str:
        scheme = "https" if self._ssl_context else "http"
        return f"{scheme}://{self._host}:{self.port}"

    @property
    def port(self) -> int:
        """The bound port (of the first address, when the host has several)."""
        if self._sockets:
            return int(self._sockets[0].getsockname()[1])
        return self._port

    @property
    def sockets(self) -> list[socket.socket]:
        return list(self._sockets)

    async def start(self) -> None:
        await super().start()
        self._sockets = _bind(self._host, self._port, self._backlog)
        loop = asyncio.get_running_loop()
        for sock in self._sockets:
            loop.add_reader(sock.fileno(), self._accept, sock)
        self._sweeper = loop.call_later(SWEEP_PERIOD_S, self._sweep)
        self._server = self  # type: ignore[assignment]  # BaseSite.stop() calls close()

    def close(self) -> None:
        """Stops accepting (``BaseSite.stop``); open connections are aiohttp's to finish."""
        loop = asyncio.get_running_loop()
        for sock in self._sockets:
            if sock not in self._paused:
                loop.remove_reader(sock.fileno())
            sock.close()
        self._sockets = []
        self._paused.clear()
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        self._guard.close_all_handshakes()

    def _accept(self, sock: socket.socket) -> None:
        factory: Callable[[], asyncio.Protocol] = self._runner.server  # type: ignore[assignment]
        if not self._guard.accept(sock, factory, self._ssl_context):
            loop = asyncio.get_running_loop()
            loop.remove_reader(sock.fileno())
            self._paused.add(sock)
            loop.call_later(ACCEPT_PAUSE_S, self._resume, sock)

    def _resume(self, sock: socket.socket) -> None:
        if sock in self._paused:
            self._paused.discard(sock)
            asyncio.get_running_loop().add_reader(sock.fileno(), self._accept, sock)

    def _sweep(self) -> None:
        self._guard.sweep()
        self._sweeper = asyncio.get_running_loop().call_later(SWEEP_PERIOD_S, self._sweep)


def _bind(host: str, port: int, backlog: int) -> list[socket.socket]:
    """Listening sockets for every address of ``host`` (as ``loop.create_server`` binds)."""
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    sockets: list[socket.socket] = []
    try:
        for family, kind, proto, _, address in dict.fromkeys(infos):
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
            sock.listen(backlog)
            sock.setblocking(False)
    except OSError:
        for sock in sockets:
            sock.close()
        raise
    return sockets
