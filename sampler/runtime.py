"""The live sampler: one asyncio event loop running the receivers, the decision ticker, the
exporter and the metrics endpoint, all around one Pipeline.

Threading model: the pipeline's state lives on the loop's thread, so it needs no lock. The
gRPC (grpc.aio) and HTTP (aiohttp) servers hand a request to ``ReceiveFlow``, which validates
it natively (a large body on a decoding thread, without the GIL) and ingests it in chunks; the
ticker decides the due sessions every ``sessions.tick``, in turns of a few milliseconds between
which Export calls are answered (deciding is not done in a call's path); the exporter's sender
task does network I/O.

Shutdown (SIGTERM/SIGINT): stop intake, decide every buffered session, flush the exporter,
exit 0. With ``exporter.queue_dir``, what the downstream does not take stays in the disk queue
for the next start instead of being lost.

Reload (SIGHUP, and with ``--watch-config`` a change of the file, polled): the config is read
again and applied under what is buffered (``reload.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import gc
import logging
import resource
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from aiohttp import web
from grpc_health.v1 import health_pb2
from grpc_health.v1.health import aio as health_aio  # type: ignore[attr-defined]  # (set at import)
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from sampler.clock import Clock, MonotonicClock
from sampler.cluster.link import ClusterLink
from sampler.config.address import parse_listen
from sampler.config.model import SamplerConfig
from sampler.export.base import Exporter, ExporterSettings
from sampler.export.factory import exporter_from_url
from sampler.export.jsonl_file import Rotation
from sampler.export.retry import RetryPolicy
from sampler.listeners import check_listeners, listeners_of
from sampler.metrics import Sources, build_registry
from sampler.pipeline import Pipeline, PipelineStats
from sampler.receive.auth import BearerAuth
from sampler.receive.capture import TrafficCapture
from sampler.receive.connections import (
    ConnectionGuard,
    ConnectionLimits,
    ConnectionStats,
    DescriptorShortage,
    GuardedSite,
)
from sampler.receive.grpc_server import SERVICE_NAME as OTLP_TRACE_SERVICE
from sampler.receive.grpc_server import GrpcConnections, GrpcReceiver
from sampler.receive.http_server import HttpReceiver
from sampler.receive.intake import ReceiveFlow, ReceiverStats
from sampler.reload import ConfigSource, ConfigWatcher, Reloader
from sampler.tls import ClientTls, ServerTls

log = logging.getLogger(__name__)

# Deciding a tick's due sessions (hundreds at full load, tens of ms) is done in turns of about
# this long, the event loop answering Export calls between turns; a turn checks the time
# after every few sessions.
DECIDE_TURN_S = 0.002
DECIDE_BATCH = 4
# Threads decoding large request bodies (the native core validates without the GIL): two,
# so one process can use a second core for them.
DECODING_THREADS = 2
SHUTDOWN_FLUSH_TIMEOUT_S = 25.0  # below Kubernetes' default 30 s termination grace period
RECEIVER_STOP_GRACE_S = 5.0
OVERLOAD_QUIET_S = 10.0  # an overload episode is over after this long without refusal or relief
# File descriptors kept for everything but client connections: the listening sockets, the
# exporter's connections, the durable queue's files, the event loop's and grpc's own (an idle
# sampler holds 16).
DESCRIPTOR_RESERVE = 64
MIN_CONNECTIONS = 8  # per listener, however low the descriptor limit
METRICS_HEADER_TIMEOUT_S = 10.0
METRICS_IDLE_TIMEOUT_S = 60.0
WATCH_INTERVAL_S = 1.0  # --watch-config: how often the config file is looked at


def exporter_settings(config: SamplerConfig) -> ExporterSettings:
    e = config.exporter
    return ExporterSettings(
        timeout_s=e.timeout,
        queue_max_spans=e.queue_max_spans,
        queue_dir=e.queue_dir,
        queue_max_bytes=e.queue_max_bytes,
        batch_max_spans=e.batch_max_spans,
        batch_max_bytes=e.batch_max_size,
        batch_timeout_s=e.batch_timeout,
        retry=RetryPolicy(
            initial_interval_s=e.retry.initial_interval,
            max_interval_s=e.retry.max_interval,
            max_elapsed_s=e.retry.max_elapsed_time,
        ),
        headers=dict(e.headers),
        compression=e.compression,
        tls=_exporter_tls(config),
        rotation=_file_rotation(config),
    )


def _file_rotation(config: SamplerConfig) -> Rotation:
    r = config.exporter.file.rotation
    return Rotation(
        max_bytes=r.max_megabytes << 20,
        max_backups=r.max_backups,
        max_age_s=r.max_days * 86_400.0,
        localtime=r.localtime,
        compress=r.compression == "gzip",
    )


def _exporter_tls(config: SamplerConfig) -> ClientTls | None:
    t = config.exporter.tls
    if not t.configured:
        return None
    return ClientTls(
        t.ca_file, t.cert_file, t.key_file, t.server_name_override, where="exporter.tls"
    )


def receiver_security(config: SamplerConfig) -> tuple[ServerTls | None, BearerAuth | None]:
    """The receivers' TLS and bearer token; raises TlsError (a ValueError) for unusable files."""
    r = config.receivers
    tls = None
    if r.tls.cert_file:
        tls = ServerTls(
            r.tls.cert_file, r.tls.key_file, r.tls.client_ca_file, where="receivers.tls"
        )
    auth = BearerAuth(r.auth.bearer_token) if r.auth.bearer_token else None
    if auth is not None and tls is None:
        log.warning(
            "receivers.auth.bearer_token is set without receivers.tls: the token crosses the "
            "network in clear text (fine on loopback, not beyond it)"
        )
    return tls, auth


def raise_descriptor_limit() -> int:
    """Raises the soft limit on open files to the hard limit, as Go programs (the collector
    among them) do at start: container runtimes often set a soft limit of 1,024 under a hard
    one of 524,288. Returns the soft limit in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard and hard != resource.RLIM_INFINITY:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError) as error:
            log.warning(
                "cannot raise the file-descriptor limit from %d to %d: %s", soft, hard, error
            )
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


@dataclass(frozen=True, slots=True)
class ConnectionBudget:
    """Connections each listener may hold (0: the listener is off), within ``descriptors``."""

    grpc: int
    http: int
    metrics: int
    descriptors: int
    lowered: bool  # below what the config asks for, to fit the descriptor limit

    @property
    def needed(self) -> int:
        """The descriptor limit the configured caps would need."""
        return self.grpc + self.http + self.metrics + DESCRIPTOR_RESERVE


def connection_budget(config: SamplerConfig, descriptors: int) -> ConnectionBudget:
    """The connection caps: as configured when the descriptor limit holds them all with
    ``DESCRIPTOR_RESERVE`` to spare; otherwise the metrics listener keeps its cap (probes must
    get in) and the OTLP listeners share the rest, each keeping ``MIN_CONNECTIONS``. So, from
    a limit of about 200 on, accepted connections alone cannot exhaust the descriptors, and
    the metrics listener always has room."""
    r = config.receivers
    metrics = config.metrics.max_connections if config.metrics.listen else 0
    wanted = {
        "grpc": r.grpc.max_connections if r.grpc.listen else 0,
        "http": r.http.max_connections if r.http.listen else 0,
    }
    room = descriptors - DESCRIPTOR_RESERVE - metrics
    caps = dict(wanted)
    if sum(wanted.values()) > room:
        listeners = sorted((n, name) for name, n in wanted.items() if n)
        left = room
        for count, (n, name) in zip(range(len(listeners), 0, -1), listeners, strict=True):
            caps[name] = min(n, max(MIN_CONNECTIONS, left // count))
            left -= caps[name]
    return ConnectionBudget(
        caps["grpc"], caps["http"], metrics, descriptors, lowered=caps != wanted
    )


def grpc_connections(config: SamplerConfig, max_connections: int) -> GrpcConnections:
    g = config.receivers.grpc
    return GrpcConnections(
        max_connections=max_connections,
        max_concurrent_streams=g.max_concurrent_streams,
        handshake_timeout_s=g.handshake_timeout,
        keepalive_time_s=g.keepalive.time,
        keepalive_timeout_s=g.keepalive.timeout,
        max_connection_idle_s=g.keepalive.max_connection_idle,
        min_ping_interval_s=g.keepalive.min_time,
        permit_pings_without_calls=g.keepalive.permit_without_stream,
    )


def _log_budget(config: SamplerConfig, budget: ConnectionBudget) -> None:
    shown = f"OTLP/gRPC {budget.grpc}, OTLP/HTTP {budget.http}, metrics {budget.metrics}"
    if not budget.lowered:
        log.info("connections at most: %s (file-descriptor limit %d)", shown, budget.descriptors)
        return
    r = config.receivers
    wanted = connection_budget(config, 1 << 62)
    log.warning(
        "the file-descriptor limit (%d) holds fewer connections than configured "
        "(receivers.grpc.max_connections %d, receivers.http.max_connections %d): at most %s; "
        "run with a limit of at least %d (docs/operations.md, File descriptors and connections)",
        budget.descriptors,
        r.grpc.max_connections,
        r.http.max_connections,
        shown,
        wanted.needed,
    )


@dataclass(slots=True)
class OverloadLog:
    """Logs overload as episodes, never per request: a warning when the sampler starts to decide
    sessions early (stress relief) and one per reason it refuses requests for, then one line
    once it has done neither for ``OVERLOAD_QUIET_S``. Reads the pipeline's counts each tick."""

    refused: dict[str, int] = field(default_factory=dict)  # requests refused by reason, so far
    relieved: int = 0  # sessions decided early, so far
    started: float | None = None  # when the current episode began
    last_active: float = 0.0
    warned: set[str] = field(default_factory=set)  # what the current episode has logged
    refused_before: int = 0
    relieved_before: int = 0

    def observe(self, stats: PipelineStats, now: float) -> None:
        reasons = [r for r, n in stats.requests_refused.items() if n > self.refused.get(r, 0)]
        relieved = stats.relief_sessions > self.relieved
        if reasons or relieved:
            if self.started is None:
                self.started = now
                self.warned.clear()
                self.refused_before = sum(self.refused.values())
                self.relieved_before = self.relieved
            if relieved and "relief" not in self.warned:
                self.warned.add("relief")
                log.warning(
                    "stress relief: the session buffer is near its limits; deciding the oldest "
                    "sessions early"
                )
            for reason in reasons:
                if reason not in self.warned:
                    self.warned.add(reason)
                    log.warning("refusing requests (%s): senders are told to retry", reason)
            self.refused = dict(stats.requests_refused)
            self.relieved = stats.relief_sessions
            self.last_active = now
        elif self.started is not None and now - self.last_active >= OVERLOAD_QUIET_S:
            log.info(
                "overload over after %.1fs: %d request(s) refused, %d session(s) decided early",
                self.last_active - self.started,
                sum(self.refused.values()) - self.refused_before,
                self.relieved - self.relieved_before,
            )
            self.started = None


@dataclass(slots=True)
class BoundPorts:
    grpc: int | None = None
    http: int | None = None
    metrics: int | None = None


@dataclass(slots=True)
class SamplerApp:
    config: SamplerConfig
    clock: Clock = field(default_factory=MonotonicClock)
    source: ConfigSource = field(default_factory=ConfigSource)  # to read the config again
    exporter: Exporter = field(init=False)
    pipeline: Pipeline = field(init=False)
    reloader: Reloader = field(init=False)
    ports: BoundPorts = field(default_factory=BoundPorts)
    _grpc: GrpcReceiver | None = None
    _http: HttpReceiver | None = None
    _metrics_runner: web.AppRunner | None = None
    _ticker: asyncio.Task[None] | None = None
    cluster: ClusterLink | None = None  # cluster: verdicts shared through the store
    _watcher: asyncio.Task[None] | None = None
    _config_watcher: ConfigWatcher | None = None
    _capture: TrafficCapture | None = None  # capture.path: accepted requests recorded
    # Large bodies are decoded here, without the GIL, while the event loop answers others.
    _decoding: ThreadPoolExecutor | None = None
    _ready: bool = False
    _stopping: bool = False  # shutdown began: a SIGHUP is ignored (SIG_DFL would kill us)
    _overload: OverloadLog = field(default_factory=OverloadLog)
    # accepts that failed for want of descriptors, on any of the HTTP listeners
    _shortage: DescriptorShortage = field(default_factory=DescriptorShortage)
    _young: YoungCollections = field(default_factory=lambda: YoungCollections())
    # grpc.health.v1 on the OTLP/gRPC port: SERVING once started, NOT_SERVING from shutdown
    _health: health_aio.HealthServicer = field(default_factory=lambda: health_aio.HealthServicer())

    def __post_init__(self) -> None:
        self.exporter = exporter_from_url(self.config.exporter.url, exporter_settings(self.config))
        self.pipeline = Pipeline(self.config, self.exporter, self.clock, decide_on_intake=False)
        self.reloader = Reloader(self.pipeline, self.source)
        if self.config.cluster.enabled:
            self.cluster = ClusterLink(
                self.config.cluster,
                self.config.sessions,
                self.pipeline.adopt,
                self.clock,
                tick_s=self.config.sessions.tick,
            )
            self.pipeline.sharing = self.cluster

    def reload(self, why: str) -> str:
        """Reads the config again and runs with it (see reload.py); returns the outcome."""
        outcome = self.reloader.reload(why)
        self.config = self.pipeline.config
        return outcome

    async def start(self) -> None:
        cfg = self.config
        tls, auth = receiver_security(cfg)  # before anything starts: bad files stop us here
        check_listeners(listeners_of(cfg))  # ...and so does a port in use
        await self.exporter.start()
        where = cfg.origin("exporter.url")
        log.info(
            "downstream %s (%s)", self.exporter.name, "default" if where == "default" else where
        )
        receivers: dict[str, ReceiverStats] = {}
        connections: dict[str, ConnectionStats] = {}
        budget = connection_budget(cfg, resource.getrlimit(resource.RLIMIT_NOFILE)[0])
        _log_budget(cfg, budget)
        limit = cfg.receivers.max_message_size
        self._decoding = ThreadPoolExecutor(
            max_workers=DECODING_THREADS, thread_name_prefix="decode"
        )
        if cfg.capture.path:
            self._capture = TrafficCapture(cfg.capture.path, cfg.capture.max_size)
            self._capture.open()
        flow = ReceiveFlow(
            self.pipeline,
            max_spans=cfg.receivers.max_spans_per_request,
            max_message_bytes=limit,
            decoding=self._decoding,
            capture=self._capture,
        )
        if cfg.receivers.grpc.listen:
            self._grpc = GrpcReceiver(
                flow,
                cfg.receivers.grpc.listen,
                max_message_bytes=limit,
                connections=grpc_connections(cfg, budget.grpc),
                tls=tls,
                auth=auth,
                health=self._health,
            )
            self.ports.grpc = await self._grpc.start()
            receivers["grpc"] = self._grpc.stats
        if cfg.receivers.http.listen:
            self._http = HttpReceiver(
                flow,
                cfg.receivers.http.listen,
                max_message_bytes=limit,
                read_timeout=cfg.receivers.http.read_timeout,
                idle_timeout=cfg.receivers.http.idle_timeout,
                connections=ConnectionLimits(budget.http, cfg.receivers.http.read_header_timeout),
                shortage=self._shortage,
                tls=tls,
                auth=auth,
            )
            self.ports.http = await self._http.start()
            receivers["http"] = self._http.stats
            connections["http"] = self._http.connections
        if cfg.metrics.listen:
            guard = ConnectionGuard(
                "metrics",
                ConnectionLimits(budget.metrics, METRICS_HEADER_TIMEOUT_S),
                self._shortage,
            )
            connections["metrics"] = guard.stats
            self.ports.metrics = await self._start_metrics(
                Sources(
                    self.pipeline,
                    self.exporter,
                    receivers,
                    self._capture,
                    connections=connections,
                    shortage=self._shortage,
                    config=self.reloader.state,
                    cluster=self.cluster,
                ),
                guard,
            )
        self._ticker = asyncio.create_task(self._tick_forever(), name="decision-ticker")
        if self.cluster is not None:
            self.cluster.start()  # connects in the background: the store is never waited for
        if self.source.watch and self.source.path is not None:
            watcher = self._config_watcher = ConfigWatcher(self.source.path)
            self._watcher = asyncio.create_task(self._watch_forever(watcher), name="config-watch")
        self._ready = True
        await self._health.set("", health_pb2.HealthCheckResponse.SERVING)
        await self._health.set(OTLP_TRACE_SERVICE, health_pb2.HealthCheckResponse.SERVING)
        log.info(
            "agent-sampler started: grpc=%s http=%s metrics=%s downstream=%s config=%s",
            _shown(cfg.receivers.grpc.listen, self.ports.grpc),
            _shown(cfg.receivers.http.listen, self.ports.http),
            _shown(cfg.metrics.listen, self.ports.metrics),
            self.exporter.name,
            cfg.source,
        )

    async def shutdown(self) -> None:
        """Stop intake, decide everything buffered, deliver it, close."""
        self._ready = False
        self._stopping = True
        await self._health.enter_graceful_shutdown()  # every service NOT_SERVING
        started = time.monotonic()
        if self._grpc is not None:
            await self._grpc.stop(RECEIVER_STOP_GRACE_S)
        if self._http is not None:
            await self._http.stop()
        for task in (self._watcher, self._ticker):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self._decoding is not None:
            self._decoding.shutdown(wait=False)
        if self._capture is not None:  # intake has stopped: what it took is written
            await asyncio.to_thread(self._capture.close)
        pipeline, exporter = self.pipeline, self.exporter
        before = pipeline.buffer
        second_looks, sent = pipeline.stats.second_look_sessions, exporter.stats.spans_sent
        decided = pipeline.decide_all()
        log.info(
            "shutdown: decided %d buffered session(s) (%d spans) and ended the hold of %d "
            "dropped session(s) (%d kept on a second look)",
            decided,
            before.span_count,
            before.held_sessions,
            pipeline.stats.second_look_sessions - second_looks,
        )
        if self.cluster is not None:
            await self.cluster.stop()  # the keeps of what was just decided, for the peers
        deadline = started + SHUTDOWN_FLUSH_TIMEOUT_S
        while self.pipeline.pending_spans and time.monotonic() < deadline:
            await self.exporter.flush(min(1.0, deadline - time.monotonic()))
            self.pipeline.decide_due()  # offers the backlog to the exporter again
        await self.exporter.stop(max(0.1, deadline - time.monotonic()))
        log.info(
            "shutdown: flushed %d kept span(s) to %s",
            exporter.stats.spans_sent - sent,
            exporter.name,
        )
        lost = self.pipeline.pending_spans + self.exporter.queued_spans()
        if lost:
            log.error("shutdown: %d kept span(s) could not be delivered before the timeout", lost)
        if self._metrics_runner is not None:
            await self._metrics_runner.cleanup()
        log.info("agent-sampler stopped")

    async def _tick_forever(self) -> None:
        period = self.config.sessions.tick
        while True:
            await asyncio.sleep(period)
            try:
                await self._decide_due_in_turns()
            except Exception:  # a bug must not stop all future decisions; it is logged loudly
                log.exception("deciding due sessions failed")
            self._overload.observe(self.pipeline.stats, self.clock.now())
            self._young.tick(time.monotonic())

    async def _watch_forever(self, watcher: ConfigWatcher) -> None:
        """--watch-config: reloads once the file changed and held still for one poll."""
        while True:
            await asyncio.sleep(WATCH_INTERVAL_S)
            try:
                if watcher.due():
                    self.reload(f"{watcher.path} changed")
            except Exception:  # a bug must not stop watching; it is logged loudly
                log.exception("reloading the config failed")

    def reload_on_signal(self) -> None:
        """SIGHUP: reload now (the watcher, if any, takes the file as it is now as read)."""
        if self._stopping:
            log.info("SIGHUP ignored: shutting down")
            return
        if self._config_watcher is not None:
            self._config_watcher.mark_loaded()
        try:
            self.reload("SIGHUP")
        except Exception:  # a bug must not kill the process; the old config keeps running
            log.exception("reloading the config failed")

    async def _decide_due_in_turns(self) -> None:
        decide_due = self.pipeline.decide_due
        more = decide_due(DECIDE_BATCH) == DECIDE_BATCH
        while more:
            await asyncio.sleep(0)  # calls waiting are answered
            turn_ends = time.perf_counter() + DECIDE_TURN_S
            while more and time.perf_counter() < turn_ends:
                more = decide_due(DECIDE_BATCH, new_tick=False) == DECIDE_BATCH

    async def _start_metrics(self, sources: Sources, guard: ConnectionGuard) -> int:
        registry = build_registry(sources)

        async def metrics(_: web.Request) -> web.Response:
            body = generate_latest(registry)
            return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

        async def healthz(_: web.Request) -> web.Response:
            return web.Response(text="ok\n")

        async def readyz(_: web.Request) -> web.Response:
            if self._ready:
                return web.Response(text="ready\n")
            return web.Response(status=503, text="not ready\n")

        app = web.Application(middlewares=[guard.middleware])
        app.router.add_get("/metrics", metrics)
        app.router.add_get("/healthz", healthz)
        app.router.add_get("/readyz", readyz)
        self._metrics_runner = web.AppRunner(
            app, access_log=None, keepalive_timeout=METRICS_IDLE_TIMEOUT_S
        )
        await self._metrics_runner.setup()
        address = parse_listen(self.config.metrics.listen)
        # its own connection budget: answers while the OTLP listeners are full
        site = GuardedSite(self._metrics_runner, address.host, address.port, guard)
        await site.start()
        return site.port  # the bound port, also when 0 was asked for


def _shown(listen: str, port: int | None) -> str:
    if not listen or port is None:
        return "off"
    host = listen.rpartition(":")[0]
    return f"{host}:{port}"


# Young-generation collections every this many net allocations (CPython's default is 700).
GC_YOUNG_THRESHOLD = 50_000
# ...and at least this often: see YoungCollections.
GC_YOUNG_PERIOD_S = 0.5


@dataclass(slots=True)
class YoungCollections:
    """A young-generation collection at least every ``period_s``, run from the decision ticker.

    CPython (3.11) counts allocations towards the next young collection minus *every* tracked
    object freed, old ones included. When decided sessions are freed about as fast as new ones
    are made, the count hardly grows, young collections are put off for 10 seconds and more,
    and the young generation grows meanwhile (with grpc's per-call reference cycles): the one
    collection that comes then walks it all at once, and that pause is the tail of the export
    latency. Collected on time, each is short (both measured in benchmarks/README.md,
    Throughput)."""

    period_s: float = GC_YOUNG_PERIOD_S
    last: float = 0.0

    def tick(self, now: float) -> None:
        if now - self.last >= self.period_s:
            self.last = now
            gc.collect(0)


def tune_garbage_collector() -> None:
    """CPython's default thresholds make the collector walk long-lived objects that never form
    reference cycles over and over, and a full collection pauses intake: that pause was the
    tail of the export latency (benchmarks/README.md, Throughput, measures it with and without
    this tuning). Objects alive after start-up are frozen out of collection and young
    collections run GC_YOUNG_THRESHOLD / 700 times less often; cycles are still collected."""
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, middle, old)


# glibc's mallopt parameters (malloc.h)
_M_MMAP_THRESHOLD, _M_ARENA_MAX = -3, -8
MMAP_THRESHOLD_BYTES = 128 << 10  # glibc's initial value, kept fixed
MALLOC_ARENAS = 2


def tune_allocator() -> bool:
    """Set glibc's malloc for a process handling megabyte requests; False, changing nothing,
    without glibc. glibc serves its first large blocks (request bodies, kept batches) with mmap
    and gives them back when freed, but then raises its mmap threshold to the largest freed (up
    to 32 MiB): later bodies come from the heap, whose freed memory stays resident. A fixed
    threshold keeps them mmapped. And each thread that allocates (grpc's) gets an arena of its
    own, a few MiB of free memory each: two arenas hold them all. Measured on the 32 MiB flood
    test (tests/e2e/test_memory_flood.py): VmHWM 151-156 MiB, against 160-162 without."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    return bool(
        mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) and mallopt(_M_ARENA_MAX, MALLOC_ARENAS)
    )


async def serve(config: SamplerConfig, source: ConfigSource | None = None) -> None:
    """Run until SIGTERM or SIGINT, then shut down cleanly; reload the config (read again from
    ``source``) on SIGHUP."""
    tune_allocator()  # before any thread allocates
    raise_descriptor_limit()
    app = SamplerApp(config, source=source or ConfigSource())
    tune_garbage_collector()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    loop.add_signal_handler(signal.SIGHUP, app.reload_on_signal)
    await app.start()
    await stop.wait()
    log.info("signal received: stopping intake and flushing")
    await app.shutdown()
    # Objects frozen at start are never collected, not even at exit, and the DataSketches
    # binding (nanobind) then prints hundreds of "leaked instance" lines to stderr, in the
    # middle of the JSON logs: give them back to the collector before the interpreter ends.
    gc.unfreeze()
