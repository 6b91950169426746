"""The normalised view of one incoming span: only what grouping, completion and the rules need.

Extraction reads the protobuf message once and decodes only the attributes somebody asked for
(session keys, keys named by rules, error.type), so the cost per span does not grow with the
number of attributes a span carries.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from sampler.rules.facts import AttrValue, SpanTest
from sampler.rules.verdict import ANNOTATION_KEYS

STATUS_ERROR = Status.STATUS_CODE_ERROR
ERROR_TYPE = "error.type"
EXCEPTION_EVENT = "exception"


def any_value(value: AnyValue) -> AttrValue:
    kind = value.WhichOneof("value")
    if kind == "string_value":
        return value.string_value
    if kind == "int_value":
        return value.int_value
    if kind == "double_value":
        return value.double_value
    if kind == "bool_value":
        return value.bool_value
    if kind == "array_value":
        return tuple(any_value(item) for item in value.array_value.values)
    if kind == "bytes_value":
        return value.bytes_value
    return None  # kvlist or empty: not comparable by rules


def pick_attributes(attributes: Sequence[KeyValue], wanted: frozenset[str]) -> dict[str, AttrValue]:
    return {kv.key: any_value(kv.value) for kv in attributes if kv.key in wanted}


def session_key_of(
    keys: Sequence[str], attrs: Mapping[str, AttrValue], resource: Mapping[str, AttrValue]
) -> str | None:
    """First configured key found on the span, then on its resource; empty values don't count."""
    for source in (attrs, resource):
        for key in keys:
            value = source.get(key)
            if isinstance(value, str | int) and not isinstance(value, bool) and value != "":
                return str(value)
    return None


@dataclass(frozen=True, slots=True)
class SpanFacts:
    trace_id: bytes
    session_key: str | None
    is_root: bool
    is_error: bool
    start_ns: int
    end_ns: int
    test_bits: int  # bit i set when span test i matched
    annotated: bool = False  # carries agent_sampler.* attributes already


class SpanExtractor:
    def __init__(self, session_keys: Sequence[str], tests: Sequence[SpanTest]) -> None:
        self.session_keys = tuple(session_keys)
        self.tests = tuple(tests)
        wanted = set(self.session_keys) | {ERROR_TYPE} | ANNOTATION_KEYS
        for test in self.tests:
            wanted.update(test.keys)
        self.wanted = frozenset(wanted)

    def resource_attributes(self, attributes: Sequence[KeyValue]) -> dict[str, AttrValue]:
        return pick_attributes(attributes, self.wanted)

    def extract(self, span: Span, resource: Mapping[str, AttrValue]) -> SpanFacts:
        attrs = pick_attributes(span.attributes, self.wanted)
        is_error = (
            span.status.code == STATUS_ERROR
            or bool(attrs.get(ERROR_TYPE))
            or any(event.name == EXCEPTION_EVENT for event in span.events)
        )
        bits = 0
        name = span.name
        for index, test in enumerate(self.tests):
            if test.evaluate(name, attrs, resource):
                bits |= 1 << index
        return SpanFacts(
            trace_id=span.trace_id,
            session_key=session_key_of(self.session_keys, attrs, resource),
            is_root=not span.parent_span_id,
            is_error=is_error,
            start_ns=span.start_time_unix_nano,
            end_ns=span.end_time_unix_nano,
            test_bits=bits,
            annotated=not ANNOTATION_KEYS.isdisjoint(attrs),
        )
