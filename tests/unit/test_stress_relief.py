"""Stress relief: near the buffer's limits the oldest sessions are decided early, with the
normal rules, instead of the sampler refusing everything until deadlines fire (or dying)."""

from __future__ import annotations

import pytest
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from sampler.pipeline import request_memory
from sampler.receive.intake import ACCEPTED, Admission
from tests.unit.sessions.builders import consume, simple_request, span
from tests.unit.test_pipeline import RULES, conversation, make_pipeline


def running_trace(trace: str, spans: int, *, error: bool = False) -> list[Span]:
    """Children of a trace whose root has not arrived: it waits open_trace_wait (90 s)."""
    return [span(trace, n, parent=1, error=error and n == 2) for n in range(2, spans + 2)]


def test_the_oldest_sessions_are_decided_early_with_the_normal_rules() -> None:
    pipeline, sink, _ = make_pipeline(RULES, sessions={"max_buffered_spans": 20})
    assert consume(pipeline, simple_request(*running_trace("old-error", 6, error=True))) == ACCEPTED
    assert consume(pipeline, simple_request(*running_trace("old-quiet", 6))) == ACCEPTED
    assert pipeline.stats.relief_sessions == 0  # 12 spans: below 90% of 20

    # 19 spans > 18 (90% of 20): relief decides the oldest sessions until the buffer is at
    # most 16 (80%): the oldest trace goes, with its error
    assert consume(pipeline, simple_request(*running_trace("new", 7))) == ACCEPTED

    assert pipeline.stats.relief_sessions == 1
    assert pipeline.buffer.span_count == 13
    kept = {s.name.split("/")[0] for s in sink.spans()}
    assert kept == {"old-error"}  # decided by the normal rules: the error is kept


def test_memory_is_a_limit_too() -> None:
    request = simple_request(*conversation("t1", "c1", 3))
    one = request_memory(4, request.ByteSize())
    pipeline, _, _ = make_pipeline(
        RULES,
        sessions={"max_buffered_memory": int(one * 1.5), "stress_relief_at": 1.0},
    )
    assert consume(pipeline, request) == ACCEPTED
    second = simple_request(*conversation("t2", "c2", 3))
    assert consume(pipeline, second) == Admission(False, "session buffer memory full", 1.0)
    assert pipeline.buffer.span_count == 4


@pytest.mark.parametrize("hold", [120.0, 0.0])
def test_held_spans_go_before_buffered_sessions(hold: float) -> None:
    pipeline, _, clock = make_pipeline(
        RULES, sessions={"max_buffered_spans": 20, "dropped_hold": hold}
    )
    assert consume(pipeline, simple_request(*conversation("t1", "c1", 7))) == ACCEPTED
    clock.advance(30.05)
    pipeline.decide_due()  # dropped by `rest`: held (when holding) as a keyed conversation
    assert pipeline.buffer.held_spans == (8 if hold else 0)

    assert consume(pipeline, simple_request(*running_trace("new", 12))) == ACCEPTED

    assert pipeline.buffer.held_spans == 0  # 8 held + 12 > 18: the hold went first
    assert pipeline.stats.relief_sessions == 0  # and that was enough
    assert pipeline.buffer.span_count == 12


def test_attributes_over_the_receivers_limits_are_cut_and_counted() -> None:
    pipeline, sink, clock = make_pipeline(
        "  - {name: everything, action: keep}\n",
        receivers={"max_attributes_per_span": 3, "max_attribute_value_size": 16},
    )
    many = span("t1", 2, parent=1, attrs={f"k{i}": i for i in range(10)})
    huge = span("t1", 3, parent=1, attrs={"input.value": "z" * 1000})
    plain = span("t1", 1, attrs={"gen_ai.conversation.id": "c1"})

    assert consume(pipeline, simple_request(many, huge, plain)) == ACCEPTED
    assert pipeline.stats.spans_limited == 2
    clock.advance(31.0)
    pipeline.decide_due()

    by_name = {s.name: s for s in sink.spans()}
    assert [kv.key for kv in by_name["t1/2"].attributes][:3] == ["k0", "k1", "k2"]
    assert len([kv for kv in by_name["t1/2"].attributes if kv.key.startswith("k")]) == 3
    assert by_name["t1/2"].dropped_attributes_count == 7  # the removed ones, counted in the span
    assert by_name["t1/3"].dropped_attributes_count == 0  # a value cut short is not dropped
    (value,) = [
        kv.value.string_value for kv in by_name["t1/3"].attributes if kv.key == "input.value"
    ]
    assert value == "z" * 16
