"""Shadow mode: the same decisions as live, and every span forwarded, once, annotated with the
verdict its session would have had (`agent_sampler.verdict`), without a tracestate threshold.

Each test feeds the same traffic to a live and a shadow pipeline (ManualClock, RecordingSink)
and compares what their sinks received: the shadow sink's would-keep spans are exactly what the
live sink received (less the shadow annotation and the live threshold), its would-drop spans
are the rest.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from typing import Any

import pytest
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from sampler.clock import ManualClock
from sampler.pipeline import Pipeline
from sampler.rules.verdict import (
    ADJUSTED_COUNT_ATTRIBUTE,
    RULE_ATTRIBUTE,
    SIGNALS_ATTRIBUTE,
    VERDICT_ATTRIBUTE,
)
from tests.unit.sessions.builders import (
    RecordingSink,
    consume,
    sampler_config,
    simple_request,
    span,
)
from tests.unit.test_pipeline import (
    CONV,
    DROPPED_AT_HALF,
    KEPT_AT_HALF,
    RULES,
    conversation,
    settle,
    wait_out_the_hold,
)

OURS = (RULE_ATTRIBUTE, ADJUSTED_COUNT_ATTRIBUTE, SIGNALS_ATTRIBUTE, VERDICT_ATTRIBUTE)


def pipelines(
    rules: str = RULES, **config: Any
) -> tuple[dict[str, tuple[Pipeline, RecordingSink]], ManualClock]:
    """A live and a shadow pipeline on one clock."""
    clock = ManualClock()
    base = sampler_config(rules, **config)
    out = {}
    for mode in ("live", "shadow"):
        sink = RecordingSink()
        out[mode] = (Pipeline(dataclasses.replace(base, mode=mode), sink, clock), sink)
    return out, clock


def feed(both: dict[str, tuple[Pipeline, RecordingSink]], *spans: Span, **kw: Any) -> None:
    for pipeline, _ in both.values():
        consume(pipeline, simple_request(*spans, **kw))


def decide(both: dict[str, tuple[Pipeline, RecordingSink]], clock: ManualClock) -> None:
    clock.advance(30.05)
    for pipeline, _ in both.values():
        pipeline.decide_due()


def ours(s: Span) -> dict[str, object]:
    out: dict[str, object] = {}
    for kv in s.attributes:
        if kv.key in OURS:
            kind = kv.value.WhichOneof("value")
            value = getattr(kv.value, str(kind))
            if kind == "array_value":
                value = tuple(v.string_value for v in value.values)
            assert kv.key not in out, f"{kv.key} twice"
            out[kv.key] = value
    return out


def without_ours(s: Span) -> Span:
    copy = Span()
    copy.CopyFrom(s)
    del copy.attributes[:]
    copy.attributes.extend(kv for kv in s.attributes if kv.key not in OURS)
    copy.trace_state = ",".join(m for m in s.trace_state.split(",") if not m.startswith("ot="))
    return copy


def by_verdict(sink: RecordingSink) -> dict[str, list[Span]]:
    out: dict[str, list[Span]] = {"keep": [], "drop": []}
    for s in sink.spans():
        out[str(ours(s)[VERDICT_ATTRIBUTE])].append(s)
    return out


def tallies(pipeline: Pipeline) -> dict[str, tuple[int, int, int, int]]:
    return {
        rule: (t.sessions_seen, t.sessions_kept, t.spans_seen, t.spans_kept)
        for rule, t in pipeline.stats.by_rule.items()
    }


def ids(spans: list[Span]) -> Counter[tuple[bytes, bytes]]:
    return Counter((s.trace_id, s.span_id) for s in spans)


MIXED = [
    *conversation("t1", "c-err", child={"error": True}),
    *conversation("t2", "c-plain"),
    *conversation("t3", KEPT_AT_HALF, root={"attrs": {"team": "blue"}}),
    *conversation("t4", DROPPED_AT_HALF, root={"attrs": {"team": "blue"}}),
    span("t5", 1),  # a lone trace, dropped
]


def test_shadow_decides_as_live_and_forwards_every_span_once() -> None:
    both, clock = pipelines()
    feed(both, *MIXED)
    decide(both, clock)
    for pipeline, _ in both.values():
        wait_out_the_hold(pipeline, clock)
        pipeline.decide_all()
    (live, live_sink), (shadow, shadow_sink) = both["live"], both["shadow"]

    assert tallies(live) == tallies(shadow)
    assert ids(shadow_sink.spans()) == ids(MIXED)  # every span, once
    split = by_verdict(shadow_sink)
    assert ids(split["keep"]) == ids(live_sink.spans())
    live_by_id = {(s.trace_id, s.span_id): s for s in live_sink.spans()}
    for s in split["keep"]:
        twin = live_by_id[(s.trace_id, s.span_id)]
        assert without_ours(s) == without_ours(twin)
        assert ours(s) == {**ours(twin), VERDICT_ATTRIBUTE: "keep"}
    for s in split["drop"]:
        assert ADJUSTED_COUNT_ATTRIBUTE not in ours(s)  # a would-drop stands for no other
        assert ours(s)[RULE_ATTRIBUTE] in ("rest", "sampled", "(no rule matched)")
    stats = shadow.stats
    assert (stats.shadow_kept_spans, stats.shadow_dropped_spans) == (
        len(split["keep"]),
        len(split["drop"]),
    )
    assert stats.spans_submitted == len(MIXED) == len(shadow_sink.spans())
    assert (live.stats.shadow_kept_spans, live.stats.shadow_dropped_spans) == (0, 0)


@pytest.mark.parametrize("upstream", ["", "vendor=x", "ot=th:8"], ids=["none", "other", "th"])
def test_shadow_leaves_the_tracestate_as_received(upstream: str) -> None:
    """Nothing is sampled in shadow mode: no span gets a threshold, kept or not."""
    rules = "  - {name: half, action: {probability: 0.5}}\n"
    both, clock = pipelines(rules)
    spans = [
        *conversation("t1", KEPT_AT_HALF),
        *conversation("t2", DROPPED_AT_HALF),
    ]
    for s in spans:
        s.trace_state = upstream
    feed(both, *spans)
    decide(both, clock)
    for pipeline, _ in both.values():
        pipeline.decide_all()
    live = both["live"][1].spans()
    assert live and all("ot=th:" in s.trace_state for s in live)
    shadow = both["shadow"][1].spans()
    assert len(shadow) == len(spans)
    assert all(s.trace_state == upstream for s in shadow)


def test_a_held_drop_goes_out_once_with_the_verdict_of_its_last_decision() -> None:
    """A dropped conversation is held as in live mode; a later failing turn reopens it and it
    is kept whole: its first turn goes out once, as kept, never as dropped."""
    both, clock = pipelines()
    feed(both, *conversation("t1", "c1"))
    decide(both, clock)
    live, shadow = both["live"][0], both["shadow"][0]
    assert both["shadow"][1].submitted == []  # held, not sent yet
    assert dataclasses.astuple(live.buffer) == dataclasses.astuple(shadow.buffer)  # same memory
    feed(both, *conversation("t2", "c1", child={"error": True}))
    decide(both, clock)
    spans = both["shadow"][1].spans()
    assert ids(spans) == ids(both["live"][1].spans())
    assert {ours(s)[VERDICT_ATTRIBUTE] for s in spans} == {"keep"}
    assert len(spans) == 6


def test_a_drop_goes_out_when_its_hold_ends_and_late_spans_follow_it() -> None:
    both, clock = pipelines()
    feed(both, *conversation("t1", "c1"))
    decide(both, clock)
    pipeline, sink = both["shadow"]
    wait_out_the_hold(pipeline, clock)
    assert sorted(s.name for s in sink.spans()) == ["t1/1", "t1/2", "t1/3"]
    consume(pipeline, simple_request(span("t1", 9, parent=1)))  # a late span of turn one
    late = sink.spans()[3:]
    assert [(s.name, ours(s)[VERDICT_ATTRIBUTE]) for s in late] == [("t1/9", "drop")]
    assert (pipeline.stats.late_spans_kept, pipeline.stats.late_spans_dropped) == (0, 1)
    assert pipeline.stats.shadow_dropped_spans == 4
    assert pipeline.stats.spans_submitted == 4


def test_late_spans_of_a_kept_session_are_forwarded_as_kept() -> None:
    both, clock = pipelines()
    feed(both, *conversation("t1", "c-err", child={"error": True}))
    decide(both, clock)
    pipeline, sink = both["shadow"]
    consume(pipeline, simple_request(span("t1", 9, parent=1)))
    assert ours(sink.spans()[-1])[VERDICT_ATTRIBUTE] == "keep"
    assert pipeline.stats.shadow_kept_spans == 4


def test_a_new_conversation_turn_after_a_kept_one_follows_it_in_shadow_too() -> None:
    both, clock = pipelines()
    feed(both, *conversation("t1", "c-err", child={"error": True}))
    decide(both, clock)
    feed(both, span("t2", 2, parent=1), span("t2", 1, attrs={CONV: "c-err"}))
    for name in ("live", "shadow"):
        assert len(both[name][1].spans()) == 5, name
    assert {ours(s)[VERDICT_ATTRIBUTE] for s in both["shadow"][1].spans()} == {"keep"}


def test_a_settled_pipeline_adds_up_in_shadow_mode() -> None:
    both, clock = pipelines()
    feed(both, *MIXED)
    pipeline, sink = both["shadow"]
    settle(pipeline, clock)
    pipeline.decide_all()
    stats = pipeline.stats
    assert stats.shadow_kept_spans + stats.shadow_dropped_spans == stats.spans_submitted
    assert stats.spans_submitted == len(sink.spans()) == len(MIXED)
