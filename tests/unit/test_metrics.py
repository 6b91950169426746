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


def test_connection_metrics_read_the_listeners_counts() -> None:
    from sampler.receive.connections import ConnectionStats, DescriptorShortage

    pipeline = Pipeline(sampler_config(RULES), RecordingSink(), ManualClock(0.0))
    exporter: Any = SimpleNamespace(queued_spans=lambda: 0, stats=ExporterStats())
    shortage = DescriptorShortage()
    shortage.failures = 3
    connections = {
        "http": ConnectionStats(open=5, refused=1, evicted=2, timed_out=4),
        "metrics": ConnectionStats(open=1),
    }
    registry = build_registry(Sources(pipeline, exporter, {}, connections, shortage))
    value = registry.get_sample_value
    assert value("agent_sampler_connections", {"listener": "http"}) == 5
    assert value("agent_sampler_connections", {"listener": "metrics"}) == 1
    closed = "agent_sampler_connections_closed_total"
    assert value(closed, {"listener": "http", "reason": "refused"}) == 1
    assert value(closed, {"listener": "http", "reason": "evicted"}) == 2
    assert value(closed, {"listener": "http", "reason": "header_timeout"}) == 4
    assert value("agent_sampler_accept_failures_total") == 3
