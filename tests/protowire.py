"""A few protobuf wire-format writers, for tests that craft bodies no SDK would send."""

from __future__ import annotations

from collections.abc import Iterable

_UINT64_MASK = (1 << 64) - 1


def encode_varint(n: int) -> bytes:
    """Base-128 varint of ``n``; a negative ``n`` (int64) in two's complement."""
    n &= _UINT64_MASK
    out = bytearray()
    while n >= 0x80:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def length_delimited(field_number: int, payload: bytes) -> bytes:
    """The encoded length-delimited field ``field_number`` holding ``payload``."""
    return encode_varint(field_number << 3 | 2) + encode_varint(len(payload)) + payload


def request_of(spans: Iterable[bytes], resource: bytes = b"", scope: bytes = b"") -> bytes:
    """An ExportTraceServiceRequest with one resource and one scope holding serialized spans."""
    scope_spans = (length_delimited(1, scope) if scope else b"") + b"".join(
        length_delimited(2, span) for span in spans
    )
    resource_spans = (length_delimited(1, resource) if resource else b"") + length_delimited(
        2, scope_spans
    )
    return length_delimited(1, resource_spans)
