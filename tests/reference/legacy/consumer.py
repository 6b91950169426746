"""The hand-over point between the OTLP receivers and the rest of the sampler.

Receivers decode a request and call `TraceConsumer.consume` synchronously on the event loop
thread; the consumer answers with an `Admission`. Nothing here does I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
)

Transport = Literal["grpc", "http"]


@dataclass(frozen=True, slots=True)
class Admission:
    """The consumer's answer to one export request.

    `accepted=False` means nothing of the request was kept and the sender must retry it after
    `retry_after_s`. `accepted=True` with `rejected_spans > 0` is an OTLP partial success: the
    rest was kept, the rejected spans must not be retried.
    """

    accepted: bool
    reason: str = ""
    retry_after_s: float = 0.0
    rejected_spans: int = 0


ACCEPTED = Admission(True)
REFUSED_DEFAULT_REASON = "the sampler cannot take more data now; retry later"


class TraceConsumer(Protocol):
    def consume(self, request: ExportTraceServiceRequest, *, transport: str) -> Admission: ...


@dataclass(slots=True)
class ReceiverStats:
    """Counters one receiver updates as requests arrive (read by the metrics layer).

    Every request that reaches the export handler lands in exactly one `requests_*` counter.
    `spans_received` counts the spans of every decoded request, `spans_refused` the part of them
    that was refused (whole refused requests plus partial rejections).
    """

    requests_ok: int = 0
    requests_invalid: int = 0
    requests_refused: int = 0
    requests_too_large: int = 0
    requests_unauthenticated: int = 0
    requests_timed_out: int = 0  # OTLP/HTTP: the body did not arrive within the read timeout
    spans_received: int = 0
    spans_refused: int = 0


def count_spans(request: ExportTraceServiceRequest) -> int:
    return sum(
        len(scope_spans.spans)
        for resource_spans in request.resource_spans
        for scope_spans in resource_spans.scope_spans
    )


def admit(
    consumer: TraceConsumer,
    request: ExportTraceServiceRequest,
    transport: Transport,
    stats: ReceiverStats,
) -> Admission:
    """Hand a decoded request to the consumer and account for the answer."""
    spans = count_spans(request)
    stats.spans_received += spans
    admission = consumer.consume(request, transport=transport)
    if admission.accepted:
        stats.requests_ok += 1
        stats.spans_refused += admission.rejected_spans
    else:
        stats.requests_refused += 1
        stats.spans_refused += spans
    return admission
