"""OTLP/JSON codec: collector-compatible text out, lenient-but-checked parsing in."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from sampler.otlp.json_codec import (
    OtlpDecodeError,
    iter_json_lines,
    request_bytes_to_json,
    request_from_json,
    request_to_json,
)

TRACE_ID = bytes.fromhex("5b8efff798038103d269b633813fc60c")
SPAN_ID = bytes.fromhex("eee19b7ec3c1b174")
PARENT_ID = bytes.fromhex("eee19b7ec3c1b173")


def _kv(key: str, **value: Any) -> KeyValue:
    return KeyValue(key=key, value=AnyValue(**value))


def rich_request() -> ExportTraceServiceRequest:
    """Every part of a trace request the codec has to carry, with non-default values."""
    request = ExportTraceServiceRequest()
    rs = request.resource_spans.add(schema_url="https://opentelemetry.io/schemas/1.26.0")
    rs.resource.attributes.extend([_kv("service.name", string_value="agent")])
    rs.resource.dropped_attributes_count = 2

    scope = rs.scope_spans.add(schema_url="https://example.com/scope-schema")
    scope.scope.name = "openinference.instrumentation"
    scope.scope.version = "1.2.3"
    scope.scope.attributes.extend([_kv("scope.attr", bool_value=True)])

    root = scope.spans.add(
        trace_id=TRACE_ID,
        span_id=PARENT_ID,
        trace_state="vendor=a,other=b",
        flags=0x301,
        name="invoke_agent planner",
        kind=Span.SPAN_KIND_SERVER,
        start_time_unix_nano=1_700_000_000_000_000_000,
        end_time_unix_nano=1_700_000_001_500_000_000,
        dropped_attributes_count=1,
        dropped_events_count=3,
        dropped_links_count=4,
    )
    root.attributes.extend(
        [
            _kv("str", string_value='héllo "quoted" \\ \n \b \f \u2028 😀'),
            _kv("empty.str", string_value=""),
            _kv("bool.false", bool_value=False),
            _kv("int.min", int_value=-(2**63)),
            _kv("int.max", int_value=2**63 - 1),
            _kv("int.zero", int_value=0),
            _kv("double.one", double_value=1.0),
            _kv("double.tenth", double_value=0.1),
            _kv("double.tiny", double_value=1.5e-7),
            _kv("double.huge", double_value=1e300),
            _kv("double.inf", double_value=math.inf),
            _kv("double.zero", double_value=0.0),
            _kv("bytes", bytes_value=b"\x00\xffbinary"),
            _kv("empty.bytes", bytes_value=b""),
            KeyValue(key="unset.value"),  # a KeyValue without value
            _kv("no.kind"),  # an AnyValue with nothing set
        ]
    )
    array = root.attributes.add(key="array").value.array_value
    array.values.extend(
        [AnyValue(string_value="a"), AnyValue(int_value=7), AnyValue(double_value=2.5)]
    )
    nested = AnyValue()
    nested.kvlist_value.values.extend([_kv("deep", bool_value=True)])
    array.values.append(nested)
    kvlist = root.attributes.add(key="kvlist").value.kvlist_value
    kvlist.values.extend([_kv("inner", string_value="x"), _kv("n", int_value=-5)])
    root.attributes.add(key="empty.array").value.array_value.SetInParent()
    root.attributes.add(key="empty.kvlist").value.kvlist_value.SetInParent()
    root.status.code = Status.STATUS_CODE_ERROR
    root.status.message = "tool failed"
    event = root.events.add(time_unix_nano=1_700_000_000_500_000_000, name="exception")
    event.attributes.extend([_kv("exception.type", string_value="ValueError")])
    event.dropped_attributes_count = 1
    link = root.links.add(trace_id=bytes(range(16)), span_id=bytes(range(8)), flags=1)
    link.trace_state = "k=v"
    link.attributes.extend([_kv("link.kind", string_value="follows")])
    link.dropped_attributes_count = 2

    child = scope.spans.add(
        trace_id=TRACE_ID, span_id=SPAN_ID, parent_span_id=PARENT_ID, name="execute_tool"
    )
    child.status.SetInParent()  # set but default: must come back set
    scope.spans.add(trace_id=TRACE_ID, span_id=bytes(8 * [0xAB]), name="no status at all")

    second_scope = rs.scope_spans.add()  # no scope message, no schema url
    second_scope.spans.add(trace_id=TRACE_ID, span_id=bytes(8 * [1]), kind=Span.SPAN_KIND_CLIENT)

    request.resource_spans.add().scope_spans.add()  # no resource, empty scope
    return request


def test_round_trip_of_a_rich_request_is_exact() -> None:
    request = rich_request()

    text = request_to_json(request)
    back = request_from_json(text)

    assert back == request
    assert back.SerializeToString(deterministic=True) == request.SerializeToString(
        deterministic=True
    )


def test_output_is_one_line_without_whitespace_outside_strings() -> None:
    text = request_to_json(rich_request())

    outside_strings = re.sub(r'"(?:[^"\\]|\\.)*"', '""', text)
    assert not re.search(r"\s", outside_strings)
    assert "\n" not in text and not text.endswith("\n")


def test_small_request_matches_collector_file_exporter_text() -> None:
    request = ExportTraceServiceRequest()
    rs = request.resource_spans.add()
    rs.resource.attributes.extend([_kv("service.name", string_value="agent")])
    scope = rs.scope_spans.add()
    scope.scope.name = "lib"
    span = scope.spans.add(
        trace_id=TRACE_ID,
        span_id=SPAN_ID,
        parent_span_id=PARENT_ID,
        flags=1,
        name="chat gpt-4o",
        kind=Span.SPAN_KIND_SERVER,
        start_time_unix_nano=1_700_000_000_000_000_000,
        end_time_unix_nano=1_700_000_000_250_000_000,
    )
    span.attributes.extend(
        [
            _kv("gen_ai.usage.input_tokens", int_value=42),
            _kv("agent_sampler.adjusted_count", double_value=1.0),
            _kv(
                "agent_sampler.signals",
                array_value=ArrayValue(values=[AnyValue(string_value="error")]),
            ),
        ]
    )
    span.status.code = Status.STATUS_CODE_ERROR

    expected = (
        '{"resourceSpans":[{"resource":{"attributes":[{"key":"service.name","value":'
        '{"stringValue":"agent"}}]},"scopeSpans":[{"scope":{"name":"lib"},"spans":[{'
        '"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174",'
        '"parentSpanId":"eee19b7ec3c1b173","flags":1,"name":"chat gpt-4o","kind":2,'
        '"startTimeUnixNano":"1700000000000000000","endTimeUnixNano":"1700000000250000000",'
        '"attributes":[{"key":"gen_ai.usage.input_tokens","value":{"intValue":"42"}},'
        '{"key":"agent_sampler.adjusted_count","value":{"doubleValue":1}},'
        '{"key":"agent_sampler.signals","value":{"arrayValue":{"values":[{"stringValue":"error"}]}}}'
        '],"status":{"code":2}}]}]}]}'
    )
    assert request_to_json(request) == expected
    assert request_from_json(expected) == request


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (1.0, "1"),
        (-0.0, "-0"),
        (0.1, "0.1"),
        (100.0, "100"),
        (1e20, "100000000000000000000"),
        (1e21, "1e+21"),
        (2.5e-5, "0.000025"),
        (1e-6, "0.000001"),
        (1.5e-7, "1.5e-7"),
        (5e-324, "5e-324"),
        (1.7976931348623157e308, "1.7976931348623157e+308"),
        (math.inf, '"+Inf"'),
        (-math.inf, '"-Inf"'),
        (math.nan, '"NaN"'),
    ],
    ids=lambda v: repr(v) if isinstance(v, float) else None,
)
def test_doubles_are_written_as_go_writes_them(value: float, text: str) -> None:
    request = _request_with_attribute(_kv("d", double_value=value))

    out = request_to_json(request)
    back = request_from_json(out)

    assert f'"value":{{"doubleValue":{text}}}' in out
    # NaN != NaN, so compare the encodings instead of the messages.
    assert back.SerializeToString() == request.SerializeToString()


@pytest.mark.parametrize(
    ("value", "text"),
    [
        ("plain", '"plain"'),
        ("tab\tnewline\ncr\r", '"tab\\tnewline\\ncr\\r"'),
        ("backspace\b formfeed\f", '"backspace\\u0008 formfeed\\u000c"'),
        ("literal \\b stays", '"literal \\\\b stays"'),
        ("ctrl\x01 del\x7f", '"ctrl\\u0001 del\x7f"'),
        ("<html>&amp;", '"<html>&amp;"'),
        ("non-ascii é 😀 \u2028", '"non-ascii é 😀 \u2028"'),
    ],
    ids=["plain", "whitespace", "backspace-formfeed", "backslash-b", "control", "html", "utf8"],
)
def test_strings_are_escaped_as_go_escapes_them(value: str, text: str) -> None:
    request = _request_with_attribute(_kv("s", string_value=value))

    out = request_to_json(request)

    assert f'"value":{{"stringValue":{text}}}' in out
    assert request_from_json(out) == request


def test_status_presence_survives_the_round_trip() -> None:
    request = ExportTraceServiceRequest()
    spans = request.resource_spans.add().scope_spans.add().spans
    spans.add(name="never set")
    spans.add(name="set to default").status.SetInParent()

    text = request_to_json(request)
    back = request_from_json(text)

    assert '{"name":"never set"}' in text
    assert '{"name":"set to default","status":{}}' in text
    assert not back.resource_spans[0].scope_spans[0].spans[0].HasField("status")
    assert back.resource_spans[0].scope_spans[0].spans[1].HasField("status")


def test_snake_case_names_and_enum_names_are_accepted() -> None:
    body = {
        "resource_spans": [
            {
                "resource": {"attributes": [{"key": "k", "value": {"string_value": "v"}}]},
                "schema_url": "s",
                "scope_spans": [
                    {
                        "scope": {"name": "lib"},
                        "spans": [
                            {
                                "trace_id": TRACE_ID.hex(),
                                "span_id": SPAN_ID.hex(),
                                "parent_span_id": PARENT_ID.hex(),
                                "kind": "SPAN_KIND_CLIENT",
                                "start_time_unix_nano": 1700000000000000000,  # a number
                                "end_time_unix_nano": "1700000000000000001",
                                "status": {"code": "STATUS_CODE_OK"},
                                "links": [{"trace_id": TRACE_ID.hex(), "span_id": "0" * 16}],
                            }
                        ],
                    }
                ],
            }
        ]
    }

    request = request_from_json(json.dumps(body))

    span = request.resource_spans[0].scope_spans[0].spans[0]
    assert (span.trace_id, span.span_id, span.parent_span_id) == (TRACE_ID, SPAN_ID, PARENT_ID)
    assert span.kind == Span.SPAN_KIND_CLIENT
    assert span.start_time_unix_nano == 1_700_000_000_000_000_000
    assert span.end_time_unix_nano == 1_700_000_000_000_000_001
    assert span.status.code == Status.STATUS_CODE_OK
    assert span.links[0].trace_id == TRACE_ID and span.links[0].span_id == bytes(8)
    assert request.resource_spans[0].resource.attributes[0].value.string_value == "v"
    assert request.resource_spans[0].schema_url == "s"


def test_unknown_fields_are_ignored_at_every_level() -> None:
    body = {
        "futureTopLevel": {"x": 1},
        "resourceSpans": [
            {
                "resource": {"attributes": [], "entityRefs2": [1, 2]},
                "extra": None,
                "scopeSpans": [
                    {
                        "scope": {"name": "lib", "newScopeField": True},
                        "spans": [
                            {
                                "traceId": TRACE_ID.hex(),
                                "name": "op",
                                "someNewSpanField": "x",
                                "status": {"code": 1, "detail": "?"},
                                "links": [{"spanId": SPAN_ID.hex(), "newLinkField": 3}],
                            }
                        ],
                    }
                ],
            }
        ],
    }

    request = request_from_json(json.dumps(body).encode())

    span = request.resource_spans[0].scope_spans[0].spans[0]
    assert span.name == "op" and span.trace_id == TRACE_ID and span.status.code == 1
    assert span.links[0].span_id == SPAN_ID


def test_empty_and_null_ids_mean_absent_and_uppercase_hex_is_accepted() -> None:
    body = {
        "resourceSpans": [
            {
                "scopeSpans": [
                    {
                        "spans": [
                            {"traceId": "", "spanId": None, "parentSpanId": ""},
                            {"traceId": TRACE_ID.hex().upper(), "spanId": SPAN_ID.hex().upper()},
                        ]
                    }
                ]
            }
        ]
    }

    spans = request_from_json(json.dumps(body)).resource_spans[0].scope_spans[0].spans

    assert (spans[0].trace_id, spans[0].span_id, spans[0].parent_span_id) == (b"", b"", b"")
    assert (spans[1].trace_id, spans[1].span_id) == (TRACE_ID, SPAN_ID)


def _body_with_span(**span: object) -> str:
    return json.dumps(
        {"resourceSpans": [{"scopeSpans": [{"spans": [{}, {}, {}, span]}, {"spans": [span]}]}]}
    )


@pytest.mark.parametrize(
    ("span", "message"),
    [
        (
            {"traceId": "xyz"},
            "resourceSpans[0].scopeSpans[0].spans[3].traceId: "
            "expected 32 hex characters, got 'xyz'",
        ),
        (
            {"trace_id": "5b8efff798038103d269b633813fc60c00"},
            # named as OTLP/JSON writes it, whichever spelling came in
            "resourceSpans[0].scopeSpans[0].spans[3].traceId: expected 32 hex characters",
        ),
        (
            {"spanId": "eee19b7ec3c1b17g"},
            "resourceSpans[0].scopeSpans[0].spans[3].spanId: expected 16 hex characters, "
            "got 'eee19b7ec3c1b17g'",
        ),
        (
            {"parentSpanId": "7u4bfsPBsXQ="},  # base64, as protobuf's own mapping would write
            "resourceSpans[0].scopeSpans[0].spans[3].parentSpanId: expected 16 hex characters",
        ),
        (
            {"spanId": "eee19b7e c3c1b17"},  # bytes.fromhex would skip the space
            "spans[3].spanId: expected 16 hex characters",
        ),
        (
            {"spanId": 12345},
            "spans[3].spanId: expected a hex string, got '12345'",
        ),
        (
            {"links": [{}, {"traceId": "abcd"}]},
            "resourceSpans[0].scopeSpans[0].spans[3].links[1].traceId: expected 32 hex characters",
        ),
        (
            {"links": [{"span_id": "00"}]},
            "spans[3].links[0].spanId: expected 16 hex characters, got '00'",
        ),
        (
            {"links": {"traceId": TRACE_ID.hex()}},
            "resourceSpans[0].scopeSpans[0].spans[3].links: expected an array, got an object",
        ),
    ],
    ids=[
        "trace-id-short",
        "trace-id-long-snake",
        "span-id-non-hex",
        "parent-id-base64",
        "span-id-space",
        "span-id-number",
        "link-trace-id",
        "link-span-id-snake",
        "links-not-array",
    ],
)
def test_invalid_ids_are_reported_with_their_path(span: dict[str, object], message: str) -> None:
    with pytest.raises(OtlpDecodeError) as caught:
        request_from_json(_body_with_span(**span))

    assert message in str(caught.value)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{not json", "body is not valid JSON"),
        (b"", "body is empty"),
        (b"\xff\xfe\x00garbage", "body is not valid JSON"),
        ("[1, 2]", "body must be a JSON object (an ExportTraceServiceRequest), got an array"),
        ("null", "got null"),
        ('"text"', "got a string"),
        ('{"resourceSpans": {"scopeSpans": []}}', "resourceSpans: expected an array, got an"),
        ('{"resourceSpans": [3]}', "resourceSpans[0]: expected an object, got a number"),
        ('{"resourceSpans": [{"scopeSpans": "x"}]}', "resourceSpans[0].scopeSpans: expected an"),
        ('{"resourceSpans": [{"scopeSpans": [{"spans": [[]]}]}]}', "spans[0]: expected an obj"),
        (
            '{"resourceSpans": [{"scopeSpans": [{"spans": [{"startTimeUnixNano": "soon"}]}]}]}',
            "invalid OTLP/JSON: resourceSpans[0].scopeSpans[0].spans[0].startTimeUnixNano: "
            "not an integer, got 'soon'",
        ),
        (
            '{"resourceSpans": [{"scopeSpans": [{"spans": [{"name": 5}]}]}]}',
            "spans[0].name: expected a string, got '5'",
        ),
    ],
    ids=[
        "truncated",
        "empty",
        "not-utf8",
        "top-level-array",
        "top-level-null",
        "top-level-string",
        "resource-spans-object",
        "resource-spans-item",
        "scope-spans-string",
        "span-array",
        "bad-timestamp",
        "name-number",
    ],
)
def test_malformed_bodies_raise_otlp_decode_error(body: bytes | str, message: str) -> None:
    with pytest.raises(OtlpDecodeError) as caught:
        request_from_json(body)

    assert message in str(caught.value)


def test_request_bytes_to_json_reads_protobuf() -> None:
    request = rich_request()

    assert request_bytes_to_json(request.SerializeToString()) == request_to_json(request)
    with pytest.raises(OtlpDecodeError, match="not a valid ExportTraceServiceRequest"):
        request_bytes_to_json(b"\x0a\x05ab")  # declares 5 bytes, holds 2


def test_iter_json_lines_skips_blank_lines_and_names_the_bad_line(tmp_path: Path) -> None:
    first, second = rich_request(), _request_with_attribute(_kv("x", int_value=1))
    good = tmp_path / "good.jsonl"
    good.write_text(f"{request_to_json(first)}\n\n  \n{request_to_json(second)}\n")
    bad = tmp_path / "bad.jsonl"
    bad.write_text(f'{request_to_json(first)}\n\n{{"resourceSpans": 1}}\n')

    assert list(iter_json_lines(good)) == [first, second]
    with pytest.raises(
        OtlpDecodeError, match=r"bad\.jsonl:3: invalid OTLP/JSON: resourceSpans: expected an array"
    ):
        list(iter_json_lines(str(bad)))


def _request_with_attribute(attribute: KeyValue) -> ExportTraceServiceRequest:
    request = ExportTraceServiceRequest()
    span = request.resource_spans.add().scope_spans.add().spans.add(trace_id=TRACE_ID)
    span.attributes.append(attribute)
    return request


_any_scalar = st.one_of(
    st.builds(AnyValue, string_value=st.text()),
    st.builds(AnyValue, bool_value=st.booleans()),
    st.builds(AnyValue, int_value=st.integers(-(2**63), 2**63 - 1)),
    st.builds(AnyValue, double_value=st.floats(allow_nan=False)),
    st.builds(AnyValue, bytes_value=st.binary(max_size=16)),
)


@st.composite
def _requests(draw: st.DrawFn) -> ExportTraceServiceRequest:
    request = ExportTraceServiceRequest()
    for _ in range(draw(st.integers(0, 2))):
        rs = request.resource_spans.add(schema_url=draw(st.text(max_size=8)))
        for _ in range(draw(st.integers(0, 2))):
            ss = rs.scope_spans.add()
            ss.scope.name = draw(st.text(max_size=8))
            for _ in range(draw(st.integers(0, 3))):
                span = ss.spans.add(
                    trace_id=draw(st.sampled_from([b""]) | st.binary(min_size=16, max_size=16)),
                    span_id=draw(st.binary(min_size=8, max_size=8)),
                    parent_span_id=draw(st.sampled_from([b""]) | st.binary(min_size=8, max_size=8)),
                    name=draw(st.text()),
                    kind=draw(st.integers(0, 5)),
                    flags=draw(st.integers(0, 2**32 - 1)),
                    start_time_unix_nano=draw(st.integers(0, 2**64 - 1)),
                )
                for key, value in draw(st.lists(st.tuples(st.text(), _any_scalar), max_size=3)):
                    span.attributes.add(key=key).value.CopyFrom(value)
                for _ in range(draw(st.integers(0, 1))):
                    span.links.add(
                        trace_id=draw(st.binary(min_size=16, max_size=16)),
                        span_id=draw(st.binary(min_size=8, max_size=8)),
                    )
    return request


# The first run of a fresh checkout builds Hypothesis's unicode tables: not a slow strategy.
@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_requests())
def test_random_requests_round_trip(request: ExportTraceServiceRequest) -> None:
    text = request_to_json(request)

    assert "\n" not in text
    assert request_from_json(text) == request
    assert json.loads(text) is not None  # standard JSON, whatever the strings hold
