"""Small builders shared by the session and pipeline tests: ids, spans, requests, facts,
configs, and a sink that records what the pipeline hands over."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, InstrumentationScope, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span, Status

from sampler._native import Request, validate
from sampler.config.model import SamplerConfig
from sampler.config_file import load_config_text
from sampler.pipeline import Pipeline
from sampler.receive.intake import Admission

Scalar = str | int | float | bool


def trace_id(name: str) -> bytes:
    """A readable 16-byte trace id: the name, left-padded with zero bytes."""
    raw = name.encode()
    assert len(raw) <= 16, name
    return raw.rjust(16, b"\0")


def trace_name(trace: bytes) -> str:
    return trace.lstrip(b"\0").decode()


def span_id(number: int) -> bytes:
    return number.to_bytes(8, "big")


def any_value(value: Scalar | bytes | Sequence[object]) -> AnyValue:
    if isinstance(value, bool):
        return AnyValue(bool_value=value)
    if isinstance(value, int):
        return AnyValue(int_value=value)
    if isinstance(value, float):
        return AnyValue(double_value=value)
    if isinstance(value, str):
        return AnyValue(string_value=value)
    if isinstance(value, bytes):
        return AnyValue(bytes_value=value)
    array = AnyValue()
    array.array_value.values.extend(any_value(v) for v in value)  # type: ignore[arg-type]
    return array


def attributes(values: Mapping[str, Scalar | bytes | Sequence[object]]) -> list[KeyValue]:
    return [KeyValue(key=k, value=any_value(v)) for k, v in values.items()]


def span(
    trace: str,
    number: int,
    *,
    parent: int | None = None,
    name: str = "",
    attrs: Mapping[str, Scalar | bytes | Sequence[object]] | None = None,
    error: bool = False,
    events: Sequence[str] = (),
    start_ns: int = 1_000,
    end_ns: int = 2_000,
) -> Span:
    """A span of trace ``trace`` with span id ``number``; a root unless ``parent`` is given."""
    result = Span(
        trace_id=trace_id(trace),
        span_id=span_id(number),
        name=name or f"{trace}/{number}",
        attributes=attributes(attrs or {}),
        start_time_unix_nano=start_ns,
        end_time_unix_nano=end_ns,
        events=[Span.Event(name=event) for event in events],
    )
    if parent is not None:
        result.parent_span_id = span_id(parent)
    if error:
        result.status.code = Status.STATUS_CODE_ERROR
    return result


def scope_spans(
    spans: Iterable[Span], *, scope: str | None = None, schema_url: str = ""
) -> ScopeSpans:
    block = ScopeSpans(spans=list(spans), schema_url=schema_url)
    if scope is not None:
        block.scope.CopyFrom(InstrumentationScope(name=scope, version="1.0"))
    return block


def resource_spans(
    scopes: Iterable[ScopeSpans],
    *,
    resource: Mapping[str, Scalar] | None = None,
    schema_url: str = "",
) -> ResourceSpans:
    block = ResourceSpans(scope_spans=list(scopes), schema_url=schema_url)
    if resource is not None:
        block.resource.CopyFrom(Resource(attributes=attributes(resource)))
    return block


def request(*blocks: ResourceSpans) -> ExportTraceServiceRequest:
    return ExportTraceServiceRequest(resource_spans=list(blocks))


def simple_request(
    *spans: Span, resource: Mapping[str, Scalar] | None = None
) -> ExportTraceServiceRequest:
    """One resource (``service.name=agent`` unless given), one scope, these spans."""
    return request(
        resource_spans(
            [scope_spans(spans, scope="lib")], resource=resource or {"service.name": "agent"}
        )
    )


def native(request: ExportTraceServiceRequest, max_spans: int = 200_000) -> Request:
    """A request as the receivers hand it to the pipeline: validated by the native core."""
    return validate(request.SerializeToString(), max_spans)


def consume(pipeline: Pipeline, request: ExportTraceServiceRequest) -> Admission:
    """Admits and ingests a whole request, as the receive flow does."""
    return pipeline.consume(native(request, pipeline.config.receivers.max_spans_per_request))


def sampler_config(
    rules_yaml: str,
    *,
    sessions: Mapping[str, Any] | None = None,
    exporter: Mapping[str, Any] | None = None,
    receivers: Mapping[str, Any] | None = None,
    cache_sessions: int | None = None,
) -> SamplerConfig:
    """A config from a YAML ``rules:`` list, with sessions/exporter/receivers fields replaced."""
    config = load_config_text(f"rules:\n{rules_yaml}", "test.yaml")
    config = dataclasses.replace(
        config,
        sessions=dataclasses.replace(config.sessions, **(sessions or {})),
        exporter=dataclasses.replace(config.exporter, **(exporter or {})),
        receivers=dataclasses.replace(config.receivers, **(receivers or {})),
    )
    if cache_sessions is not None:
        config = dataclasses.replace(
            config,
            decision_cache=dataclasses.replace(config.decision_cache, max_sessions=cache_sessions),
        )
    return config


class RecordingSink:
    """A KeptSink that records accepted submissions; set ``accepting = False`` to refuse."""

    def __init__(self) -> None:
        self.accepting = True
        self.submitted: list[tuple[bytes, int]] = []
        self.refusals = 0

    def try_submit(self, request: bytes, span_count: int) -> bool:
        if not self.accepting:
            self.refusals += 1
            return False
        self.submitted.append((request, span_count))
        return True

    def requests(self) -> list[ExportTraceServiceRequest]:
        return [ExportTraceServiceRequest.FromString(body) for body, _ in self.submitted]

    def spans(self) -> list[Span]:
        return [
            s
            for req in self.requests()
            for rs in req.resource_spans
            for ss in rs.scope_spans
            for s in ss.spans
        ]

    def span_names(self) -> list[str]:
        return [s.name for s in self.spans()]
