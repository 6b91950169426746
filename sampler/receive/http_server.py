"""OTLP/HTTP receiver: `POST /v1/traces` in binary protobuf or OTLP/JSON.

Answers follow the OTLP/HTTP spec and are encoded like the request (protobuf or JSON):
- 200 with an `ExportTraceServiceResponse` (optionally a `partialSuccess`);
- 401 with `WWW-Authenticate: Bearer` and a Status (UNAUTHENTICATED) when a bearer token is
  configured and the `Authorization` header does not carry it (checked before anything else);
- 400 with a `google.rpc.Status` (INVALID_ARGUMENT) for a body that does not decode, a broken
  gzip stream or an unsupported `Content-Encoding`; aiohttp itself answers 400 (plain text) to
  broken HTTP framing, and those are logged at DEBUG here, not as aiohttp's ERROR tracebacks;
- 413 with a Status (RESOURCE_EXHAUSTED) for a body over `max_message_bytes`, compressed or not,
  and for a body holding more than `receivers.max_spans_per_request` spans;
- 408 with a Status (DEADLINE_EXCEEDED) when the body has not arrived within `read_timeout`
  (the connection is closed: a stalled sender holds none for ever);
- 415 (plain text) for a content type other than protobuf or JSON;
- 429 with `Retry-After` and a Status (RESOURCE_EXHAUSTED + RetryInfo) when the pipeline refuses.
Wrong methods (405) and paths (404) are answered by aiohttp's router.

aiohttp's own body decompression is switched off: the body is read and gunzipped here a batch
of chunks at a time, on the receive flow's decoding threads (16 KiB of gzip can take 150 ms to
inflate to 16 MiB: not on the event loop), so both the wire size and the decompressed size are
bounded (a gzip bomb stops at the limit). When a 413 is sent before the whole body was read,
aiohttp drains the rest ("lingering close", up to 10 s) before closing, so the client reads a
clean 413 rather than a reset. A sender that closes the connection mid-body is counted as an
invalid request.

With `tls`, the port speaks HTTPS only; with mutual TLS, a client without a certificate from
the configured CAs fails the handshake.

Connections are accepted by a `ConnectionGuard` (`receive/connections.py`): at most
`connections.max_connections` at once, a request head due within
`connections.header_timeout_s`, and keep-alive connections closed after `idle_timeout`
between requests.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, replace

from aiohttp import hdrs, web
from aiohttp.http_exceptions import HttpProcessingError
from google.protobuf import json_format
from google.protobuf.message import Message
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from sampler.receive.address import parse_listen
from sampler.receive.auth import (
    HTTP_CHALLENGE,
    UNAUTHENTICATED_MESSAGE,
    BearerAuth,
    security_summary,
)
from sampler.receive.connections import (
    ConnectionGuard,
    ConnectionLimits,
    DescriptorShortage,
    GuardedSite,
)
from sampler.receive.intake import (
    REFUSED_DEFAULT_REASON,
    Encoding,
    Outcome,
    ReceiveFlow,
    ReceiverStats,
)
from sampler.receive.status import (
    DEADLINE_EXCEEDED,
    INVALID_ARGUMENT,
    RESOURCE_EXHAUSTED,
    UNAUTHENTICATED,
    error_status,
    throttle_status,
)
from sampler.tls import ServerTls

TRACES_PATH = "/v1/traces"
DEFAULT_LIMITS = ConnectionLimits(max_connections=1024, header_timeout_s=10.0)
PROTOBUF = "application/x-protobuf"
JSON = "application/json"

_GZIP_WBITS = 16 + zlib.MAX_WBITS  # gzip header and trailer, not raw zlib
GZIP_BATCH_BYTES = 256 << 10  # compressed bytes inflated at a time, off the event loop
_log = logging.getLogger(__name__)


def _media_type(request: web.Request) -> str:
    """The Content-Type without parameters, lowercased. Not aiohttp's `content_type`: it parses
    with the email package, which raises IndexError on values such as `a;b*` (a 500)."""
    return request.headers.get(hdrs.CONTENT_TYPE, "").partition(";")[0].strip().lower()


class _MalformedRequestsAtDebug(logging.Filter):
    """aiohttp answers a request it cannot parse (broken framing, a bad header) with 400 and
    logs it at ERROR with a traceback, so any broken or hostile sender could flood the log.
    Those records are the sender's mistake: they go to our DEBUG log, like our own 400s."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, HttpProcessingError):
            _log.debug("malformed HTTP request: %s", error)
            return False
        return True


# The logger aiohttp's request handler writes to (its default is "aiohttp.server").
_server_log = logging.getLogger(f"{__name__}.aiohttp")
_server_log.addFilter(_MalformedRequestsAtDebug())


class _BodyTooLarge(Exception):
    pass


class _BadBody(Exception):
    pass


@dataclass(frozen=True, slots=True)
class _Codec:
    content_type: str

    @property
    def is_json(self) -> bool:
        return self.content_type == JSON

    @property
    def encoding(self) -> Encoding:
        return "json" if self.is_json else "protobuf"

    def response(
        self, status: int, message: Message, headers: Mapping[str, str] | None = None
    ) -> web.Response:
        if self.is_json:
            # Responses hold no trace/span ids, so the standard proto3 JSON mapping is OTLP/JSON.
            payload = json.dumps(json_format.MessageToDict(message), separators=(",", ":"))
            body = payload.encode()
        else:
            body = message.SerializeToString()
        return web.Response(
            status=status, body=body, content_type=self.content_type, headers=headers
        )


_CODECS = {PROTOBUF: _Codec(PROTOBUF), JSON: _Codec(JSON)}


class _GunzipLimited:
    """Incremental gzip decoder that never holds more than `limit + 1` decompressed bytes."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._decoder = zlib.decompressobj(wbits=_GZIP_WBITS)
        self._out = bytearray()

    def feed(self, data: bytes) -> None:
        while data:
            if self._decoder.eof:  # RFC 1952: a gzip file may hold several members in a row
                self._decoder = zlib.decompressobj(wbits=_GZIP_WBITS)
            # max_length is >= 1 here (0 would mean "unbounded").
            self._out += self._decoder.decompress(data, self._limit + 1 - len(self._out))
            if len(self._out) > self._limit:
                raise _BodyTooLarge
            data = self._decoder.unconsumed_tail or self._decoder.unused_data

    def finish(self) -> bytes:
        if not self._decoder.eof:
            raise _BadBody("truncated gzip body")
        return bytes(self._out)


# An unauthenticated request's body is not wanted: at most this much of it is read and dropped,
# within this long, before the connection is closed after the 401.
UNWANTED_BODY_BYTES = 1 << 20
UNWANTED_BODY_S = 1.0


async def _without_the_body(request: web.Request, response: web.Response) -> web.Response:
    """Sends ``response`` and closes the connection, reading at most ``UNWANTED_BODY_BYTES``
    of the body first: so a sender of a small body reads the answer rather than a reset, as
    Go's server does. aiohttp would otherwise drain the whole body after the answer (its
    "lingering close", up to 10 s, however large): 16 unauthenticated senders of 15 MiB had the
    event loop read 240 MiB for nothing."""
    response.force_close()
    dropped = 0
    try:
        async with asyncio.timeout(UNWANTED_BODY_S):
            while dropped <= UNWANTED_BODY_BYTES:
                chunk = await request.content.readany()
                if not chunk:
                    return response  # the whole body came: aiohttp closes cleanly
                dropped += len(chunk)
    except (TimeoutError, ConnectionError, HttpProcessingError):
        pass
    # More is coming: answer, then close at once. A sender still writing its body may see the
    # connection reset instead of the 401 (Go's client reads the answer; Python's mostly not).
    await response.prepare(request)
    await response.write_eof()
    protocol = request.protocol
    if protocol is not None:
        protocol.force_close()
    return response


class HttpReceiver:
    """Serves OTLP/HTTP trace exports: bodies go to the receive flow, answers become statuses."""

    def __init__(
        self,
        flow: ReceiveFlow,
        listen: str,
        *,
        max_message_bytes: int,
        read_timeout: float = 30.0,
        idle_timeout: float = 60.0,
        connections: ConnectionLimits = DEFAULT_LIMITS,
        shortage: DescriptorShortage | None = None,
        shutdown_grace: float = 5.0,
        tls: ServerTls | None = None,
        auth: BearerAuth | None = None,
    ) -> None:
        if max_message_bytes <= 0:
            raise ValueError(f"max_message_bytes must be positive, got {max_message_bytes}")
        self._flow = flow
        self._address = parse_listen(listen)
        self._max_message_bytes = max_message_bytes
        self._read_timeout = read_timeout if read_timeout > 0 else None  # None: no limit
        self._idle_timeout = idle_timeout
        self._guard = ConnectionGuard("OTLP/HTTP", connections, shortage or DescriptorShortage())
        self._shutdown_grace = shutdown_grace
        self._tls = tls
        self._auth = auth
        self._runner: web.AppRunner | None = None
        self.stats = ReceiverStats()
        self.connections = self._guard.stats

    async def start(self) -> int:
        """Bind and start serving; return the bound port (useful when the port is 0)."""
        if self._runner is not None:
            raise RuntimeError("HttpReceiver already started")
        app = web.Application(
            client_max_size=self._max_message_bytes, middlewares=[self._guard.middleware]
        )
        app.router.add_post(TRACES_PATH, self._export)
        runner = web.AppRunner(
            app,
            access_log=None,
            auto_decompress=False,  # bounded gunzip in _read_body instead
            keepalive_timeout=self._idle_timeout,
            shutdown_timeout=self._shutdown_grace,
            logger=_server_log,
        )
        await runner.setup()
        site = GuardedSite(
            runner,
            self._address.host,
            self._address.port,
            self._guard,
            ssl_context=self._tls.ssl_context if self._tls is not None else None,
        )
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            raise OSError(
                exc.errno, f"cannot listen for OTLP/HTTP on {self._address}: {exc.strerror}"
            ) from exc
        self._runner = runner
        _log.info(
            "OTLP/HTTP receiver listening on %s (%s)",
            replace(self._address, port=site.port),
            security_summary(self._tls, self._auth),
        )
        return site.port

    async def stop(self) -> None:
        """Stop accepting connections; let running requests finish within `shutdown_grace`."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def _export(self, request: web.Request) -> web.Response:
        media_type = _media_type(request)
        codec = _CODECS.get(media_type)
        if self._auth is not None and not self._auth.allows(
            request.headers.get(hdrs.AUTHORIZATION)
        ):
            self.stats.requests_unauthenticated += 1
            _log.debug("unauthenticated OTLP/HTTP request from %s", request.remote)
            status = error_status(UNAUTHENTICATED, UNAUTHENTICATED_MESSAGE)
            response = (codec or _CODECS[PROTOBUF]).response(
                401, status, {hdrs.WWW_AUTHENTICATE: HTTP_CHALLENGE}
            )
            return await _without_the_body(request, response)
        if codec is None:
            self.stats.requests_invalid += 1
            given = repr(media_type) if media_type else "(none)"
            return web.Response(
                status=415, text=f"unsupported content type {given}; send {PROTOBUF} or {JSON}"
            )
        encoding = request.headers.get(hdrs.CONTENT_ENCODING, "").strip().lower()
        if encoding not in ("", "identity", "gzip", "x-gzip"):
            return self._invalid(codec, f"unsupported content encoding {encoding!r}; use gzip")
        try:
            async with asyncio.timeout(self._read_timeout):
                body = await self._read_body(request, gzip=encoding in ("gzip", "x-gzip"))
        except TimeoutError:
            self.stats.requests_timed_out += 1
            _log.debug("OTLP/HTTP request body from %s timed out", request.remote)
            status = error_status(
                DEADLINE_EXCEEDED, f"request body not received within {self._read_timeout:g}s"
            )
            response = codec.response(408, status)
            response.force_close()  # the rest of the body is not read
            return response
        except _BodyTooLarge:
            self.stats.requests_too_large += 1
            status = error_status(
                RESOURCE_EXHAUSTED,
                f"request body exceeds the limit of {self._max_message_bytes} bytes",
            )
            response = codec.response(413, status)
            response.force_close()  # the rest of the body is drained, then the connection closed
            return response
        except _BadBody as exc:
            return self._invalid(codec, str(exc))
        answer = await self._flow.receive(body, codec.encoding, self.stats)
        del body
        if answer.outcome is Outcome.REFUSED:
            reason = answer.message or REFUSED_DEFAULT_REASON
            retry_after = max(1, math.ceil(answer.retry_after_s))
            status = throttle_status(reason, answer.retry_after_s)
            return codec.response(429, status, {hdrs.RETRY_AFTER: str(retry_after)})
        if answer.outcome is Outcome.TOO_LARGE:
            return codec.response(413, error_status(RESOURCE_EXHAUSTED, answer.message))
        if answer.outcome is Outcome.INVALID:
            _log.debug("invalid OTLP/HTTP request: %s", answer.message)
            return codec.response(400, error_status(INVALID_ARGUMENT, answer.message))
        result = ExportTraceServiceResponse()
        if answer.rejected_spans:
            result.partial_success.rejected_spans = answer.rejected_spans
            result.partial_success.error_message = answer.message
        return codec.response(200, result)

    def _invalid(self, codec: _Codec, reason: str) -> web.Response:
        self.stats.requests_invalid += 1
        _log.debug("invalid OTLP/HTTP request: %s", reason)
        return codec.response(400, error_status(INVALID_ARGUMENT, reason))

    async def _read_body(self, request: web.Request, *, gzip: bool) -> bytes:
        limit = self._max_message_bytes
        if request.content_length is not None and request.content_length > limit:
            raise _BodyTooLarge
        gunzip = _GunzipLimited(limit) if gzip else None
        raw = bytearray()  # the body; with gzip, what is not inflated yet
        received = 0
        try:
            async for chunk in request.content.iter_any():
                received += len(chunk)
                if received > limit:
                    raise _BodyTooLarge
                raw += chunk
                if gunzip is not None and len(raw) >= GZIP_BATCH_BYTES:
                    await self._inflate(gunzip, raw)
                    raw = bytearray()
        except ConnectionError as exc:
            # The sender closed the connection mid-body: nobody reads the answer, but without
            # this aiohttp logs a traceback at ERROR level for every such client.
            raise _BadBody("the connection closed before the whole body arrived") from exc
        except HttpProcessingError as exc:  # broken chunked framing, reported on the stream
            raise _BadBody(f"malformed request body: {exc.message}") from exc
        if gunzip is None:
            return bytes(raw)
        await self._inflate(gunzip, raw)
        return gunzip.finish()

    async def _inflate(self, gunzip: _GunzipLimited, data: bytearray) -> None:
        try:
            await self._flow.off_loop(lambda: gunzip.feed(bytes(data)))
        except zlib.error as exc:
            raise _BadBody(f"invalid gzip body: {exc}") from exc
