"""Requests assembled from serialized pieces must be what protobuf itself would build."""

from __future__ import annotations

import math
import struct
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import (
    AnyValue,
    ArrayValue,
    InstrumentationScope,
    KeyValue,
)
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span

from sampler.otlp.wire import (
    ResourceBlock,
    ScopeBlock,
    WireFormatError,
    encode_request,
    encode_varint,
    length_delimited,
    span_attribute_bool,
    span_attribute_double,
    span_attribute_int,
    span_attribute_string,
    span_attribute_string_array,
    span_trace_state,
    spans_over,
    split_request,
)


def _span(name: str, **fields: Any) -> Span:
    span_id = name.encode().ljust(8, b"_")[:8]
    return Span(trace_id=b"\x01" * 16, span_id=span_id, name=name, **fields)


def _resource(service: str) -> Resource:
    return Resource(attributes=[KeyValue(key="service.name", value=AnyValue(string_value=service))])


def _blocks_and_request() -> tuple[list[ResourceBlock], ExportTraceServiceRequest]:
    scope = InstrumentationScope(name="lib", version="1.0")
    a, b, c = _span("a", kind=Span.SPAN_KIND_SERVER), _span("b"), _span("c")
    blocks = [
        ResourceBlock(
            resource=_resource("agent").SerializeToString(),
            schema_url="https://opentelemetry.io/schemas/1.26.0",
            scopes=[
                ScopeBlock(scope.SerializeToString(), "https://scope", [a.SerializeToString()]),
                ScopeBlock(b"", "", [b.SerializeToString(), c.SerializeToString()]),
            ],
        ),
        ResourceBlock(resource=b"", schema_url="", scopes=[ScopeBlock(b"", "", [])]),
    ]
    expected = ExportTraceServiceRequest(
        resource_spans=[
            ResourceSpans(
                resource=_resource("agent"),
                schema_url="https://opentelemetry.io/schemas/1.26.0",
                scope_spans=[
                    ScopeSpans(scope=scope, schema_url="https://scope", spans=[a]),
                    ScopeSpans(spans=[b, c]),
                ],
            ),
            ResourceSpans(scope_spans=[ScopeSpans()]),
        ]
    )
    return blocks, expected


def test_encode_request_builds_what_protobuf_builds() -> None:
    blocks, expected = _blocks_and_request()

    data = encode_request(blocks)

    assert ExportTraceServiceRequest.FromString(data) == expected
    assert not ExportTraceServiceRequest.FromString(data).resource_spans[1].HasField("resource")
    # Same field order as protobuf's serializer, so even the bytes agree.
    assert data == expected.SerializeToString()


def test_encode_request_of_nothing_is_an_empty_request() -> None:
    assert encode_request([]) == b""
    assert encode_request(iter([])) == b""


def test_large_spans_get_multi_byte_lengths() -> None:
    big = _span("big", attributes=[KeyValue(key="k", value=AnyValue(string_value="x" * 70_000))])
    blocks = [ResourceBlock(b"", "", [ScopeBlock(b"", "", [big.SerializeToString()] * 2)])]

    request = ExportTraceServiceRequest.FromString(encode_request(blocks))

    assert list(request.resource_spans[0].scope_spans[0].spans) == [big, big]


def _decorated(span: Span, *suffixes: bytes) -> Span:
    return Span.FromString(span.SerializeToString() + b"".join(suffixes))


def test_appended_attributes_parse_back_with_their_types() -> None:
    span = _span("tool", attributes=[KeyValue(key="existing", value=AnyValue(int_value=1))])

    out = _decorated(
        span,
        span_attribute_string("agent_sampler.rule", "errors é"),
        span_attribute_double("agent_sampler.adjusted_count", 12.5),
        span_attribute_int("count", 3),
        span_attribute_bool("flag", True),
        span_attribute_bool("off", False),
        span_attribute_string_array("agent_sampler.signals", ["error", "tool_cycle"]),
        span_attribute_string_array("none", []),
        span_attribute_string("", ""),
    )

    assert out.name == "tool"
    assert [(kv.key, kv.value) for kv in out.attributes] == [
        ("existing", AnyValue(int_value=1)),
        ("agent_sampler.rule", AnyValue(string_value="errors é")),
        ("agent_sampler.adjusted_count", AnyValue(double_value=12.5)),
        ("count", AnyValue(int_value=3)),
        ("flag", AnyValue(bool_value=True)),
        ("off", AnyValue(bool_value=False)),
        (
            "agent_sampler.signals",
            AnyValue(
                array_value=ArrayValue(
                    values=[AnyValue(string_value="error"), AnyValue(string_value="tool_cycle")]
                )
            ),
        ),
        ("none", AnyValue(array_value=ArrayValue())),
        ("", AnyValue(string_value="")),
    ]
    assert out.attributes[-1].value.WhichOneof("value") == "string_value"
    assert out.attributes[-3].value.WhichOneof("value") == "array_value"


@pytest.mark.parametrize(
    "value",
    [0, 1, 127, 128, 300, 2**31, 2**63 - 1, -1, -128, -(2**63)],
    ids=lambda v: str(v),
)
def test_int_attributes_cover_the_int64_range(value: int) -> None:
    out = _decorated(_span("s"), span_attribute_int("n", value))

    assert out.attributes[0].value == AnyValue(int_value=value)


@pytest.mark.parametrize("value", [2**63, -(2**63) - 1], ids=["too-big", "too-small"])
def test_int_attributes_outside_int64_are_refused(value: int) -> None:
    with pytest.raises(ValueError, match="out of int64 range"):
        span_attribute_int("n", value)


@pytest.mark.parametrize(
    "value",
    [0.0, -0.0, 1.0, 1e-300, 1.7976931348623157e308, math.inf, -math.inf],
    ids=lambda v: repr(v),
)
def test_double_attributes_keep_every_bit(value: float) -> None:
    out = _decorated(_span("s"), span_attribute_double("d", value))

    assert struct.pack("<d", out.attributes[0].value.double_value) == struct.pack("<d", value)


def test_double_attribute_nan() -> None:
    out = _decorated(_span("s"), span_attribute_double("d", math.nan))

    assert math.isnan(out.attributes[0].value.double_value)


def test_trace_state_appended_overrides_the_span_own() -> None:
    span = _span("s", trace_state="vendor=old")

    assert _decorated(span, span_trace_state("vendor=new")).trace_state == "vendor=new"
    assert _decorated(span, span_trace_state("a=1"), span_trace_state("b=2")).trace_state == "b=2"
    assert _decorated(span, span_trace_state("")).trace_state == ""
    assert _decorated(_span("t"), span_trace_state("x=y")).trace_state == "x=y"


@pytest.mark.parametrize(
    ("n", "encoded"),
    [
        (0, b"\x00"),
        (1, b"\x01"),
        (127, b"\x7f"),
        (128, b"\x80\x01"),
        (300, b"\xac\x02"),
        (16383, b"\xff\x7f"),
        (16384, b"\x80\x80\x01"),
        (2**63 - 1, b"\xff" * 8 + b"\x7f"),
        (2**64 - 1, b"\xff" * 9 + b"\x01"),
        (-1, b"\xff" * 9 + b"\x01"),
        (-(2**63), b"\x80" * 9 + b"\x01"),
    ],
    ids=lambda v: str(v) if isinstance(v, int) else None,
)
def test_encode_varint(n: int, encoded: bytes) -> None:
    assert encode_varint(n) == encoded


@pytest.mark.parametrize("n", [2**64, -(2**63) - 1], ids=["above-uint64", "below-int64"])
def test_encode_varint_refuses_out_of_range(n: int) -> None:
    with pytest.raises(ValueError, match="out of"):
        encode_varint(n)


def test_length_delimited() -> None:
    assert length_delimited(1, b"") == b"\x0a\x00"
    assert length_delimited(5, b"abc") == b"\x2a\x03abc"
    assert length_delimited(16, b"x" * 200) == b"\x82\x01\xc8\x01" + b"x" * 200
    with pytest.raises(ValueError, match="invalid field number"):
        length_delimited(0, b"")


def test_split_request_inverts_encode_request() -> None:
    blocks, expected = _blocks_and_request()

    parts = split_request(expected.SerializeToString())

    assert parts == _normalised(blocks)
    assert encode_request(parts) == expected.SerializeToString()
    assert all(type(span) is bytes for rb in parts for sb in rb.scopes for span in sb.spans)


def test_split_request_accepts_any_buffer() -> None:
    blocks, expected = _blocks_and_request()
    data = expected.SerializeToString()

    assert split_request(memoryview(data)) == split_request(bytearray(data)) == _normalised(blocks)


def _normalised(blocks: list[ResourceBlock]) -> list[ResourceBlock]:
    """``split_request`` returns tuples; compare against the same shape."""
    return [
        ResourceBlock(
            rb.resource,
            rb.schema_url,
            tuple(ScopeBlock(sb.scope, sb.schema_url, tuple(sb.spans)) for sb in rb.scopes),
        )
        for rb in blocks
    ]


def _unknown_fields() -> bytes:
    """Unknown fields 50..54, one of each wire type, including a nested group."""
    return (
        encode_varint(50 << 3 | 0)
        + encode_varint(2**40)
        + encode_varint(51 << 3 | 1)
        + b"\x00" * 8
        + length_delimited(52, b"opaque")
        + encode_varint(53 << 3 | 5)
        + b"\x00" * 4
        + encode_varint(54 << 3 | 3)
        + encode_varint(55 << 3 | 0)
        + b"\x01"
        + encode_varint(54 << 3 | 4)
    )


def test_split_request_drops_unknown_fields_and_merges_repeated_singulars() -> None:
    span = _span("s").SerializeToString()
    resource_1 = _resource("a").SerializeToString()
    resource_2 = Resource(dropped_attributes_count=3).SerializeToString()
    scope_spans = (
        _unknown_fields()
        + length_delimited(1, b"\x0a\x01x")  # scope{name: "x"}
        + length_delimited(2, span)
        + length_delimited(3, b"first")
        + length_delimited(3, b"last")  # last schema_url wins
    )
    resource_spans = (
        length_delimited(1, resource_1)
        + _unknown_fields()
        + length_delimited(2, scope_spans)
        + length_delimited(1, resource_2)  # a second resource merges into the first
    )
    data = _unknown_fields() + length_delimited(1, resource_spans) + _unknown_fields()

    parts = split_request(data)

    assert parts == [
        ResourceBlock(resource_1 + resource_2, "", (ScopeBlock(b"\x0a\x01x", "last", (span,)),))
    ]
    # What protobuf itself makes of the same bytes, unknown fields aside.
    protobuf_view = ExportTraceServiceRequest.FromString(data)
    protobuf_view.DiscardUnknownFields()
    assert ExportTraceServiceRequest.FromString(encode_request(parts)) == protobuf_view


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.builds(
            ResourceBlock,
            resource=st.sampled_from([b"", _resource("r").SerializeToString()]),
            schema_url=st.text(max_size=10),
            scopes=st.lists(
                st.builds(
                    ScopeBlock,
                    scope=st.binary(max_size=5).map(
                        lambda name: InstrumentationScope(name=name.hex()).SerializeToString()
                    ),
                    schema_url=st.text(max_size=10),
                    spans=st.lists(st.binary(max_size=300), max_size=4).map(tuple),
                ),
                max_size=3,
            ).map(tuple),
        ),
        max_size=3,
    )
)
def test_split_request_round_trips_random_requests(blocks: list[ResourceBlock]) -> None:
    data = encode_request(blocks)

    assert split_request(data) == blocks
    assert encode_request(split_request(data)) == data


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\x0a", "truncated varint at offset 1"),
        (b"\x0a\x05\x12\x03", "resource_spans at offset 1: length 5 runs past the end"),
        (b"\x0a\x04\x12\x05abc", "ResourceSpans.scope_spans at offset 3: length 5 runs past"),
        (b"\x0a\x03\x12\x01\x12", "truncated varint"),
        (b"\x08\x01", "resource_spans at offset 1: wire type 0, expected 2"),
        (b"\x0a\x02\x1d\x00", "ResourceSpans.schema_url at offset 3: wire type 5"),
        (b"\x17", "field 2 at offset 1: invalid wire type 7"),
        (b"\x00", "invalid field number 0"),
        (b"\x14", "invalid wire type 4"),  # end-group without a start
        (b"\x13\x08\x01", "group 2: missing end-group tag"),
        (b"\x13\x1c", "group 2 closed by end-group tag 3"),
        (b"\x0a" + b"\xff" * 10 + b"\x01", "longer than 10 bytes"),
        (b"\x0a" + b"\xff" * 9 + b"\x02", "overflows 64 bits"),
        (b"\x0a\x03\x1a\x01\xff", "ResourceSpans.schema_url at offset 4 is not valid UTF-8"),
        (b"\x29\x00\x00\x00", "field 5 at offset 1: truncated fixed-size value"),
    ],
    ids=[
        "no-length",
        "short-resource-spans",
        "short-scope-spans",
        "scope-tag-cut",
        "resource-spans-varint",
        "schema-url-fixed32",
        "wire-type-7",
        "field-zero",
        "stray-end-group",
        "open-group",
        "mismatched-group",
        "varint-11-bytes",
        "varint-overflow",
        "bad-utf8",
        "short-fixed64",
    ],
)
def test_split_request_rejects_malformed_input(data: bytes, message: str) -> None:
    with pytest.raises(WireFormatError, match=message):
        split_request(data)


def test_split_request_rejects_every_truncation_inside_a_field() -> None:
    _, expected = _blocks_and_request()
    data = expected.SerializeToString()
    first_resource_spans_end = len(
        length_delimited(1, expected.resource_spans[0].SerializeToString())
    )

    for cut in range(1, len(data)):
        if cut == first_resource_spans_end:  # a whole first ResourceSpans: a valid request
            assert len(split_request(data[:cut])) == 1
            continue
        with pytest.raises(WireFormatError):
            split_request(data[:cut])


@settings(deadline=None)
@given(st.binary(max_size=64))
def test_split_request_fails_only_with_wire_format_error(data: bytes) -> None:
    try:
        split_request(data)
    except WireFormatError:
        pass


# -- spans_over: how many spans, without parsing ------------------------------------------------


def _request_of(*scopes: int, resources: int = 1, span: bytes = b"") -> bytes:
    """A request with ``resources`` ResourceSpans, each holding ScopeSpans of these sizes."""
    scope_blocks = [ScopeBlock(b"", "", [span] * n) for n in scopes]
    return encode_request([ResourceBlock(b"", "", scope_blocks)] * resources)


@pytest.mark.parametrize(("scopes", "resources"), [((11,), 1), ((4, 7), 1), ((3, 2), 2)])
def test_spans_over_counts_every_scope_of_every_resource(
    scopes: tuple[int, ...], resources: int
) -> None:
    body = _request_of(*scopes, resources=resources)  # 11 or 10 empty spans in all
    total = sum(scopes) * resources
    assert spans_over(body, total - 1)
    assert not spans_over(body, total)


def test_spans_over_is_not_fooled_by_0x12_bytes_inside_spans() -> None:
    span = Span(name="\x12" * 40, trace_id=b"\x12" * 16).SerializeToString()
    body = _request_of(3, span=span)
    assert body.count(b"\x12") > 50
    assert not spans_over(body, 3)
    assert spans_over(body, 2)


def _scope_then_garbage(spans: int) -> bytes:
    """One ScopeSpans of ``spans`` empty spans, then a field that claims bytes it lacks."""
    scope = length_delimited(2, b"") * spans + b"\x12\x05"
    return length_delimited(1, length_delimited(2, scope))


def test_spans_over_stops_counting_past_the_limit() -> None:
    body = _scope_then_garbage(11)
    assert spans_over(body, 10)  # decided at the eleventh span, before the broken field
    assert not spans_over(body, 11)  # counting on reaches it: malformed, left to the parser


def test_spans_over_leaves_malformed_bodies_to_the_parser() -> None:
    assert not spans_over(b"\x0a\xff\xff\xff\xff\x0f" + b"\x12" * 100, 10)  # length past the end
    assert not spans_over(b"\x12" * 100, 10)  # spans at the top level: not a request's


def test_sixteen_mebibytes_of_empty_spans_are_over_the_default_limit() -> None:
    body = length_delimited(1, length_delimited(2, b"\x12\x00" * (8 << 20)))
    assert len(body) > 16 << 20  # parsed, 8 Mi spans would take about 1.3 GB
    assert spans_over(body, 200_000)
