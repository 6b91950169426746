"""Pipeline: requests in, sessions buffered and decided, kept sessions out to a recording sink.

Time is a ManualClock moved by hand; the sink is a RecordingSink whose submissions are parsed
back with protobuf, so every assertion is about what a downstream backend would receive.
Default session settings apply: a conversation (a keyed session) whose traces all delivered
their root is decided after decision_wait 30s without spans, a lone trace without a key
root_end_grace 2s after its root, a session with a trace still running after open_trace_wait
90s without spans; tick 0.1s.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from sampler.clock import ManualClock
from sampler.pipeline import Pipeline
from sampler.receive.intake import ACCEPTED, Admission
from sampler.rules.randomness import keeps, randomness_of_key
from sampler.rules.verdict import ADJUSTED_COUNT_ATTRIBUTE, RULE_ATTRIBUTE, SIGNALS_ATTRIBUTE
from sampler.sessions.native import MAX_LOOKS
from tests.unit.sessions.builders import (
    RecordingSink,
    consume,
    request,
    resource_spans,
    sampler_config,
    scope_spans,
    simple_request,
    span,
)

CONV = "gen_ai.conversation.id"
ANNOTATIONS = (RULE_ATTRIBUTE, ADJUSTED_COUNT_ATTRIBUTE, SIGNALS_ATTRIBUTE)

RULES = """\
  - {name: errors, when: {error: true}, action: keep}
  - {name: sampled, when: {attribute: {key: team, equals: blue}}, action: {probability: 0.5}}
  - {name: rest, action: drop}
"""
KEEP_ALL = "  - {name: everything, action: keep}\n"
DROP_ALL = "  - {name: nothing, action: drop}\n"

_CANDIDATES = [f"conv-{i}" for i in range(64)]
KEPT_AT_HALF = next(k for k in _CANDIDATES if keeps(randomness_of_key(k), 0.5))
DROPPED_AT_HALF = next(k for k in _CANDIDATES if not keeps(randomness_of_key(k), 0.5))


def make_pipeline(rules: str = RULES, **config: Any) -> tuple[Pipeline, RecordingSink, ManualClock]:
    sink, clock = RecordingSink(), ManualClock()
    return Pipeline(sampler_config(rules, **config), sink, clock), sink, clock


def conversation(
    trace: str,
    key: str,
    children: int = 2,
    *,
    root: dict[str, Any] | None = None,
    child: dict[str, Any] | None = None,
) -> list[Span]:
    """Children first, then the root span carrying the session key (as agents emit them)."""
    spans = [span(trace, n, parent=1, **(child or {})) for n in range(2, children + 2)]
    root_fields = dict(root or {})
    root_attrs = {CONV: key, **root_fields.pop("attrs", {})}
    return [*spans, span(trace, 1, attrs=root_attrs, **root_fields)]


def decoded(value: AnyValue) -> tuple[str, Any]:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return kind, tuple(decoded(v) for v in value.array_value.values)
    return str(kind), getattr(value, str(kind))


def annotations(s: Span) -> dict[str, tuple[str, Any]]:
    return {kv.key: decoded(kv.value) for kv in s.attributes if kv.key in ANNOTATIONS}


def without_annotations(s: Span) -> Span:
    copy = Span()
    copy.CopyFrom(s)
    del copy.attributes[:]
    copy.attributes.extend(kv for kv in s.attributes if kv.key not in ANNOTATIONS)
    if copy.trace_state.startswith("ot=th:"):  # the threshold of a keep with p < 1 (the
        copy.ClearField("trace_state")  # originals here carry no tracestate)
    return copy


def kept_spans_add_up(pipeline: Pipeline, sink: RecordingSink) -> bool:
    """Kept spans counted by rule, plus late ones, are what the sink was handed, once."""
    stats = pipeline.stats
    by_rule = sum(t.spans_kept for t in stats.by_rule.values())
    sent = len(sink.spans()) + pipeline.pending_spans
    return by_rule + stats.late_spans_kept == stats.spans_submitted == sent


def settle(pipeline: Pipeline, clock: ManualClock, seconds: float = 30.05) -> int:
    """Move past decision_wait (conversations whose roots arrived) and decide what is due."""
    clock.advance(seconds)
    return pipeline.decide_due()


# -- annotations and keep/drop --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spans", "expected"),
    [
        pytest.param(
            conversation("t1", "c-err", child={"error": True}),
            ("errors", 1.0, ("error",)),
            id="error-kept-always",
        ),
        pytest.param(
            conversation("t1", KEPT_AT_HALF, root={"attrs": {"team": "blue"}}),
            ("sampled", 2.0, ()),
            id="probability-kept-with-adjusted-count",
        ),
        pytest.param(
            conversation("t1", DROPPED_AT_HALF, root={"attrs": {"team": "blue"}}),
            None,
            id="probability-dropped",
        ),
        pytest.param(conversation("t1", "c-plain"), None, id="dropped-by-rule"),
    ],
)
def test_kept_session_arrives_whole_and_annotated(
    spans: list[Span], expected: tuple[str, float, tuple[str, ...]] | None
) -> None:
    pipeline, sink, clock = make_pipeline()

    assert consume(pipeline, simple_request(*spans)) == ACCEPTED
    assert settle(pipeline, clock) == 1

    if expected is None:
        assert sink.submitted == []
        return
    rule, adjusted, signals = expected
    received = sink.spans()
    assert sorted(s.span_id for s in received) == sorted(s.span_id for s in spans)
    for got in received:
        assert annotations(got) == {
            RULE_ATTRIBUTE: ("string_value", rule),
            ADJUSTED_COUNT_ATTRIBUTE: ("double_value", adjusted),
            SIGNALS_ATTRIBUTE: ("array_value", tuple(("string_value", s) for s in signals)),
        }
    originals = {s.span_id: s for s in spans}
    assert all(without_annotations(got) == originals[got.span_id] for got in received)
    assert [count for _, count in sink.submitted] == [len(spans)]


def test_only_kept_sessions_arrive_from_a_mixed_request() -> None:
    pipeline, sink, clock = make_pipeline()
    spans = [
        *conversation("t1", "c-err", child={"error": True}),
        *conversation("t2", "c-plain"),
        *conversation("t3", KEPT_AT_HALF, root={"attrs": {"team": "blue"}}),
        *conversation("t4", DROPPED_AT_HALF, root={"attrs": {"team": "blue"}}),
    ]

    consume(pipeline, simple_request(*spans))
    assert settle(pipeline, clock) == 4

    assert sorted({s.trace_id.lstrip(b"\0") for s in sink.spans()}) == [b"t1", b"t3"]
    tallies = {
        rule: (t.sessions_seen, t.sessions_kept) for rule, t in pipeline.stats.by_rule.items()
    }
    assert tallies == {"errors": (1, 1), "sampled": (2, 1), "rest": (1, 0)}


# -- resource and scope grouping ------------------------------------------------------------------


def structure(requests: Sequence[ExportTraceServiceRequest]) -> list[Any]:
    """Resources, scopes (with schema urls) and span names, annotations left out."""
    return [
        (
            rs.resource if rs.HasField("resource") else None,
            rs.schema_url,
            [
                (
                    ss.scope if ss.HasField("scope") else None,
                    ss.schema_url,
                    [without_annotations(s) for s in ss.spans],
                )
                for ss in rs.scope_spans
            ],
        )
        for req in requests
        for rs in req.resource_spans
    ]


def _two_resources_two_scopes() -> ExportTraceServiceRequest:
    res_a = {"service.name": "planner", CONV: "c1"}
    res_b = {"service.name": "tools", CONV: "c1"}
    return request(
        resource_spans(
            [
                scope_spans(
                    [span("t1", 2, parent=1), span("t1", 3, parent=1)],
                    scope="llm",
                    schema_url="https://opentelemetry.io/schemas/1.26.0",
                ),
                scope_spans([span("t1", 1)], scope="agent"),
            ],
            resource=res_a,
            schema_url="https://opentelemetry.io/schemas/1.27.0",
        ),
        resource_spans(
            [
                scope_spans([span("t2", 2, parent=1)], scope="llm"),
                scope_spans([span("t2", 1)], scope="tool", schema_url="https://scope/tool"),
            ],
            resource=res_b,
        ),
    )


def _bare() -> ExportTraceServiceRequest:
    return request(resource_spans([scope_spans([span("t1", 1, attrs={CONV: "c1"})])]))


@pytest.mark.parametrize(
    "make_request",
    [
        pytest.param(_two_resources_two_scopes, id="two-resources-two-scopes-schema-urls"),
        pytest.param(_bare, id="no-resource-no-scope"),
    ],
)
def test_resource_and_scope_grouping_is_preserved(make_request: Any) -> None:
    pipeline, sink, clock = make_pipeline(KEEP_ALL)

    consume(pipeline, make_request())
    assert settle(pipeline, clock) == 1

    assert structure(sink.requests()) == structure([make_request()])


# -- sessions spanning requests, late spans -------------------------------------------------------


def test_facts_hold_the_view_property_of_each_field() -> None:
    """facts_of builds DecisionFacts by position (it is built for every session decided): each
    field holds what its name says."""
    sink, clock = RecordingSink(), ManualClock()
    pipeline = Pipeline(sampler_config(RULES), sink, clock, decide_on_intake=False)
    model_call = {"gen_ai.operation.name": "chat", "gen_ai.usage.input_tokens": 7}
    spans = conversation(
        "t1",
        "c-facts",
        root={"attrs": {"team": "blue"}},
        child={"error": True, "attrs": model_call},
    )
    consume(pipeline, simple_request(*spans))
    clock.advance(30.05)
    (view,) = pipeline.core.pop_due(clock.now())
    facts, _ = pipeline.facts_of(view, clock.now())
    scored = pipeline.scorer.score(view, clock.now(), learn=False)
    renamed = {
        "session_key": "key",
        "tool_calls": "tool_call_count",
        "agent": "root_agent",
        "redecision": "decided_before",
    }
    for field in facts._fields:
        value = getattr(facts, field)
        if field == "matched_tests":
            assert value == frozenset(pipeline.span_tests)  # the one test: team is blue
        elif field in ("shape", "signals", "cycle_kinds"):
            assert value == getattr(scored, field), field
        elif field != "rarity":
            assert value == getattr(view, renamed.get(field, field)), field
    # distinct numbers, so that fields out of order would show
    assert (facts.span_count, facts.error_spans, facts.trace_count, facts.tokens) == (3, 2, 1, 14)
    assert facts.signals == ("error",) and facts.error_kinds and not facts.redecision


def test_multi_trace_session_is_decided_once() -> None:
    pipeline, sink, clock = make_pipeline(KEEP_ALL)

    consume(pipeline, simple_request(*conversation("t1", "c1")))
    clock.advance(10.0)  # past root_end_grace: the conversation still waits for another turn
    assert pipeline.decide_due() == 0
    consume(pipeline, simple_request(*conversation("t2", "c1")))
    clock.advance(29.95)
    assert pipeline.decide_due() == 0  # decision_wait counts from the second turn
    assert settle(pipeline, clock, 0.1) == 1

    tally = pipeline.stats.by_rule["everything"]
    assert (tally.sessions_seen, tally.spans_seen) == (1, 6)
    assert len(sink.submitted) == 1
    assert sorted(s.trace_id.lstrip(b"\0") for s in sink.spans()) == [b"t1"] * 3 + [b"t2"] * 3
    assert pipeline.decide_all() == 0


def test_a_server_pipeline_decides_only_when_asked_a_slice_at_a_time() -> None:
    sink, clock = RecordingSink(), ManualClock()
    pipeline = Pipeline(sampler_config(KEEP_ALL), sink, clock, decide_on_intake=False)
    for n in range(8):
        consume(pipeline, simple_request(*conversation(f"t{n}", f"c{n}")))
    clock.advance(30.05)
    consume(pipeline, simple_request(span("late-lone", 1)))  # intake does not decide
    assert "everything" not in pipeline.stats.by_rule
    assert [pipeline.decide_due(3) for _ in range(4)] == [3, 3, 2, 0]
    assert pipeline.stats.by_rule["everything"].sessions_seen == 8
    assert len(sink.spans()) == 8 * 3


NO_HOLD = {"dropped_hold": 0.0}


def wait_out_the_hold(pipeline: Pipeline, clock: ManualClock) -> None:
    """Move time on until nothing is held. Here the rarity model is cold (fewer than
    warmup_sessions seen), and a session still cold when its hold ends may be held again."""
    for _ in range(10):
        if not pipeline.buffer.held_sessions:
            return
        clock.advance(pipeline.config.sessions.dropped_hold + 0.1)
        pipeline.decide_due()
    raise AssertionError(f"still held: {pipeline.buffer.held_sessions} sessions")


@pytest.mark.parametrize(
    ("first", "late_requests", "expected_late", "late_stats", "sessions"),
    [
        pytest.param(
            conversation("t1", "c1", child={"error": True}),
            [[span("t1", 9, parent=1)]],
            ["t1/9"],
            (1, 0),
            None,
            id="kept-session-late-child",
        ),
        pytest.param(
            conversation("t1", "c1", child={"error": True}),
            [[span("t2", 2, parent=1)], [span("t2", 1, attrs={CONV: "c1"})]],
            ["t2/1", "t2/2"],
            (2, 0),
            None,
            id="kept-session-new-trace-whose-root-reveals-the-key",
        ),
        pytest.param(
            conversation("t1", "c1", child={"error": True}),
            [[span("t3", 1, attrs={CONV: "c1"})]],
            ["t3/1"],
            (1, 0),
            None,
            id="kept-session-new-trace-with-the-key",
        ),
        pytest.param(
            conversation("t1", "c1"),
            [[span("t1", 9, parent=1)], [span("t1", 10, parent=1, attrs={CONV: "c1"})]],
            [],
            (0, 2),
            NO_HOLD,
            id="dropped-session-late-spans-of-its-trace-without-a-hold",
        ),
        pytest.param(
            conversation("t1", "c1"),
            [[span("t1", 9, parent=1)], [span("t1", 10, parent=1, attrs={CONV: "c1"})]],
            [],
            (0, 2),
            None,
            id="dropped-session-late-spans-of-its-trace-after-the-hold",
        ),
    ],
)
def test_late_spans_follow_the_decision(
    first: list[Span],
    late_requests: list[list[Span]],
    expected_late: list[str],
    late_stats: tuple[int, int],
    sessions: dict[str, Any] | None,
) -> None:
    """Late spans of a kept session follow it at once; those of a dropped one once it is no
    longer held (while held, they reopen it: see the dropped-hold tests below)."""
    pipeline, sink, clock = make_pipeline(sessions=sessions)
    consume(pipeline, simple_request(*first))
    settle(pipeline, clock)
    decided = list(sink.submitted)
    first_annotations = {repr(annotations(s)) for s in sink.spans()}
    wait_out_the_hold(pipeline, clock)

    for late in late_requests:
        clock.advance(1.0)
        assert consume(pipeline, simple_request(*late)) == ACCEPTED
    pipeline.decide_all()

    late_spans = [s for body, _ in sink.submitted[len(decided) :] for s in _spans_of(body)]
    assert sorted(s.name for s in late_spans) == expected_late
    assert {repr(annotations(s)) for s in late_spans} <= first_annotations
    stats = pipeline.stats
    assert (stats.late_spans_kept, stats.late_spans_dropped) == late_stats
    assert pipeline.buffer.span_count == 0
    assert pipeline.buffer.reopened == 0


@pytest.mark.parametrize(
    "sessions",
    [pytest.param(NO_HOLD, id="no-hold"), pytest.param(None, id="after-the-hold")],
)
@pytest.mark.parametrize(
    ("turn_two_error", "expected_names", "sessions_by_rule"),
    [
        pytest.param(
            True,
            ["t2/1", "t2/2"],
            {"rest": 1, "errors": 1},
            id="continuation-with-an-error-is-kept",
        ),
        pytest.param(False, [], {"rest": 2}, id="continuation-without-one-is-dropped-again"),
    ],
)
def test_new_trace_of_a_dropped_conversation_is_decided_on_its_own(
    turn_two_error: bool,
    expected_names: list[str],
    sessions_by_rule: dict[str, int],
    sessions: dict[str, Any] | None,
) -> None:
    """Once turn one's spans are gone (no hold, or the hold is over), a new turn is a
    continuation decided alone: an error in it keeps it without the turns before."""
    pipeline, sink, clock = make_pipeline(sessions=sessions)
    consume(pipeline, simple_request(*conversation("t1", "c1")))
    assert settle(pipeline, clock) == 1  # turn one: dropped by `rest`

    clock.advance(1.0)
    wait_out_the_hold(pipeline, clock)
    consume(pipeline, simple_request(span("t2", 2, parent=1, error=turn_two_error)))
    consume(pipeline, simple_request(span("t2", 1, attrs={CONV: "c1"})))
    consume(pipeline, simple_request(span("t1", 9, parent=1)))  # turn one's own late span
    assert pipeline.buffer.span_count == 2  # turn two buffered, not dropped on arrival
    assert (pipeline.stats.late_spans_kept, pipeline.stats.late_spans_dropped) == (0, 1)
    clock.advance(29.95)
    assert pipeline.decide_due() == 0
    assert settle(pipeline, clock, 0.1) == 1

    assert sorted(sink.span_names()) == expected_names
    tallies = {rule: t.sessions_seen for rule, t in pipeline.stats.by_rule.items()}
    assert tallies == sessions_by_rule
    assert all(annotations(s)[RULE_ATTRIBUTE] == ("string_value", "errors") for s in sink.spans())
    assert pipeline.buffer.span_count == 0
    assert pipeline.buffer.reopened == 0


def _spans_of(body: bytes) -> list[Span]:
    req = ExportTraceServiceRequest.FromString(body)
    return [s for rs in req.resource_spans for ss in rs.scope_spans for s in ss.spans]


# -- backpressure ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("buffered", "incoming", "admitted"),
    [
        pytest.param(3, 1, True, id="up-to-the-limit"),
        pytest.param(3, 2, False, id="over-the-limit"),
        pytest.param(0, 4, True, id="one-request-at-the-limit"),
        pytest.param(0, 5, True, id="one-request-over-the-limit-is-taken-into-an-empty-buffer"),
        pytest.param(1, 5, False, id="one-request-over-the-limit-waits-for-an-empty-buffer"),
    ],
)
def test_buffer_full_refuses_the_whole_request(
    buffered: int, incoming: int, admitted: bool
) -> None:
    pipeline, _, _ = make_pipeline(
        KEEP_ALL, sessions={"max_buffered_spans": 4, "stress_relief_at": 1.0}
    )
    if buffered:
        assert (
            consume(pipeline, simple_request(*conversation("t1", "c1", buffered - 1))) == ACCEPTED
        )

    admission = consume(pipeline, simple_request(*conversation("t2", "c2", incoming - 1)))

    if admitted:
        assert admission == ACCEPTED
        over = buffered + incoming > 4  # taken, then decided at once by stress relief
        assert pipeline.buffer.span_count == (0 if over else buffered + incoming)
        assert pipeline.stats.relief_sessions == (1 if over else 0)
    else:
        assert admission == Admission(False, "session buffer full", 1.0)
        assert pipeline.buffer.span_count == buffered
        assert pipeline.stats.spans_refused == incoming


def test_buffer_full_loses_nothing_and_accepts_again_after_deciding() -> None:
    pipeline, sink, clock = make_pipeline(KEEP_ALL, sessions={"max_buffered_spans": 4})
    first = simple_request(*conversation("t1", "c1"))
    second = simple_request(*conversation("t2", "c2", 1))

    assert consume(pipeline, first) == ACCEPTED
    assert consume(pipeline, second).reason == "session buffer full"
    settle(pipeline, clock)
    assert consume(pipeline, second) == ACCEPTED  # the sender's retry
    pipeline.decide_all()

    assert sorted(sink.span_names()) == ["t1/1", "t1/2", "t1/3", "t2/1", "t2/2"]


def test_sink_refusal_holds_requests_and_refuses_intake_until_it_drains() -> None:
    pipeline, sink, clock = make_pipeline(KEEP_ALL)
    sink.accepting = False
    consume(pipeline, simple_request(*conversation("ta", "a", 1)))
    clock.advance(1.0)
    consume(pipeline, simple_request(*conversation("tb", "b", 1)))

    clock.advance_to(30.05)
    assert pipeline.decide_due() == 1  # a decided, its request waits
    assert pipeline.pending_spans == 2
    clock.advance_to(31.05)
    assert pipeline.decide_due() == 1  # b decided, queued behind a
    assert pipeline.pending_spans == 4

    third = simple_request(*conversation("tc", "c", 1))
    assert consume(pipeline, third) == Admission(False, "exporter queue full", 1.0)
    assert pipeline.buffer.span_count == 0
    assert sink.submitted == []

    sink.accepting = True
    assert pipeline.decide_due() == 0
    assert pipeline.pending_spans == 0
    assert consume(pipeline, third) == ACCEPTED
    pipeline.decide_all()

    assert sink.span_names() == ["ta/2", "ta/1", "tb/2", "tb/1", "tc/2", "tc/1"]
    assert sink.refusals > 0


# -- output batching ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("exporter", "expected_counts"),
    [
        pytest.param({"batch_max_spans": 1}, [1, 1, 1, 1, 1], id="spans-1"),
        pytest.param({"batch_max_spans": 2}, [2, 2, 1], id="spans-2"),
        pytest.param({"batch_max_spans": 5}, [5], id="spans-exact"),
        pytest.param({"batch_max_spans": 100}, [5], id="spans-roomy"),
        pytest.param({"batch_max_size": 100_000}, [5], id="size-roomy"),
        pytest.param(
            {"batch_max_size": 400},
            None,
            id="size-400-bytes",
        ),
    ],
)
def test_output_is_split_within_the_batch_limits(
    exporter: dict[str, int], expected_counts: list[int] | None
) -> None:
    pipeline, sink, clock = make_pipeline(KEEP_ALL, exporter=exporter)
    names = [f"{'n' * 60}{i}" for i in range(5)]
    spans = [span("t1", i + 1, name=name, attrs={CONV: "c1"}) for i, name in enumerate(names)]

    consume(pipeline, simple_request(*spans, resource={"service.name": "x" * 40}))
    pipeline.decide_all()

    assert sink.span_names() == names
    assert [len(_spans_of(body)) for body, _ in sink.submitted] == [
        count for _, count in sink.submitted
    ]
    max_size = exporter.get("batch_max_size", 4 << 20)
    assert all(len(body) <= max_size for body, _ in sink.submitted)
    if expected_counts is not None:
        assert [count for _, count in sink.submitted] == expected_counts


# -- invalid ids ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("trace_id", "span_id"),
    [
        pytest.param(b"\x01" * 15, b"\x02" * 8, id="short-trace-id"),
        pytest.param(b"\x01" * 17, b"\x02" * 8, id="long-trace-id"),
        pytest.param(b"", b"\x02" * 8, id="no-trace-id"),
        pytest.param(b"\x01" * 16, b"\x02" * 7, id="short-span-id"),
        pytest.param(b"\x01" * 16, b"", id="no-span-id"),
        pytest.param(bytes(16), b"\x02" * 8, id="all-zero-trace-id"),
        pytest.param(b"\x01" * 16, bytes(8), id="all-zero-span-id"),
    ],
)
def test_invalid_ids_are_a_partial_rejection(trace_id: bytes, span_id: bytes) -> None:
    pipeline, sink, _ = make_pipeline(KEEP_ALL)
    bad = Span(trace_id=trace_id, span_id=span_id, name="bad")
    good = conversation("t1", "c1", 1)

    admission = consume(pipeline, simple_request(good[0], bad, good[1]))
    pipeline.decide_all()

    assert (admission.accepted, admission.rejected_spans) == (True, 1)
    assert "invalid trace or span id" in admission.reason
    assert sorted(sink.span_names()) == ["t1/1", "t1/2"]
    assert pipeline.stats.spans_invalid == 1


# -- shutdown and determinism ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rules", "expected_names"),
    [
        pytest.param(KEEP_ALL, ["k1/1", "k1/2", "p1/2", "t9/1"], id="keep-all"),
        pytest.param(DROP_ALL, [], id="drop-all"),
    ],
)
def test_decide_all_decides_everything_buffered(rules: str, expected_names: list[str]) -> None:
    pipeline, sink, clock = make_pipeline(rules)
    consume(pipeline, simple_request(span("k1", 2, parent=1), span("k1", 1, attrs={CONV: "c1"})))
    consume(pipeline, simple_request(span("p1", 2, parent=1)))  # no root, no key yet
    consume(pipeline, simple_request(span("t9", 1)))  # keyless root
    clock.advance(1.0)

    assert pipeline.decide_due() == 0
    assert pipeline.decide_all() == 3

    assert sorted(sink.span_names()) == expected_names
    assert (pipeline.buffer.session_count, pipeline.buffer.span_count) == (0, 0)
    assert pipeline.decide_all() == 0


def _run_script() -> list[bytes]:
    pipeline, sink, clock = make_pipeline(exporter={"batch_max_spans": 3})
    script = [
        conversation("t1", "c-err", 4, child={"error": True}),
        conversation("t2", KEPT_AT_HALF, root={"attrs": {"team": "blue"}}),
        conversation("t3", "c-plain"),
        [span("t4", 1, events=["exception"])],
        conversation("t5", "c-err", 2),
    ]
    for spans in script:
        consume(pipeline, simple_request(*spans))
        clock.advance(0.7)
    settle(pipeline, clock)
    consume(pipeline, simple_request(span("t1", 50, parent=1)))
    pipeline.decide_all()
    return [body for body, _ in sink.submitted]


def test_same_input_gives_identical_output_bytes() -> None:
    first, second = _run_script(), _run_script()

    assert len(first) > 3
    assert first == second


# -- annotation of spans that already carry one ---------------------------------------------------


def test_reannotated_span_has_each_annotation_once() -> None:
    pipeline, sink, clock = make_pipeline(KEEP_ALL)
    already = span("t1", 1, attrs={CONV: "c1", RULE_ATTRIBUTE: "upstream"})

    consume(pipeline, simple_request(already))
    pipeline.decide_all()

    (got,) = sink.spans()
    keys = [kv.key for kv in got.attributes]
    assert keys.count(RULE_ATTRIBUTE) == 1
    assert annotations(got)[RULE_ATTRIBUTE] == ("string_value", "everything")


# -- the hold of dropped sessions -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("turn_two_error", "expected_names", "sessions_by_rule", "held_after"),
    [
        pytest.param(
            True,
            ["t1/1", "t1/2", "t1/3", "t1/9", "t2/1", "t2/2"],
            {"rest": 1, "errors": 1},
            0,
            id="a-failing-turn-keeps-the-whole-conversation",
        ),
        pytest.param(False, [], {"rest": 2}, 6, id="a-quiet-turn-drops-it-again-and-holds-it"),
    ],
)
def test_a_later_turn_reopens_a_held_conversation(
    turn_two_error: bool,
    expected_names: list[str],
    sessions_by_rule: dict[str, int],
    held_after: int,
) -> None:
    pipeline, sink, clock = make_pipeline()
    consume(pipeline, simple_request(*conversation("t1", "c1")))
    assert settle(pipeline, clock) == 1  # turn one: dropped by `rest`, and held
    assert (
        pipeline.buffer.held_sessions,
        pipeline.buffer.held_spans,
        pipeline.buffer.span_count,
    ) == (1, 3, 0)

    clock.advance(1.0)
    consume(pipeline, simple_request(span("t2", 2, parent=1, error=turn_two_error)))
    consume(pipeline, simple_request(span("t2", 1, attrs={CONV: "c1"})))  # the key: reopened
    consume(pipeline, simple_request(span("t1", 9, parent=1)))  # turn one's late span joins it
    assert (pipeline.buffer.reopened, pipeline.buffer.held_sessions) == (1, 0)
    assert pipeline.buffer.span_count == 6  # turn one is buffered again, with turn two
    assert (pipeline.stats.late_spans_kept, pipeline.stats.late_spans_dropped) == (0, 0)
    clock.advance(29.95)
    assert pipeline.decide_due() == 0  # decided again as a whole, decision_wait after its spans
    assert settle(pipeline, clock, 0.1) == 1

    assert sorted(sink.span_names()) == expected_names
    assert all(annotations(s)[RULE_ATTRIBUTE] == ("string_value", "errors") for s in sink.spans())
    tallies = {rule: t.sessions_seen for rule, t in pipeline.stats.by_rule.items()}
    assert tallies == sessions_by_rule
    assert (pipeline.buffer.held_spans, pipeline.buffer.span_count) == (held_after, 0)


@pytest.mark.parametrize(
    ("root_error", "expected_names"),
    [
        pytest.param(True, ["t1/1", "t1/2", "t1/3"], id="a-failing-root-keeps-the-whole-trace"),
        pytest.param(False, [], id="a-quiet-root-drops-it-again"),
    ],
)
def test_late_spans_of_a_held_rootless_trace_reopen_it(
    root_error: bool, expected_names: list[str]
) -> None:
    """A trace without its root (a model call silent for longer than open_trace_wait) is
    decided without it; its root arrives later and the trace is decided again, whole."""
    pipeline, sink, clock = make_pipeline()
    consume(pipeline, simple_request(span("t1", 2, parent=1), span("t1", 3, parent=1)))
    clock.advance(90.05)
    assert pipeline.decide_due() == 1  # open_trace_wait: dropped by `rest`, held (rootless)
    assert (pipeline.buffer.held_sessions, pipeline.buffer.held_spans) == (1, 2)

    clock.advance(10.0)
    assert consume(pipeline, simple_request(span("t1", 1, error=root_error))) == ACCEPTED
    assert (pipeline.buffer.reopened, pipeline.buffer.span_count) == (1, 3)
    assert pipeline.stats.late_spans_dropped == 0
    clock.advance(2.05)  # root_end_grace
    assert pipeline.decide_due() == 1

    assert sorted(sink.span_names()) == expected_names
    tallies = {rule: t.sessions_seen for rule, t in pipeline.stats.by_rule.items()}
    assert tallies == ({"rest": 1, "errors": 1} if root_error else {"rest": 2})
    # complete now, unkeyed, and scored as a fragment (never cold): nothing to wait for
    # dropped again, it is held again: it was dropped while the model was cold, and its second
    # look is still due
    assert (pipeline.buffer.held_sessions, pipeline.buffer.span_count) == (
        0 if root_error else 1,
        0,
    )


def test_with_no_hold_a_later_failing_turn_is_kept_without_the_earlier_ones() -> None:
    pipeline, sink, clock = make_pipeline(sessions=NO_HOLD)
    consume(pipeline, simple_request(*conversation("t1", "c1")))
    assert settle(pipeline, clock) == 1
    assert pipeline.buffer.held_sessions == 0

    clock.advance(1.0)
    consume(pipeline, simple_request(*conversation("t2", "c1", 1, child={"error": True})))
    settle(pipeline, clock)

    assert sorted(sink.span_names()) == ["t2/1", "t2/2"]  # turn one is lost
    assert pipeline.buffer.reopened == 0


@pytest.mark.parametrize(
    ("rules", "held"),
    [
        pytest.param(RULES, 1, id="a-dropped-conversation-is-held"),
        pytest.param(KEEP_ALL, 0, id="a-kept-one-is-not"),
    ],
)
def test_decide_all_decides_everything_then_ends_every_hold(rules: str, held: int) -> None:
    pipeline, sink, clock = make_pipeline(rules)
    consume(pipeline, simple_request(*conversation("t1", "c1")))
    settle(pipeline, clock)
    consume(pipeline, simple_request(*conversation("t2", "c2")))
    assert pipeline.buffer.held_sessions == held

    assert pipeline.decide_all() == 1  # c2; c1 is held, not buffered

    assert (pipeline.buffer.held_sessions, pipeline.buffer.held_spans) == (0, 0)
    assert (pipeline.buffer.session_count, pipeline.buffer.span_count) == (0, 0)
    assert len(sink.span_names()) == (6 if rules == KEEP_ALL else 0)
    assert pipeline.buffer.released_early == 0  # ended, not given up for room


def test_held_spans_make_room_in_a_full_buffer_instead_of_a_refusal() -> None:
    pipeline, _, clock = make_pipeline(sessions={"max_buffered_spans": 4})
    consume(pipeline, simple_request(*conversation("t1", "c1")))  # 3 spans
    settle(pipeline, clock)
    assert (pipeline.buffer.held_spans, pipeline.buffer.span_count) == (3, 0)

    assert consume(pipeline, simple_request(*conversation("t2", "c2"))) == ACCEPTED  # 3 + 3 > 4

    assert (pipeline.buffer.held_spans, pipeline.buffer.released_early) == (0, 1)
    assert pipeline.buffer.span_count == 3
    assert pipeline.stats.requests_refused == {}
    clock.advance(1.0)
    consume(pipeline, simple_request(span("t1", 9, parent=1)))  # c1 is gone: its drop stands
    assert pipeline.stats.late_spans_dropped == 1


@pytest.mark.parametrize(
    ("held_spans", "incoming", "released"),
    [
        pytest.param([2, 2], 2, 1, id="the-oldest-only-while-it-is-enough"),  # 4 + 2 > 5
        pytest.param([2, 2], 4, 2, id="as-many-as-needed"),  # 4 + 4 > 5, 2 + 4 > 5
        pytest.param([2, 2], 1, 0, id="none-while-there-is-room"),  # 4 + 1 = 5
    ],
)
def test_held_sessions_are_given_up_oldest_first(
    held_spans: list[int], incoming: int, released: int
) -> None:
    pipeline, _, clock = make_pipeline(sessions={"max_buffered_spans": 5})
    for i, count in enumerate(held_spans):
        consume(pipeline, simple_request(*conversation(f"h{i}", f"held-{i}", count - 1)))
        settle(pipeline, clock)
    assert pipeline.buffer.held_spans == sum(held_spans)

    admission = consume(pipeline, simple_request(*conversation("t9", "c9", incoming - 1)))

    assert admission == ACCEPTED
    assert pipeline.buffer.released_early == released
    assert pipeline.buffer.held_spans == sum(held_spans[released:])  # the oldest went first


# -- a second look at sessions dropped while the rarity model was cold ---------------------------

RARE_OR_NOTHING = """\
  - {name: rare, when: {rare: {dimensions: [shape]}}, action: keep}
  - {name: rest, action: drop}
"""


def agent_trace(
    trace: str, tools: Sequence[str], start_ns: int = 1_000, key: str | None = None
) -> list[Span]:
    """The agent ``support`` calling these tools: a lone trace, or a turn of conversation
    ``key``."""
    calls = [
        span(
            trace,
            n,
            parent=1,
            attrs={"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": tool},
            start_ns=start_ns + n,
        )
        for n, tool in enumerate(tools, start=2)
    ]
    root = span(
        trace,
        1,
        attrs={
            "gen_ai.operation.name": "invoke_agent",
            "gen_ai.agent.name": "support",
            **({CONV: key} if key else {}),
        },
        start_ns=start_ns,
    )
    return [*calls, root]


def warming_pipeline(
    warmup_sessions: int, **sessions: Any
) -> tuple[Pipeline, RecordingSink, ManualClock]:
    """RARE_OR_NOTHING, with a rarity model warm after ``warmup_sessions`` sessions (and 50
    of the agent: min_group_values, which is not a setting)."""
    config = sampler_config(RARE_OR_NOTHING, sessions=sessions)
    rarity = dataclasses.replace(config.signals.rarity, warmup_sessions=warmup_sessions)
    signals = dataclasses.replace(config.signals, rarity=rarity)
    sink, clock = RecordingSink(), ManualClock()
    return Pipeline(dataclasses.replace(config, signals=signals), sink, clock), sink, clock


def usual_traffic(pipeline: Pipeline, clock: ManualClock, sessions: int) -> None:
    for i in range(sessions):
        consume(pipeline, simple_request(*agent_trace(f"u{i}", ["search", "answer"])))
        clock.advance(0.5)
        pipeline.decide_due()
    clock.advance(2.05)  # root_end_grace: every one is decided
    pipeline.decide_due()
    assert pipeline.buffer.session_count == 0


@pytest.mark.parametrize(
    "end_of_hold",
    [
        pytest.param("hold-over", id="when-its-hold-ends"),
        pytest.param("shutdown", id="at-shutdown"),
        pytest.param("room", id="given-up-for-room"),
    ],
)
@pytest.mark.parametrize(
    ("tools", "kept"),
    [
        pytest.param(["refund", "escalate"], True, id="a-rare-path-is-kept"),
        pytest.param(["search", "answer"], False, id="the-usual-path-stays-dropped"),
    ],
)
def test_a_session_dropped_while_cold_is_kept_if_rare_when_looked_at_again(
    tools: list[str], kept: bool, end_of_hold: str
) -> None:
    pipeline, sink, clock = warming_pipeline(warmup_sessions=20, max_buffered_spans=400)
    consume(pipeline, simple_request(*agent_trace("first", tools)))
    clock.advance(2.05)  # root_end_grace
    assert pipeline.decide_due() == 1  # nothing seen yet: cold, so dropped by `rest`...
    assert pipeline.buffer.held_sessions == 1  # ...and held
    assert pipeline.stats.by_rule["rest"].sessions_seen == 1

    usual_traffic(pipeline, clock, 150)  # 77 s: the model warms up on the usual path
    assert sink.submitted == []  # the usual sessions are dropped alike
    assert pipeline.buffer.released_early == 0
    assert pipeline.buffer.held_spans + 300 > 400  # the cold sessions of the warm-up are held
    if end_of_hold == "hold-over":
        clock.advance(pipeline.config.sessions.dropped_hold)
        pipeline.decide_due()
    elif end_of_hold == "shutdown":
        pipeline.decide_all()
    else:  # 300 spans: held sessions are given up, oldest ("first") first
        assert consume(pipeline, simple_request(*conversation("big", "c-big", 299))) == ACCEPTED
        assert pipeline.buffer.released_early > 0

    stats = pipeline.stats
    if not kept:
        assert sink.submitted == []
        assert (stats.second_look_sessions, stats.second_look_spans) == (0, 0)
        return
    names = ["first/1", "first/2", "first/3"]
    assert sorted(sink.span_names()) == names  # whole
    for got in sink.spans():
        assert annotations(got)[RULE_ATTRIBUTE] == ("string_value", "rare")
        assert ("string_value", "rare_shape") in annotations(got)[SIGNALS_ATTRIBUTE][1]
    assert (stats.second_look_sessions, stats.second_look_spans) == (1, 3)
    assert stats.by_rule["rest"].sessions_seen == 151  # its first decision stays counted
    rare = stats.by_rule["rare"]  # and the keep is counted where kept spans are
    assert (rare.sessions_seen, rare.sessions_kept, rare.spans_kept) == (1, 1, 3)
    assert kept_spans_add_up(pipeline, sink)
    consume(pipeline, simple_request(span("first", 9, parent=1)))  # late: follows the keep now
    pipeline.decide_all()
    assert sink.span_names()[3:] == ["first/9"]
    assert stats.late_spans_kept == 1
    assert kept_spans_add_up(pipeline, sink)


def test_a_session_still_cold_at_its_second_look_waits_for_another_max_looks_in_all() -> None:
    pipeline, sink, clock = warming_pipeline(warmup_sessions=200)  # never warm here
    consume(pipeline, simple_request(*agent_trace("first", ["refund"])))
    clock.advance(2.05)
    pipeline.decide_due()

    looks = 0
    while pipeline.buffer.held_sessions:
        clock.advance(pipeline.config.sessions.dropped_hold + 0.1)
        pipeline.decide_due()
        looks += 1
        assert looks <= MAX_LOOKS

    assert looks == MAX_LOOKS
    assert sink.submitted == []
    assert pipeline.buffer.released_early == 0


@pytest.mark.parametrize(
    "leave",
    [pytest.param("shutdown", id="at-shutdown"), pytest.param("room", id="given-up-for-room")],
)
def test_a_held_session_leaving_early_is_not_held_again(leave: str) -> None:
    """Still cold, but leaving before its time (shutdown, or room needed): no further look."""
    pipeline, sink, clock = warming_pipeline(warmup_sessions=200, max_buffered_spans=4)
    consume(pipeline, simple_request(*agent_trace("first", ["refund"])))  # 2 spans
    clock.advance(2.05)
    pipeline.decide_due()
    assert pipeline.buffer.held_sessions == 1

    if leave == "shutdown":
        pipeline.decide_all()
    else:
        assert consume(pipeline, simple_request(*conversation("t2", "c2", 2))) == ACCEPTED

    assert (pipeline.buffer.held_sessions, pipeline.buffer.held_spans) == (0, 0)
    assert sink.submitted == []


def test_a_cold_session_pushed_out_by_the_hold_cap_still_gets_its_second_look() -> None:
    pipeline, sink, clock = warming_pipeline(warmup_sessions=20, dropped_hold_max_spans=200)
    consume(pipeline, simple_request(*agent_trace("first", ["refund", "escalate"])))
    clock.advance(2.05)
    pipeline.decide_due()
    usual_traffic(pipeline, clock, 150)  # warm now; 150 spans held from the warm-up
    assert pipeline.buffer.held_spans == 150

    consume(pipeline, simple_request(*conversation("big", "c-big", 99)))  # 100 spans...
    settle(pipeline, clock)  # ...dropped and held: over the cap, "first" is pushed out

    assert sorted(sink.span_names()) == ["first/1", "first/2", "first/3"]


def test_a_reopened_cold_conversation_keeps_its_second_look() -> None:
    pipeline, sink, clock = warming_pipeline(warmup_sessions=20)
    consume(pipeline, simple_request(*agent_trace("first", ["refund", "escalate"], key="c-odd")))
    settle(pipeline, clock)  # keyed and cold: dropped by `rest`, held
    usual_traffic(pipeline, clock, 150)  # the model warms up: its path is rare now
    consume(pipeline, simple_request(span("second", 1, attrs={CONV: "c-odd"})))  # reopens it
    settle(pipeline, clock)  # a quiet turn: dropped again, held again
    assert pipeline.buffer.reopened == 1

    wait_out_the_hold(pipeline, clock)

    assert sorted(sink.span_names()) == ["first/1", "first/2", "first/3", "second/1"]


def test_held_sessions_are_not_given_up_for_a_request_that_is_refused_anyway() -> None:
    pipeline, _, clock = make_pipeline(sessions={"max_buffered_spans": 5})
    consume(pipeline, simple_request(*conversation("h1", "held", 1)))  # 2 spans
    settle(pipeline, clock)  # dropped, held
    consume(pipeline, simple_request(*conversation("t1", "c1", 2)))  # 3 live spans

    refused = consume(pipeline, simple_request(*conversation("t2", "c2", 2)))  # 3 + 3 > 5

    assert refused == Admission(False, "session buffer full", 1.0)
    assert (pipeline.buffer.held_spans, pipeline.buffer.released_early) == (2, 0)
