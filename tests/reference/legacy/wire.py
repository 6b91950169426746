"""OTLP export requests assembled from, and split into, serialized pieces on the protobuf wire.

The sampler keeps each buffered span as the bytes of its ``Span`` message, and its resource and
scope as the bytes of their messages, so that forwarding a kept session never re-encodes a span.
This module relies on three facts of the protobuf wire format:

* a message is a sequence of fields, and a length-delimited field is
  ``varint((number << 3) | 2) + varint(len(payload)) + payload``;
* occurrences of a repeated field may come anywhere and are concatenated, so appending an encoded
  ``Span.attributes`` entry (field 9) to a span's bytes adds an attribute;
* for a singular scalar field the last occurrence wins (appending ``Span.trace_state``, field 3,
  overrides it), and occurrences of a singular message field are merged, which is the same as
  concatenating their payloads.

Everything here is a pure function over ``bytes``.
"""

from __future__ import annotations

import functools
import struct
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

__all__ = [
    "ResourceBlock",
    "ScopeBlock",
    "WireFormatError",
    "encode_request",
    "encode_varint",
    "length_delimited",
    "span_attribute_bool",
    "span_attribute_double",
    "span_attribute_int",
    "span_attribute_string",
    "span_attribute_string_array",
    "span_trace_state",
    "spans_over",
    "split_request",
]

_WIRE_VARINT, _WIRE_I64, _WIRE_LEN, _WIRE_SGROUP, _WIRE_EGROUP, _WIRE_I32 = range(6)

_UINT64_MASK = (1 << 64) - 1
_INT64_MIN = -(1 << 63)
_INT64_LIMIT = 1 << 63

# Single-byte varints cover every tag used here and the length of most keys and values.
_SMALL_VARINTS = tuple(bytes((n,)) for n in range(0x80))


class WireFormatError(ValueError):
    """Bytes that are not a well-formed protobuf message of the expected shape."""


def encode_varint(n: int) -> bytes:
    """Base-128 varint of ``n``; a negative ``n`` (int64) is encoded in two's complement."""
    if 0 <= n < 0x80:
        return _SMALL_VARINTS[n]
    if n < 0:
        if n < _INT64_MIN:
            raise ValueError(f"varint out of int64 range: {n}")
        n &= _UINT64_MASK
    elif n > _UINT64_MASK:
        raise ValueError(f"varint out of uint64 range: {n}")
    if n < 0x4000:
        return bytes((n & 0x7F | 0x80, n >> 7))
    out = bytearray()
    while n >= 0x80:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _tag(field_number: int, wire_type: int) -> bytes:
    return encode_varint(field_number << 3 | wire_type)


def length_delimited(field_number: int, payload: bytes) -> bytes:
    """The encoded length-delimited field ``field_number`` holding ``payload``."""
    if not 1 <= field_number < 1 << 29:
        raise ValueError(f"invalid field number: {field_number}")
    return _ld(_tag(field_number, _WIRE_LEN), payload)


def _ld(tag: bytes, payload: bytes) -> bytes:
    return b"".join((tag, encode_varint(len(payload)), payload))


# Field numbers (opentelemetry/proto/...): request.resource_spans; ResourceSpans.resource,
# scope_spans, schema_url; ScopeSpans.scope, spans, schema_url; Span.trace_state, attributes;
# AnyValue.bool_value .. array_value. KeyValue.key/value, AnyValue.string_value and
# ArrayValue.values are fields 1, 2, 1, 1: they use the shared length-delimited tags below.
_REQUEST_RESOURCE_SPANS = 1
_RS_RESOURCE, _RS_SCOPE_SPANS, _RS_SCHEMA_URL = 1, 2, 3
_SS_SCOPE, _SS_SPANS, _SS_SCHEMA_URL = 1, 2, 3
_SPAN_TRACE_STATE, _SPAN_ATTRIBUTES = 3, 9
_ANY_BOOL, _ANY_INT, _ANY_DOUBLE, _ANY_ARRAY = 2, 3, 4, 5

_LEN_TAG_1 = _tag(1, _WIRE_LEN)
_LEN_TAG_2 = _tag(2, _WIRE_LEN)
_LEN_TAG_3 = _tag(3, _WIRE_LEN)
_ATTRIBUTES_TAG = _tag(_SPAN_ATTRIBUTES, _WIRE_LEN)
_TRACE_STATE_TAG = _tag(_SPAN_TRACE_STATE, _WIRE_LEN)
_ARRAY_TAG = _tag(_ANY_ARRAY, _WIRE_LEN)
_BOOL_TRUE = _tag(_ANY_BOOL, _WIRE_VARINT) + b"\x01"
_BOOL_FALSE = _tag(_ANY_BOOL, _WIRE_VARINT) + b"\x00"
_INT_TAG = _tag(_ANY_INT, _WIRE_VARINT)
_DOUBLE_TAG = _tag(_ANY_DOUBLE, _WIRE_I64)
_pack_double = struct.Struct("<d").pack


def _any_string(value: str) -> bytes:
    return _ld(_LEN_TAG_1, value.encode("utf-8"))  # AnyValue.string_value


@functools.lru_cache(maxsize=1024)
def _encoded_key(key: str) -> bytes:
    return _ld(_LEN_TAG_1, key.encode("utf-8"))  # KeyValue.key; the sampler uses a few keys


def _span_attribute(key: str, any_value: bytes) -> bytes:
    # KeyValue{key = 1, value = 2} inside Span.attributes
    key_value = _encoded_key(key) + _LEN_TAG_2 + encode_varint(len(any_value)) + any_value
    return _ld(_ATTRIBUTES_TAG, key_value)


def span_attribute_string(key: str, value: str) -> bytes:
    """An encoded ``Span.attributes`` entry with a string value, to append to span bytes."""
    return _span_attribute(key, _any_string(value))


def span_attribute_double(key: str, value: float) -> bytes:
    """An encoded ``Span.attributes`` entry with a double value, to append to span bytes."""
    return _span_attribute(key, _DOUBLE_TAG + _pack_double(value))


def span_attribute_int(key: str, value: int) -> bytes:
    """An encoded ``Span.attributes`` entry with an int64 value, to append to span bytes."""
    if not _INT64_MIN <= value < _INT64_LIMIT:
        raise ValueError(f"int attribute {key!r} out of int64 range: {value}")
    return _span_attribute(key, _INT_TAG + encode_varint(value))


def span_attribute_bool(key: str, value: bool) -> bytes:
    """An encoded ``Span.attributes`` entry with a bool value, to append to span bytes."""
    return _span_attribute(key, _BOOL_TRUE if value else _BOOL_FALSE)


def span_attribute_string_array(key: str, values: Sequence[str]) -> bytes:
    """An encoded ``Span.attributes`` entry holding an array of strings (may be empty)."""
    array = b"".join([_ld(_LEN_TAG_1, _any_string(v)) for v in values])  # ArrayValue.values
    return _span_attribute(key, _ld(_ARRAY_TAG, array))


def span_trace_state(value: str) -> bytes:
    """An encoded ``Span.trace_state``; appended to span bytes, it replaces the span's own."""
    return _ld(_TRACE_STATE_TAG, value.encode("utf-8"))


@dataclass(frozen=True, slots=True)
class ScopeBlock:
    """One ``ScopeSpans``: serialized ``InstrumentationScope`` (``b""`` = absent) and spans."""

    scope: bytes
    schema_url: str
    spans: Sequence[bytes]


@dataclass(frozen=True, slots=True)
class ResourceBlock:
    """One ``ResourceSpans``: serialized ``Resource`` (``b""`` = absent) and its scopes."""

    resource: bytes
    schema_url: str
    scopes: Sequence[ScopeBlock]


def encode_request(blocks: Iterable[ResourceBlock]) -> bytes:
    """A serialized ``ExportTraceServiceRequest`` holding ``blocks`` in order.

    Span, resource and scope bytes are copied once, into the result: nested lengths are added
    up first and all pieces joined at the end. Empty ``schema_url``s and empty
    resource/scope bytes are left out, as protobuf itself does.
    """
    out: list[bytes] = []
    for block in blocks:
        rs_pieces: list[bytes] = []
        rs_size = 0
        if block.resource:
            rs_size += _add_field(rs_pieces, _LEN_TAG_1, block.resource)
        for scope_block in block.scopes:
            ss_pieces: list[bytes] = []
            ss_size = 0
            if scope_block.scope:
                ss_size += _add_field(ss_pieces, _LEN_TAG_1, scope_block.scope)
            for span in scope_block.spans:
                header = _LEN_TAG_2 + encode_varint(len(span))
                ss_pieces.append(header)
                ss_pieces.append(span)
                ss_size += len(header) + len(span)
            if scope_block.schema_url:
                ss_size += _add_field(ss_pieces, _LEN_TAG_3, scope_block.schema_url.encode())
            header = _LEN_TAG_2 + encode_varint(ss_size)
            rs_pieces.append(header)
            rs_pieces.extend(ss_pieces)
            rs_size += len(header) + ss_size
        if block.schema_url:
            rs_size += _add_field(rs_pieces, _LEN_TAG_3, block.schema_url.encode())
        out.append(_LEN_TAG_1 + encode_varint(rs_size))
        out.extend(rs_pieces)
    return b"".join(out)


def _add_field(pieces: list[bytes], tag: bytes, payload: bytes) -> int:
    header = tag + encode_varint(len(payload))
    pieces.append(header)
    pieces.append(payload)
    return len(header) + len(payload)


def split_request(data: bytes | bytearray | memoryview) -> list[ResourceBlock]:
    """The inverse of ``encode_request``: walk a serialized ``ExportTraceServiceRequest``.

    Spans are returned as copies of their bytes, unparsed (a slice of ``data`` would keep the
    whole request alive for as long as any one span stays buffered). Unknown fields at the
    request, ``ResourceSpans`` and ``ScopeSpans`` levels are dropped. Repeated occurrences of
    ``resource`` or ``scope`` are concatenated (protobuf merges them); for ``schema_url`` the
    last one wins. Raises ``WireFormatError`` on truncated or malformed input.
    """
    buf = bytes(data)
    blocks: list[ResourceBlock] = []
    pos, end = 0, len(buf)
    while pos < end:
        number, wire_type, pos = _read_tag(buf, pos, end)
        if number == _REQUEST_RESOURCE_SPANS:
            start, pos = _read_len(buf, pos, end, wire_type, "resource_spans")
            blocks.append(_split_resource_spans(buf, start, pos))
        else:
            pos = _skip_field(buf, pos, end, number, wire_type)
    return blocks


def spans_over(data: bytes, limit: int) -> bool:
    """Whether a serialized ``ExportTraceServiceRequest`` holds more than ``limit`` spans, told
    without parsing it (parsed, a span costs about 170 bytes however small it is on the wire:
    16 MiB of empty spans would take 1.3 GB). False for malformed input: the parser says what
    is wrong with it.

    Ordinary requests cost nothing or one C-speed scan: a span takes two bytes at least, and
    each is framed by the byte 0x12 (``ScopeSpans.spans`` is field 2), so a body shorter than
    two bytes a span, or with fewer 0x12 bytes than ``limit``, cannot hold more. Otherwise the
    spans are counted, walking the two levels above them, and the walk stops past ``limit``.
    """
    if len(data) <= 2 * limit or data.count(_LEN_TAG_2) <= limit:
        return False
    count = 0
    try:
        for rs_start, rs_end in _payloads(data, 0, len(data), _REQUEST_RESOURCE_SPANS):
            for ss_start, ss_end in _payloads(data, rs_start, rs_end, _RS_SCOPE_SPANS):
                for _ in _payloads(data, ss_start, ss_end, _SS_SPANS):
                    count += 1
                    if count > limit:
                        return True
    except WireFormatError:
        return False
    return False


def _payloads(buf: bytes, pos: int, end: int, wanted: int) -> Iterator[tuple[int, int]]:
    """(start, end) of each length-delimited field ``wanted`` in ``buf[pos:end]``; other
    fields are skipped."""
    while pos < end:
        number, wire_type, pos = _read_tag(buf, pos, end)
        if number == wanted and wire_type == _WIRE_LEN:
            start, pos = _read_len(buf, pos, end, wire_type, f"field {wanted}")
            yield start, pos
        else:
            pos = _skip_field(buf, pos, end, number, wire_type)


def _split_resource_spans(buf: bytes, pos: int, end: int) -> ResourceBlock:
    resource: list[bytes] = []
    scopes: list[ScopeBlock] = []
    schema_url = ""
    while pos < end:
        number, wire_type, pos = _read_tag(buf, pos, end)
        if number == _RS_SCOPE_SPANS:
            start, pos = _read_len(buf, pos, end, wire_type, "ResourceSpans.scope_spans")
            scopes.append(_split_scope_spans(buf, start, pos))
        elif number == _RS_RESOURCE:
            start, pos = _read_len(buf, pos, end, wire_type, "ResourceSpans.resource")
            resource.append(buf[start:pos])
        elif number == _RS_SCHEMA_URL:
            start, pos = _read_len(buf, pos, end, wire_type, "ResourceSpans.schema_url")
            schema_url = _utf8(buf, start, pos, "ResourceSpans.schema_url")
        else:
            pos = _skip_field(buf, pos, end, number, wire_type)
    return ResourceBlock(b"".join(resource), schema_url, tuple(scopes))


def _split_scope_spans(buf: bytes, pos: int, end: int) -> ScopeBlock:
    scope: list[bytes] = []
    spans: list[bytes] = []
    schema_url = ""
    while pos < end:
        number, wire_type, pos = _read_tag(buf, pos, end)
        if number == _SS_SPANS:
            start, pos = _read_len(buf, pos, end, wire_type, "ScopeSpans.spans")
            spans.append(buf[start:pos])
        elif number == _SS_SCOPE:
            start, pos = _read_len(buf, pos, end, wire_type, "ScopeSpans.scope")
            scope.append(buf[start:pos])
        elif number == _SS_SCHEMA_URL:
            start, pos = _read_len(buf, pos, end, wire_type, "ScopeSpans.schema_url")
            schema_url = _utf8(buf, start, pos, "ScopeSpans.schema_url")
        else:
            pos = _skip_field(buf, pos, end, number, wire_type)
    return ScopeBlock(b"".join(scope), schema_url, tuple(spans))


def _read_varint(buf: bytes, pos: int, end: int) -> tuple[int, int]:
    if pos < end:
        byte = buf[pos]
        if byte < 0x80:  # the common case: tags and short lengths
            return byte, pos + 1
    result = 0
    shift = 0
    start = pos
    while pos < end:
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            if shift == 63 and byte > 1:
                raise WireFormatError(f"varint at offset {start} overflows 64 bits")
            return result, pos
        shift += 7
        if shift > 63:
            raise WireFormatError(f"varint at offset {start} is longer than 10 bytes")
    raise WireFormatError(f"truncated varint at offset {start}")


def _read_tag(buf: bytes, pos: int, end: int) -> tuple[int, int, int]:
    start = pos
    key, pos = _read_varint(buf, pos, end)
    number = key >> 3
    if number == 0 or number >= 1 << 29:
        raise WireFormatError(f"invalid field number {number} at offset {start}")
    return number, key & 7, pos


def _read_len(buf: bytes, pos: int, end: int, wire_type: int, field: str) -> tuple[int, int]:
    """For a length-delimited field whose tag was just read: (payload start, payload end)."""
    if wire_type != _WIRE_LEN:
        raise WireFormatError(
            f"{field} at offset {pos}: wire type {wire_type}, expected {_WIRE_LEN} "
            "(length-delimited)"
        )
    start = pos
    length, pos = _read_varint(buf, pos, end)
    stop = pos + length
    if stop > end:
        raise WireFormatError(
            f"{field} at offset {start}: length {length} runs past the end of its message "
            f"({end - pos} bytes left)"
        )
    return pos, stop


def _skip_field(buf: bytes, pos: int, end: int, number: int, wire_type: int) -> int:
    """Skip the value of an unknown field whose tag was just read; return the position after."""
    if wire_type == _WIRE_VARINT:
        return _read_varint(buf, pos, end)[1]
    if wire_type == _WIRE_LEN:
        return _read_len(buf, pos, end, wire_type, f"field {number}")[1]
    if wire_type in (_WIRE_I64, _WIRE_I32):
        stop = pos + (8 if wire_type == _WIRE_I64 else 4)
        if stop > end:
            raise WireFormatError(f"field {number} at offset {pos}: truncated fixed-size value")
        return stop
    if wire_type == _WIRE_SGROUP:  # deprecated groups: skip through the matching end tag
        while True:
            if pos >= end:
                raise WireFormatError(f"group {number}: missing end-group tag")
            inner, inner_type, pos = _read_tag(buf, pos, end)
            if inner_type == _WIRE_EGROUP:
                if inner != number:
                    raise WireFormatError(f"group {number} closed by end-group tag {inner}")
                return pos
            pos = _skip_field(buf, pos, end, inner, inner_type)
    raise WireFormatError(f"field {number} at offset {pos}: invalid wire type {wire_type}")


def _utf8(buf: bytes, start: int, stop: int, field: str) -> str:
    try:
        return buf[start:stop].decode("utf-8")
    except UnicodeDecodeError as err:
        raise WireFormatError(f"{field} at offset {start} is not valid UTF-8: {err}") from None
