"""OTLP/JSON read by protobuf's json_format, as the sampler did before the native converter
(native/src/json.rs): the reference of tests/unit/otlp/test_native_json.py."""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterator
from typing import Any

from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from sampler.otlp.json_codec import OtlpDecodeError

TRACE_ID_BYTES = 16
SPAN_ID_BYTES = 8


_HEX = re.compile(r"[0-9a-fA-F]*")

# (key as sent, id size in bytes); both spellings are accepted, as pdata does.
_SPAN_ID_KEYS = (
    ("traceId", TRACE_ID_BYTES),
    ("trace_id", TRACE_ID_BYTES),
    ("spanId", SPAN_ID_BYTES),
    ("span_id", SPAN_ID_BYTES),
    ("parentSpanId", SPAN_ID_BYTES),
    ("parent_span_id", SPAN_ID_BYTES),
)
_LINK_ID_KEYS = _SPAN_ID_KEYS[:4]


def request_from_json(data: bytes | str) -> ExportTraceServiceRequest:
    """Parse one OTLP/JSON ``ExportTraceServiceRequest``; raise ``OtlpDecodeError`` if invalid."""
    try:
        root = json.loads(data, parse_int=_parse_int)
    except (ValueError, RecursionError) as err:  # JSONDecodeError, UnicodeDecodeError
        raise OtlpDecodeError(f"body is not valid JSON: {_clip(str(err))}") from None
    if not isinstance(root, dict):
        raise OtlpDecodeError(
            f"body must be a JSON object (an ExportTraceServiceRequest), got {_kind(root)}"
        )
    _hex_ids_to_base64(root)
    request = ExportTraceServiceRequest()
    try:
        json_format.ParseDict(root, request, ignore_unknown_fields=True)
    except (json_format.ParseError, RecursionError) as err:
        raise OtlpDecodeError(f"invalid OTLP/JSON: {_clip(str(err))}") from None
    except SystemError as err:
        # upb looks every JSON key up as UTF-8: an unpaired surrogate ("\ud800") in a key (or in
        # a string where an object belongs, which ParseDict walks as keys) fails as SystemError.
        if not isinstance(err.__cause__, UnicodeError):
            raise
        raise OtlpDecodeError("invalid OTLP/JSON: a key holds an unpaired surrogate") from None
    return request


def _parse_int(text: str) -> int | float:
    # Go writes the double -0.0 as "-0"; int("-0") would lose its sign. ParseDict takes -0.0
    # for integer fields as well.
    return -0.0 if text == "-0" else int(text)


def _hex_ids_to_base64(root: dict[str, Any]) -> None:
    """Rewrite, in place, the hex ids of spans and links into the base64 that ParseDict expects.

    Only the containers on the way to ids are checked here; everything else is left to ParseDict.
    """
    for rs_key, resource_spans in _arrays(root, ("resourceSpans", "resource_spans"), ""):
        for i, rs in enumerate(resource_spans):
            rs_path = f"{rs_key}[{i}]"
            _expect_object(rs, rs_path)
            for ss_key, scope_spans in _arrays(rs, ("scopeSpans", "scope_spans"), rs_path):
                for j, ss in enumerate(scope_spans):
                    ss_path = f"{rs_path}.{ss_key}[{j}]"
                    _expect_object(ss, ss_path)
                    for _, spans in _arrays(ss, ("spans",), ss_path):
                        for k, span in enumerate(spans):
                            _convert_span(span, f"{ss_path}.spans[{k}]")


def _convert_span(span: object, path: str) -> None:
    span_obj = _expect_object(span, path)
    _convert_ids(span_obj, _SPAN_ID_KEYS, path)
    for _, links in _arrays(span_obj, ("links",), path):
        for n, link in enumerate(links):
            link_path = f"{path}.links[{n}]"
            _convert_ids(_expect_object(link, link_path), _LINK_ID_KEYS, link_path)


def _convert_ids(obj: dict[str, Any], keys: tuple[tuple[str, int], ...], path: str) -> None:
    for key, size in keys:
        value = obj.get(key)
        if value is None or value == "":  # null or "" both mean "absent"
            continue
        if not isinstance(value, str):
            raise OtlpDecodeError(f"{path}.{key}: expected a hex string, got {_kind(value)}")
        if len(value) != 2 * size or _HEX.fullmatch(value) is None:
            raise OtlpDecodeError(
                f"{path}.{key}: expected {2 * size} hex characters, got {_shorten(value)}"
            )
        obj[key] = base64.b64encode(bytes.fromhex(value)).decode("ascii")


def _arrays(
    obj: dict[str, Any], keys: tuple[str, ...], path: str
) -> Iterator[tuple[str, list[Any]]]:
    for key in keys:
        value = obj.get(key)
        if value is None:
            continue
        if not isinstance(value, list):
            where = f"{path}.{key}" if path else key
            raise OtlpDecodeError(f"{where}: expected an array, got {_kind(value)}")
        yield key, value


def _expect_object(value: object, path: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise OtlpDecodeError(f"{path}: expected an object, got {_kind(value)}")
    return value


def _kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def _shorten(value: str, limit: int = 48) -> str:
    return repr(value if len(value) <= limit else value[:limit] + "...")


def _clip(message: str, limit: int = 1000) -> str:
    """An error message fit to send back. json_format quotes the offending value: cut to
    ``limit`` characters keeping both ends (the reason comes last), so that nobody gets
    megabytes echoed, and with unpaired surrogates escaped, so that it is valid UTF-8."""
    if len(message) > limit:
        half = (limit - 5) // 2
        message = f"{message[:half]} ... {message[-half:]}"
    return message.encode("utf-8", "backslashreplace").decode("utf-8")
