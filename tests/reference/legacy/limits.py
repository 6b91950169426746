"""Request and attribute limits. Attribute values over the configured size are cut, never
refused; a request with too many spans is refused before it is parsed
(``sampler.otlp.wire.spans_over``).

A span is cut in place (its message), so the bytes buffered and forwarded are the limited ones.
Strings are cut at a character boundary within the byte limit (UTF-8), bytes at the limit;
values inside arrays are cut too. Key-value lists (maps) are left whole: protobuf's own nesting
limit already bounds how deep they go, and no rule reads inside them.
"""

from __future__ import annotations

from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span

# receivers.max_spans_per_request: parsed, a span costs about 170 bytes however small it is on
# the wire (16 MiB of empty spans would take 1.3 GB); 200,000 spans bound that at about 34 MB
# and leave room for any real request (16 MiB / 200,000 is 84 bytes a span).
DEFAULT_MAX_SPANS_PER_REQUEST = 200_000


def too_many_spans(limit: int) -> str:
    """The reason given for a request refused at ``max_spans_per_request``."""
    return f"request holds more than {limit} spans (receivers.max_spans_per_request)"


def limit_attribute_values(span: Span, max_size: int) -> bool:
    """Cut the span's string and bytes attribute values longer than ``max_size`` bytes; True
    when something was cut."""
    cut = False
    for kv in span.attributes:
        cut |= _limit(kv.value, max_size)
    return cut


def _limit(value: AnyValue, max_size: int) -> bool:
    kind = value.WhichOneof("value")
    if kind == "string_value":
        text = value.string_value
        if len(text) > max_size // 4 and len(encoded := text.encode()) > max_size:
            value.string_value = encoded[:max_size].decode(errors="ignore")
            return True
    elif kind == "bytes_value":
        if len(value.bytes_value) > max_size:
            value.bytes_value = value.bytes_value[:max_size]
            return True
    elif kind == "array_value":
        cut = False
        for item in value.array_value.values:
            cut |= _limit(item, max_size)
        return cut
    return False
