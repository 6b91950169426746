"""Property-based fuzzing of both receivers, in process, on loopback, with a real Pipeline.

Each test starts one `Front` (both receivers, a Pipeline keeping everything, a buffered
sentinel conversation and trace), throws generated hostile input at it, and checks for every
example that the answer is a well-formed status (never UNKNOWN / INTERNAL / 500) and that a
valid request is still accepted; at the end, that the sentinel comes out unharmed and that all
that was forwarded parses. Examples are derandomized, so CI runs the same inputs every time;
cases found are kept in tests/testdata/fuzz and replayed by test_fuzz_corpus.py.
"""

from __future__ import annotations

import gzip
import json
import math
from collections.abc import Iterator
from typing import TypeVar

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from sampler.otlp.json_codec import request_to_json
from sampler.receive.http_server import JSON, PROTOBUF
from tests.protowire import encode_varint
from tests.unit.receive._hostile import (
    CONV,
    RICH_BYTES,
    RICH_JSON,
    Front,
    GrpcAnswer,
    HttpAnswer,
    check_grpc,
    check_http,
    rejected_spans,
)

T = TypeVar("T")

FUZZ = settings(
    max_examples=200,
    deadline=None,
    derandomize=True,  # the same examples on every run
    database=None,
    print_blob=False,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@pytest.fixture
def front() -> Iterator[Front]:
    with Front().started() as started:
        yield started


def same_outcome(rpc: GrpcAnswer, post: HttpAnswer) -> None:
    """The same bytes get the same verdict over gRPC and OTLP/HTTP protobuf."""
    check_grpc(rpc)
    check_http(post)
    assert (rpc.code is grpc.StatusCode.OK) == (post.status == 200), (rpc, post.status)
    if post.status == 200:
        assert rejected_spans(rpc) == rejected_spans(post)


# -- protobuf bytes ---------------------------------------------------------------------------


def test_random_bytes(front: Front) -> None:
    @FUZZ
    @given(body=st.binary(max_size=1024))
    def attack(body: bytes) -> None:
        same_outcome(front.grpc(body), front.http(body))
        front.check_still_serving()

    attack()
    front.check_sentinel_unharmed()


def _length_fields(data: bytes, start: int, end: int, depth: int = 0) -> list[tuple[int, int]]:
    """(offset, size) of the length varint of every length-delimited field, looking into each
    payload that parses as a message; ValueError when ``data[start:end]`` is not a message."""
    found: list[tuple[int, int]] = []
    pos = start
    while pos < end:
        tag, pos = _varint(data, pos, end)
        if tag is None:
            raise ValueError
        wire_type = tag & 7
        if wire_type == 0:
            value, pos = _varint(data, pos, end)
            if value is None:
                raise ValueError
        elif wire_type in (1, 5):
            pos += 8 if wire_type == 1 else 4
        elif wire_type == 2:
            at = pos
            length, pos = _varint(data, pos, end)
            if length is None or pos + length > end:
                raise ValueError
            found.append((at, pos - at))
            if depth < 12:
                try:
                    found += _length_fields(data, pos, pos + length, depth + 1)
                except ValueError:
                    pass  # a string or bytes payload
            pos += length
        else:
            raise ValueError
    if pos != end:
        raise ValueError
    return found


def _varint(data: bytes, pos: int, end: int) -> tuple[int | None, int]:
    value = shift = 0
    while pos < end and shift < 64:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
    return None, pos


RICH_LENGTHS = _length_fields(RICH_BYTES, 0, len(RICH_BYTES))
WIRE_BYTES = st.sampled_from([0x00, 0x01, 0x07, 0x0A, 0x12, 0x7F, 0x80, 0xFF])
HOSTILE_LENGTHS = st.one_of(
    st.sampled_from([0, 1, 2**31 - 1, 2**31, 2**32, 2**63, 2**64 - 1]),
    st.integers(min_value=0, max_value=2**64 - 1),
)


@st.composite
def mutated_request(draw: st.DrawFn) -> bytes:
    """The rich request with a corrupted length prefix and/or a few byte-level mutations."""
    data = bytearray(RICH_BYTES)
    if draw(st.booleans()):
        at, size = draw(st.sampled_from(RICH_LENGTHS))
        old, _ = _varint(RICH_BYTES, at, at + size)
        assert old is not None
        new = draw(st.one_of(HOSTILE_LENGTHS, st.sampled_from([old - 1, old + 1])))
        data[at : at + size] = encode_varint(max(new, 0))
    for _ in range(draw(st.integers(0 if data != RICH_BYTES else 1, 3))):
        if not data:
            break
        where = draw(st.integers(0, len(data) - 1))
        action = draw(st.sampled_from(["flip", "byte", "truncate", "insert", "delete"]))
        if action == "flip":
            data[where] ^= 1 << draw(st.integers(0, 7))
        elif action == "byte":
            data[where] = draw(WIRE_BYTES)
        elif action == "truncate":
            del data[where:]
        elif action == "insert":
            data[where:where] = draw(st.binary(min_size=1, max_size=12))
        else:
            del data[where : where + draw(st.integers(1, 16))]
    return bytes(data)


def test_mutated_requests(front: Front) -> None:
    @FUZZ
    @given(body=mutated_request(), compressed=st.booleans())
    def attack(body: bytes, compressed: bool) -> None:
        post = front.http_gzip(body) if compressed else front.http(body)
        same_outcome(front.grpc(body, gzip=compressed), post)
        front.check_still_serving()

    attack()
    front.check_sentinel_unharmed()


# -- span contents: ids, times, attribute values ------------------------------------------------

# the keys the native core reads (native/src/extract.rs, CONVENTION_KEYS), and others
CONVENTION_KEYS = {
    "gen_ai.operation.name", "gen_ai.agent.name", "gen_ai.tool.name",
    "gen_ai.tool.call.arguments", "gen_ai.response.finish_reasons", "gen_ai.usage.input_tokens",
    "gen_ai.usage.output_tokens", "openinference.span.kind", "tool.name",
    "llm.token_count.prompt", "llm.token_count.completion", "error.type",
    "http.response.status_code", "http.status_code",
}  # fmt: skip
KEYS = sorted(CONVENTION_KEYS | {CONV, "session.id", "agent_sampler.rule", "input.value", "x"})
# Values that once broke, or could break, the code reading attributes: numbers the extractor
# converts (token counts, HTTP status codes), JSON it normalises (tool arguments), strings
# rules compare.
_TRICKY_STRINGS = [
    "", "²", "٣", "1" * 5000, "-1", "1e999", "NaN", "500", "[" * 5000, "{" * 3000,
    '{"a": ' * 2000, '{"b": 1, "a": [1, 2]}', "invoke_agent", "execute_tool", "chat", "AGENT",
    "TOOL", "LLM", "content_filter", "length", "\x00", "\u202e", "ot=th:0", "ot=th:zz;rv:",
]  # fmt: skip
_TRICKY_DOUBLES = [math.nan, math.inf, -math.inf, 1e308, -0.0, 599.5, 2.0**63]
_TRICKY_INTS = [2**63 - 1, -(2**63), -1, 0, 500]
HOSTILE_TEXT = st.one_of(st.sampled_from(_TRICKY_STRINGS), st.text(max_size=12))
TRICKY_VALUE = st.sampled_from(
    [AnyValue(string_value=text) for text in _TRICKY_STRINGS]
    + [AnyValue(double_value=x) for x in _TRICKY_DOUBLES]
    + [AnyValue(int_value=i) for i in _TRICKY_INTS]
    + [AnyValue(), AnyValue(bool_value=True), AnyValue(bytes_value=b"\xff")]
)
LEAF = st.one_of(
    TRICKY_VALUE,
    st.text(max_size=12).map(lambda s: AnyValue(string_value=s)),
    st.integers(-(2**63), 2**63 - 1).map(lambda i: AnyValue(int_value=i)),
    st.floats().map(lambda f: AnyValue(double_value=f)),
    st.binary(max_size=8).map(lambda b: AnyValue(bytes_value=b)),
)


def _array(items: list[AnyValue]) -> AnyValue:
    value = AnyValue()
    value.array_value.values.extend(items)
    return value


def _kvlist(items: list[AnyValue]) -> AnyValue:
    value = AnyValue()
    value.kvlist_value.values.extend(KeyValue(key=f"k{i}", value=v) for i, v in enumerate(items))
    return value


VALUES = st.one_of(
    TRICKY_VALUE,
    st.recursive(
        LEAF,
        lambda inner: st.one_of(
            st.lists(inner, max_size=3).map(_array), st.lists(inner, max_size=3).map(_kvlist)
        ),
        max_leaves=10,
    ),
)
# What makes a span an agent, tool or LLM span, and the keys the extractor then reads.
OPERATION, OI_KIND = "gen_ai.operation.name", "openinference.span.kind"
ARGUMENT_KEYS = ("gen_ai.tool.call.arguments", "input.value")
ROLES = st.sampled_from([
    ({}, ("http.response.status_code", "http.status_code", "error.type",
          "gen_ai.response.finish_reasons")),
    ({OPERATION: "execute_tool"}, ("gen_ai.tool.name", ARGUMENT_KEYS[0])),
    ({OI_KIND: "TOOL"}, ("tool.name", ARGUMENT_KEYS[1])),
    ({OPERATION: "chat"}, ("gen_ai.usage.input_tokens", "gen_ai.usage.output_tokens")),
    ({OI_KIND: "LLM"}, ("llm.token_count.prompt", "llm.token_count.completion")),
    ({OPERATION: "invoke_agent"}, ("gen_ai.agent.name", CONV)),
])  # fmt: skip


# Tool-call arguments are parsed as JSON: nest it from not at all to far too deep for Python.
ARGUMENTS = st.one_of(
    VALUES,
    st.builds(
        lambda depth, opening: AnyValue(string_value=opening * depth),
        st.integers(0, 3000),
        st.sampled_from(["[", '{"a":', '[{"a":']),
    ),
)


def usually(good: st.SearchStrategy[T], bad: st.SearchStrategy[T]) -> st.SearchStrategy[T]:
    """``good`` seven times in eight."""
    return st.integers(0, 7).flatmap(lambda i: bad if i == 0 else good)


TRACE_IDS = usually(
    st.one_of(
        st.sampled_from([b"fuzz-trace-0001!", b"fuzz-trace-0002!", bytes(16), b"\xff" * 16]),
        st.binary(min_size=16, max_size=16),
    ),
    st.binary(max_size=20),
)
SPAN_IDS = usually(
    st.one_of(st.sampled_from([bytes(8), b"\xff" * 8]), st.binary(min_size=8, max_size=8)),
    st.binary(max_size=10),
)
TIMES = st.one_of(st.sampled_from([0, 1, 2**63 - 1, 2**63, 2**64 - 1]), st.integers(0, 2**64 - 1))


@st.composite
def hostile_span(draw: st.DrawFn) -> Span:
    result = Span(
        trace_id=draw(TRACE_IDS),
        span_id=draw(SPAN_IDS),
        name=draw(HOSTILE_TEXT),
        kind=draw(st.sampled_from([0, 1, 3, 5, 2**31 - 1, -1])),
        start_time_unix_nano=draw(TIMES),
        end_time_unix_nano=draw(TIMES),  # often before the start
        trace_state=draw(HOSTILE_TEXT),
        flags=draw(st.integers(0, 2**32 - 1)),
        dropped_attributes_count=draw(st.integers(0, 2**32 - 1)),
    )
    if draw(st.booleans()):
        result.parent_span_id = draw(SPAN_IDS)
    marker, read_keys = draw(ROLES)
    for key, text in marker.items():
        result.attributes.add(key=key).value.string_value = text
    for key in read_keys:
        if draw(st.booleans()):
            value = draw(ARGUMENTS if key in ARGUMENT_KEYS else VALUES)
            result.attributes.add(key=key).value.CopyFrom(value)
    for key, value in draw(st.lists(st.tuples(st.sampled_from(KEYS), VALUES), max_size=6)):
        result.attributes.add(key=key).value.CopyFrom(value)
    result.status.code = draw(st.sampled_from([0, 1, 2, 3, -5]))
    for name in draw(st.lists(st.sampled_from(["exception", ""]), max_size=2)):
        result.events.add(name=name, time_unix_nano=draw(TIMES))
    for trace, span_id in draw(st.lists(st.tuples(TRACE_IDS, SPAN_IDS), max_size=2)):
        result.links.add(trace_id=trace, span_id=span_id)
    return result


@st.composite
def hostile_request(draw: st.DrawFn) -> ExportTraceServiceRequest:
    request = ExportTraceServiceRequest()
    for _ in range(draw(st.integers(1, 2))):
        block = request.resource_spans.add()
        for key, value in draw(st.lists(st.tuples(st.sampled_from(KEYS), VALUES), max_size=3)):
            block.resource.attributes.add(key=key).value.CopyFrom(value)
        for _ in range(draw(st.integers(1, 2))):
            block.scope_spans.add().spans.extend(draw(st.lists(hostile_span(), max_size=4)))
    return request


def _invalid_ids(request: ExportTraceServiceRequest) -> tuple[int, bool]:
    """(spans the sampler must reject, whether OTLP/JSON can carry the ids at all)."""
    spans = [s for rs in request.resource_spans for ss in rs.scope_spans for s in ss.spans]
    rejected = sum(
        len(s.trace_id) != 16 or len(s.span_id) != 8 or not any(s.trace_id) or not any(s.span_id)
        for s in spans
    )
    sizes = [(s.trace_id, 16) for s in spans] + [(s.span_id, 8) for s in spans]
    sizes += [(s.parent_span_id, 8) for s in spans]
    sizes += [(link.trace_id, 16) for s in spans for link in s.links]
    sizes += [(link.span_id, 8) for s in spans for link in s.links]
    return rejected, all(len(value) in (0, size) for value, size in sizes)


@pytest.mark.slow
def test_hostile_span_contents(front: Front) -> None:
    """Ids of every length and all zero, times from 0 to 2^64-1 (end before start), attribute
    values the extractor reads (NaN token counts, "²" status codes, 5,000-digit numbers, JSON
    nested thousands deep as tool arguments), over gRPC, OTLP/HTTP protobuf and OTLP/JSON."""

    @FUZZ
    @given(request=hostile_request())
    def attack(request: ExportTraceServiceRequest) -> None:
        body = request.SerializeToString()
        rpc, post = front.grpc(body), front.http(body)
        same_outcome(rpc, post)
        rejected, json_can_say_it = _invalid_ids(request)
        assert rpc.code is grpc.StatusCode.OK, rpc
        assert rejected_spans(rpc) == rejected
        as_json = front.http(request_to_json(request).encode(), JSON)
        check_http(as_json)
        if json_can_say_it:
            assert (as_json.status, rejected_spans(as_json)) == (200, rejected)
        else:  # OTLP/JSON ids are hex of the exact size: the whole request is refused
            assert as_json.status == 400
        front.check_still_serving()

    attack()
    front.check_sentinel_unharmed()


# -- OTLP/JSON --------------------------------------------------------------------------------

ODD = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(),  # NaN and infinities are written as bare NaN / Infinity
    st.text(max_size=16),
    st.sampled_from([
        "", "00" * 16, "00" * 8, "zz" * 16, "AQIDBAUGBwgJCgsMDQ4PEA==", "AQIDBAUGBwg=",
        "0102030405060708090A0B0C0D0E0F10", "NaN", "Infinity", "1e400", "-1", "0x10",
        "18446744073709551615", "18446744073709551616", "SPAN_KIND_SERVER", "STATUS_CODE_ERROR",
        "\\ud800",
    ]),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)  # fmt: skip


def odd(good: st.SearchStrategy[object]) -> st.SearchStrategy[object]:
    """Mostly ``good``; one time in eight a value of the wrong kind."""
    return usually(good, ODD)


def _hex(size: int) -> st.SearchStrategy[object]:
    return st.one_of(
        st.binary(min_size=size, max_size=size).map(bytes.hex),
        st.binary(max_size=size + 2).map(bytes.hex),
    )


def obj(required: dict[str, object], **optional: object) -> st.SearchStrategy[object]:
    """A JSON object with the ``required`` keys and any of the ``optional`` ones, each value
    (and the object itself, one time in eight) possibly of the wrong kind."""
    return odd(
        st.fixed_dictionaries(
            {key: odd(value) for key, value in required.items()},  # type: ignore[arg-type]
            optional={key: odd(value) for key, value in optional.items()},  # type: ignore[arg-type]
        )
    )


def array(items: st.SearchStrategy[object], size: int = 3) -> st.SearchStrategy[object]:
    return st.lists(items, max_size=size)


TIMESTAMP = st.one_of(st.integers(0, 2**64 - 1).map(str), st.integers(0, 2**64 - 1))
JSON_VALUE: st.SearchStrategy[object] = st.deferred(
    lambda: st.one_of(
        obj(
            {},
            stringValue=st.text(max_size=8),
            intValue=st.integers(-(2**63), 2**63 - 1).map(str),
            doubleValue=st.floats(),
            boolValue=st.booleans(),
            bytesValue=st.just("AQID"),
        ),
        obj({"arrayValue": obj({"values": array(JSON_VALUE)})}),
        obj({"kvlistValue": obj({"values": array(JSON_KV)})}),
    )
)
JSON_KV = obj({"key": st.sampled_from(KEYS)}, value=JSON_VALUE)
JSON_ATTRIBUTES = array(JSON_KV, 4)
JSON_SPAN = obj(
    {"traceId": _hex(16), "spanId": _hex(8)},
    parentSpanId=_hex(8),
    name=st.text(max_size=8),
    kind=st.integers(-3, 10),
    startTimeUnixNano=TIMESTAMP,
    endTimeUnixNano=TIMESTAMP,
    traceState=st.text(max_size=8),
    attributes=JSON_ATTRIBUTES,
    events=array(
        obj({}, name=st.sampled_from(["exception", "x"]), timeUnixNano=TIMESTAMP,
            attributes=JSON_ATTRIBUTES),
        2,
    ),
    links=array(obj({"traceId": _hex(16), "spanId": _hex(8)}), 2),
    status=obj({}, code=st.integers(-1, 5), message=st.text(max_size=4)),
    flags=st.integers(-1, 2**33),
    **{"\\ud800": st.just(1)},  # an unknown key, not even UTF-8
)  # fmt: skip
JSON_REQUEST = obj(
    {
        "resourceSpans": array(
            obj(
                {},
                resource=obj({"attributes": JSON_ATTRIBUTES}),
                scopeSpans=array(obj({"spans": array(JSON_SPAN)}), 2),
            ),
            2,
        )
    }
)


def test_hostile_json_documents(front: Front) -> None:
    """OTLP/JSON with values of the wrong kind anywhere: hex ids of the wrong length or in
    base64, numbers too large, NaN, timestamps as numbers or out of range, unpaired surrogates."""

    @FUZZ
    @given(document=JSON_REQUEST)
    def attack(document: object) -> None:
        text = json.dumps(document).replace('"\\\\ud800"', '"\\ud800"')
        check_http(front.http(text.encode(), JSON))
        front.check_still_serving()

    attack()
    front.check_sentinel_unharmed()


JSON_NOISE = st.sampled_from(list('{}[],:"\\0123456789eE.-+ntfalsru') + ["\x00", "\xff", "é"])


@st.composite
def mutated_json(draw: st.DrawFn) -> bytes:
    text = RICH_JSON
    for _ in range(draw(st.integers(1, 3))):
        where = draw(st.integers(0, len(text)))
        action = draw(st.sampled_from(["truncate", "replace", "insert", "delete"]))
        if action == "truncate":
            text = text[:where]
        elif action == "replace":
            text = text[:where] + draw(JSON_NOISE) + text[where + 1 :]
        elif action == "insert":
            text = text[:where] + "".join(draw(st.lists(JSON_NOISE, max_size=6))) + text[where:]
        else:
            text = text[:where] + text[where + draw(st.integers(1, 24)) :]
    encoding = draw(st.sampled_from(["utf-8", "utf-16", "latin-1"]))
    return text.encode(encoding, errors="replace")


def test_mutated_json_text(front: Front) -> None:
    @FUZZ
    @given(body=mutated_json(), compressed=st.booleans())
    def attack(body: bytes, compressed: bool) -> None:
        check_http(front.http_gzip(body, JSON) if compressed else front.http(body, JSON))
        front.check_still_serving()

    attack()
    front.check_sentinel_unharmed()


# -- content types and encodings --------------------------------------------------------------

HEADER_TEXT = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40)
CONTENT_TYPES = usually(
    st.sampled_from([
        PROTOBUF, JSON, "application/json; charset=utf-8", "APPLICATION/JSON",
        "application/x-protobuf; proto=opentelemetry", "application/protobuf",
        "application/grpc", "text/plain", "", ";", "application/json; charset=\"",
        "multipart/form-data; boundary=x", "application/x-protobuf, application/json", None,
        ";0*", "a;b*", "application/json;0*",  # aiohttp's parser raised IndexError on these
    ]),
    HEADER_TEXT,
)  # fmt: skip
ENCODINGS = usually(
    st.sampled_from([None, "identity", "gzip", "x-gzip", "GZIP", " gzip ", "deflate", "br",
                     "zstd", "gzip, gzip", "gzip;q=1"]),
    HEADER_TEXT,
)  # fmt: skip


def test_content_types_and_encodings(front: Front) -> None:
    bodies = [RICH_BYTES, RICH_JSON.encode(), gzip.compress(RICH_BYTES), b"\x1f\x8b\x08garbage"]

    @FUZZ
    @given(
        content_type=CONTENT_TYPES,
        encoding=ENCODINGS,
        body=st.sampled_from(bodies),
    )
    def attack(content_type: str | None, encoding: str | None, body: bytes) -> None:
        headers = {} if encoding is None else {"Content-Encoding": encoding}
        answer = front.http(body, content_type, headers)
        check_http(answer)
        media_type = (content_type or "").partition(";")[0].strip().lower()
        assert (answer.status == 415) == (media_type not in (PROTOBUF, JSON))
        if (encoding or "").strip().lower() not in ("", "identity", "gzip", "x-gzip"):
            assert answer.status in (400, 415)
        front.check_still_serving()

    attack()
    front.check_sentinel_unharmed()
