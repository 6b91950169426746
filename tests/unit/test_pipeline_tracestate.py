"""Kept spans carry the OpenTelemetry threshold `th` for their keep probability, combined with
one set upstream, and p = 1 leaves the tracestate alone."""

from __future__ import annotations

import os

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from sampler.clock import ManualClock
from sampler.pipeline import Pipeline
from sampler.rules.randomness import RANDOMNESS_SPAN, keeps, randomness_of_key
from tests.unit.sessions.builders import RecordingSink, consume, sampler_config


def parse_threshold(text: str) -> int | None:
    """The 56-bit threshold of an `ot=th:` value (up to 14 hex digits, trailing zeros cut)."""
    if not 1 <= len(text) <= 14 or any(c not in "0123456789abcdef" for c in text):
        return None
    return int(text.ljust(14, "0"), 16)


ALWAYS_KEPT_TRACE = b"\xff" * 16  # low 56 bits all ones: kept by any probability
# a session key whose hashed randomness a probability of 0.25 keeps
KEPT_KEY = next(
    key for key in (f"conversation-{i}" for i in range(100)) if keeps(randomness_of_key(key), 0.25)
)


def one_trace_request(trace_state: str, key: str | None) -> ExportTraceServiceRequest:
    request = ExportTraceServiceRequest()
    scope = request.resource_spans.add().scope_spans.add()
    root = Span(
        trace_id=ALWAYS_KEPT_TRACE,
        span_id=os.urandom(8),
        name="root",
        start_time_unix_nano=1,
        end_time_unix_nano=2,
        trace_state=trace_state,
    )
    if key:
        root.attributes.add(key="session.id").value.string_value = key
    child = Span(
        trace_id=ALWAYS_KEPT_TRACE,
        span_id=os.urandom(8),
        parent_span_id=root.span_id,
        name="child",
        start_time_unix_nano=1,
        end_time_unix_nano=2,
        trace_state=trace_state,
    )
    scope.spans.extend([child, root])
    return request


def kept_spans(rules: str, trace_state: str, key: str | None = None) -> list[Span]:
    sink, clock = RecordingSink(), ManualClock(0.0)
    pipeline = Pipeline(sampler_config(rules), sink, clock)
    consume(pipeline, one_trace_request(trace_state, key))
    pipeline.decide_all()
    return [
        span
        for body, _ in sink.submitted
        for rs in ExportTraceServiceRequest.FromString(body).resource_spans
        for ss in rs.scope_spans
        for span in ss.spans
    ]


def probability_of(trace_state: str) -> float:
    entry = next(m for m in trace_state.split(",") if m.startswith("ot="))
    th = dict(p.split(":") for p in entry[3:].split(";"))["th"]
    threshold = parse_threshold(th)
    assert threshold is not None
    return 1 - threshold / RANDOMNESS_SPAN


@pytest.mark.parametrize(
    ("upstream", "key", "expected_p"),
    [
        ("", None, 0.25),
        ("ot=th:8", None, 0.25),  # one trace, same randomness: the stricter threshold wins
        ("ot=th:8", KEPT_KEY, 0.125),  # keyed: independent decisions multiply
        ("vendor=a,ot=th:c", None, 0.25),
    ],
    ids=[
        "no-upstream",
        "consistent-with-head-sampler",
        "keyed-session-multiplies",
        "other-vendor-kept",
    ],
)
def test_kept_with_probability_writes_the_combined_threshold(
    upstream: str, key: str | None, expected_p: float
) -> None:
    spans = kept_spans("  - {name: quarter, action: {probability: 0.25}}", upstream, key)
    assert len(spans) == 2
    for span in spans:
        assert probability_of(span.trace_state) == pytest.approx(expected_p)
        if "vendor=a" in upstream:
            assert span.trace_state.endswith(",vendor=a")


def test_kept_always_leaves_the_tracestate_as_received() -> None:
    spans = kept_spans("  - {name: all, action: keep}", "ot=th:8,vendor=a")
    assert [span.trace_state for span in spans] == ["ot=th:8,vendor=a"] * 2
