"""Shared helpers for the exporter tests: request builders, a fake clock, loopback collectors."""

from __future__ import annotations

import asyncio
import random
import ssl
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar

import grpc
import grpc.aio
from aiohttp import web
from google.protobuf import any_pb2, duration_pb2
from google.rpc import error_details_pb2, status_pb2
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span

from sampler.export.base import ExporterSettings
from sampler.export.delivery import QueuedExporter
from sampler.export.retry import Outcome, RetryPolicy, SendResult

T = TypeVar("T")


def run(coro: Awaitable[T], timeout_s: float = 10.0) -> T:
    """asyncio.run with a hard bound, so a hung exporter fails the test instead of stalling."""

    async def bounded() -> T:
        return await asyncio.wait_for(coro, timeout_s)

    return asyncio.run(bounded())


def settings(**overrides: Any) -> ExporterSettings:
    """Test defaults: small batches, short linger, the real retry policy (the clock is fake)."""
    values: dict[str, Any] = {"batch_timeout_s": 0.01, "retry": RetryPolicy()}
    values.update(overrides)
    return ExporterSettings(**values)


def make_request(prefix: str, span_count: int) -> bytes:
    """A serialized ExportTraceServiceRequest with spans named f"{prefix}-{i}"."""
    spans = [
        Span(
            trace_id=random.Random(prefix).randbytes(16),
            span_id=(i + 1).to_bytes(8, "big"),
            name=f"{prefix}-{i}",
            start_time_unix_nano=1_700_000_000_000_000_000 + i,
            end_time_unix_nano=1_700_000_000_000_000_100 + i,
        )
        for i in range(span_count)
    ]
    resource = Resource(
        attributes=[KeyValue(key="service.name", value=AnyValue(string_value=prefix))]
    )
    request = ExportTraceServiceRequest(
        resource_spans=[ResourceSpans(resource=resource, scope_spans=[ScopeSpans(spans=spans)])]
    )
    return request.SerializeToString()


def span_names(bodies: Iterable[bytes]) -> list[str]:
    return [
        span.name
        for body in bodies
        for rs in ExportTraceServiceRequest.FromString(body).resource_spans
        for ss in rs.scope_spans
        for span in ss.spans
    ]


def expected_names(*requests: tuple[str, int]) -> list[str]:
    return [f"{prefix}-{i}" for prefix, count in requests for i in range(count)]


class FakeClock:
    """Monotonic time that only moves when the exporter sleeps; records every sleep."""

    def __init__(self) -> None:
        self.time = 1_000.0
        self.sleeps: list[float] = []
        self.on_sleep: Callable[[float], None] | None = None

    def now(self) -> float:
        return self.time

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.time += seconds
        if self.on_sleep is not None:
            self.on_sleep(seconds)
        await asyncio.sleep(0)


class ScriptedTransport:
    """A transport that answers from a script (then OK), so the delivery loop can be exercised
    without sockets. ``gate``, when given, holds every send until it is set."""

    name = "scripted://test"

    def __init__(
        self, results: Iterable[SendResult] = (), gate: asyncio.Event | None = None
    ) -> None:
        self.results = deque(results)
        self.gate = gate
        self.attempts: list[bytes] = []
        self.delivered: list[bytes] = []

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def send(self, body: bytes) -> SendResult:
        self.attempts.append(body)
        if self.gate is not None:
            await self.gate.wait()
        result = self.results.popleft() if self.results else SendResult.ok()
        if result.outcome is Outcome.OK:
            self.delivered.append(body)
        return result


class ScriptedExporter(QueuedExporter):
    """The real exporter over a ScriptedTransport, with a fake clock and a seeded jitter."""

    def __init__(
        self,
        exporter_settings: ExporterSettings,
        results: Iterable[SendResult] = (),
        clock: FakeClock | None = None,
        gate: asyncio.Event | None = None,
        transport: ScriptedTransport | None = None,
    ) -> None:
        self.script = transport if transport is not None else ScriptedTransport(results, gate)
        super().__init__(
            self.script, exporter_settings, clock=clock or FakeClock(), rng=random.Random(7)
        )

    @property
    def attempts(self) -> list[bytes]:
        return self.script.attempts

    @property
    def delivered(self) -> list[bytes]:
        return self.script.delivered


# -- loopback OTLP/gRPC collector ---------------------------------------------------------


def retry_info_trailer(code: grpc.StatusCode, delay_s: float) -> tuple[tuple[str, bytes], ...]:
    """The ``grpc-status-details-bin`` trailer a throttling server sends."""
    detail = any_pb2.Any()
    seconds = int(delay_s)
    detail.Pack(
        error_details_pb2.RetryInfo(
            retry_delay=duration_pb2.Duration(
                seconds=seconds, nanos=round((delay_s - seconds) * 1e9)
            )
        )
    )
    status = status_pb2.Status(code=code.value[0], message="slow down", details=[detail])
    return (("grpc-status-details-bin", status.SerializeToString()),)


class GrpcCollector:
    """A TraceService/Export server on 127.0.0.1:<free port> that records what it receives.

    ``failures`` holds (code, RetryInfo delay or None) answers for the next calls;
    ``rejected_spans`` makes successful answers report a partial success. With ``credentials``
    the port speaks TLS.
    """

    def __init__(self, credentials: grpc.ServerCredentials | None = None) -> None:
        self.credentials = credentials
        self.requests: list[bytes] = []
        self.metadata: list[dict[str, str]] = []
        self.calls = 0
        self.failures: deque[tuple[grpc.StatusCode, float | None]] = deque()
        self.rejected_spans = 0
        self.port = 0
        self._server: grpc.aio.Server | None = None

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def _export(
        self, request: ExportTraceServiceRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> ExportTraceServiceResponse:
        self.calls += 1
        if self.failures:
            code, delay_s = self.failures.popleft()
            trailer = retry_info_trailer(code, delay_s) if delay_s is not None else ()
            await context.abort(code, f"scripted {code.name}", trailing_metadata=trailer)
        self.requests.append(request.SerializeToString())
        self.metadata.append(
            {k: v for k, v in context.invocation_metadata() or () if isinstance(v, str)}
        )
        response = ExportTraceServiceResponse()
        if self.rejected_spans:
            response.partial_success.rejected_spans = self.rejected_spans
            response.partial_success.error_message = "too old"
        return response

    async def __aenter__(self) -> GrpcCollector:
        handler = grpc.method_handlers_generic_handler(
            "opentelemetry.proto.collector.trace.v1.TraceService",
            {
                "Export": grpc.unary_unary_rpc_method_handler(
                    self._export,
                    request_deserializer=ExportTraceServiceRequest.FromString,
                    response_serializer=ExportTraceServiceResponse.SerializeToString,
                )
            },
        )
        self._server = grpc.aio.server()
        self._server.add_generic_rpc_handlers((handler,))
        if self.credentials is None:
            self.port = self._server.add_insecure_port("127.0.0.1:0")
        else:
            self.port = self._server.add_secure_port("127.0.0.1:0", self.credentials)
        await self._server.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._server is not None:
            await self._server.stop(None)


# -- loopback OTLP/HTTP collector ---------------------------------------------------------


class HttpCollector:
    """An aiohttp server for POST /v1/traces on 127.0.0.1:<free port>.

    ``responses`` holds (status, headers) answers for the next calls; then 200. With
    ``ssl_context`` it serves HTTPS.
    """

    def __init__(self, path: str = "/v1/traces", ssl_context: ssl.SSLContext | None = None) -> None:
        self.path = path
        self.ssl_context = ssl_context
        self.requests: list[bytes] = []
        self.headers: list[dict[str, str]] = []
        self.calls = 0
        self.responses: deque[tuple[int, dict[str, str]]] = deque()
        self.port = 0
        self._runner: web.AppRunner | None = None

    @property
    def base_url(self) -> str:
        scheme = "http" if self.ssl_context is None else "https"
        return f"{scheme}://127.0.0.1:{self.port}"

    async def _handle(self, request: web.Request) -> web.Response:
        self.calls += 1
        body = await request.read()  # aiohttp has already undone Content-Encoding: gzip
        self.headers.append(dict(request.headers))
        if self.responses:
            status, headers = self.responses.popleft()
            if status >= 300:
                error = status_pb2.Status(code=3, message=f"scripted {status}")
                return web.Response(
                    status=status,
                    headers=headers,
                    body=error.SerializeToString(),
                    content_type="application/x-protobuf",
                )
        self.requests.append(body)
        return web.Response(
            body=ExportTraceServiceResponse().SerializeToString(),
            content_type="application/x-protobuf",
        )

    async def __aenter__(self) -> HttpCollector:
        app = web.Application()
        app.router.add_post(self.path, self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=self.ssl_context)
        await site.start()
        self.port = self._runner.addresses[0][1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


# -- a loopback TCP relay that counts bytes -----------------------------------------------


class CountingRelay:
    """Relays TCP connections from 127.0.0.1:<free port> to ``target_port``, counting the bytes
    the client sends: what went over the wire, whatever the protocol above it."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.bytes_up = 0
        self.port = 0
        self._server: asyncio.Server | None = None
        self._pipes: set[asyncio.Task[None]] = set()

    async def _pipe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, up: bool
    ) -> None:
        try:
            while data := await reader.read(65536):
                if up:
                    self.bytes_up += len(data)
                writer.write(data)
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        for task in (
            asyncio.ensure_future(self._pipe(reader, up_writer, up=True)),
            asyncio.ensure_future(self._pipe(up_reader, writer, up=False)),
        ):
            self._pipes.add(task)
            task.add_done_callback(self._pipes.discard)

    async def __aenter__(self) -> CountingRelay:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        for task in list(self._pipes):
            task.cancel()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
