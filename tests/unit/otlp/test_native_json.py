"""sampler._native.validate_json, checked against request_from_json, its reference.

The native converter must accept what ``request_from_json`` accepts, giving protobuf that
parses to the same message, and refuse what it refuses. It refuses on purpose a few bodies
Python takes (the module notes of native/src/json.rs): a field given twice in one object, a
UTF-16/32 body, and arrays or objects nested deeper than 512. ``assert_agree`` allows exactly
those, and only when the body really has one of them.

The inputs: the fuzzing corpus, the framework fixtures, generated agent traffic, the JSON of
random requests, and hypothesis' mutations of such JSON towards the edge cases of ParseDict's
conversions (numbers as strings, floats in integer fields, surrogates, oneofs, strings where
messages belong...).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from benchmarks.quality.generator import TrafficSpec, generate
from sampler import _native
from sampler.otlp.json_codec import request_to_json
from tests.reference.json_reader import request_from_json

TESTDATA = Path(__file__).parents[2] / "testdata"
UNLIMITED = 1 << 40


def otlp_json_to_protobuf(body: bytes, max_output_bytes: int, max_spans: int) -> bytes:
    """The protobuf the native converter makes of an OTLP/JSON body (validated too)."""
    return _native.validate_json(body, max_output_bytes, max_spans).to_bytes()


MAX_NESTING = 512  # native/src/json.rs

FUZZ = settings(
    max_examples=300,
    deadline=None,
    derandomize=True,  # the same examples on every run, as in tests/unit/receive
    database=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


# -- the comparison ---------------------------------------------------------------------------


def native(body: bytes) -> bytes:
    return otlp_json_to_protobuf(body, UNLIMITED, UNLIMITED)


def assert_agree(body: bytes) -> bool:
    """Both accept, to the same message, or both refuse (or a known difference). Returns
    whether the body was accepted."""
    try:
        expected = request_from_json(body)
    except Exception:  # noqa: BLE001 - OverflowError escapes ParseDict too: still a refusal
        expected = None
    try:
        converted = native(body)
    except _native.InvalidRequest as refused:
        assert expected is None or is_known_difference(body, str(refused)), (
            f"native refused what Python accepts: {refused}\nbody: {body[:2000]!r}"
        )
        return False
    assert expected is not None, f"native accepted what Python refuses\nbody: {body[:2000]!r}"
    message = ExportTraceServiceRequest.FromString(converted)
    # Compared as bytes, not with ==, so that NaN and -0.0 count (NaN != NaN).
    assert message.SerializeToString(deterministic=True) == expected.SerializeToString(
        deterministic=True
    ), f"different messages\nbody: {body[:2000]!r}"
    return True


def is_known_difference(body: bytes, reason: str) -> bool:
    if has_a_field_twice(body):
        # Refused whatever the reason: the first of the two values may be refused before
        # the second is seen ({"resource": true, "resource": null} is fine to Python).
        return True
    if "UTF-16" in reason:
        return json.detect_encoding(body) not in ("utf-8", "utf-8-sig")
    if "nested more than 512" in reason:
        return nesting(body) > MAX_NESTING
    return False


def _field_names() -> dict[str, str]:
    """Every field's JSON name and proto name, mapped to the proto name."""
    names: dict[str, str] = {}
    pending = [ExportTraceServiceRequest.DESCRIPTOR]
    seen = set()
    while pending:
        descriptor = pending.pop()
        if descriptor.full_name in seen:
            continue
        seen.add(descriptor.full_name)
        for field in descriptor.fields:
            names[field.json_name] = names[field.name] = field.name
            if field.message_type is not None:
                pending.append(field.message_type)
    return names


FIELD_NAMES = _field_names()


def has_a_field_twice(body: bytes) -> bool:
    """Whether some object holds a key twice, or a field under both its names (checked in
    every object, messages or not: enough to tell a known difference)."""
    found = False

    def check(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        nonlocal found
        names = [FIELD_NAMES.get(key, key) for key, _ in pairs]
        found = found or len(set(names)) != len(names)
        return dict(pairs)

    try:
        json.loads(body, object_pairs_hook=check)
    except (ValueError, RecursionError):
        return False
    return found


def nesting(body: bytes) -> int:
    """How deep arrays and objects nest in the body (outside strings)."""
    text = re.sub(rb'"(?:[^"\\]|\\.)*"', b"", body)
    depth = deepest = 0
    for byte in text:
        if byte in b"[{":
            depth += 1
            deepest = max(deepest, depth)
        elif byte in b"]}":
            depth -= 1
    return deepest


# -- inputs from files and generators ---------------------------------------------------------


@pytest.mark.parametrize(
    "path", sorted((TESTDATA / "fuzz").glob("*.json")), ids=lambda path: path.name
)
def test_fuzz_corpus(path: Path) -> None:
    assert_agree(path.read_bytes())


def _fixture_lines() -> Iterator[tuple[str, bytes]]:
    for path in sorted((TESTDATA / "frameworks").glob("*.jsonl")):
        for number, line in enumerate(path.read_bytes().splitlines(), start=1):
            if line.strip():
                yield f"{path.name}:{number}", line


@pytest.mark.parametrize(("where", "line"), list(_fixture_lines()), ids=lambda v: str(v)[:40])
def test_framework_fixtures(where: str, line: bytes) -> None:
    assert assert_agree(line), where


@pytest.mark.parametrize("genai_fraction", [0.0, 0.5, 1.0], ids=["openinference", "mixed", "genai"])
def test_generated_agent_traffic(genai_fraction: float) -> None:
    corpus = generate(TrafficSpec(seed=11, sessions=150, genai_fraction=genai_fraction))
    for request in corpus.requests:
        body = request_to_json(request).encode()
        assert assert_agree(body)
        assert ExportTraceServiceRequest.FromString(native(body)) == request


# -- random requests --------------------------------------------------------------------------

_texts = st.text(max_size=12)
_uint32 = st.integers(0, 2**32 - 1)
_int32 = st.integers(-(2**31), 2**31 - 1)


@st.composite
def _any_values(draw: st.DrawFn, depth: int = 0) -> AnyValue:
    kinds = ["string", "bool", "int", "double", "bytes", "strindex", "none"]
    if depth < 3:
        kinds += ["array", "kvlist"]
    kind = draw(st.sampled_from(kinds))
    value = AnyValue()
    if kind == "string":
        value.string_value = draw(_texts)
    elif kind == "bool":
        value.bool_value = draw(st.booleans())
    elif kind == "int":
        value.int_value = draw(st.integers(-(2**63), 2**63 - 1))
    elif kind == "double":
        # any NaN is written "NaN": only the canonical one comes back bit for bit
        value.double_value = draw(st.floats(allow_nan=False) | st.just(math.nan))
    elif kind == "bytes":
        value.bytes_value = draw(st.binary(max_size=12))
    elif kind == "strindex":
        value.string_value_strindex = draw(_int32)
    elif kind == "array":
        value.array_value.values.extend(draw(st.lists(_any_values(depth + 1), max_size=3)))
    elif kind == "kvlist":
        value.kvlist_value.SetInParent()
        for item in draw(st.lists(_key_values(depth + 1), max_size=3)):
            value.kvlist_value.values.append(item)
    return value


@st.composite
def _key_values(draw: st.DrawFn, depth: int = 0) -> KeyValue:
    key_value = KeyValue(key=draw(_texts), key_strindex=draw(st.sampled_from([0]) | _int32))
    if draw(st.booleans()):
        key_value.value.CopyFrom(draw(_any_values(depth)))
    return key_value


_attributes = st.lists(_key_values(), max_size=3)
_ids = st.sampled_from([b""]) | st.binary(min_size=8, max_size=8)
_trace_ids = st.sampled_from([b""]) | st.binary(min_size=16, max_size=16)
_times = st.integers(0, 2**64 - 1)


@st.composite
def _spans(draw: st.DrawFn) -> Span:
    span = Span(
        trace_id=draw(_trace_ids),
        span_id=draw(_ids),
        trace_state=draw(_texts),
        parent_span_id=draw(_ids),
        flags=draw(_uint32),
        name=draw(_texts),
        kind=draw(st.integers(0, 5) | _int32),
        start_time_unix_nano=draw(_times),
        end_time_unix_nano=draw(_times),
        dropped_attributes_count=draw(_uint32),
        dropped_events_count=draw(_uint32),
        dropped_links_count=draw(_uint32),
    )
    span.attributes.extend(draw(_attributes))
    for _ in range(draw(st.integers(0, 2))):
        event = span.events.add(time_unix_nano=draw(_times), name=draw(_texts))
        event.attributes.extend(draw(_attributes))
        event.dropped_attributes_count = draw(_uint32)
    for _ in range(draw(st.integers(0, 2))):
        link = span.links.add(
            trace_id=draw(_trace_ids),
            span_id=draw(_ids),
            trace_state=draw(_texts),
            dropped_attributes_count=draw(_uint32),
            flags=draw(_uint32),
        )
        link.attributes.extend(draw(_attributes))
    if draw(st.booleans()):
        span.status.SetInParent()
        span.status.message = draw(_texts)
        span.status.code = draw(st.integers(0, 2) | _int32)
    return span


@st.composite
def _requests(draw: st.DrawFn) -> ExportTraceServiceRequest:
    request = ExportTraceServiceRequest()
    for _ in range(draw(st.integers(0, 2))):
        rs = request.resource_spans.add(schema_url=draw(_texts))
        if draw(st.booleans()):
            rs.resource.SetInParent()
            rs.resource.attributes.extend(draw(_attributes))
            rs.resource.dropped_attributes_count = draw(_uint32)
            for _ in range(draw(st.integers(0, 2))):
                ref = rs.resource.entity_refs.add(schema_url=draw(_texts), type=draw(_texts))
                ref.id_keys.extend(draw(st.lists(_texts, max_size=2)))
                ref.description_keys.extend(draw(st.lists(_texts, max_size=2)))
        for _ in range(draw(st.integers(0, 2))):
            ss = rs.scope_spans.add(schema_url=draw(_texts))
            if draw(st.booleans()):
                ss.scope.SetInParent()
                ss.scope.name = draw(_texts)
                ss.scope.version = draw(_texts)
                ss.scope.attributes.extend(draw(_attributes))
                ss.scope.dropped_attributes_count = draw(_uint32)
            ss.spans.extend(draw(st.lists(_spans(), max_size=3)))
    return request


@FUZZ
@given(_requests())
def test_json_of_random_requests(request: ExportTraceServiceRequest) -> None:
    body = request_to_json(request).encode()
    assert assert_agree(body)
    converted = ExportTraceServiceRequest.FromString(native(body))
    assert converted.SerializeToString(deterministic=True) == request.SerializeToString(
        deterministic=True
    )


# -- JSON mutated towards the edge cases ------------------------------------------------------


@dataclass(frozen=True)
class Raw:
    """JSON text written as it is: number spellings json.dumps would not write, NaN..."""

    text: str


@dataclass(frozen=True)
class Pairs:
    """An object that may hold a key twice."""

    items: tuple[tuple[str, Any], ...]


def dump(value: Any, ascii_only: bool) -> str:
    """JSON text of a tree of dicts, lists, Pairs and Raw; with ``ascii_only`` False, strings
    are written raw, lone surrogates included (encoded with surrogatepass by the caller)."""
    if isinstance(value, Raw):
        return value.text
    if isinstance(value, dict):
        value = Pairs(tuple(value.items()))
    if isinstance(value, Pairs):
        members = (f"{dump(k, ascii_only)}:{dump(v, ascii_only)}" for k, v in value.items)
        return "{" + ",".join(members) + "}"
    if isinstance(value, list):
        return "[" + ",".join(dump(item, ascii_only) for item in value) + "]"
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    return json.dumps(value, ensure_ascii=ascii_only)


def encode(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


# Values worth trying in any place: ParseDict converts each differently per field type.
EDGE_VALUES: list[Any] = [
    None, True, False, 0, 1, -1, 7, 2**31 - 1, 2**31, -(2**31) - 1, 2**32, 2**63, -(2**63),
    2**64, 2**64 - 1, 10**30,
    Raw("-0"), Raw("1.0"), Raw("3.7"), Raw("-2.5"), Raw("1e3"), Raw("1E-400"), Raw("1e400"),
    Raw("-1e400"), Raw("NaN"), Raw("Infinity"), Raw("-Infinity"), Raw("12.5e1"), Raw("0.0"),
    Raw("9" * 400),
    "", "x", "0", "3", "-0", " 3", "3 ", "\t3", "\n3\r", "\x0b3", "\x1c3", "1_0", "1__0", "_1",
    "1_", "+5", "-5", "1e3", "1.5", "2.0", "1e400", "-1e400", "NaN", "nan", "-nan", "NAN",
    "inf", "+Inf", "-Infinity", "Infinity", "infinity", "0x10", "٣", "３", "\u3000 5", "𝟗",
    "²", "5\x00", "\ud800", "a\udc00", "\ud83d\ude00", "SPAN_KIND_CLIENT", "STATUS_CODE_ERROR",
    "SPAN_KIND_BOGUS", "0102030405060708", "0102030405060708090a0b0c0d0e0f10",
    "0102030405060708090A0B0C0D0E0F10", "010203040506070", "QQ==", "QUJD", "Q", "QUI", "-_-_",
    "QQ==QUJD", "Q U J D", "[a.b]", "stringValue", "attributes", "key", "code",
    [], ["x"], ["x", "y"], ["attributes"], ["string_value"], ["[x]"], [1], [None], ["\ud800"],
    {}, {"x": 1}, {"stringValue": "s"}, {"intValue": "5"}, {"stringValue": "a", "boolValue": True},
    {"stringValue": None, "intValue": 1}, {"values": [{}]}, {"values": ["x"]}, {"key": "k"},
    {"future": [[{"a": Raw("NaN")}]]}, Pairs((("a", 1), ("a", 2))),
]  # fmt: skip

KEYS = sorted(FIELD_NAMES) + ["future", "", "[ext]", "\ud800", "trace\u0049d"]


@st.composite
def _mutations(draw: st.DrawFn) -> Any:
    """The JSON tree of a random request, with a few places changed."""
    tree: Any = json.loads(request_to_json(draw(_requests())))
    for _ in range(draw(st.integers(1, 4))):
        tree = _mutate(draw, tree)
    return tree


def _mutate(draw: st.DrawFn, node: Any) -> Any:
    """A copy of node with one change, at a place reached by random steps down."""
    go_down = draw(st.integers(0, 3)) > 0
    if isinstance(node, dict) and node and go_down:
        key = draw(st.sampled_from(sorted(node)))
        return {**node, key: _mutate(draw, node[key])}
    if isinstance(node, list) and node and go_down:
        index = draw(st.integers(0, len(node) - 1))
        return [*node[:index], _mutate(draw, node[index]), *node[index + 1 :]]
    edge = st.sampled_from(EDGE_VALUES)
    change = draw(st.sampled_from(["replace", "add", "add", "drop", "twice", "number-text"]))
    if change == "replace" or not isinstance(node, dict):
        return draw(edge | st.text(alphabet="0123456789_ .eE+-infatyINFATY\t٣", max_size=8))
    if change == "add":
        return {**node, draw(st.sampled_from(KEYS)): draw(edge)}
    if change == "drop" and node:
        key = draw(st.sampled_from(sorted(node)))
        return {k: v for k, v in node.items() if k != key}
    if change == "twice" and node:
        key = draw(st.sampled_from(sorted(node)))
        other = FIELD_NAMES.get(key, key)  # the same field under its other name, or again
        return Pairs((*node.items(), (other if other != key else key, draw(edge))))
    # A number written differently: 5 as "5", 5.0, 5e0...
    numbers = [k for k, v in node.items() if isinstance(v, int | str) and not isinstance(v, bool)]
    if not numbers:
        return node
    key = draw(st.sampled_from(sorted(numbers)))
    spelled = draw(st.sampled_from(["{}", "{}.0", "{}e0", '"{}"', '" {} "', '"{}.0"']))
    return {**node, key: Raw(spelled.format(node[key]))}


@FUZZ
@given(_mutations(), st.booleans())
def test_mutated_json(tree: Any, ascii_only: bool) -> None:
    assert_agree(encode(dump(tree, ascii_only)))


def _in_span(member: str) -> str:
    return '{"resourceSpans":[{"scopeSpans":[{"spans":[{%s}]}]}]}' % member  # noqa: UP031


# Bodies with one scalar field whose value is VALUE.
_SCALAR_PLACES = [
    _in_span(f'"{name}":VALUE')
    for name in ("flags", "kind", "startTimeUnixNano", "droppedAttributesCount", "traceId", "name")
] + [
    _in_span(f'"attributes":[{{"key":"k","value":{{"{name}":VALUE}}}}]')
    for name in ("intValue", "doubleValue", "bytesValue", "stringValueStrindex", "boolValue")
] + [_in_span('"status":{"code":VALUE}')]  # fmt: skip


@FUZZ
@given(
    st.sampled_from(_SCALAR_PLACES),
    st.text(alphabet="0123456789_ .eE+-xinfatyINFATYQ=/\t\x0b\x1c٣３\u3000\u2028", max_size=10),
    st.sampled_from(["string", "bare"]),
)
def test_number_and_base64_spellings(place: str, text: str, how: str) -> None:
    """Strings and bare tokens in scalar places: Python's int(), float() and base64 rules."""
    value = json.dumps(text, ensure_ascii=False) if how == "string" else text
    assert_agree(encode(place.replace("VALUE", value)))


@FUZZ
@given(
    _requests(),
    st.lists(st.tuples(st.integers(0, 10**6), st.sampled_from(list(b'{}[]",:0-.e\\ nN\xed'))),
             min_size=1, max_size=4),
)  # fmt: skip
def test_bytes_mutated(request: ExportTraceServiceRequest, edits: list[tuple[int, int]]) -> None:
    body = bytearray(request_to_json(request).encode())
    for at, byte in edits:
        index = at % (len(body) + 1)
        if at % 3 == 0 and index < len(body):
            del body[index]
        else:
            body.insert(index, byte)
    assert_agree(bytes(body))


# -- refused on purpose -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        b'{"resourceSpans":[{"schemaUrl":"a","schemaUrl":"b"}]}',
        b'{"resourceSpans":[{"schemaUrl":"a","schema_url":"b"}]}',
        b'{"resourceSpans":[],"resource_spans":[{}]}',
        '{}'.encode("utf-16-le"),
        '{}'.encode("utf-16"),
        '{}'.encode("utf-32"),
        b'{"x":' + b"[" * MAX_NESTING + b"]" * MAX_NESTING + b"}",
    ],
    ids=["same-key-twice", "both-spellings", "repeated-both-spellings", "utf-16-le", "utf-16",
         "utf-32", "nested-513"],
)  # fmt: skip
def test_known_differences_are_refused(body: bytes) -> None:
    request_from_json(body)  # Python takes them
    with pytest.raises(_native.InvalidRequest):
        native(body)
    assert not assert_agree(body)  # and they are recognised as the known differences


# -- limits and errors ------------------------------------------------------------------------


def _spans_body(count: int) -> bytes:
    return b'{"resourceSpans":[{"scopeSpans":[{"spans":[%s]}]}]}' % b",".join([b"{}"] * count)


def test_span_limit() -> None:
    body = _spans_body(1000)
    assert len(ExportTraceServiceRequest.FromString(
        otlp_json_to_protobuf(body, UNLIMITED, 1000)
    ).resource_spans[0].scope_spans[0].spans) == 1000  # fmt: skip
    with pytest.raises(_native.RequestTooLarge, match="more than 999 spans"):
        otlp_json_to_protobuf(body, UNLIMITED, 999)


def test_output_limit_is_exact() -> None:
    body = request_to_json(rich()).encode()
    size = len(native(body))
    assert len(otlp_json_to_protobuf(body, size, UNLIMITED)) == size
    with pytest.raises(_native.RequestTooLarge, match=f"more than {size - 1} bytes"):
        otlp_json_to_protobuf(body, size - 1, UNLIMITED)


def test_a_flood_of_empty_spans_stops_at_the_span_limit() -> None:
    with pytest.raises(_native.RequestTooLarge):
        otlp_json_to_protobuf(_spans_body(1_300_000), UNLIMITED, 200_000)


def test_refusals_are_value_errors_with_short_messages() -> None:
    assert issubclass(_native.InvalidRequest, ValueError)
    assert issubclass(_native.RequestTooLarge, ValueError)
    huge = b'{"resourceSpans":[{"scopeSpans":[{"spans":[{"name":"%s"}]}]}]}' % (b"\\ud800" * 9999)
    with pytest.raises(_native.InvalidRequest) as caught:
        native(huge)
    message = str(caught.value)
    assert len(message) <= 1000
    assert "resourceSpans[0].scopeSpans[0].spans[0].name" in message
    message.encode("utf-8")  # no surrogate quoted back


def test_only_bytes_are_taken() -> None:
    convert: Callable[..., bytes] = otlp_json_to_protobuf
    with pytest.raises(TypeError):
        convert("{}", UNLIMITED, UNLIMITED)
    with pytest.raises(OverflowError):
        convert(b"{}", -1, UNLIMITED)


def rich() -> ExportTraceServiceRequest:
    from tests.unit.otlp.test_json_codec import rich_request

    return rich_request()
