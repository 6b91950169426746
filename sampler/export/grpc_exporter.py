"""OTLP/gRPC transport: one unary ``TraceService/Export`` call per outgoing batch."""

from __future__ import annotations

import random
from typing import Any

import grpc
import grpc.aio
from google.protobuf.message import DecodeError
from google.rpc import error_details_pb2, status_pb2
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from sampler.export.base import ExporterSettings, QueuedExporter, RetryClock, SendResult
from sampler.tls import ClientTls

EXPORT_METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
_STATUS_DETAILS_KEY = "grpc-status-details-bin"

# Transient per the OTLP specification ("Failures", OTLP/gRPC), plus RESOURCE_EXHAUSTED
# (see classify_rpc_error).
_RETRYABLE_CODES = frozenset(
    {
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.OUT_OF_RANGE,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DATA_LOSS,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    }
)


def _identity(body: bytes) -> bytes:
    return body


class GrpcExporter(QueuedExporter):
    """Sends batches to an OTLP/gRPC endpoint ``HOST:PORT`` (``[::1]:4317`` for IPv6) over a
    channel opened in start() and closed in stop(): plaintext, or with ``secure`` TLS set up by
    ``settings.tls`` (else the system's trusted roots)."""

    def __init__(
        self,
        target: str,
        settings: ExporterSettings,
        *,
        secure: bool = False,
        clock: RetryClock | None = None,
        rng: random.Random | None = None,
    ) -> None:
        scheme = "grpcs" if secure else "grpc"
        super().__init__(f"{scheme}://{target}", settings, clock=clock, rng=rng)
        self.target = target
        self.secure = secure
        # gRPC metadata keys must be lowercase ASCII.
        self._metadata = tuple((k.lower(), v) for k, v in settings.headers.items())
        self._channel: grpc.aio.Channel | None = None
        self._export: Any = None  # grpc.aio.UnaryUnaryMultiCallable[bytes, response]

    async def _open(self) -> None:
        compression = grpc.Compression.Gzip if self.settings.compression == "gzip" else None
        if not self.secure:
            self._channel = grpc.aio.insecure_channel(self.target, compression=compression)
        else:
            tls = self.settings.tls or ClientTls()
            options = []
            if tls.server_name_override:
                options.append(("grpc.ssl_target_name_override", tls.server_name_override))
            self._channel = grpc.aio.secure_channel(
                self.target, tls.grpc_credentials(), options=options, compression=compression
            )
        self._export = self._channel.unary_unary(
            EXPORT_METHOD,
            request_serializer=_identity,  # the pipeline hands over serialized requests
            response_deserializer=ExportTraceServiceResponse.FromString,
        )

    async def _close(self) -> None:
        if self._channel is not None:
            await self._channel.close(grace=None)
            self._channel = None
            self._export = None

    async def _send(self, body: bytes) -> SendResult:
        if self._export is None:
            return SendResult.permanent("exporter not started")
        try:
            response = await self._export(
                body, timeout=self.settings.timeout_s, metadata=self._metadata
            )
        except grpc.aio.AioRpcError as err:
            return classify_rpc_error(err.code(), err.details(), err.trailing_metadata())
        partial = response.partial_success
        return SendResult.ok(
            rejected_spans=int(partial.rejected_spans), reason=str(partial.error_message)
        )


def classify_rpc_error(
    code: grpc.StatusCode, details: str | None, trailing_metadata: Any
) -> SendResult:
    """Map a failed Export call to retryable / permanent.

    RESOURCE_EXHAUSTED is retried (a throttling backend, or another sampler whose buffer is
    full), with the server's RetryInfo delay when it sends one. The OTLP spec retries it only
    with RetryInfo; we retry it always, bounded by ``max_elapsed_s``, because a kept session
    must not be lost to a backend that throttles without saying for how long. The exception
    is gRPC's own "message larger than max" refusal: the same bytes would be refused forever.
    A RetryInfo delay on any retryable code replaces our own backoff for that retry.
    """
    reason = f"{code.name}: {details or 'no details'}"
    delay = _retry_info_delay_s(trailing_metadata)
    too_large = code is grpc.StatusCode.RESOURCE_EXHAUSTED and "larger than max" in (details or "")
    if code in _RETRYABLE_CODES and not too_large:
        return SendResult.retryable(reason, server_delay_s=delay)
    return SendResult.permanent(reason)


def _retry_info_delay_s(trailing_metadata: Any) -> float | None:
    """The RetryInfo delay carried in the ``grpc-status-details-bin`` trailer, if any."""
    if not trailing_metadata:
        return None
    for key, value in trailing_metadata:
        if key != _STATUS_DETAILS_KEY or not isinstance(value, bytes):
            continue
        status = status_pb2.Status()
        try:
            status.ParseFromString(value)
        except DecodeError:  # a malformed trailer only costs us the server's hint
            return None
        for detail in status.details:
            info = error_details_pb2.RetryInfo()
            if detail.Unpack(info):
                delay = info.retry_delay
                return max(0.0, float(delay.seconds) + float(delay.nanos) / 1e9)
    return None
