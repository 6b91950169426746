"""Attribute limits cut values (strings at a character boundary, bytes, inside arrays too),
never refuse them, and leave everything else as it was: seen on the spans a keep-everything
pipeline forwards."""

from __future__ import annotations

import pytest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue, KeyValueList
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from tests.unit.sessions.builders import consume, simple_request, span
from tests.unit.test_pipeline import make_pipeline


def forwarded(*spans: Span, max_value: int = 8, max_attributes: int = 1024) -> list[Span]:
    pipeline, sink, clock = make_pipeline(
        "  - {name: everything, action: keep}\n",
        receivers={
            "max_attributes_per_span": max_attributes,
            "max_attribute_value_size": max_value,
        },
    )
    consume(pipeline, simple_request(*spans))
    pipeline.decide_all()
    return sink.spans()


def with_value(value: AnyValue) -> Span:
    one = span("t1", 1)
    one.attributes.append(KeyValue(key="a", value=value))
    one.attributes.append(KeyValue(key="b", value=AnyValue(string_value="keep")))
    return one


MAP = AnyValue(
    kvlist_value=KeyValueList(values=[KeyValue(key="k", value=AnyValue(string_value="z" * 20))])
)


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
        pytest.param(MAP, MAP, False, id="maps-are-left-whole"),
    ],
)
def test_values_over_the_limit_are_cut(value: AnyValue, expected: AnyValue, cut: bool) -> None:
    pipeline, sink, _ = make_pipeline(
        "  - {name: everything, action: keep}\n", receivers={"max_attribute_value_size": 8}
    )
    consume(pipeline, simple_request(with_value(value)))
    pipeline.decide_all()
    (out,) = sink.spans()
    attributes = [kv for kv in out.attributes if not kv.key.startswith("agent_sampler.")]
    assert [kv.key for kv in attributes] == ["a", "b"]
    assert attributes[0].value == expected
    assert attributes[1].value == AnyValue(string_value="keep")
    assert pipeline.stats.spans_limited == int(cut)


def test_attributes_past_the_limit_are_removed_and_counted_in_the_span() -> None:
    many = span("t1", 1, attrs={f"k{i}": i for i in range(10)})
    many.dropped_attributes_count = 5  # dropped upstream already: added to
    (out,) = forwarded(many, max_attributes=3)
    assert [kv.key for kv in out.attributes if kv.key.startswith("k")] == ["k0", "k1", "k2"]
    assert out.dropped_attributes_count == 5 + 7
