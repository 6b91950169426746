"""OTLP/gRPC transport: one unary ``TraceService/Export`` call per outgoing batch."""

from __future__ import annotations

from typing import Any

import grpc
import grpc.aio
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from sampler.export.base import ExporterSettings
from sampler.export.retry import SendResult, classify_grpc
from sampler.tls import ClientTls

EXPORT_METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


def _identity(body: bytes) -> bytes:
    return body


class GrpcTransport:
    """Sends batches to an OTLP/gRPC endpoint ``HOST:PORT`` (``[::1]:4317`` for IPv6) over a
    channel opened in open() and closed in close(): plaintext, or with ``secure`` TLS set up by
    ``settings.tls`` (else the system's trusted roots). Uses the settings' timeout, headers,
    compression and TLS."""

    def __init__(self, target: str, settings: ExporterSettings, *, secure: bool = False) -> None:
        self.name = f"{'grpcs' if secure else 'grpc'}://{target}"
        self.settings = settings
        self.target = target
        self.secure = secure
        # gRPC metadata keys must be lowercase ASCII.
        self._metadata = tuple((k.lower(), v) for k, v in settings.headers.items())
        self._channel: grpc.aio.Channel | None = None
        self._export: Any = None  # grpc.aio.UnaryUnaryMultiCallable[bytes, response]

    async def open(self) -> None:
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

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close(grace=None)
            self._channel = None
            self._export = None

    async def send(self, body: bytes) -> SendResult:
        if self._export is None:
            return SendResult.permanent("exporter not started")
        try:
            response = await self._export(
                body, timeout=self.settings.timeout_s, metadata=self._metadata
            )
        except grpc.aio.AioRpcError as err:
            return classify_grpc(err.code(), err.details(), err.trailing_metadata())
        partial = response.partial_success
        return SendResult.ok(
            rejected_spans=int(partial.rejected_spans), reason=str(partial.error_message)
        )
