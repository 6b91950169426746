"""Rolling a sampler out, end to end: shadow mode forwards everything, annotated with the
verdict it would have had; SIGHUP (or a watched file) reloads the rules under the buffered
sessions, and a bad file changes nothing. A real `agent-sampler run`, the real OpenTelemetry
SDK exporter as client, a real OTLP/gRPC sink downstream."""

from __future__ import annotations

import hashlib
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.harness import GrpcSink, SamplerProcess, running_sampler, wait_until
from tests.e2e.test_live_sampler import SPANS_PER_TURN, decided, grpc_client

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


# --- reloading the config -------------------------------------------------------------------

LIVE = """
sessions:
  decision_wait: {wait}
  root_end_grace: 300ms
  dropped_hold: 0s
  tick: 50ms
rules:
  - name: errors
    when: {{error: true}}
    action: keep
{rules}
exporter:
  batch_timeout: 20ms
  retry: {{initial_interval: 100ms, max_interval: 500ms, max_elapsed_time: 30s}}
"""
DROP_THE_REST = """\
  - name: rest
    action: drop
"""
KEEP_GOLD_AND_THE_REST = """\
  - name: gold
    when: {attribute: {key: app.tier, equals: gold}}
    action: keep
  - name: rest
    action: keep
"""


def live(rules: str = DROP_THE_REST, wait: str = "1s") -> str:
    return LIVE.format(wait=wait, rules=rules)


def reloads(sampler: SamplerProcess, outcome: str) -> float:
    return sampler.metric("agent_sampler_config_reloads", outcome=outcome)


def test_sighup_with_a_good_file_changes_verdicts_and_keeps_the_buffered_sessions(
    tmp_path: Path, sink: GrpcSink
) -> None:
    with running_sampler(live(wait="3s"), tmp_path, sink.url) as sampler:
        client = grpc_client(sampler)
        before = client.turn("conv-before")  # decided under the old rules: dropped
        wait_until(lambda: decided(sampler) == 1, 15, "the first conversation decided")
        buffered = client.turn("conv-buffered")  # still buffered at the reload (3 s wait)
        new_text = live(KEEP_GOLD_AND_THE_REST, wait="3s")
        sampler.config_path.write_text(new_text)
        assert sampler.proc is not None
        sampler.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: reloads(sampler, "success") == 1, 10, "the reload")
        assert sampler.metric("agent_sampler_buffer_sessions") == 1  # it survived the reload
        assert decided(sampler) == 1
        gold = client.turn("conv-gold", tier="gold")  # a new span test sees its spans
        client.close()
        wait_until(lambda: len(sink.spans()) == 2 * SPANS_PER_TURN, 15, "both kept downstream")
        rule = {s.trace_id: s.attributes["agent_sampler.rule"] for s in sink.spans()}
        assert rule == {buffered: "rest", gold: "gold"}
        assert before not in rule
        assert sampler.metric("agent_sampler_config_generation") == 2
        digest = hashlib.sha256(new_text.encode()).hexdigest()[:16]
        assert sampler.metric("agent_sampler_config_info", hash=digest) == 1
        assert "config reloaded (SIGHUP)" in sampler.logs()
        assert sampler.terminate() == 0


def test_sighup_with_a_bad_file_keeps_the_old_rules_and_counts_the_failure(
    tmp_path: Path, sink: GrpcSink
) -> None:
    with running_sampler(live(), tmp_path, sink.url) as sampler:
        bad = live(KEEP_GOLD_AND_THE_REST).replace("{error: true}", "{eror: true}")
        bad = bad.replace("equals: gold}", "equal: gold}")
        sampler.config_path.write_text(bad)
        assert sampler.proc is not None
        sampler.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: reloads(sampler, "failure") == 1, 10, "the failed reload")
        client = grpc_client(sampler)
        kept = client.turn("conv-err", error=True)
        client.turn("conv-gold", tier="gold")  # the bad file would keep it: it is dropped
        client.close()
        wait_until(lambda: decided(sampler) == 2, 15, "both conversations decided")
        wait_until(lambda: len(sink.spans()) == SPANS_PER_TURN, 10, "the error kept")
        assert {s.trace_id for s in sink.spans()} == {kept}
        assert sampler.metric("agent_sampler_config_generation") == 1
        assert sampler.metric("agent_sampler_config_last_reload_successful") == 0
        assert reloads(sampler, "success") == 0
        path = sampler.config_path
        check = subprocess.run(
            [sys.executable, "-m", "sampler", "check-config", str(path)],
            capture_output=True,
            text=True,
            check=False,
        )
        problems = check.stderr.strip().splitlines()
        assert len(problems) >= 2 and all(line.startswith(f"{path}:") for line in problems)
        logs = sampler.logs()
        assert f"config reload (SIGHUP) failed with {len(problems)} problem(s)" in logs
        for line in problems:  # every problem logged as check-config prints it
            assert f"ERROR sampler.reload: {line}\n" in logs
        assert sampler.terminate() == 0


def test_watch_config_reloads_a_changed_file_and_names_what_needs_a_restart(
    tmp_path: Path, sink: GrpcSink
) -> None:
    with running_sampler(live(), tmp_path, sink.url, args=("--watch-config",)) as sampler:
        # flags win over the file (--listen, --metrics-listen...): the tick is the file's
        text = live(KEEP_GOLD_AND_THE_REST).replace("tick: 50ms", "tick: 20ms")
        sampler.config_path.write_text(text)
        wait_until(lambda: reloads(sampler, "success") == 1, 10, "the reload on change")
        logs = sampler.logs()
        assert "config reloaded" in logs and "changed: rules" in logs
        assert "sessions.tick cannot change without a restart" in logs
        assert sampler.metric("agent_sampler_config_restart_pending") == 1
        client = grpc_client(sampler)
        plain = client.turn("conv-plain")
        client.close()
        wait_until(lambda: len(sink.spans()) == SPANS_PER_TURN, 15, "kept by the new rest")
        assert {s.trace_id for s in sink.spans()} == {plain}
        assert sampler.terminate() == 0
