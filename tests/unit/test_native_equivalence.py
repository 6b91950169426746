"""The native per-span path against the Python one it replaced (``tests/reference/legacy``).

The same traffic goes through both pipelines, replayed as ``agent-sampler replay`` drives them
(a clock moved to each request's latest span end). For every decided session, in order, both
must have seen the same features (span and trace counts, error kinds, span tests, tokens,
tool calls with their argument digests (compared as which calls share arguments, since the two
digest the same JSON differently), turns and failures, agents, parents, links, latencies, model
call starts, turn durations, typical model and tool calls) and reached the same
verdict (rule, adjusted count, signals) from the same scores; and the kept spans, annotations
and tracestates included, must be the same messages. Rejections must agree too.

Traffic: the quality benchmark's corpora (default and varied, several seeds), the recorded
real-framework fixtures, the fuzz corpus, and the same traffic under tight receiver limits.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from benchmarks.quality.generator import TrafficSpec
from benchmarks.quality.profiles import PROFILES
from sampler._native import InvalidRequest, RequestTooLarge, SessionView, validate
from sampler.clock import ManualClock
from sampler.config.load import load_config, load_config_text
from sampler.config.model import SamplerConfig
from sampler.otlp.json_codec import OtlpDecodeError, request_from_json
from sampler.pipeline import Pipeline
from sampler.rules.facts import DecisionFacts
from sampler.rules.verdict import Verdict
from tests.reference.legacy.pipeline import Pipeline as LegacyPipeline

pytestmark = pytest.mark.slow

TESTDATA = Path(__file__).parents[1] / "testdata"


ToolCallRecord = tuple[int, str, str, int, bool, int]


def _digest_classes(
    calls: Iterable[ToolCallRecord],
) -> list[tuple[int, str, int, int, bool, int]]:
    """Tool calls with each digest replaced by the order of its first appearance (-1: none)."""
    seen: dict[str, int] = {}
    return [
        (start, name, seen.setdefault(digest, len(seen)) if digest else -1, turn, failed, end)
        for start, name, digest, turn, failed, end in calls
    ]


def _session(features: Any, key: str, trace_count: int) -> dict[str, Any]:
    return {
        "key": key,
        "traces": trace_count,
        "spans": features.span_count,
        "error_spans": features.error_spans,
        "error_kinds": features.error_kinds,
        "first_start": features.first_start_ns,
        "last_end": features.last_end_ns,
        "test_bits": features.test_bits,
        "tokens": features.tokens,
        "tool_call_count": features.tool_call_count,
        "tool_calls": _digest_classes(features.tool_calls),
        "agents": list(features.agents),
        "parents": list(features.parents.items()),
        "links": list(features.links.items()),
        "root_agent": features.root_agent,
        "latency": features.latency_s,
        "model_latency": features.model_latency_s,
        "model_starts": list(features.model_starts),
        "turn_latencies": list(features.turn_latencies),
        "turns_ended": features.turns_ended,
        "model_pace": features.model_pace_s,
        "tool_pace": features.tool_pace_s,
    }


def _verdict(facts: DecisionFacts, verdict: Verdict) -> dict[str, Any]:
    return {
        "keep": verdict.keep,
        "rule": verdict.rule,
        "adjusted_count": verdict.adjusted_count,
        "signals": verdict.signals,
        "shape": facts.shape,
        "rarity": dict(facts.rarity),
        "randomness": facts.randomness,
    }


class _Sink:
    def __init__(self) -> None:
        self.spans: list[Span] = []

    def try_submit(self, request: bytes, span_count: int) -> bool:
        message = ExportTraceServiceRequest.FromString(request)
        spans = [s for rs in message.resource_spans for ss in rs.scope_spans for s in ss.spans]
        assert len(spans) == span_count
        self.spans.extend(spans)
        return True

    def sorted(self) -> list[Span]:
        return sorted(self.spans, key=lambda s: (s.trace_id, s.span_id, s.SerializeToString()))


@dataclasses.dataclass
class Run:
    decisions: list[tuple[dict[str, Any], dict[str, Any]]] = dataclasses.field(default_factory=list)
    rejected: list[int] = dataclasses.field(default_factory=list)  # indexes of refused bodies
    sink: _Sink = dataclasses.field(default_factory=_Sink)


class _NativeObserver:
    def __init__(self, run: Run, pipeline: Pipeline) -> None:
        self.run, self.pipeline = run, pipeline
        self.view: SessionView | None = None

    def decided(
        self, facts: DecisionFacts, verdict: Verdict, now: float, *, second_look: bool
    ) -> None:
        if second_look:  # the session was recorded at its first decision
            self.run.decisions.append(
                ({"second_look": facts.session_key}, _verdict(facts, verdict))
            )
            return
        view = self.view
        assert view is not None
        self.run.decisions.append(
            (_session(view, view.key, view.trace_count), _verdict(facts, verdict))
        )


def run_native(config: SamplerConfig, bodies: Iterable[bytes]) -> Run:
    run = Run()
    clock = ManualClock(0.0)
    pipeline = Pipeline(config, run.sink, clock)
    observer = _NativeObserver(run, pipeline)
    pipeline.observer = observer
    facts_of = pipeline.facts_of

    def watching(view: SessionView, now: float, **kwargs: bool) -> tuple[DecisionFacts, bool]:
        observer.view = view
        return facts_of(view, now, **kwargs)

    pipeline.facts_of = watching  # type: ignore[method-assign]
    for index, body in enumerate(bodies):
        try:
            request = validate(body, config.receivers.max_spans_per_request)
        except (InvalidRequest, RequestTooLarge):
            run.rejected.append(index)
            continue
        clock.advance_to(request.max_end_ns / 1e9)
        pipeline.decide_due()
        pipeline.consume(request)
    pipeline.decide_all()
    return run


class _Watched:
    """The legacy pipeline's engine, with its decide and reconsider watched."""

    def __init__(self, engine: Any, decide: Any, reconsider: Any) -> None:
        self._engine, self.decide, self.reconsider = engine, decide, reconsider

    def __getattr__(self, name: str) -> Any:
        return getattr(self._engine, name)


def run_legacy(config: SamplerConfig, bodies: Iterable[bytes]) -> Run:
    run = Run()
    clock = ManualClock(0.0)
    pipeline = LegacyPipeline(config, run.sink, clock)
    facts_of = pipeline.facts_of
    decide = pipeline.engine.decide
    reconsider = pipeline.engine.reconsider
    current: list[dict[str, Any]] = []

    def watching(session: Any, now: float, **kwargs: bool) -> tuple[DecisionFacts, bool]:
        current[:] = [_session(session.features, session.key, len(session.trace_ids))]
        if kwargs.get("second_look"):
            current[:] = [{"second_look": session.key}]
        return facts_of(session, now, **kwargs)

    def deciding(facts: DecisionFacts, now: float) -> Verdict:
        verdict = decide(facts, now)
        run.decisions.append((current[0], _verdict(facts, verdict)))
        return verdict

    def reconsidering(facts: DecisionFacts, dropped: Verdict, now: float) -> Verdict | None:
        verdict = reconsider(facts, dropped, now)
        if verdict is not None and verdict.keep:
            run.decisions.append((current[0], _verdict(facts, verdict)))
        return verdict

    pipeline.facts_of = watching  # type: ignore[method-assign]
    pipeline.engine = _Watched(pipeline.engine, deciding, reconsidering)  # type: ignore[assignment]
    for index, body in enumerate(bodies):
        try:
            request = ExportTraceServiceRequest.FromString(body)
        except DecodeError:
            run.rejected.append(index)
            continue
        spans = [s for rs in request.resource_spans for ss in rs.scope_spans for s in ss.spans]
        if len(spans) > config.receivers.max_spans_per_request:
            run.rejected.append(index)
            continue
        clock.advance_to(max((s.end_time_unix_nano for s in spans), default=0) / 1e9)
        pipeline.decide_due()
        pipeline.consume(request)
    pipeline.decide_all()
    return run


def assert_equivalent(config: SamplerConfig, bodies: list[bytes]) -> Run:
    native, legacy = run_native(config, bodies), run_legacy(config, bodies)
    assert native.rejected == legacy.rejected
    assert len(native.decisions) == len(legacy.decisions)
    for number, (mine, theirs) in enumerate(zip(native.decisions, legacy.decisions, strict=True)):
        assert mine == theirs, f"decision {number} differs"
    assert native.sink.sorted() == legacy.sink.sorted()
    return native


def corpus_bodies(profile: str, seed: int, sessions: int) -> list[bytes]:
    shape, generator = PROFILES[profile]
    spec = shape(TrafficSpec(seed=seed, sessions=sessions))
    return [request.SerializeToString() for request in generator(spec).requests]


def jsonl_bodies(path: Path) -> Iterator[bytes]:
    for line in path.read_bytes().splitlines():
        if line.strip():
            yield request_from_json(line).SerializeToString()


@pytest.mark.parametrize(
    ("profile", "seed"),
    [("default", 1), ("default", 2), ("varied", 1), ("varied", 3), ("conversations", 1)],
    ids=["default-1", "default-2", "varied-1", "varied-3", "conversations-1"],
)
def test_the_quality_corpora_decide_alike(profile: str, seed: int) -> None:
    run = assert_equivalent(load_config(), corpus_bodies(profile, seed, 700))
    kept = sum(1 for _, verdict in run.decisions if verdict["keep"])
    assert len(run.decisions) > 700 and 0 < kept < len(run.decisions)  # the comparison bites


def test_tight_receiver_limits_cut_alike() -> None:
    """Few attributes and short values: removed attributes, cut strings (inside arrays too)."""
    config = load_config()
    receivers = dataclasses.replace(
        config.receivers, max_attributes_per_span=4, max_attribute_value_size=12
    )
    config = dataclasses.replace(config, receivers=receivers)
    assert_equivalent(config, corpus_bodies("default", 5, 200))
    assert_equivalent(config, corpus_bodies("varied", 5, 120))


def test_rules_with_span_tests_match_alike() -> None:
    """Attribute and span-name tests of every kind, on the span and on the resource."""
    config = load_config()
    text = """
rules:
  - name: by-agent
    when: {attribute: {key: gen_ai.agent.name, in: [billing, coder]}}
    action: {probability: 0.5}
  - name: by-model
    when: {attribute: {key: gen_ai.request.model, regex: "^gpt"}}
    action: {probability: 0.3}
  - {name: tokens, when: {attribute: {key: gen_ai.usage.output_tokens, min: 300}}, action: keep}
  - name: service
    when: {attribute: {key: service.name, exists: true, scope: resource}}
    action: {probability: 0.1}
  - name: named
    when: {span_name: {regex: "^execute_tool (search|lookup)"}}
    action: {probability: 0.2}
  - {name: chat, when: {span_name: {in: [chat, "chat gpt-4o"]}}, action: drop}
  - {name: rest, action: budget}
"""
    rules = load_config_text(text, "rules.yaml").rules
    config = dataclasses.replace(config, rules=rules)
    run = assert_equivalent(config, corpus_bodies("default", 7, 300))
    assert len({verdict["rule"] for _, verdict in run.decisions}) >= 4


def test_the_framework_fixtures_decide_alike() -> None:
    bodies = [
        body
        for path in sorted((TESTDATA / "frameworks").glob("*.jsonl"))
        for body in jsonl_bodies(path)
    ]
    assert bodies
    assert_equivalent(load_config(), bodies)


def test_the_fuzz_corpus_is_read_alike() -> None:
    """Hostile bodies: both paths reject the same ones and keep the same of the rest."""
    bodies: list[bytes] = []
    for path in sorted((TESTDATA / "fuzz").iterdir()):
        if path.suffix == ".bin":
            bodies.append(path.read_bytes())
        elif path.suffix == ".json":
            try:
                bodies.append(request_from_json(path.read_bytes()).SerializeToString())
            except OtlpDecodeError:
                continue  # refused as JSON: not a protobuf body to compare
    assert len(bodies) > 10
    run = assert_equivalent(load_config(), bodies)
    assert run.rejected  # some of them are malformed


def test_a_differing_verdict_is_caught() -> None:
    """The comparison fails when the paths differ: a rule the legacy path does not see."""
    bodies = corpus_bodies("default", 1, 60)
    config = load_config()
    native = run_native(config, bodies)
    changed = dataclasses.replace(config, rules=config.rules[1:])  # no `errors` rule
    legacy = run_legacy(changed, bodies)
    assert json.dumps(native.decisions, default=str) != json.dumps(legacy.decisions, default=str)
