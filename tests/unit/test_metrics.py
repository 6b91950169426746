"""Self-metrics read from a real pipeline through the registry: the dropped-session hold, build
info, the process collectors, the latency histograms."""

from __future__ import annotations

import dataclasses
import platform
from importlib import metadata
from types import SimpleNamespace
from typing import Any

import pytest
from prometheus_client.registry import CollectorRegistry

from sampler.clock import ManualClock
from sampler.export.base import ExporterStats
from sampler.metrics import METRICS, Sources, build_registry
from sampler.pipeline import Pipeline
from sampler.version import python_version
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


def test_shadow_mode_is_visible_and_its_forwarded_spans_add_up() -> None:
    """In shadow mode spans_kept counts every span handed to the exporter; shadow_spans says
    which would have been kept and which dropped; the mode gauge tells shadow from live."""
    clock, sink = ManualClock(), RecordingSink()
    config = dataclasses.replace(sampler_config(RULES), mode="shadow")
    pipeline = Pipeline(config, sink, clock)
    registry = registry_of(pipeline)
    assert registry.get_sample_value("agent_sampler_mode", {"mode": "shadow"}) == 1.0
    assert registry.get_sample_value("agent_sampler_mode", {"mode": "live"}) == 0.0
    consume(pipeline, simple_request(span("t1", 2, parent=1, error=True), span("t1", 1)))
    consume(pipeline, simple_request(span("t3", 1)))  # dropped (held: the model is cold)
    clock.advance(2.05)
    pipeline.decide_due()
    consume(pipeline, simple_request(span("t1", 3, parent=1), span("t3", 3, parent=1)))
    assert len(sink.spans()) == 3  # t1 kept with its late span; t3 reopened, held again
    pipeline.decide_all()  # the hold ends: t3 goes out, as a drop

    def shadow(verdict: str) -> float | None:
        return registry.get_sample_value("agent_sampler_shadow_spans_total", {"verdict": verdict})

    assert (shadow("keep"), shadow("drop")) == (3.0, 2.0)
    assert registry.get_sample_value("agent_sampler_spans_kept_total") == len(sink.spans()) == 5
    live = registry_of(Pipeline(sampler_config(RULES), RecordingSink(), ManualClock()))
    assert live.get_sample_value("agent_sampler_mode", {"mode": "live"}) == 1.0
    assert live.get_sample_value("agent_sampler_shadow_spans_total", {"verdict": "drop"}) == 0


def test_build_info_names_the_version_and_python() -> None:
    registry = registry_of(Pipeline(sampler_config(RULES), RecordingSink(), ManualClock()))
    labels = {"version": metadata.version("agent-tail-sampler"), "python_version": python_version()}
    assert registry.get_sample_value("agent_sampler_build_info", labels) == 1.0


def test_process_platform_and_gc_metrics_are_on_the_registry() -> None:
    """prometheus-client's standard collectors, read at scrape time: what sizing needs."""
    registry = registry_of(Pipeline(sampler_config(RULES), RecordingSink(), ManualClock()))
    assert (registry.get_sample_value("process_resident_memory_bytes") or 0) > 10 << 20
    assert (registry.get_sample_value("process_cpu_seconds_total") or 0) > 0
    assert (registry.get_sample_value("process_open_fds") or 0) > 0
    assert registry.get_sample_value("python_gc_collections_total", {"generation": "0"}) is not None
    info = {"implementation": platform.python_implementation()}
    assert registry.get_sample_value("python_info", {**info, **_python_info_labels()}) == 1.0


def _python_info_labels() -> dict[str, str]:
    major, minor, patch = platform.python_version_tuple()
    return {"major": major, "minor": minor, "patchlevel": patch, "version": python_version()}


def delays(registry: CollectorRegistry) -> tuple[float | None, float | None]:
    """(sessions observed, of which within 2.5 s) of the decision-delay histogram."""
    name = "agent_sampler_decision_delay_seconds"
    return (
        registry.get_sample_value(f"{name}_count"),
        registry.get_sample_value(f"{name}_bucket", {"le": "2.5"}),
    )


def test_decision_delay_is_observed_once_per_session_from_its_first_span() -> None:
    config = sampler_config(RULES)
    clock = ManualClock()
    pipeline = Pipeline(config, RecordingSink(), clock)
    registry = registry_of(pipeline)
    assert delays(registry) == (0.0, 0.0)

    consume(pipeline, simple_request(span("lone", 2, parent=1), span("lone", 1)))
    clock.advance(2.05)  # root_end_grace (2 s) after its root
    pipeline.decide_due()
    assert delays(registry) == (1.0, 1.0)

    consume(pipeline, simple_request(*turn("t1", "c1")))
    clock.advance(30.05)  # decision_wait: dropped, held
    pipeline.decide_due()
    assert delays(registry) == (2.0, 1.0)
    assert registry.get_sample_value("agent_sampler_decision_delay_seconds_sum") == pytest.approx(
        2.05 + 30.05
    )

    consume(pipeline, simple_request(*turn("t2", "c1")))  # reopens c1
    clock.advance(30.05)
    pipeline.decide_due()  # c1 decided again: not a new session
    assert pipeline.buffer.reopened == 1
    assert delays(registry) == (2.0, 1.0)


def test_export_send_durations_are_exposed_as_a_histogram() -> None:
    pipeline = Pipeline(sampler_config(RULES), RecordingSink(), ManualClock())
    stats = ExporterStats()
    exporter: Any = SimpleNamespace(queued_spans=lambda: 0, stats=stats)
    for seconds in (0.003, 0.004, 2.0):
        stats.send_durations.observe(seconds)
    registry = build_registry(Sources(pipeline, exporter, {}))
    name = "agent_sampler_exporter_send_duration_seconds"
    assert registry.get_sample_value(f"{name}_count") == 3.0
    assert registry.get_sample_value(f"{name}_bucket", {"le": "0.005"}) == 2.0
    assert registry.get_sample_value(f"{name}_bucket", {"le": "+Inf"}) == 3.0
    assert registry.get_sample_value(f"{name}_sum") == pytest.approx(2.007)


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
    registry = build_registry(
        Sources(pipeline, exporter, {}, connections=connections, shortage=shortage)
    )
    value = registry.get_sample_value
    assert value("agent_sampler_connections", {"listener": "http"}) == 5
    assert value("agent_sampler_connections", {"listener": "metrics"}) == 1
    closed = "agent_sampler_connections_closed_total"
    assert value(closed, {"listener": "http", "reason": "refused"}) == 1
    assert value(closed, {"listener": "http", "reason": "evicted"}) == 2
    assert value(closed, {"listener": "http", "reason": "header_timeout"}) == 4
    assert value("agent_sampler_accept_failures_total") == 3
