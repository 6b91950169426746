"""Capture, then replay: the same traffic through a live `agent-sampler run --capture` and
through `agent-sampler replay` of what it captured keeps the same sessions and spans, within a
few percent, and each agrees exactly with what it wrote.

Three agents send through the real OpenTelemetry SDK, in batches as applications do: one over
OTLP/gRPC, one over OTLP/HTTP protobuf, one over OTLP/HTTP JSON. 600 conversations in about
8 seconds, with errors, tool loops and a rare tool path among ordinary ones; the budget (20%
of sessions, a 10 s window) keeps a share of the ordinary ones. The capture is shorter than
decision_wait (10 s): replay agrees with live only if it decides on the capture's own
timeline, with a budget that does not hang on its first decisions. Before both, replay kept
45 sessions where live kept 109 in one run (baseline 0 against 64), 172 against 134 in another.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path

import pytest
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
    OTLPSpanExporter as HttpSpanExporter,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Status, StatusCode

from sampler.otlp.json_codec import iter_json_lines, request_to_json
from tests.e2e.harness import LOOPBACK, SamplerProcess, running_sampler, wait_until

pytestmark = pytest.mark.e2e

CONFIG = """
sessions:
  decision_wait: 10s
  open_trace_wait: 12s
  root_end_grace: 200ms
  tick: 50ms
  dropped_hold: 2s
signals:
  rarity: {warmup_sessions: 50, window: 1h}
budget:
  ratio: 0.2
  window: 10s
rules:
  - {name: errors, when: {error: true}, action: keep}
  - {name: tool-loops, when: {tool_cycle: true}, action: keep}
  - {name: rare, when: {rare: {dimensions: [shape]}}, action: keep}
  - {name: baseline, action: budget}
exporter:
  batch_timeout: 20ms
"""

SESSIONS = 600
PACE_S = 0.01
AGENTS = ("planner", "researcher", "writer")
PATHS: Sequence[tuple[tuple[str, ...], float]] = (
    (("search", "fetch"), 0.5),
    (("search", "fetch", "summarize"), 0.3),
    (("lookup",), 0.2),
)
# Sessions and spans kept: replay within this share of live (or 2 sessions, 10 spans).
AGREEMENT = 0.05


class OtlpJsonExporter(SpanExporter):
    """The SDK's spans, encoded as its OTLP exporters do, posted as OTLP/JSON."""

    def __init__(self, port: int) -> None:
        self.url = f"http://{LOOPBACK}:{port}/v1/traces"

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        body = request_to_json(encode_spans(spans)).encode()
        request = urllib.request.Request(
            self.url, data=body, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            ok = response.status == 200
        return SpanExportResult.SUCCESS if ok else SpanExportResult.FAILURE

    def shutdown(self) -> None:
        pass


class Fleet:
    """One tracer provider per agent, each with its own transport, batching as apps do; an
    in-memory copy of everything sent."""

    def __init__(self, sampler: SamplerProcess) -> None:
        self.sent = InMemorySpanExporter()
        exporters: list[SpanExporter] = [
            OTLPSpanExporter(endpoint=f"{LOOPBACK}:{sampler.grpc_port}", insecure=True),
            HttpSpanExporter(endpoint=f"http://{LOOPBACK}:{sampler.http_port}/v1/traces"),
            OtlpJsonExporter(sampler.http_port),
        ]
        self.providers = []
        for agent, exporter in zip(AGENTS, exporters, strict=True):
            provider = TracerProvider(resource=Resource.create({"service.name": agent}))
            provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=100))
            provider.add_span_processor(SimpleSpanProcessor(self.sent))
            self.providers.append(provider)

    def session(self, index: int, rng: random.Random) -> None:
        agent = index % len(AGENTS)
        tracer = self.providers[agent].get_tracer("tests.e2e.capture_replay")
        paths, weights = zip(*PATHS, strict=True)
        tools: list[tuple[str, str]] = [
            (tool, f"{tool} #{index}.{n}") for n, tool in enumerate(rng.choices(paths, weights)[0])
        ]
        roll = rng.random()
        if roll < 0.02:  # a tool loop: the same call three times
            tools = [("search", "order 1234")] * 3
        elif roll < 0.03:  # a path never taken before
            tools = [("refund", "1234"), ("escalate", "1234")]
        root_attrs = {
            "gen_ai.operation.name": "invoke_agent",
            "gen_ai.agent.name": AGENTS[agent],
            "gen_ai.conversation.id": f"conv-{index}",
        }
        with tracer.start_as_current_span("invoke_agent", attributes=root_attrs):
            for tool, arguments in tools:
                # a model call decides each tool call, as an agent makes them (calls with no
                # model call between them are one decision, a fan-out: no loop)
                with tracer.start_as_current_span(
                    "chat", attributes={"gen_ai.operation.name": "chat"}
                ):
                    pass
                attrs = {
                    "gen_ai.operation.name": "execute_tool",
                    "gen_ai.tool.name": tool,
                    "gen_ai.tool.call.arguments": json.dumps({"q": arguments}),
                }
                with tracer.start_as_current_span(f"execute_tool {tool}", attributes=attrs):
                    pass
            with tracer.start_as_current_span(
                "chat", attributes={"gen_ai.operation.name": "chat"}
            ) as chat:
                if rng.random() < 0.04:
                    chat.set_status(Status(StatusCode.ERROR, "model call failed"))

    def close(self) -> None:
        for provider in self.providers:
            provider.force_flush()
            provider.shutdown()


def spans_in(path: Path) -> list[tuple[str, str]]:
    """(trace id, span id) of every span in a file of OTLP/JSON lines."""
    return [
        (span.trace_id.hex(), span.span_id.hex())
        for request in iter_json_lines(path)
        for resource in request.resource_spans
        for scope in resource.scope_spans
        for span in scope.spans
    ]


def kept_by_rule(path: Path) -> dict[str, set[str]]:
    """Kept traces (one per conversation here) by the rule that kept them."""
    out: dict[str, set[str]] = {}
    for request in iter_json_lines(path):
        for resource in request.resource_spans:
            for scope in resource.scope_spans:
                for span in scope.spans:
                    attrs = {kv.key: kv.value for kv in span.attributes}
                    rule = attrs["agent_sampler.rule"].string_value
                    out.setdefault(rule, set()).add(span.trace_id.hex())
    return out


def agree(replayed: float, live: float, slack: float) -> bool:
    return abs(replayed - live) <= max(slack, AGREEMENT * live)


@pytest.mark.timeout(120)
def test_a_replay_of_the_capture_keeps_what_the_live_run_kept(tmp_path: Path) -> None:
    capture, downstream = tmp_path / "capture.jsonl", tmp_path / "kept-live.jsonl"
    rng = random.Random(5)
    with running_sampler(
        CONFIG, tmp_path, f"file://{downstream}", args=("--capture", str(capture))
    ) as sampler:
        fleet = Fleet(sampler)
        for index in range(SESSIONS):
            fleet.session(index, rng)
            time.sleep(PACE_S)
        fleet.close()
        sent = {
            (format(s.context.trace_id, "032x"), format(s.context.span_id, "016x"))
            for s in fleet.sent.get_finished_spans()
            if s.context is not None
        }

        def settled() -> bool:  # every session decided and every hold over, as replay ends
            return (
                sampler.metric("agent_sampler_spans_accepted") == len(sent)
                and sampler.metric("agent_sampler_buffer_spans") == 0
                and sampler.metric("agent_sampler_held_spans") == 0
            )

        wait_until(settled, 30, "every session decided, every hold over")
        live_sessions = sampler.metric("agent_sampler_sessions_decided", verdict="keep")
        live_spans = sampler.metric("agent_sampler_spans_kept")
        wait_until(
            lambda: sampler.metric("agent_sampler_exporter_spans_sent") == live_spans,
            15,
            "kept spans written downstream",
        )
        assert sampler.metric("agent_sampler_capture_requests", outcome="written") > 0
        assert sampler.metric("agent_sampler_capture_requests") == sampler.metric(
            "agent_sampler_capture_requests", outcome="written"
        )  # nothing left out
        assert sampler.terminate() == 0

    # the capture holds everything that was sent, each span once
    captured = spans_in(capture)
    assert len(captured) == len(set(captured)) and set(captured) == sent

    # live: its counts are what reached the downstream
    live = kept_by_rule(downstream)
    assert live_spans == len(spans_in(downstream))
    assert live_sessions == sum(len(traces) for traces in live.values())

    # replay: its summary is what it wrote
    output = tmp_path / "kept-replay.jsonl"
    config = tmp_path / "sampler.yaml"
    script = Path(sys.executable).with_name("agent-sampler")
    done = subprocess.run(
        [str(script), "replay", "--config", str(config), "--output", str(output), "--json"]
        + [str(capture)],
        capture_output=True,
        check=True,
        timeout=60,
    )
    summary = json.loads(done.stdout)
    replayed = kept_by_rule(output)
    replay_sessions = sum(row["sessions_kept"] for row in summary["rules"])
    replay_spans = summary["spans_kept"]
    assert replay_spans == len(spans_in(output))
    assert replay_sessions == sum(len(traces) for traces in replayed.values())

    # and the two agree: the same must-keeps exactly, the budget's share within noise
    figures = {
        rule: (len(live.get(rule, ())), len(replayed.get(rule, ())))
        for rule in ("errors", "tool-loops", "rare", "baseline")
    }
    print(
        f"\nkept sessions live {live_sessions:.0f} replay {replay_sessions}; "
        f"spans live {live_spans:.0f} replay {replay_spans}; by rule (live, replay) {figures}"
    )
    for rule in ("errors", "tool-loops"):
        assert replayed.get(rule) == live.get(rule), rule
    assert figures["tool-loops"][0] >= 2 and figures["baseline"][0] >= 10
    assert agree(replay_sessions, live_sessions, 2), figures
    assert agree(replay_spans, live_spans, 10), figures
    baseline_both = replayed.get("baseline", set()) & live.get("baseline", set())
    assert len(baseline_both) >= 0.8 * figures["baseline"][0], figures
