"""OTLP/HTTP transport: one protobuf ``POST {base}/v1/traces`` per outgoing batch."""

from __future__ import annotations

import gzip

import aiohttp
from google.protobuf.message import DecodeError
from google.rpc import status_pb2
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from sampler.export.base import ExporterSettings
from sampler.export.retry import SendResult, classify_http
from sampler.tls import ClientTls

TRACES_PATH = "/v1/traces"


def traces_url(base_url: str) -> str:
    """``{base_url}/v1/traces``, unless base_url already names the traces path."""
    trimmed = base_url.rstrip("/")
    return trimmed if trimmed.endswith(TRACES_PATH) else trimmed + TRACES_PATH


class HttpTransport:
    """Sends batches to an OTLP/HTTP endpoint. The aiohttp session lives from open() to
    close(); ``https`` URLs use ``settings.tls`` (else the system's trusted roots). Uses the
    settings' timeout, headers, compression and TLS."""

    def __init__(self, base_url: str, settings: ExporterSettings) -> None:
        url = traces_url(base_url)
        self.name = url
        self.settings = settings
        self.url = url
        self._headers = {
            **settings.headers,
            "Content-Type": "application/x-protobuf",
        }
        if settings.compression == "gzip":
            self._headers["Content-Encoding"] = "gzip"
        self._session: aiohttp.ClientSession | None = None
        self._server_hostname: str | None = None
        # Retries resend the same body: compress it once per batch, not once per attempt.
        self._last_plain: bytes | None = None
        self._last_wire = b""

    async def open(self) -> None:
        tls = self.settings.tls or ClientTls()
        connector = aiohttp.TCPConnector(ssl=tls.ssl_context)  # used by https URLs only
        self._server_hostname = tls.server_name_override or None
        self._session = aiohttp.ClientSession(headers=self._headers, connector=connector)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _wire_body(self, body: bytes) -> bytes:
        if self.settings.compression != "gzip":
            return body
        if body is not self._last_plain:
            self._last_plain = body
            self._last_wire = gzip.compress(body, compresslevel=6)
        return self._last_wire

    async def send(self, body: bytes) -> SendResult:
        if self._session is None:
            return SendResult.permanent("exporter not started")
        try:
            async with self._session.post(
                self.url,
                data=self._wire_body(body),
                timeout=aiohttp.ClientTimeout(total=self.settings.timeout_s),
                allow_redirects=False,
                server_hostname=self._server_hostname,
            ) as response:
                payload = await response.read()
                status = response.status
                retry_after = response.headers.get("Retry-After")
                is_protobuf = response.content_type == "application/x-protobuf"
        except TimeoutError:
            return SendResult.retryable(f"no response within {self.settings.timeout_s:g}s")
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError) as err:
            return SendResult.retryable(f"{type(err).__name__}: {err}")
        except aiohttp.ClientError as err:
            return SendResult.permanent(f"{type(err).__name__}: {err}")

        if 200 <= status < 300:
            return _partial_success(payload) if is_protobuf else SendResult.ok()
        return classify_http(
            status, f"HTTP {status}: {_error_message(payload, is_protobuf)}", retry_after
        )


def _partial_success(payload: bytes) -> SendResult:
    if not payload:
        return SendResult.ok()
    response = ExportTraceServiceResponse()
    try:
        response.ParseFromString(payload)
    except DecodeError:  # accepted; a body we cannot read is no reason to resend
        return SendResult.ok()
    partial = response.partial_success
    return SendResult.ok(
        rejected_spans=int(partial.rejected_spans), reason=str(partial.error_message)
    )


def _error_message(payload: bytes, is_protobuf: bool) -> str:
    """OTLP/HTTP servers should answer errors with a google.rpc.Status; fall back to text."""
    if is_protobuf:
        status = status_pb2.Status()
        try:
            status.ParseFromString(payload)
        except DecodeError:
            status.Clear()
        if status.message:
            return str(status.message)
    text = payload[:200].decode("utf-8", errors="replace").strip()
    return text or "no body"
