"""OTLP/gRPC receiver: `opentelemetry.proto.collector.trace.v1.TraceService/Export`.

The method is registered with an identity request deserializer: the body goes as bytes to the
receive flow (`receive/intake.py`), which the native core validates, so a malformed body
becomes INVALID_ARGUMENT with the reason instead of grpc's generic "failed to deserialize"
INTERNAL error. gzip-compressed requests are decompressed
by grpc itself. The gRPC health service (`grpc.health.v1`) is served beside Export, on the same
port and without authentication (probes do not carry tokens); /healthz and /readyz are on the
metrics port.

Status codes a sender sees:
- OK with an optional `partial_success` when the pipeline took the request (or part of it);
- UNAUTHENTICATED when a bearer token is configured and the `authorization` metadata does not
  carry it: checked by an interceptor from the call's metadata, before the message is read
  (grpc reads no more of it than its flow-control window, tens of KiB);
- INVALID_ARGUMENT when the body is not an `ExportTraceServiceRequest`;
- RESOURCE_EXHAUSTED with a `google.rpc.RetryInfo` in `grpc-status-details-bin` when the pipeline
  refused the request (retryable: the OTLP exporters honour the delay);
- RESOURCE_EXHAUSTED without RetryInfo when the message exceeds `max_message_bytes`. grpc core
  refuses it before our handler runs ("Received message larger than max (N vs. M)"), so such
  requests are not counted in `stats`. Without RetryInfo the collector's exporter does not retry
  it, which is right: the same message would be refused again. The same holds for a compressed
  message that inflates beyond the limit, and for one holding more than
  `receivers.max_spans_per_request` spans (found while validating; counted as too large).

grpc core also answers, before the handler, INTERNAL to a compressed message it cannot inflate
or a `grpc-encoding` it does not know, and it waits (until the client's deadline) for the rest of
a message cut short by the end of the stream.

With `tls`, the port speaks TLS only; with mutual TLS, a client without a certificate from the
configured CAs fails the handshake and never reaches the handler.

Connections are grpc core's (`GrpcConnections`): at most `max_connections` at once (beyond, a
new one is closed as soon as it is accepted, uncounted here), a handshake due within
`handshake_timeout_s`, keepalive pings to find dead peers, idle connections closed, and a
ping policy for clients.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import grpc
import grpc.aio
from grpc_health.v1 import health_pb2_grpc
from grpc_health.v1.health import aio as health_aio  # type: ignore[attr-defined]  # (set at import)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from sampler.receive.address import parse_listen
from sampler.receive.auth import UNAUTHENTICATED_MESSAGE, BearerAuth, security_summary
from sampler.receive.intake import (
    REFUSED_DEFAULT_REASON,
    Answer,
    Outcome,
    ReceiveFlow,
    ReceiverStats,
)
from sampler.receive.status import throttle_status
from sampler.tls import ServerTls

SERVICE_NAME = "opentelemetry.proto.collector.trace.v1.TraceService"
EXPORT_METHOD = f"/{SERVICE_NAME}/Export"
STATUS_DETAILS_KEY = "grpc-status-details-bin"

_log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class _Abort:
    """A call to end with a non-OK status (``context.abort``)."""

    code: grpc.StatusCode
    details: str
    trailing_metadata: tuple[tuple[str, bytes], ...] = ()


@dataclass(frozen=True, slots=True)
class GrpcConnections:
    """What grpc core is told about connections (its channel arguments)."""

    max_connections: int = 1024
    max_concurrent_streams: int = 100
    handshake_timeout_s: float = 10.0
    keepalive_time_s: float = 60.0
    keepalive_timeout_s: float = 20.0
    max_connection_idle_s: float = 300.0  # 0: never
    min_ping_interval_s: float = 5.0  # clients pinging more often are sent GOAWAY
    permit_pings_without_calls: bool = True

    def options(self) -> list[tuple[str, int]]:
        def ms(seconds: float) -> int:
            return max(1, round(seconds * 1000))

        options = [
            ("grpc.max_allowed_incoming_connections", self.max_connections),
            ("grpc.max_concurrent_streams", self.max_concurrent_streams),
            ("grpc.server_handshake_timeout_ms", ms(self.handshake_timeout_s)),
            ("grpc.keepalive_time_ms", ms(self.keepalive_time_s)),
            ("grpc.keepalive_timeout_ms", ms(self.keepalive_timeout_s)),
            ("grpc.http2.min_ping_interval_without_data_ms", ms(self.min_ping_interval_s)),
            ("grpc.keepalive_permit_without_calls", int(self.permit_pings_without_calls)),
        ]
        if self.max_connection_idle_s > 0:
            options.append(("grpc.max_connection_idle_ms", ms(self.max_connection_idle_s)))
        return options


if TYPE_CHECKING:  # generic in grpc-stubs only
    _Interceptor = grpc.aio.ServerInterceptor[Any, Any]
else:
    _Interceptor = grpc.aio.ServerInterceptor


class _RequireToken(_Interceptor):
    """Refuses Export calls without the bearer token from their metadata alone, before the
    message is read: the refusing handler takes the request as a stream and never reads it, so
    an unauthenticated sender of 16 MiB messages costs a flow-control window, not 16 MiB.
    Other services (grpc.health.v1, for probes) pass untouched."""

    def __init__(self, auth: BearerAuth, stats: ReceiverStats) -> None:
        self._auth = auth
        self._stats = stats

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any]]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any]:
        if handler_call_details.method != EXPORT_METHOD or self._auth.allows(
            _authorization(handler_call_details.invocation_metadata)
        ):
            return await continuation(handler_call_details)
        self._stats.requests_unauthenticated += 1
        return _REFUSE_UNAUTHENTICATED


async def _unauthenticated(requests: Any, context: grpc.aio.ServicerContext[Any, Any]) -> None:
    _log.debug("unauthenticated OTLP/gRPC request from %s", context.peer())
    await context.abort(grpc.StatusCode.UNAUTHENTICATED, UNAUTHENTICATED_MESSAGE)


_REFUSE_UNAUTHENTICATED = grpc.stream_unary_rpc_method_handler(_unauthenticated)


class GrpcReceiver:
    """Serves OTLP/gRPC trace exports: bodies go to the receive flow, answers become statuses."""

    def __init__(
        self,
        flow: ReceiveFlow,
        listen: str,
        *,
        max_message_bytes: int,
        connections: GrpcConnections = GrpcConnections(),
        tls: ServerTls | None = None,
        auth: BearerAuth | None = None,
        health: health_aio.HealthServicer | None = None,
    ) -> None:
        if max_message_bytes <= 0:
            raise ValueError(f"max_message_bytes must be positive, got {max_message_bytes}")
        self._flow = flow
        self._address = parse_listen(listen)
        self._max_message_bytes = max_message_bytes
        self._connections = connections
        self._tls = tls
        self._auth = auth
        self._health = health  # the standard grpc.health.v1 service, served beside Export
        self._server: grpc.aio.Server | None = None
        self.stats = ReceiverStats()

    async def start(self) -> int:
        """Bind and start serving; return the bound port (useful when the port is 0)."""
        if self._server is not None:
            raise RuntimeError("GrpcReceiver already started")
        interceptors = [] if self._auth is None else [_RequireToken(self._auth, self.stats)]
        server = grpc.aio.server(
            interceptors=interceptors,
            options=[
                ("grpc.max_receive_message_length", self._max_message_bytes),
                # One receiver per port: fail loudly instead of sharing a port with a stale one.
                ("grpc.so_reuseport", 0),
                *self._connections.options(),
            ],
        )
        export = grpc.unary_unary_rpc_method_handler(
            self._export,
            request_deserializer=None,  # raw bytes; parsed in _export
            response_serializer=ExportTraceServiceResponse.SerializeToString,
        )
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(SERVICE_NAME, {"Export": export}),)
        )
        if self._health is not None:  # unauthenticated, as probes (kubelet's grpc) expect
            health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        try:
            if self._tls is None:
                port = server.add_insecure_port(str(self._address))
            else:
                port = server.add_secure_port(str(self._address), self._tls.grpc_credentials())
        except RuntimeError as exc:  # grpc reports bind failures as RuntimeError
            raise OSError(f"cannot listen for OTLP/gRPC on {self._address}: {exc}") from exc
        if port == 0:  # older grpc versions signal a bind failure with port 0
            raise OSError(f"cannot listen for OTLP/gRPC on {self._address}")
        await server.start()
        self._server = server
        _log.info(
            "OTLP/gRPC receiver listening on %s (%s)",
            replace(self._address, port=port),
            security_summary(self._tls, self._auth),
        )
        return port

    async def stop(self, grace: float) -> None:
        """Refuse new RPCs at once; cancel those still running after `grace` seconds."""
        server, self._server = self._server, None
        if server is not None:
            await server.stop(grace)

    async def _export(
        self,
        body: bytes,
        context: grpc.aio.ServicerContext[bytes, ExportTraceServiceResponse],
    ) -> ExportTraceServiceResponse:
        # (without the bearer token the call never gets here: _RequireToken)
        answer = await self._flow.receive(body, "protobuf", self.stats)
        # context.abort() raises, and grpc.aio keeps the exception, and with it this frame, in a
        # reference cycle: what the frame still refers to lives until a full garbage collection,
        # rare here (runtime.tune_garbage_collector). Under a flood of refused requests their
        # bodies (up to max_message_size each) piled up by the hundred MiB: the body goes now.
        del body
        if answer.outcome is Outcome.OK:
            response = ExportTraceServiceResponse()
            if answer.rejected_spans:
                response.partial_success.rejected_spans = answer.rejected_spans
                response.partial_success.error_message = answer.message
            return response
        _log.debug(
            "OTLP/gRPC request from %s: %s: %s",
            context.peer(),
            answer.outcome.value,
            answer.message,
        )
        abort = _abort_of(answer)
        await context.abort(abort.code, abort.details, abort.trailing_metadata)
        raise AssertionError("context.abort returned")  # it raises: for the type checker


def _abort_of(answer: Answer) -> _Abort:
    if answer.outcome is Outcome.REFUSED:
        reason = answer.message or REFUSED_DEFAULT_REASON
        status = throttle_status(reason, answer.retry_after_s)
        # the trailing metadata travels with the status to the client
        return _Abort(
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            reason,
            ((STATUS_DETAILS_KEY, status.SerializeToString()),),
        )
    if answer.outcome is Outcome.TOO_LARGE:
        return _Abort(grpc.StatusCode.RESOURCE_EXHAUSTED, answer.message)
    return _Abort(grpc.StatusCode.INVALID_ARGUMENT, answer.message)


def _authorization(metadata: Sequence[tuple[str, str | bytes]] | None) -> str | None:
    for key, value in metadata or ():
        if key == "authorization":
            return value if isinstance(value, str) else None
    return None
