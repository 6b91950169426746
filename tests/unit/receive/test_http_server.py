"""The OTLP/HTTP receiver against real clients on loopback: the SDK exporter and aiohttp."""

from __future__ import annotations

import asyncio
import gzip
import json
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import aiohttp
import pytest
from google.rpc import code_pb2, status_pb2
from multidict import CIMultiDictProxy
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from opentelemetry.sdk.trace.export import SpanExportResult

from sampler.receive.http_server import JSON, PROTOBUF, HttpReceiver
from sampler.receive.intake import Admission, ReceiverStats
from tests.unit.receive._support import (
    SPAN_ID,
    TRACE_ID,
    RecordingConsumer,
    flow,
    ids_of,
    make_request,
    received_ids,
    run,
    sdk_spans,
)

MAX_BYTES = 64 * 1024
JSON_REQUEST = json.dumps(
    {
        "resourceSpans": [
            {
                "scopeSpans": [
                    {
                        "spans": [
                            {
                                "traceId": TRACE_ID.hex(),
                                "spanId": SPAN_ID.hex(),
                                "name": "invoke_agent",
                                "kind": 1,
                            }
                        ]
                    }
                ]
            }
        ]
    }
)


@dataclass
class Reply:
    status: int
    headers: CIMultiDictProxy[str]
    body: bytes

    def status_message(self) -> status_pb2.Status:
        """The `google.rpc.Status` body, decoded according to the response content type."""
        if self.headers["Content-Type"].startswith(JSON):
            document = json.loads(self.body)
            return status_pb2.Status(code=document["code"], message=document["message"])
        assert self.headers["Content-Type"] == PROTOBUF
        return status_pb2.Status.FromString(self.body)


class Client:
    def __init__(self, session: aiohttp.ClientSession, url: str) -> None:
        self.session = session
        self.url = url

    async def post(
        self, body: bytes | AsyncIterator[bytes], content_type: str = PROTOBUF, **headers: str
    ) -> Reply:
        headers = {"Content-Type": content_type, **headers}
        async with self.session.post(self.url, data=body, headers=headers) as response:
            return Reply(response.status, response.headers, await response.read())


@asynccontextmanager
async def serving(
    consumer: RecordingConsumer, max_bytes: int = MAX_BYTES, read_timeout: float = 30.0
) -> AsyncIterator[tuple[HttpReceiver, Client]]:
    receiver = HttpReceiver(
        flow(consumer), "127.0.0.1:0", max_message_bytes=max_bytes, read_timeout=read_timeout
    )
    port = await receiver.start()
    try:
        # auto_decompress=False: the tests look at the bytes the server sent.
        async with aiohttp.ClientSession(auto_decompress=False) as session:
            yield receiver, Client(session, f"http://127.0.0.1:{port}/v1/traces")
    finally:
        await receiver.stop()


def post_once(consumer: RecordingConsumer, body: bytes, content_type: str, **headers: str) -> Reply:
    async def scenario() -> Reply:
        async with serving(consumer) as (_, client):
            return await client.post(body, content_type, **headers)

    return run(scenario())


@pytest.mark.parametrize(
    "compression", [Compression.NoCompression, Compression.Gzip], ids=["plain", "gzip"]
)
def test_sdk_exporter_delivers_spans_with_their_ids(compression: Compression) -> None:
    spans = sdk_spans(["execute_tool", "chat"])
    consumer = RecordingConsumer()

    async def scenario() -> ReceiverStats:
        async with serving(consumer) as (receiver, client):
            exporter = OTLPSpanExporter(endpoint=client.url, timeout=5, compression=compression)
            try:
                # The SDK exporter blocks; the server needs the loop meanwhile.
                result = await asyncio.to_thread(exporter.export, spans)
            finally:
                exporter.shutdown()
            assert result is SpanExportResult.SUCCESS
            return receiver.stats

    stats = run(scenario())
    assert received_ids(consumer) == ids_of(spans)
    assert stats == ReceiverStats(requests_ok=1, spans_received=3)


def test_json_body_with_hex_ids_reaches_the_consumer_as_bytes() -> None:
    consumer = RecordingConsumer()
    reply = post_once(consumer, JSON_REQUEST.encode(), "application/json; charset=utf-8")
    assert (reply.status, reply.headers["Content-Type"], json.loads(reply.body)) == (
        200,
        JSON,
        {},
    )
    assert received_ids(consumer) == {(TRACE_ID, SPAN_ID)}


def test_protobuf_success_answers_an_export_response() -> None:
    reply = post_once(RecordingConsumer(), make_request(2).SerializeToString(), PROTOBUF)
    assert (reply.status, reply.headers["Content-Type"]) == (200, PROTOBUF)
    assert ExportTraceServiceResponse.FromString(reply.body) == ExportTraceServiceResponse()


@pytest.mark.parametrize("content_type", [PROTOBUF, JSON])
def test_partial_rejection_is_reported_in_the_response(content_type: str) -> None:
    consumer = RecordingConsumer(Admission(True, "1 span too late", rejected_spans=1))
    body = JSON_REQUEST.encode() if content_type == JSON else make_request(1).SerializeToString()
    reply = post_once(consumer, body, content_type)
    assert reply.status == 200
    if content_type == JSON:
        partial = json.loads(reply.body)["partialSuccess"]
        assert (int(partial["rejectedSpans"]), partial["errorMessage"]) == (1, "1 span too late")
    else:
        response = ExportTraceServiceResponse.FromString(reply.body)
        assert response.partial_success.rejected_spans == 1


def test_malformed_bodies_are_400_and_the_server_keeps_serving() -> None:
    consumer = RecordingConsumer()

    async def scenario() -> tuple[Reply, Reply, Reply, ReceiverStats]:
        async with serving(consumer) as (receiver, client):
            bad_protobuf = await client.post(b"\xff\xff\xff\xff", PROTOBUF)
            bad_json = await client.post(b'{"resourceSpans": [', JSON)
            good = await client.post(make_request(1).SerializeToString(), PROTOBUF)
            return bad_protobuf, bad_json, good, receiver.stats

    bad_protobuf, bad_json, good, stats = run(scenario())
    assert (bad_protobuf.status, bad_protobuf.headers["Content-Type"]) == (400, PROTOBUF)
    status = bad_protobuf.status_message()
    assert status.code == code_pb2.INVALID_ARGUMENT
    assert "cannot decode ExportTraceServiceRequest" in status.message

    assert (bad_json.status, bad_json.headers["Content-Type"]) == (400, JSON)
    document = json.loads(bad_json.body)
    assert document["code"] == code_pb2.INVALID_ARGUMENT
    assert "JSON" in document["message"]

    assert good.status == 200
    assert stats == ReceiverStats(requests_ok=1, requests_invalid=2, spans_received=1)


@pytest.mark.parametrize("content_type", [PROTOBUF, JSON])
def test_refusal_is_429_with_retry_after(content_type: str) -> None:
    consumer = RecordingConsumer(Admission(False, "buffer full", retry_after_s=1.2))
    body = JSON_REQUEST.encode() if content_type == JSON else make_request(1).SerializeToString()
    reply = post_once(consumer, body, content_type)
    assert (reply.status, reply.headers["Retry-After"]) == (429, "2")
    status = reply.status_message()
    assert (status.code, status.message) == (code_pb2.RESOURCE_EXHAUSTED, "buffer full")


def test_refusal_without_delay_still_asks_for_one_second() -> None:
    reply = post_once(RecordingConsumer(Admission(False)), b"", PROTOBUF)
    assert (reply.status, reply.headers["Retry-After"]) == (429, "1")
    assert reply.status_message().message  # a default reason, never empty


@pytest.mark.parametrize("content_type", ["text/plain", "application/octet-stream"])
def test_other_content_types_are_415(content_type: str) -> None:
    consumer = RecordingConsumer()
    reply = post_once(consumer, make_request(1).SerializeToString(), content_type)
    assert reply.status == 415
    assert PROTOBUF in reply.body.decode()
    assert consumer.requests == []


def test_gzip_body_is_decompressed() -> None:
    consumer = RecordingConsumer()
    body = gzip.compress(make_request(3).SerializeToString())
    reply = post_once(consumer, body, PROTOBUF, **{"Content-Encoding": "gzip"})
    assert reply.status == 200
    assert len(consumer.spans()) == 3


@pytest.mark.parametrize(
    ("encoding", "body", "reason"),
    [
        ("br", b"\x00", "unsupported content encoding"),
        ("gzip", b"not gzip at all", "invalid gzip body"),
        ("gzip", gzip.compress(b"\x00" * 100)[:20], "truncated gzip body"),
    ],
    ids=["brotli", "not-gzip", "truncated"],
)
def test_bad_content_encoding_is_400(encoding: str, body: bytes, reason: str) -> None:
    reply = post_once(RecordingConsumer(), body, JSON, **{"Content-Encoding": encoding})
    assert reply.status == 400
    assert reason in reply.status_message().message


async def _chunks(data: bytes, size: int = 8192) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


def test_oversize_bodies_are_a_clean_413() -> None:
    consumer = RecordingConsumer()
    oversize = b"\x00" * (MAX_BYTES * 4)

    async def scenario() -> tuple[list[Reply], Reply, ReceiverStats]:
        async with serving(consumer) as (receiver, client):
            replies = [
                await client.post(oversize),  # Content-Length says it all
                await client.post(_chunks(oversize)),  # chunked: found while reading
                # A gzip bomb: small on the wire, over the limit once decompressed.
                await client.post(gzip.compress(oversize * 16), **{"Content-Encoding": "gzip"}),
            ]
            after = await client.post(make_request(1).SerializeToString())
            return replies, after, receiver.stats

    replies, after, stats = run(scenario())
    for reply in replies:
        assert reply.status == 413
        assert reply.status_message().code == code_pb2.RESOURCE_EXHAUSTED
    assert after.status == 200
    assert consumer.requests and len(consumer.requests) == 1
    assert stats == ReceiverStats(requests_ok=1, requests_too_large=3, spans_received=1)


def test_a_body_that_stalls_is_408_and_its_connection_closed() -> None:
    consumer = RecordingConsumer()
    body = make_request(1).SerializeToString()

    async def scenario() -> tuple[bytes, bytes, Reply, ReceiverStats]:
        async with serving(consumer, read_timeout=0.3) as (receiver, client):
            port = client.url.split(":")[2].split("/")[0]
            reader, writer = await asyncio.open_connection("127.0.0.1", int(port))
            head = (
                f"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: {PROTOBUF}\r\n"
                f"Content-Length: {len(body)}\r\n\r\n"
            )
            writer.write(head.encode() + body[:5])  # and then nothing
            await writer.drain()
            head_in = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10.0)
            length = re.search(rb"Content-Length: (\d+)", head_in)
            assert length is not None, head_in
            status = await reader.readexactly(int(length.group(1)))
            writer.close()
            after = await client.post(body)  # others are served as before
            return head_in, status, after, receiver.stats

    head_in, status, after, stats = run(scenario())
    assert head_in.startswith(b"HTTP/1.1 408 Request Timeout\r\n")
    assert b"Connection: close" in head_in
    assert status_pb2.Status.FromString(status).code == code_pb2.DEADLINE_EXCEEDED
    assert after.status == 200
    assert len(consumer.requests) == 1  # the stalled request never reached the consumer
    assert stats == ReceiverStats(requests_ok=1, requests_timed_out=1, spans_received=1)


def test_wrong_method_and_path() -> None:
    async def scenario() -> tuple[int, int]:
        async with serving(RecordingConsumer()) as (_, client):
            async with client.session.get(client.url) as wrong_method:
                pass
            async with client.session.post(client.url + "/extra", data=b"") as wrong_path:
                pass
            return wrong_method.status, wrong_path.status

    assert run(scenario()) == (405, 404)
