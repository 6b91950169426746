"""The sampler's front door for the hostile-input tests: both receivers on loopback with a real
`Pipeline` behind them, clients that send bytes exactly as given, and the checks every answer
must pass.

`Front` starts everything once per test on its own event loop and runs the loop only while a
request is in flight (hypothesis drives examples synchronously). Before any attack it buffers a
*sentinel*: a conversation and a lone trace. At the end `check_sentinel_unharmed` decides
everything and checks that the sentinel's spans reached the sink exactly as they were sent.
The rules keep everything, so every accepted span must also come out as parseable protobuf.
"""

from __future__ import annotations

import asyncio
import gzip
import io
from collections.abc import Coroutine, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import aiohttp
import grpc
import grpc.aio
from google.protobuf import json_format
from google.rpc import code_pb2, error_details_pb2, status_pb2
from multidict import CIMultiDictProxy
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from sampler.clock import ManualClock
from sampler.otlp.json_codec import request_to_json
from sampler.pipeline import Pipeline
from sampler.receive.grpc_server import EXPORT_METHOD, GrpcReceiver
from sampler.receive.http_server import JSON, PROTOBUF, HttpReceiver
from sampler.receive.intake import ReceiveFlow
from sampler.rules.verdict import ANNOTATION_KEYS
from tests.protowire import length_delimited, request_of
from tests.unit.sessions.builders import (
    RecordingSink,
    resource_spans,
    sampler_config,
    scope_spans,
    simple_request,
    span,
    trace_id,
)

T = TypeVar("T")

_ = error_details_pb2  # registers google.rpc.RetryInfo for the JSON bodies of 429s

MAX_BYTES = 16 * 1024 * 1024  # the default receivers.max_message_size
KEEP_ALL = "  - {name: everything, action: keep}\n"
CONV = "gen_ai.conversation.id"

# Answers a sender may get for any input: never UNKNOWN / INTERNAL or 500.
GRPC_ANSWERS = {
    grpc.StatusCode.OK,  # with or without a partial success
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
}
HTTP_ANSWERS = {200, 400, 413, 415, 429}


# -- what is sent -----------------------------------------------------------------------------


def _sentinel() -> ExportTraceServiceRequest:
    """A conversation (two spans, key on the root) and a lone trace, with a bit of everything."""
    conversation = [
        span("sentinel-conv", 2, parent=1, name="execute_tool", attrs={
            "gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "search",
        }, events=["exception"]),
        span("sentinel-conv", 1, name="invoke_agent", attrs={
            CONV: "sentinel-conversation-7f3a", "gen_ai.operation.name": "invoke_agent",
            "gen_ai.agent.name": "billing",
        }),
    ]  # fmt: skip
    lone = [span("sentinel-lone", 3, parent=1), span("sentinel-lone", 1, attrs={"n": 7})]
    return simple_request(*conversation, *lone)


SENTINEL = _sentinel()
SENTINEL_TRACES = frozenset(trace_id(name) for name in ("sentinel-conv", "sentinel-lone"))


def valid_request() -> ExportTraceServiceRequest:
    """A small well-formed request, sent after each attack to see that the sampler still serves."""
    return simple_request(span("still-serving", 1, name="ping"))


def nested(depth: int, kind: str = "array") -> bytes:
    """A serialized AnyValue: `depth` arrays (or kvlists) around a string. Built on the wire:
    beyond protobuf's nesting limit no message object can hold it."""
    value = length_delimited(1, b"core")  # string_value
    for _ in range(depth):
        if kind == "array":  # array_value (5) -> ArrayValue.values (1)
            value = length_delimited(5, length_delimited(1, value))
        else:  # kvlist_value (6) -> KeyValueList.values (1) -> KeyValue {key (1), value (2)}
            pair = length_delimited(1, b"k") + length_delimited(2, value)
            value = length_delimited(6, length_delimited(1, pair))
    return value


def request_with_value(name: str, key: str, value: bytes) -> bytes:
    """A one-span request whose span has the attribute `key` set to the serialized `value`."""
    carrier = span(name, 1, name="carrier").SerializeToString()
    carrier += length_delimited(9, length_delimited(1, key.encode()) + length_delimited(2, value))
    return request_of([carrier])


def rich_request() -> ExportTraceServiceRequest:
    """A valid request using most of the protocol: the base that mutation fuzzing corrupts."""
    tool = span("rich-1", 2, parent=1, name="execute_tool", attrs={
        "gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "lookup",
        "gen_ai.tool.call.arguments": '{"q": [1, 2.5, "x"], "deep": {"a": null}}',
        "http.response.status_code": 503, "ratio": 0.25, "ok": False, "tags": ["a", "b"],
    }, events=["exception"], start_ns=1_700_000_000_000_000_000,
        end_ns=1_700_000_001_000_000_000)  # fmt: skip
    tool.attributes.add(key="blob").value.bytes_value = bytes(range(40))
    tool.attributes.add(key="nested").value.ParseFromString(nested(4, "kvlist"))
    tool.events[0].attributes.add(key="exception.type").value.string_value = "TimeoutError"
    tool.links.add(trace_id=trace_id("rich-0"), span_id=(9).to_bytes(8, "big"), trace_state="x=1")
    tool.trace_state = "ot=th:8;rv:abcdef12345678,vendor=v"
    tool.flags = 0x301
    tool.dropped_attributes_count = 3
    tool.status.message = "upstream timed out"
    llm = span("rich-1", 3, parent=1, name="chat", attrs={
        "gen_ai.operation.name": "chat", "gen_ai.usage.input_tokens": 120,
        "gen_ai.usage.output_tokens": "40", "gen_ai.response.finish_reasons": ["length"],
    })  # fmt: skip
    llm.kind = Span.SPAN_KIND_CLIENT
    root = span("rich-1", 1, name="invoke_agent", attrs={
        CONV: "rich-conversation", "gen_ai.operation.name": "invoke_agent",
        "gen_ai.agent.name": "planner",
    })  # fmt: skip
    return ExportTraceServiceRequest(
        resource_spans=[
            resource_spans(
                [scope_spans([tool, llm], scope="agents", schema_url="https://s/1")],
                resource={"service.name": "agent", "session.id": "res-session"},
                schema_url="https://opentelemetry.io/schemas/1.26.0",
            ),
            resource_spans([scope_spans([root])]),
        ]
    )


RICH = rich_request()
RICH_BYTES = RICH.SerializeToString()
RICH_JSON = request_to_json(RICH)


# -- what comes back --------------------------------------------------------------------------


@dataclass(frozen=True)
class GrpcAnswer:
    code: grpc.StatusCode
    details: str
    response: ExportTraceServiceResponse | None


@dataclass(frozen=True)
class HttpAnswer:
    status: int
    headers: CIMultiDictProxy[str]
    body: bytes

    def message(self) -> ExportTraceServiceResponse | status_pb2.Status | str:
        """The body decoded as the spec says for this status and content type."""
        content_type = self.headers.get("Content-Type", "")
        if self.status == 415:
            assert content_type.startswith("text/plain"), content_type
            return self.body.decode()
        message: ExportTraceServiceResponse | status_pb2.Status = (
            ExportTraceServiceResponse() if self.status == 200 else status_pb2.Status()
        )
        if content_type == PROTOBUF:
            message.ParseFromString(self.body)
        else:
            assert content_type.startswith(JSON), content_type
            json_format.Parse(self.body, message)  # RetryInfo details: error_details_pb2
        return message


def check_grpc(answer: GrpcAnswer) -> None:
    assert answer.code in GRPC_ANSWERS, answer
    if answer.code is grpc.StatusCode.OK:
        assert answer.response is not None
    else:
        assert answer.details, answer


def check_http(answer: HttpAnswer) -> None:
    assert answer.status in HTTP_ANSWERS, (answer.status, answer.body[:300])
    if answer.status != 200:  # an empty ExportTraceServiceResponse is zero bytes in protobuf
        assert answer.body, answer.status
    message = answer.message()
    if isinstance(message, status_pb2.Status):
        exhausted = answer.status in (413, 429)
        expected = code_pb2.RESOURCE_EXHAUSTED if exhausted else code_pb2.INVALID_ARGUMENT
        assert (message.code, bool(message.message)) == (expected, True), message
        assert len(message.message) < 4096  # errors do not echo megabytes back


def rejected_spans(answer: GrpcAnswer | HttpAnswer) -> int:
    if isinstance(answer, GrpcAnswer):
        assert answer.response is not None
        return int(answer.response.partial_success.rejected_spans)
    message = answer.message()
    assert isinstance(message, ExportTraceServiceResponse)
    return int(message.partial_success.rejected_spans)


# -- the front door ---------------------------------------------------------------------------


class Front:
    """Both receivers and a Pipeline (keep everything) on one event loop, as in `run`."""

    def __init__(self, max_bytes: int = MAX_BYTES) -> None:
        self.loop = asyncio.new_event_loop()
        self.sink = RecordingSink()
        self.clock = ManualClock()  # never moved: nothing is decided until the end
        self.pipeline = Pipeline(sampler_config(KEEP_ALL), self.sink, self.clock)
        # large bodies decode on worker threads, as in `run` (runtime.SamplerApp)
        self.decoding = ThreadPoolExecutor(2, thread_name_prefix="decode")
        flow = ReceiveFlow(
            self.pipeline,
            max_spans=self.pipeline.config.receivers.max_spans_per_request,
            decoding=self.decoding,
        )
        self.grpc_receiver = GrpcReceiver(flow, "127.0.0.1:0", max_message_bytes=max_bytes)
        self.http_receiver = HttpReceiver(flow, "127.0.0.1:0", max_message_bytes=max_bytes)
        self.grpc_port = self.http_port = 0
        self._channel: grpc.aio.Channel | None = None
        self._gzip_channel: grpc.aio.Channel | None = None
        self._session: aiohttp.ClientSession | None = None

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
        return self.loop.run_until_complete(asyncio.wait_for(coro, timeout))

    async def _start(self) -> None:
        self.grpc_port = await self.grpc_receiver.start()
        self.http_port = await self.http_receiver.start()
        target = f"127.0.0.1:{self.grpc_port}"
        self._channel = grpc.aio.insecure_channel(target)
        self._gzip_channel = grpc.aio.insecure_channel(target, compression=grpc.Compression.Gzip)
        # auto_decompress off: the tests see the bytes the server sent
        self._session = aiohttp.ClientSession(auto_decompress=False)

    async def _stop(self) -> None:
        for channel in (self._channel, self._gzip_channel):
            if channel is not None:
                await channel.close()
        if self._session is not None:
            await self._session.close()
        await self.http_receiver.stop()
        await self.grpc_receiver.stop(grace=1.0)

    @contextmanager
    def started(self) -> Iterator[Front]:
        try:
            self.run(self._start())
            answer = self.grpc(SENTINEL.SerializeToString())
            assert (answer.code, rejected_spans(answer)) == (grpc.StatusCode.OK, 0), answer
            yield self
        finally:
            try:
                self.run(self._stop())
                self._cancel_the_rest()
            finally:
                # As asyncio.run ends: a handler task of a connection cut mid-request may still be
                # pending; closing the loop under it would have its destruction logged as an
                # error during whichever test runs when it is garbage-collected.
                pending = asyncio.all_tasks(self.loop)
                for task in pending:
                    task.cancel()
                self.loop.run_until_complete(_settled(pending))
                self.loop.close()
                self.decoding.shutdown(wait=True)

    def _cancel_the_rest(self) -> None:
        """Cancels what still runs, as asyncio.run does before closing its loop: aiohttp leaves
        a connection lost while it drained a refused body ("lingering close", up to 10 s)
        waiting, and a task destroyed later, pending, is logged at ERROR in another test."""
        pending = [task for task in asyncio.all_tasks(self.loop) if not task.done()]
        for task in pending:
            task.cancel()
        if pending:
            self.loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))

    # -- sending ---------------------------------------------------------------------------

    def grpc(self, body: bytes, *, gzip: bool = False) -> GrpcAnswer:
        return self.run(self._grpc(body, gzip))

    async def _grpc(self, body: bytes, gzip: bool) -> GrpcAnswer:
        channel = self._gzip_channel if gzip else self._channel
        assert channel is not None
        call = channel.unary_unary(EXPORT_METHOD, None, None)  # bytes in, bytes out
        try:
            reply = await call(body, timeout=20)
        except grpc.aio.AioRpcError as error:
            return GrpcAnswer(error.code(), error.details() or "", None)
        return GrpcAnswer(grpc.StatusCode.OK, "", ExportTraceServiceResponse.FromString(reply))

    def http(
        self,
        body: bytes,
        content_type: str | None = PROTOBUF,
        headers: Mapping[str, str] | None = None,
    ) -> HttpAnswer:
        return self.run(self._http(body, content_type, dict(headers or {})))

    async def _http(
        self, body: bytes, content_type: str | None, headers: dict[str, str]
    ) -> HttpAnswer:
        assert self._session is not None
        skip: tuple[str, ...] = ()
        if content_type is None:
            skip = ("Content-Type",)  # aiohttp would send application/octet-stream
        else:
            headers["Content-Type"] = content_type
        async with self._session.post(
            f"http://127.0.0.1:{self.http_port}/v1/traces",
            data=io.BytesIO(body),  # raw bytes of megabytes would make aiohttp warn
            headers=headers,
            skip_auto_headers=skip,
        ) as response:
            return HttpAnswer(response.status, response.headers, await response.read())

    def http_gzip(self, body: bytes, content_type: str = PROTOBUF) -> HttpAnswer:
        return self.http(gzip.compress(body), content_type, {"Content-Encoding": "gzip"})

    # -- the properties --------------------------------------------------------------------

    def check_still_serving(self) -> None:
        """A valid request is accepted on both receivers after whatever came before."""
        body = valid_request().SerializeToString()
        answer = self.grpc(body)
        assert (answer.code, rejected_spans(answer)) == (grpc.StatusCode.OK, 0), answer
        reply = self.http(body)
        assert (reply.status, rejected_spans(reply)) == (200, 0), reply

    def check_sentinel_unharmed(self) -> None:
        """Decide everything; the sentinel's spans come out once each, as they were sent, and
        everything forwarded is well-formed protobuf."""
        buffered = self.pipeline.buffer.span_count
        self.pipeline.decide_all()
        sent = {(s.trace_id, s.span_id): s for s in spans_of(SENTINEL)}
        kept = [s for s in self.sink.spans() if s.trace_id in SENTINEL_TRACES]
        assert sorted((s.trace_id, s.span_id) for s in kept) == sorted(sent)
        for s in kept:
            assert without_annotations(s) == sent[(s.trace_id, s.span_id)]
        assert sum(count for _, count in self.sink.submitted) >= buffered


def spans_of(request: ExportTraceServiceRequest) -> list[Span]:
    return [s for rs in request.resource_spans for ss in rs.scope_spans for s in ss.spans]


def without_annotations(kept: Span) -> Span:
    copy = Span()
    copy.CopyFrom(kept)
    del copy.attributes[:]
    copy.attributes.extend(kv for kv in kept.attributes if kv.key not in ANNOTATION_KEYS)
    return copy


async def _settled(tasks: set[asyncio.Task[Any]]) -> None:
    await asyncio.gather(*tasks, return_exceptions=True)
