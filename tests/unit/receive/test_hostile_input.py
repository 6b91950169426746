"""Hostile input too large or too odd to keep as corpus files, generated here: compression
bombs, bodies over the limit, values of megabytes, a million attributes, connections that break
mid-request. Each test runs against a `Front` (both receivers, a real Pipeline, a buffered
sentinel) and ends by checking that the sampler still serves and the sentinel is unharmed.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
import zlib

import grpc
import pytest
from google.rpc import code_pb2

from sampler.otlp.json_codec import request_to_json
from sampler.receive.http_server import JSON, PROTOBUF
from tests.e2e.rss import peak_rss_mib, reset_peak_rss, rss_mib
from tests.protowire import length_delimited, request_of
from tests.unit.receive._hostile import (
    MAX_BYTES,
    Front,
    HttpAnswer,
    check_grpc,
    check_http,
    valid_request,
)
from tests.unit.sessions.builders import simple_request, span, trace_id

MiB = 1024 * 1024


def gzip_of_zeros(size: int, members: int = 1) -> bytes:
    """`size` zero bytes gzipped, in `members` gzip members one after the other."""
    out = []
    for _ in range(members):
        packer = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
        chunk = bytes(min(size // members, MiB))
        left = size // members
        while left > 0:
            out.append(packer.compress(chunk[:left]))
            left -= len(chunk)
        out.append(packer.flush())
    return b"".join(out)


def assert_too_large(answer: HttpAnswer) -> None:
    check_http(answer)
    assert answer.status == 413
    message = answer.message()
    assert getattr(message, "code", None) == code_pb2.RESOURCE_EXHAUSTED


@pytest.mark.parametrize("members", [1, 512], ids=["one-member", "512-members"])
def test_gzip_bomb_stops_at_the_limit(members: int) -> None:
    bomb = gzip_of_zeros(4 * MAX_BYTES, members)  # 64 MiB of zeros in ~64 KiB
    assert len(bomb) < MAX_BYTES // 64
    with Front().started() as front:
        for content_type in (PROTOBUF, JSON):
            assert_too_large(front.http(bomb, content_type, {"Content-Encoding": "gzip"}))
        front.check_still_serving()
        front.check_sentinel_unharmed()
    assert front.http_receiver.stats.requests_too_large == 2


def test_grpc_compressed_message_over_the_limit() -> None:
    """grpc core bounds decompression itself: RESOURCE_EXHAUSTED before our handler runs."""
    with Front().started() as front:
        answer = front.grpc(bytes(2 * MAX_BYTES), gzip=True)
        check_grpc(answer)
        assert answer.code is grpc.StatusCode.RESOURCE_EXHAUSTED
        front.check_still_serving()
        front.check_sentinel_unharmed()


def test_bodies_just_over_the_limit() -> None:
    over = bytes(MAX_BYTES + 1)
    with Front().started() as front:
        assert_too_large(front.http(over))
        answer = front.grpc(over)
        assert answer.code is grpc.StatusCode.RESOURCE_EXHAUSTED, answer
        front.check_still_serving()
        front.check_sentinel_unharmed()


def test_millions_of_empty_spans_are_refused_before_parsing() -> None:
    """14 MiB of empty spans (7 Mi of them, about 1.2 GB once parsed) are over the default
    receivers.max_spans_per_request: refused whole, without retry information, before they
    are parsed; the resident memory of this process barely moves."""
    body = length_delimited(1, length_delimited(2, b"\x12\x00" * (7 << 20)))
    assert len(body) < MAX_BYTES
    with Front().started() as front:
        pid = os.getpid()
        reset_peak_rss(pid)
        before = rss_mib(pid)
        answer = front.grpc(body)
        assert answer.code is grpc.StatusCode.RESOURCE_EXHAUSTED, answer
        assert "max_spans_per_request" in answer.details
        assert_too_large(front.http(body))
        # the bodies themselves, a few copies on the way in; parsed, one would be 1.2 GB
        assert peak_rss_mib(pid) - before < 200
        front.check_still_serving()
        front.check_sentinel_unharmed()
    assert front.grpc_receiver.stats.requests_too_large == 1
    assert front.http_receiver.stats.requests_too_large == 1


@pytest.mark.parametrize(
    ("key", "kind", "text"),
    [
        ("blob", "", "x"),
        ("blob", "", "é"),  # two bytes a character: cut at a character boundary
        ("gen_ai.tool.call.arguments", "execute_tool", "x"),  # digested as JSON
        ("gen_ai.conversation.id", "", "x"),  # the session key
    ],
    ids=["plain", "non-ascii", "tool-arguments", "session-key"],
)
def test_attribute_value_of_megabytes(key: str, kind: str, text: str) -> None:
    """A 6 MiB string is accepted over gRPC, OTLP/HTTP protobuf and OTLP/JSON, and cut to
    receivers.max_attribute_value_size (never refused)."""
    value = json.dumps([text * (6 * MiB // len(text.encode()))], ensure_ascii=False)
    attrs = {key: value, **({"gen_ai.operation.name": kind} if kind else {})}
    request = simple_request(span("huge-value", 1, attrs=attrs))
    body = request.SerializeToString()
    with Front().started() as front:
        limit = front.pipeline.config.receivers.max_attribute_value_size
        as_json = request_to_json(request).encode()
        answers = [front.grpc(body), front.http(body), front.http(as_json, JSON)]
        check_grpc(answers[0])
        assert answers[0].code is grpc.StatusCode.OK
        for answer in answers[1:]:
            check_http(answer)
            assert answer.status == 200, answer
        assert front.pipeline.stats.spans_limited == 3
        front.check_still_serving()
        front.check_sentinel_unharmed()
        kept = [s for s in front.sink.spans() if s.trace_id == trace_id("huge-value")]
    assert len(kept) == 3
    expected = value.encode()[:limit].decode(errors="ignore")
    assert limit - len(expected.encode()) < 4
    for s in kept:
        assert {kv.key: kv.value.string_value for kv in s.attributes}[key] == expected


def test_nearly_a_million_attributes_in_one_span() -> None:
    """About 8 MB of protobuf, just under the million fields a message may hold; accepted over
    gRPC and OTLP/HTTP, the first receivers.max_attributes_per_span attributes kept."""
    count = 999_000
    attribute = length_delimited(9, length_delimited(1, b"a") + length_delimited(2, b"\x18\x01"))
    big_span = span("many-attrs", 1).SerializeToString() + attribute * count  # a = int 1
    body = request_of([big_span])
    assert len(body) < MAX_BYTES
    with Front().started() as front:
        limit = front.pipeline.config.receivers.max_attributes_per_span
        rpc = front.grpc(body)
        assert rpc.code is grpc.StatusCode.OK, rpc
        post = front.http(body)
        check_http(post)
        assert post.status == 200
        assert front.pipeline.stats.spans_limited == 2
        front.check_still_serving()
        front.check_sentinel_unharmed()
        kept = [s for s in front.sink.spans() if s.trace_id == trace_id("many-attrs")]
    assert [len(s.attributes) for s in kept] == [limit + 3, limit + 3]  # + the sampler's three


def test_a_span_of_over_a_million_fields_is_refused_whole() -> None:
    """Each field costs a walk when the span is ingested, on the event loop: past a million in
    one message the request is too large (413 / RESOURCE_EXHAUSTED, not retried), and the
    spans taken before stay safe."""
    link = length_delimited(13, b"")
    body = request_of([span("many-links", 1).SerializeToString() + link * 1_000_001])
    with Front().started() as front:
        rpc = front.grpc(body)
        assert rpc.code is grpc.StatusCode.RESOURCE_EXHAUSTED, rpc
        assert "holds more than 1000000 fields" in (rpc.details or "")
        post = front.http(body)
        assert post.status == 413
        front.check_still_serving()
        front.check_sentinel_unharmed()


@pytest.mark.slow
def test_many_attributes_as_json() -> None:
    """OTLP/JSON is decoded by protobuf's pure-Python json_format, about 14 us an attribute:
    100,000 cost over a second of CPU, on the JSON decoding thread (docs/architecture.md)."""
    count = 100_000
    document = json.loads(request_to_json(simple_request(span("json-attrs", 1))))
    document["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["attributes"] = [
        {"key": "a", "value": {"intValue": "1"}}
    ] * count
    body = json.dumps(document)
    with Front().started() as front:
        limit = front.pipeline.config.receivers.max_attributes_per_span
        answer = front.http(body.encode(), JSON)
        check_http(answer)
        assert answer.status == 200
        front.check_still_serving()
        front.check_sentinel_unharmed()
        kept = [s for s in front.sink.spans() if s.trace_id == trace_id("json-attrs")]
    assert [len(s.attributes) for s in kept] == [limit + 3]


@pytest.mark.slow
def test_a_large_json_request_does_not_hold_up_grpc_intake() -> None:
    """OTLP/JSON converts on a worker thread, without the GIL: gRPC exports sent while 15 MiB
    of JSON (300,000 attributes) is read and converted are answered promptly."""
    document = json.loads(request_to_json(simple_request(span("json-big", 1))))
    document["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["attributes"] = [
        {"key": "a", "value": {"stringValue": "x" * 20}}
    ] * 300_000
    body = json.dumps(document).encode()
    assert len(body) > 15 << 20
    small = simple_request(span("grpc-quick", 1)).SerializeToString()
    with Front(max_bytes=32 << 20).started() as front:

        async def race() -> list[float]:
            latencies: list[float] = []

            async def over_json() -> None:
                answer = await front._http(body, JSON, {})
                assert answer.status == 200, answer

            async def over_grpc() -> None:
                for _ in range(20):
                    started = time.monotonic()
                    answer = await front._grpc(small, False)
                    assert answer.code is grpc.StatusCode.OK, answer
                    latencies.append(time.monotonic() - started)
                    await asyncio.sleep(0.01)

            await asyncio.gather(over_json(), over_grpc())
            return latencies

        latencies = front.run(race())
        assert max(latencies) < 0.25, latencies
        front.check_still_serving()
        front.check_sentinel_unharmed()


@pytest.mark.parametrize(
    ("content_type", "expected"),
    [(";0*", 415), ("a;b*", 415), ("x/y;0*", 415), (f"{PROTOBUF};0*", 200), (f"{JSON}; a*", 200)],
)
def test_content_types_aiohttp_cannot_parse(content_type: str, expected: int) -> None:
    """Found by fuzzing: aiohttp's Content-Type parser raised IndexError on these (a 500)."""
    request = valid_request()
    body = request.SerializeToString() if PROTOBUF in content_type else b""
    if JSON in content_type:
        body = request_to_json(request).encode()
    with Front().started() as front:
        answer = front.http(body, content_type)
        check_http(answer)
        assert answer.status == expected
        front.check_still_serving()
        front.check_sentinel_unharmed()


# -- connections that break -------------------------------------------------------------------


def _raw(front: Front, data: bytes, *, wait_answer: bool, port: int | None = None) -> bytes:
    async def exchange() -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", port or front.http_port)
        writer.write(data)
        await writer.drain()
        answer = b""
        if wait_answer:
            answer = await asyncio.wait_for(reader.read(), 5)
        else:
            await asyncio.sleep(0.05)  # the server starts reading the body
        writer.close()
        await writer.wait_closed()
        await asyncio.sleep(0.05)  # the server sees the connection close
        return answer

    return front.run(exchange())


def _head(length: int | None, extra: str = "") -> bytes:
    framing = (
        "Transfer-Encoding: chunked\r\n" if length is None else f"Content-Length: {length}\r\n"
    )
    return (
        f"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: {PROTOBUF}\r\n{framing}{extra}\r\n"
    ).encode()


BODY = valid_request().SerializeToString()
GZIP_HEADER_ONLY = b"\x1f\x8b\x08\x00\x00\x00\x00"


@pytest.mark.parametrize(
    ("data", "wait_answer", "expected"),
    [
        pytest.param(_head(1000) + BODY, False, None, id="closed-mid-body"),
        pytest.param(_head(None) + b"5\r\nabc", False, None, id="closed-mid-chunk"),
        pytest.param(
            _head(None, "Connection: close\r\n") + b"zz\r\nabc\r\n0\r\n\r\n",
            True, 400, id="bad-chunk-size",
        ),
        pytest.param(
            _head(None, "Connection: close\r\n") + b"3\r\nabc\r\n1\r\n\r\n\r\n",
            True, 400, id="bad-chunk-end",
        ),
        pytest.param(
            b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n",
            True, 400, id="negative-content-length",
        ),
        pytest.param(
            _head(len(BODY), "Content-Length: 3\r\n") + BODY,
            True, 400, id="two-content-lengths",
        ),
        pytest.param(
            _head(7, "Content-Encoding: gzip\r\nConnection: close\r\n") + GZIP_HEADER_ONLY,
            True, 400, id="gzip-cut-short",
        ),
        pytest.param(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" * 8, True,
                     400, id="tls-to-plaintext-port"),
    ],
)  # fmt: skip
def test_broken_http_connections(
    data: bytes, wait_answer: bool, expected: int | None, caplog: pytest.LogCaptureFixture
) -> None:
    """Answered 400 when an answer can still be read; never an error logged with a traceback;
    the next request is served."""
    with caplog.at_level(logging.DEBUG), Front().started() as front:
        answer = _raw(front, data, wait_answer=wait_answer)
        status = int(answer.split(b" ", 2)[1]) if answer else None
        assert status == expected, answer[:200]
        front.check_still_serving()
        front.check_sentinel_unharmed()
    loud = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert not loud, [(r.name, r.getMessage()) for r in loud]


def test_broken_connection_costs_no_buffered_span() -> None:
    with Front().started() as front:
        before = front.pipeline.buffer.span_count
        _raw(front, _head(len(BODY) + 10) + BODY, wait_answer=False)
        assert front.pipeline.buffer.span_count == before
        front.check_still_serving()
        front.check_sentinel_unharmed()


@pytest.mark.parametrize(
    "data",
    [
        _head(len(BODY)) + BODY,  # HTTP/1.1
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes(range(256)) * 4,  # the preface, then junk
        bytes(range(255, -1, -1)) * 16,
    ],
    ids=["http1", "http2-preface-then-junk", "junk"],
)
def test_garbage_on_the_grpc_port(data: bytes) -> None:
    with Front().started() as front:
        _raw(front, data, wait_answer=False, port=front.grpc_port)
        front.check_still_serving()
        front.check_sentinel_unharmed()
