"""Rolling a sampler out, end to end: shadow mode forwards everything, annotated with the
verdict it would have had. A real `agent-sampler run`, the real OpenTelemetry SDK exporter as
client, a real OTLP/gRPC sink downstream."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.harness import GrpcSink, running_sampler, wait_until
from tests.e2e.test_live_sampler import SPANS_PER_TURN, grpc_client

pytestmark = pytest.mark.e2e

SHADOW = """
mode: shadow
sessions:
  decision_wait: 1s
  root_end_grace: 300ms
  dropped_hold: 500ms
  tick: 50ms
rules:
  - name: errors
    when: {error: true}
    action: keep
  - name: vip
    when: {attribute: {key: app.tier, equals: vip}}
    action: {probability: 0.5}
  - name: rest
    action: drop
exporter:
  batch_timeout: 20ms
  retry: {initial_interval: 100ms, max_interval: 500ms, max_elapsed_time: 30s}
"""


@pytest.fixture
def sink() -> Iterator[GrpcSink]:
    server = GrpcSink().start()
    yield server
    server.stop()


def test_shadow_mode_forwards_every_span_annotated_with_its_would_be_verdict(
    tmp_path: Path, sink: GrpcSink
) -> None:
    with running_sampler(SHADOW, tmp_path, sink.url) as sampler:
        client = grpc_client(sampler)
        failing = client.turn("conv-err", error=True)
        plain = {client.turn(f"conv-ok-{i}") for i in range(2)}
        vip = {client.turn(f"conv-vip-{i}", tier="vip") for i in range(6)}
        client.close()
        total = 9 * SPANS_PER_TURN
        # dropped sessions go out when their hold ends (cold model: up to three looks)
        wait_until(lambda: len(sink.spans()) >= total, 20, "every span downstream")
        spans = sink.spans()
        assert Counter((s.trace_id, s.span_id) for s in spans).most_common(1)[0][1] == 1
        verdict = {s.trace_id: s.attributes["agent_sampler.verdict"] for s in spans}
        assert len(spans) == total and len(verdict) == 9
        for s in spans:  # one verdict per session, on all of its spans
            assert s.attributes["agent_sampler.verdict"] == verdict[s.trace_id]
        rule = {s.trace_id: s.attributes["agent_sampler.rule"] for s in spans}
        assert (rule[failing], verdict[failing]) == ("errors", "keep")
        assert {(rule[t], verdict[t]) for t in plain} == {("rest", "drop")}
        assert {rule[t] for t in vip} == {"vip"}
        for s in spans:
            has_count = "agent_sampler.adjusted_count" in s.attributes
            assert has_count == (s.attributes["agent_sampler.verdict"] == "keep")
        # nothing was sampled: no tracestate threshold on any span, kept or not
        with sink.lock:
            states = [
                span.trace_state
                for request in sink.requests
                for rs in request.resource_spans
                for ss in rs.scope_spans
                for span in ss.spans
            ]
        assert not [state for state in states if "th:" in state]

        would_keep = sum(1 for s in spans if s.attributes["agent_sampler.verdict"] == "keep")
        assert sampler.metric("agent_sampler_mode", mode="shadow") == 1
        assert sampler.metric("agent_sampler_mode", mode="live") == 0
        assert sampler.metric("agent_sampler_shadow_spans", verdict="keep") == would_keep
        assert sampler.metric("agent_sampler_shadow_spans", verdict="drop") == total - would_keep
        assert sampler.metric("agent_sampler_spans_kept") == total
        decided = sampler.metric("agent_sampler_spans_decided", verdict="keep")
        assert decided == would_keep  # the would-be decisions, as live mode counts them
        assert sampler.terminate() == 0
