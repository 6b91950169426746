"""Self-metrics of the dropped-session hold, read from a real pipeline through the registry."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from prometheus_client.registry import CollectorRegistry

from sampler.clock import ManualClock
from sampler.export.base import ExporterStats
from sampler.metrics import METRICS, Sources, build_registry
from sampler.pipeline import Pipeline
from tests.unit.sessions.builders import (
    RecordingSink,
    consume,
    sampler_config,
    simple_request,
    span,
)

CONV = "gen_ai.conversation.id"
RULES = """\
  - {name: errors, when: {error: true}, action: keep}
  - {name: rest, action: drop}
"""
HOLD_METRICS = {
    "agent_sampler_held_spans": "gauge",
    "agent_sampler_held_released_early": "counter",
    "agent_sampler_reopened_sessions": "counter",
    "agent_sampler_second_look_kept_sessions": "counter",
}


def registry_of(pipeline: Pipeline) -> CollectorRegistry:
    exporter: Any = SimpleNamespace(
        queued_spans=lambda: 0,
        stats=ExporterStats(),
    )
    return build_registry(Sources(pipeline, exporter, {}))


def hold_values(registry: CollectorRegistry) -> dict[str, float | None]:
    return {
        name: registry.get_sample_value(name + ("_total" if kind == "counter" else ""))
        for name, kind in HOLD_METRICS.items()
    }


def turn(trace: str, key: str) -> list[Any]:
    return [span(trace, 2, parent=1), span(trace, 1, attrs={CONV: key})]


def test_the_hold_metrics_are_declared_once_with_their_kind() -> None:
    declared = {spec.name: spec.kind for spec in METRICS}
    assert {name: declared.get(name) for name in HOLD_METRICS} == HOLD_METRICS
    assert len(declared) == len(METRICS)


def test_the_hold_metrics_follow_the_pipeline() -> None:
    config = sampler_config(RULES, sessions={"max_buffered_spans": 4})
    clock = ManualClock()
    pipeline = Pipeline(config, RecordingSink(), clock)
    registry = registry_of(pipeline)
    assert hold_values(registry) == dict.fromkeys(HOLD_METRICS, 0.0)

    consume(pipeline, simple_request(*turn("t1", "c1")))
    clock.advance(30.05)
    pipeline.decide_due()  # dropped, held
    assert registry.get_sample_value("agent_sampler_held_spans") == 2.0

    consume(pipeline, simple_request(*turn("t2", "c1")))  # reopens c1: 4 buffered spans
    clock.advance(30.05)
    pipeline.decide_due()  # dropped again, held again
    consume(pipeline, simple_request(*turn("t3", "c3")))  # 4 held + 2 > 4: c1 given up
    pipeline.stats.second_look_sessions = 2  # (kept by a second look: see test_pipeline)

    assert hold_values(registry) == {
        "agent_sampler_held_spans": 0.0,
        "agent_sampler_held_released_early": 1.0,
        "agent_sampler_reopened_sessions": 1.0,
        "agent_sampler_second_look_kept_sessions": 2.0,
    }


def test_kept_spans_add_up_across_rules_and_late_spans() -> None:
    rules = """\
  - {name: errors, when: {error: true}, action: keep}
  - {name: blue, when: {attribute: {key: team, equals: blue}}, action: keep}
  - {name: rest, action: drop}
"""
    clock, sink = ManualClock(), RecordingSink()
    pipeline = Pipeline(sampler_config(rules), sink, clock)
    registry = registry_of(pipeline)
    consume(pipeline, simple_request(span("t1", 2, parent=1, error=True), span("t1", 1)))
    consume(pipeline, simple_request(span("t2", 1, attrs={"team": "blue"})))
    consume(pipeline, simple_request(span("t3", 1)))
    clock.advance(2.05)
    pipeline.decide_due()
    consume(pipeline, simple_request(span("t1", 3, parent=1), span("t3", 3, parent=1)))

    def value(name: str, **labels: str) -> float:
        return sum(
            sample.value
            for metric in registry.collect()
            for sample in metric.samples
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items())
        )

    kept = value("agent_sampler_spans_kept_total")
    assert kept == len(sink.spans()) == 4  # t1 (3 with its late span) and t2
    assert kept == value("agent_sampler_spans_decided_total", verdict="keep") + value(
        "agent_sampler_late_spans_total", verdict="keep"
    )
