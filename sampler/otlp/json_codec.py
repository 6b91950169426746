"""OTLP/JSON for trace export requests, read and written the way the OpenTelemetry Collector does.

OTLP/JSON is protobuf's canonical JSON mapping with a few differences, which this module owns:

* ``traceId``, ``spanId`` and ``parentSpanId`` (on spans and on span links) are lowercase hex,
  not base64; an empty string means the id is absent;
* enums are written as integers (names are accepted on input);
* keys are lowerCamelCase on output; receivers also accept the proto field names (snake_case);
* unknown fields are ignored, as the OTLP specification asks of receivers.

Reading is native (``sampler._native.validate_json``: a streaming, bounded converter to
protobuf that accepts and refuses what protobuf's ``json_format.ParseDict`` does once the hex
ids are base64). Writing does not use ``json_format``: it walks the message itself, so the
text matches the collector's ``file`` exporter (pdata's JSON marshaler) byte for byte,
including what ``MessageToDict`` gets differently: fields in declaration order
(``Span.flags``, field 16, follows ``parentSpanId``), doubles formatted as Go does (``1`` not
``1.0``, ``"+Inf"``), and strings escaped as Go does (``\\u0008`` not ``\\b``).

Presence: pdata always writes ``resource``, ``scope``, ``status`` and ``KeyValue.value`` (they
are not nullable there); here they are written exactly when the message has them set, so that
protobuf -> JSON -> protobuf is the identity. Requests serialized by a collector or by the
OpenTelemetry SDKs set them, so for those the text is the same.
"""

from __future__ import annotations

import base64
import json
import math
import os
import re
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import DecodeError, Message
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from sampler._native import InvalidRequest, RequestTooLarge, validate_json

__all__ = [
    "OtlpDecodeError",
    "iter_json_lines",
    "request_bytes_to_json",
    "request_from_json",
    "request_to_json",
]


class OtlpDecodeError(ValueError):
    """A request body (or a line of a file) is not a valid OTLP/JSON export request."""


# --------------------------------------------------------------------------------------------
# Reading: natively (native/src/json.rs), the converter every intake uses
# --------------------------------------------------------------------------------------------

_UNBOUNDED = 1 << 62


def request_from_json(data: bytes | str) -> ExportTraceServiceRequest:
    """Parse one OTLP/JSON ``ExportTraceServiceRequest``; raise ``OtlpDecodeError`` if invalid."""
    body = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data
    try:
        request = validate_json(body, _UNBOUNDED, _UNBOUNDED)
    except (InvalidRequest, RequestTooLarge) as err:
        raise OtlpDecodeError(str(err)) from None
    return ExportTraceServiceRequest.FromString(request.to_bytes())


def iter_json_lines(path: str | os.PathLike[str]) -> Iterator[ExportTraceServiceRequest]:
    """Yield the requests of a file holding one OTLP/JSON request per line (blank lines skipped).

    A bad line raises ``OtlpDecodeError`` whose message starts with ``PATH:LINE:``.
    """
    with open(path, "rb") as file:
        for number, line in enumerate(file, start=1):
            if not line.strip():
                continue
            try:
                yield request_from_json(line)
            except OtlpDecodeError as err:
                raise OtlpDecodeError(f"{os.fspath(path)}:{number}: {err}") from None


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------

_ID_FIELDS = frozenset(
    {
        "opentelemetry.proto.trace.v1.Span.trace_id",
        "opentelemetry.proto.trace.v1.Span.span_id",
        "opentelemetry.proto.trace.v1.Span.parent_span_id",
        "opentelemetry.proto.trace.v1.Span.Link.trace_id",
        "opentelemetry.proto.trace.v1.Span.Link.span_id",
    }
)

# How a field's value is written; one entry per FieldDescriptor, filled on first use.
_MESSAGE, _STRING, _BYTES, _HEX_ID, _INT64, _DOUBLE, _BOOL, _NUMBER = range(8)
_INT64_TYPES = frozenset(
    {
        FieldDescriptor.TYPE_INT64,
        FieldDescriptor.TYPE_UINT64,
        FieldDescriptor.TYPE_SINT64,
        FieldDescriptor.TYPE_FIXED64,
        FieldDescriptor.TYPE_SFIXED64,
    }
)


class _FieldPlan:
    __slots__ = ("key", "kind", "repeated")

    def __init__(self, field: FieldDescriptor) -> None:
        self.key = json.dumps(field.json_name) + ":"
        self.repeated = field.is_repeated
        ftype = field.type
        if ftype in (FieldDescriptor.TYPE_MESSAGE, FieldDescriptor.TYPE_GROUP):
            self.kind = _MESSAGE
        elif ftype == FieldDescriptor.TYPE_STRING:
            self.kind = _STRING
        elif ftype == FieldDescriptor.TYPE_BYTES:
            self.kind = _HEX_ID if field.full_name in _ID_FIELDS else _BYTES
        elif ftype in _INT64_TYPES:
            self.kind = _INT64
        elif ftype in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
            self.kind = _DOUBLE
        elif ftype == FieldDescriptor.TYPE_BOOL:
            self.kind = _BOOL
        else:  # 32-bit integers and enums: JSON numbers
            self.kind = _NUMBER


_plans: dict[FieldDescriptor, _FieldPlan] = {}
_in_number_order: dict[str, bool] = {}  # message full name -> declaration order == numbers


def request_to_json(request: ExportTraceServiceRequest) -> str:
    """One line of OTLP/JSON (no newline), as the collector's ``file`` exporter writes it."""
    out: list[str] = []
    _write_message(request, out)
    return "".join(out)


def request_bytes_to_json(data: bytes) -> str:
    """``request_to_json`` of a serialized ``ExportTraceServiceRequest``."""
    try:
        request = ExportTraceServiceRequest.FromString(data)
    except DecodeError as err:
        raise OtlpDecodeError(f"body is not a valid ExportTraceServiceRequest: {err}") from None
    return request_to_json(request)


def _write_message(message: Message, out: list[str]) -> None:
    fields = message.ListFields()  # the fields that are set, by field number
    descriptor = message.DESCRIPTOR
    in_order = _in_number_order.get(descriptor.full_name)
    if in_order is None:
        numbers = [f.number for f in descriptor.fields]
        in_order = _in_number_order[descriptor.full_name] = numbers == sorted(numbers)
    if not in_order:  # pdata writes fields in declaration order
        fields = sorted(fields, key=lambda item: item[0].index)
    out.append("{")
    separator = ""
    for field, value in fields:
        plan = _plans.get(field)
        if plan is None:
            plan = _plans[field] = _FieldPlan(field)
        out.append(separator)
        separator = ","
        out.append(plan.key)
        if plan.repeated:
            out.append("[")
            item_separator = ""
            for item in value:
                out.append(item_separator)
                item_separator = ","
                _write_value(plan.kind, item, out)
            out.append("]")
        else:
            _write_value(plan.kind, value, out)
    out.append("}")


def _write_value(kind: int, value: Any, out: list[str]) -> None:
    if kind == _MESSAGE:
        _write_message(value, out)
    elif kind == _STRING:
        out.append(_go_string(value))
    elif kind == _HEX_ID:
        out.append(f'"{value.hex()}"')
    elif kind == _BYTES:
        out.append(f'"{base64.b64encode(value).decode("ascii")}"')
    elif kind == _INT64:
        out.append(f'"{value}"')
    elif kind == _DOUBLE:
        out.append(_go_float(value))
    elif kind == _BOOL:
        out.append("true" if value else "false")
    else:
        out.append(str(value))


_GO_ONLY_ESCAPES = re.compile("([\b\f])")


def _go_string(value: str) -> str:
    """A JSON string as Go's json-iterator writes it (no HTML escaping).

    ``json.dumps`` agrees except for backspace and form feed, which Go writes as ``\\u0008`` and
    ``\\u000c``; the rare string holding them takes the slow path.
    """
    if "\b" not in value and "\f" not in value:
        return json.dumps(value, ensure_ascii=False)
    parts = ['"']
    for piece in _GO_ONLY_ESCAPES.split(value):
        if piece == "\b":
            parts.append("\\u0008")
        elif piece == "\f":
            parts.append("\\u000c")
        elif piece:
            parts.append(json.dumps(piece, ensure_ascii=False)[1:-1])
    parts.append('"')
    return "".join(parts)


def _go_float(value: float) -> str:
    """A double as the collector writes it: Go's shortest ``'f'`` format, ``'e'`` when tiny or huge.

    Non-finite values become the strings ``"NaN"``, ``"+Inf"`` and ``"-Inf"`` (which
    ``request_from_json`` reads back, as ``float()`` does).
    """
    if math.isnan(value):
        return '"NaN"'
    if math.isinf(value):
        return '"+Inf"' if value > 0 else '"-Inf"'
    text = repr(value)  # shortest digits that round-trip, as Go's strconv finds them
    magnitude = abs(value)
    if magnitude != 0 and (magnitude < 1e-6 or magnitude >= 1e21):
        # Python and Go agree on the exponent form ("1.5e-07"); Go then drops the leading
        # zero of a two-digit negative exponent ("1.5e-7").
        if text[-4:-1] == "e-0":
            text = text[:-2] + text[-1]
        return text
    if "e" in text:  # fixed notation where Python chose an exponent (1e-05, 1e+16)
        text = format(Decimal(text), "f")
    if text.endswith(".0"):
        text = text[:-2]
    return text
