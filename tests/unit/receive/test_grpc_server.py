"""The OTLP/gRPC receiver against real clients on loopback: the SDK exporter and a raw channel."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import cast

import grpc
import grpc.aio
import pytest
from google.rpc import code_pb2, error_details_pb2, status_pb2
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from opentelemetry.sdk.trace.export import SpanExportResult

from sampler.receive.grpc_server import (
    EXPORT_METHOD,
    STATUS_DETAILS_KEY,
    GrpcConnections,
    GrpcReceiver,
)
from sampler.receive.intake import ACCEPTED, Admission, ReceiverStats
from tests.unit.receive._support import (
    RecordingConsumer,
    flow,
    ids_of,
    make_request,
    received_ids,
    run,
    sdk_spans,
)

MAX_BYTES = 64 * 1024


@asynccontextmanager
async def serving(
    consumer: RecordingConsumer, listen: str = "127.0.0.1:0", max_bytes: int = MAX_BYTES
) -> AsyncIterator[tuple[GrpcReceiver, str]]:
    receiver = GrpcReceiver(flow(consumer), listen, max_message_bytes=max_bytes)
    port = await receiver.start()
    host = listen.rpartition(":")[0]
    try:
        yield receiver, f"{host}:{port}"
    finally:
        await receiver.stop(grace=1.0)


@asynccontextmanager
async def export_call(
    target: str,
) -> AsyncIterator[grpc.aio.UnaryUnaryMultiCallable[bytes, bytes]]:
    """A raw unary call that sends bytes as they are and returns the response bytes."""
    async with grpc.aio.insecure_channel(target) as channel:
        yield channel.unary_unary(EXPORT_METHOD, None, None)


def trailer(error: grpc.aio.AioRpcError, key: str) -> object:
    # At runtime an aio error carries grpc.aio.Metadata (the stubs say otherwise).
    metadata = cast(grpc.aio.Metadata, error.trailing_metadata())
    return metadata.get(key)


def test_sdk_exporter_delivers_spans_with_their_ids() -> None:
    spans = sdk_spans(["execute_tool", "chat"])
    consumer = RecordingConsumer()

    async def scenario() -> ReceiverStats:
        async with serving(consumer) as (receiver, target):
            exporter = OTLPSpanExporter(
                endpoint=target, insecure=True, timeout=5, compression=grpc.Compression.Gzip
            )
            try:
                # The SDK exporter blocks; the server needs the loop meanwhile.
                result = await asyncio.to_thread(exporter.export, spans)
            finally:
                exporter.shutdown()
            assert result is SpanExportResult.SUCCESS
            return receiver.stats

    stats = run(scenario())
    assert received_ids(consumer) == ids_of(spans)
    assert {span.name for span in consumer.spans()} == {"invoke_agent", "execute_tool", "chat"}
    assert stats == ReceiverStats(requests_ok=1, spans_received=3)


def test_garbage_is_invalid_argument_and_the_server_keeps_serving() -> None:
    consumer = RecordingConsumer()

    async def scenario() -> tuple[grpc.aio.AioRpcError, bytes, ReceiverStats]:
        async with serving(consumer) as (receiver, target), export_call(target) as export:
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await export(b"\xff\xff\xff\xff", timeout=5)
            answer = await export(make_request(2).SerializeToString(), timeout=5)
            return refused.value, answer, receiver.stats

    error, answer, stats = run(scenario())
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "cannot decode ExportTraceServiceRequest" in (error.details() or "")
    assert ExportTraceServiceResponse.FromString(answer) == ExportTraceServiceResponse()
    assert len(consumer.spans()) == 2
    assert stats == ReceiverStats(requests_ok=1, requests_invalid=1, spans_received=2)


def test_empty_request_is_ok() -> None:
    consumer = RecordingConsumer()

    async def scenario() -> bytes:
        async with serving(consumer) as (_, target), export_call(target) as export:
            answer: bytes = await export(b"", timeout=5)
            return answer

    assert run(scenario()) == b""
    assert len(consumer.requests) == 1


def test_refusal_is_resource_exhausted_with_retry_info() -> None:
    consumer = RecordingConsumer(Admission(False, "buffer full", retry_after_s=2.5))

    async def scenario() -> grpc.aio.AioRpcError:
        async with serving(consumer) as (_, target), export_call(target) as export:
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await export(make_request(3).SerializeToString(), timeout=5)
            return refused.value

    error = run(scenario())
    assert error.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert error.details() == "buffer full"
    details = trailer(error, STATUS_DETAILS_KEY)
    assert isinstance(details, bytes)
    status = status_pb2.Status.FromString(details)
    assert (status.code, status.message) == (code_pb2.RESOURCE_EXHAUSTED, "buffer full")
    retry_info = error_details_pb2.RetryInfo()
    assert status.details[0].Unpack(retry_info)
    assert retry_info.retry_delay.ToNanoseconds() == 2_500_000_000


def test_partial_rejection_is_reported_in_the_response() -> None:
    consumer = RecordingConsumer(Admission(True, "2 spans too late", rejected_spans=2))

    async def scenario() -> bytes:
        async with serving(consumer) as (_, target), export_call(target) as export:
            answer: bytes = await export(make_request(3).SerializeToString(), timeout=5)
            return answer

    response = ExportTraceServiceResponse.FromString(run(scenario()))
    assert response.partial_success.rejected_spans == 2
    assert response.partial_success.error_message == "2 spans too late"


def test_oversize_message_is_refused_by_grpc_with_resource_exhausted() -> None:
    consumer = RecordingConsumer(ACCEPTED)

    async def scenario() -> tuple[grpc.aio.AioRpcError, bytes]:
        async with serving(consumer, max_bytes=1024) as (_, target), export_call(target) as call:
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await call(make_request(100, name="x" * 50).SerializeToString(), timeout=5)
            return refused.value, await call(make_request(1).SerializeToString(), timeout=5)

    error, answer = run(scenario())
    assert error.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "larger than max" in (error.details() or "")
    # No RetryInfo: retrying the same message cannot succeed.
    assert trailer(error, STATUS_DETAILS_KEY) is None
    assert answer == b""
    assert len(consumer.requests) == 1


def _ipv6_loopback_available() -> bool:
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not _ipv6_loopback_available(), reason="no IPv6 loopback on this machine")
def test_ipv6_loopback_listen_address() -> None:
    consumer = RecordingConsumer()

    async def scenario() -> str:
        async with (
            serving(consumer, listen="[::1]:0") as (_, target),
            export_call(target) as export,
        ):
            await export(make_request(1).SerializeToString(), timeout=5)
            return target

    target = run(scenario())
    assert target.startswith("[::1]:") and not target.endswith(":0")
    assert len(consumer.spans()) == 1


def test_bind_failure_is_an_os_error() -> None:
    async def scenario() -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            port = taken.getsockname()[1]
            receiver = GrpcReceiver(
                flow(RecordingConsumer()), f"127.0.0.1:{port}", max_message_bytes=MAX_BYTES
            )
            with pytest.raises(OSError, match="cannot listen for OTLP/gRPC"):
                await receiver.start()
            await receiver.stop(grace=0)

    run(scenario())


def test_connection_settings_become_grpc_channel_arguments() -> None:
    options = dict(
        GrpcConnections(
            max_connections=7,
            max_concurrent_streams=9,
            handshake_timeout_s=2.5,
            keepalive_time_s=60,
            keepalive_timeout_s=20,
            max_connection_idle_s=0,  # never: no argument at all
            min_ping_interval_s=5,
            permit_pings_without_calls=False,
        ).options()
    )
    assert options == {
        "grpc.max_allowed_incoming_connections": 7,
        "grpc.max_concurrent_streams": 9,
        "grpc.server_handshake_timeout_ms": 2500,
        "grpc.keepalive_time_ms": 60_000,
        "grpc.keepalive_timeout_ms": 20_000,
        "grpc.http2.min_ping_interval_without_data_ms": 5_000,
        "grpc.keepalive_permit_without_calls": 0,
    }
    assert GrpcConnections().options()[-1] == ("grpc.max_connection_idle_ms", 300_000)


def _closed_at_once(sock: socket.socket) -> bool:
    """True if the server closes ``sock`` within a second (after what it sent first)."""
    sock.settimeout(1.0)
    try:
        while sock.recv(65536):
            pass
    except TimeoutError:
        return False
    except ConnectionError:
        pass
    return True


def test_beyond_max_connections_a_new_connection_is_closed_at_once() -> None:
    consumer = RecordingConsumer()

    async def scenario() -> tuple[list[bool], bool]:
        receiver = GrpcReceiver(
            flow(consumer),
            "127.0.0.1:0",
            max_message_bytes=MAX_BYTES,
            connections=GrpcConnections(max_connections=2, handshake_timeout_s=30),
        )
        port = await receiver.start()
        held = [socket.create_connection(("127.0.0.1", port)) for _ in range(3)]
        try:
            closed = await asyncio.gather(
                *(asyncio.to_thread(_closed_at_once, sock) for sock in held)
            )
            # the held ones let go: a client gets in again
            for sock in held:
                sock.close()
            await asyncio.sleep(0.2)
            async with export_call(f"127.0.0.1:{port}") as call:
                await call(make_request().SerializeToString(), timeout=5)
            return list(closed), True
        finally:
            for sock in held:
                sock.close()
            await receiver.stop(grace=1.0)

    closed, served = run(scenario())
    assert closed == [False, False, True]
    assert served and len(consumer.requests) == 1


def test_a_connection_without_the_http2_preface_is_closed_at_the_handshake_timeout() -> None:
    async def scenario() -> bool:
        receiver = GrpcReceiver(
            flow(RecordingConsumer()),
            "127.0.0.1:0",
            max_message_bytes=MAX_BYTES,
            connections=GrpcConnections(handshake_timeout_s=0.3),
        )
        port = await receiver.start()
        try:
            with socket.create_connection(("127.0.0.1", port)) as silent:
                return await asyncio.to_thread(_closed_at_once, silent)
        finally:
            await receiver.stop(grace=1.0)

    assert run(scenario())
