"""Test doubles and helpers shared by the receiver tests."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Sequence
from typing import Any, TypeVar

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from sampler._native import Request
from sampler.config.model import DEFAULT_MAX_SPANS_PER_REQUEST
from sampler.receive.intake import ACCEPTED, Admission, Intake, ReceiveFlow

T = TypeVar("T")

TRACE_ID = bytes.fromhex("5b8efff798038103d269b633813fc60c")
SPAN_ID = bytes.fromhex("eee19b7ec3c1b174")


def run(coro: Coroutine[Any, Any, T], timeout: float = 10.0) -> T:
    """Run one test scenario on a fresh event loop, bounded in time."""
    return asyncio.run(asyncio.wait_for(coro, timeout))


class _Answered(Intake):
    """An intake whose answer is set by the test."""

    __slots__ = ("answer",)

    def __init__(self, request: Request, answer: Admission) -> None:
        super().__init__(request, 0)
        self.answer = answer

    def admission(self) -> Admission:
        return self.answer


class RecordingConsumer:
    """The pipeline's side of the receive flow (``IntakeTarget``): records the validated
    requests and answers ``admission`` (a refusal, or an acceptance, maybe partial)."""

    def __init__(self, admission: Admission = ACCEPTED, *, room: bool = True) -> None:
        self.admission = admission
        self.room = room  # False: no room to decode anything
        self.requests: list[ExportTraceServiceRequest] = []
        self.reserved = 0

    def reserve(self, size: int) -> bool:
        if self.room:
            self.reserved += size
        return self.room

    def unreserve(self, size: int) -> None:
        self.reserved -= size

    def admit(self, request: Request) -> Intake | Admission:
        self.requests.append(ExportTraceServiceRequest.FromString(request.to_bytes()))
        if not self.admission.accepted:
            return self.admission
        return _Answered(request, self.admission)

    def ingest(self, intake: Intake, max_spans: int = 0) -> bool:
        return True

    def spans(self) -> list[Span]:
        return [
            span
            for request in self.requests
            for resource_spans in request.resource_spans
            for scope_spans in resource_spans.scope_spans
            for span in scope_spans.spans
        ]


def flow(
    consumer: RecordingConsumer, max_spans: int = DEFAULT_MAX_SPANS_PER_REQUEST
) -> ReceiveFlow:
    return ReceiveFlow(consumer, max_spans=max_spans)


def make_request(span_count: int = 1, name: str = "chat") -> ExportTraceServiceRequest:
    spans = [
        Span(trace_id=TRACE_ID, span_id=SPAN_ID[:-4] + (i + 1).to_bytes(4, "big"), name=name)
        for i in range(span_count)
    ]
    return ExportTraceServiceRequest(
        resource_spans=[ResourceSpans(scope_spans=[ScopeSpans(spans=spans)])]
    )


def sdk_spans(names: Sequence[str]) -> list[ReadableSpan]:
    """Finished spans made by the real OpenTelemetry SDK (one trace, nested)."""
    recorder = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(recorder))
    tracer = provider.get_tracer("receive-tests")
    with tracer.start_as_current_span("invoke_agent") as root:
        root.set_attribute("gen_ai.conversation.id", "conv-1")
        for name in names:
            with tracer.start_as_current_span(name):
                pass
    provider.shutdown()
    return list(recorder.get_finished_spans())


def ids_of(spans: Sequence[ReadableSpan]) -> set[tuple[bytes, bytes]]:
    result = set()
    for span in spans:
        context = span.get_span_context()
        assert context is not None
        result.add((context.trace_id.to_bytes(16, "big"), context.span_id.to_bytes(8, "big")))
    return result


def received_ids(consumer: RecordingConsumer) -> set[tuple[bytes, bytes]]:
    return {(span.trace_id, span.span_id) for span in consumer.spans()}
