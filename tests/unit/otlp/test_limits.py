"""Attribute limits cut values, never refuse them, and leave everything else as it was."""

from __future__ import annotations

import pytest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from sampler.otlp.limits import limit_attribute_values


def span_with(**values: AnyValue) -> Span:
    return Span(attributes=[KeyValue(key=key, value=value) for key, value in values.items()])


@pytest.mark.parametrize(
    ("value", "expected", "cut"),
    [
        pytest.param(AnyValue(string_value="abc"), AnyValue(string_value="abc"), False, id="short"),
        pytest.param(
            AnyValue(string_value="x" * 10), AnyValue(string_value="x" * 8), True, id="long"
        ),
        pytest.param(  # "é" is 2 bytes: 8 bytes hold 4 of them, a 9th byte would split one
            AnyValue(string_value="é" * 6), AnyValue(string_value="é" * 4), True, id="utf8"
        ),
        pytest.param(
            AnyValue(string_value="ab" + "€" * 3),  # 2 + 9 bytes: the third € would be split
            AnyValue(string_value="ab€€"),
            True,
            id="utf8-boundary",
        ),
        pytest.param(
            AnyValue(bytes_value=b"\0" * 9), AnyValue(bytes_value=b"\0" * 8), True, id="bytes"
        ),
        pytest.param(AnyValue(int_value=10**12), AnyValue(int_value=10**12), False, id="int"),
        pytest.param(
            AnyValue(array_value=ArrayValue(values=[AnyValue(string_value="y" * 20)])),
            AnyValue(array_value=ArrayValue(values=[AnyValue(string_value="y" * 8)])),
            True,
            id="in-an-array",
        ),
    ],
)
def test_values_over_the_limit_are_cut(value: AnyValue, expected: AnyValue, cut: bool) -> None:
    span = span_with(a=value, b=AnyValue(string_value="keep"))
    assert limit_attribute_values(span, 8) is cut
    assert span.attributes[0].value == expected
    assert span.attributes[1].value == AnyValue(string_value="keep")
