"""Agent signals end to end: a tool loop and a rare tool path, sent by the real SDK through the
live receiver among ordinary traffic, are kept whole and say why; ordinary sessions mostly are
not. The rarity model needs recent traffic to compare with, so the ordinary sessions go first
and warm it up (warmup_sessions: 50) before the interesting ones arrive."""

from __future__ import annotations

import json
import random
from collections import defaultdict
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tests.e2e.harness import (
    LOOPBACK,
    GrpcSink,
    Received,
    SamplerProcess,
    running_sampler,
    wait_until,
)

pytestmark = pytest.mark.e2e

# The default rules (config/sampler.yaml) with timings small enough for a test.
CONFIG = """
sessions:
  decision_wait: 1s
  open_trace_wait: 3s
  root_end_grace: 200ms
  tick: 50ms
signals:
  rarity: {warmup_sessions: 50, window: 5m}
budget:
  ratio: 0.05
rules:
  - name: errors
    when: {error: true}
    action: keep
  - name: tool-loops
    when: {tool_cycle: true}
    action: keep
  - name: rare
    when: {rare: true}
    action: keep
  - name: baseline
    action: budget
exporter:
  batch_timeout: 20ms
  retry: {initial_interval: 100ms, max_interval: 500ms, max_elapsed_time: 30s}
"""

ORDINARY_SESSIONS = 200
# The planner's common tool paths, with their weights; ordinary arguments always differ.
COMMON_PATHS: Sequence[tuple[tuple[str, ...], float]] = (
    (("search", "fetch"), 0.5),
    (("search", "fetch", "summarize"), 0.3),
    (("lookup",), 0.2),
)
RARE_PATH = ("refund", "escalate")  # never taken by the planner before
LOOP_REPEATS = 5
# Ordinary keeps: the 5% budget, plus the far-tail durations that `rare` keeps (about 1% of
# sessions once warm), plus slack for the budget's estimate on a short run.
MAX_ORDINARY_KEPT_SHARE = 0.15

Call = tuple[str, dict[str, object]]  # tool name, arguments


class Agent:
    """The real SDK: one OTLP/gRPC export per span (children reach the sampler before their
    root, as from a live agent), and an in-memory copy of everything sent, to check that kept
    sessions arrive whole."""

    def __init__(self, grpc_port: int) -> None:
        self.sent = InMemorySpanExporter()
        self.provider = TracerProvider(resource=Resource.create({"service.name": "agent-app"}))
        otlp = OTLPSpanExporter(endpoint=f"{LOOPBACK}:{grpc_port}", insecure=True)
        self.provider.add_span_processor(SimpleSpanProcessor(otlp))
        self.provider.add_span_processor(SimpleSpanProcessor(self.sent))
        self.tracer = self.provider.get_tracer("tests.e2e.agent_signals")

    def genai_session(self, conversation: str, calls: Sequence[Call]) -> str:
        """One GenAI-convention turn, as an agent makes it: a model call decides each tool call,
        and a last one answers (calls with no model call between them were made on one model
        decision, a fan-out, and are no loop); the conversation id is on the root only."""
        root_attrs = {
            "gen_ai.operation.name": "invoke_agent",
            "gen_ai.agent.name": "planner",
            "gen_ai.conversation.id": conversation,
        }
        with self.tracer.start_as_current_span("invoke_agent planner", attributes=root_attrs) as r:
            for tool, arguments in calls:
                self._model_call("chat", {"gen_ai.operation.name": "chat"})  # decides the call
                attrs = {
                    "gen_ai.operation.name": "execute_tool",
                    "gen_ai.tool.name": tool,
                    "gen_ai.tool.call.arguments": json.dumps(arguments),
                }
                with self.tracer.start_as_current_span(f"execute_tool {tool}", attributes=attrs):
                    pass
            with self.tracer.start_as_current_span(
                "chat", attributes={"gen_ai.operation.name": "chat"}
            ):
                pass
            return format(r.get_span_context().trace_id, "032x")

    def openinference_session(self, session_id: str, calls: Sequence[Call]) -> str:
        """One OpenInference-convention turn: span kinds, tool.name, arguments in input.value; a
        model call before each tool call and a last one, as in ``genai_session``."""
        root_attrs = {"openinference.span.kind": "AGENT", "session.id": session_id}
        with self.tracer.start_as_current_span("researcher", attributes=root_attrs) as r:
            for tool, arguments in calls:
                self._model_call("llm", {"openinference.span.kind": "LLM"})  # decides the call
                attrs = {
                    "openinference.span.kind": "TOOL",
                    "tool.name": tool,
                    "input.value": json.dumps(arguments),
                }
                with self.tracer.start_as_current_span(tool, attributes=attrs):
                    pass
            with self.tracer.start_as_current_span(
                "llm", attributes={"openinference.span.kind": "LLM"}
            ):
                pass
            return format(r.get_span_context().trace_id, "032x")

    def _model_call(self, name: str, attributes: dict[str, str]) -> None:
        with self.tracer.start_as_current_span(name, attributes=attributes):
            pass

    def span_ids_by_trace(self) -> dict[str, set[str]]:
        out: dict[str, set[str]] = defaultdict(set)
        for span in self.sent.get_finished_spans():
            context = span.get_span_context()
            assert context is not None
            out[format(context.trace_id, "032x")].add(format(context.span_id, "016x"))
        return out

    def close(self) -> None:
        self.provider.shutdown()


@pytest.fixture
def sink() -> Iterator[GrpcSink]:
    server = GrpcSink().start()
    yield server
    server.stop()


def ordinary_calls(rng: random.Random, index: int) -> list[Call]:
    paths, weights = zip(*COMMON_PATHS, strict=True)
    path = rng.choices(paths, weights)[0]
    return [(tool, {"query": f"{tool} #{index}.{step}"}) for step, tool in enumerate(path)]


def decided(sampler: SamplerProcess, **labels: str) -> float:
    return sampler.metric("agent_sampler_sessions_decided", **labels)


def session_of(spans: list[Received]) -> tuple[str, float, list[str]]:
    """The one (rule, adjusted count, signals) every span of a kept session carries."""
    annotations = {
        (
            s.attributes["agent_sampler.rule"],
            s.attributes["agent_sampler.adjusted_count"],
            tuple(s.attributes.get("agent_sampler.signals", [])),  # type: ignore[call-overload]
        )
        for s in spans
    }
    assert len(annotations) == 1, annotations
    rule, adjusted, signals = annotations.pop()
    return str(rule), float(adjusted), list(signals)  # type: ignore[arg-type]


@pytest.mark.timeout(30)
def test_loops_and_rare_paths_are_kept_whole_and_ordinary_sessions_mostly_not(
    tmp_path: Path, sink: GrpcSink
) -> None:
    rng = random.Random(7)
    with running_sampler(CONFIG, tmp_path, sink.url) as sampler:
        agent = Agent(sampler.grpc_port)
        ordinary = {
            agent.genai_session(f"conv-ordinary-{i}", ordinary_calls(rng, i))
            for i in range(ORDINARY_SESSIONS)
        }
        same_call: Call = ("search", {"query": "order 1234 status"})
        genai_loop = agent.genai_session("conv-loop", [same_call] * LOOP_REPEATS)
        rare = agent.genai_session(
            "conv-rare", [(tool, {"order": "1234", "step": tool}) for tool in RARE_PATH]
        )
        oi_call: Call = ("web_search", {"q": "weather in Paris"})
        oi_loop = agent.openinference_session("oi-loop", [oi_call] * LOOP_REPEATS)
        agent.close()
        total = ORDINARY_SESSIONS + 3

        wait_until(
            lambda: decided(sampler) == total,
            15,
            f"{total} sessions decided",
        )
        kept_spans = sampler.metric("agent_sampler_spans_decided", verdict="keep")
        wait_until(lambda: len(sink.spans()) == kept_spans, 10, "kept spans downstream")
        assert decided(sampler) == total  # nothing decided twice

        sent = agent.span_ids_by_trace()
        received: dict[str, list[Received]] = defaultdict(list)
        for span in sink.spans():
            received[span.trace_id].append(span)
        for trace_id, spans in received.items():  # every kept session whole, no duplicates
            assert sorted(s.span_id for s in spans) == sorted(sent[trace_id]), trace_id

        for loop in (genai_loop, oi_loop):
            assert loop in received, "a tool loop was dropped"
            rule, adjusted, signals = session_of(received[loop])
            assert (rule, adjusted) == ("tool-loops", 1.0)
            assert "tool_cycle" in signals
        assert rare in received, "the rare path was dropped"
        rule, adjusted, signals = session_of(received[rare])
        assert (rule, adjusted) == ("rare", 1.0)
        assert "rare_shape" in signals and "tool_cycle" not in signals

        kept_ordinary = {t: session_of(received[t]) for t in ordinary & received.keys()}
        assert len(kept_ordinary) <= MAX_ORDINARY_KEPT_SHARE * ORDINARY_SESSIONS, kept_ordinary
        for rule, adjusted, signals in kept_ordinary.values():  # no false loops or rare shapes
            assert rule in ("baseline", "rare")
            assert adjusted > 1.0 if rule == "baseline" else adjusted == 1.0  # 1/p of the budget
            assert "tool_cycle" not in signals and "rare_shape" not in signals
        baseline = sum(rule == "baseline" for rule, _, _ in kept_ordinary.values())
        assert decided(sampler, rule="baseline", verdict="keep") == baseline
        assert decided(sampler, rule="tool-loops") == 2
        assert sampler.terminate() == 0


COLD_START_CONFIG = """
sessions:
  decision_wait: 500ms
  open_trace_wait: 3s
  root_end_grace: 200ms
  tick: 50ms
  dropped_hold: 3s
signals:
  rarity: {warmup_sessions: 20, window: 5m}
rules:
  - name: tool-loops
    when: {tool_cycle: true}
    action: keep
  - name: rare
    when: {rare: true}
    action: keep
  - name: rest
    action: drop
exporter:
  batch_timeout: 20ms
  retry: {initial_interval: 100ms, max_interval: 500ms, max_elapsed_time: 30s}
"""


@pytest.mark.timeout(40)
def test_kept_counts_add_up_to_what_the_downstream_got_with_a_second_look_and_late_spans(
    tmp_path: Path, sink: GrpcSink
) -> None:
    """The first session arrives before the rarity model is warm: dropped, held, and kept on
    its second look once the ordinary traffic has shown its path is rare. A span arriving
    after that keep follows it. Every kept span is counted once, and the counts agree with
    what the downstream received."""
    rng = random.Random(11)
    with running_sampler(COLD_START_CONFIG, tmp_path, sink.url) as sampler:
        agent = Agent(sampler.grpc_port)
        rare = agent.genai_session(
            "conv-rare", [(tool, {"order": "1234", "step": tool}) for tool in RARE_PATH]
        )
        wait_until(lambda: decided(sampler) == 1, 10, "the cold session decided")
        assert decided(sampler, verdict="drop") == 1
        for i in range(60):  # its agent's usual paths: 50 warm its group
            agent.genai_session(f"conv-{i}", ordinary_calls(rng, i))
        wait_until(
            lambda: sampler.metric("agent_sampler_second_look_kept_sessions") == 1,
            15,
            "the second look keeping the rare session",
        )
        wait_until(lambda: rare in {s.trace_id for s in sink.spans()}, 10, "the rare session")
        late = trace.NonRecordingSpan(
            trace.SpanContext(
                int(rare, 16), 0x1234, is_remote=True, trace_flags=trace.TraceFlags(1)
            )
        )
        with agent.tracer.start_as_current_span("late", context=trace.set_span_in_context(late)):
            pass
        wait_until(
            lambda: sampler.metric("agent_sampler_late_spans", verdict="keep") == 1,
            10,
            "the late span",
        )
        agent.close()
        kept = sampler.metric("agent_sampler_spans_kept")
        wait_until(lambda: len(sink.spans()) == kept, 10, "kept spans downstream")

        # (an ordinary session in its agent's far tail may be kept by `rare` too, under load)
        assert decided(sampler, rule="rare", verdict="keep") >= 1
        assert kept == sampler.metric(
            "agent_sampler_spans_decided", verdict="keep"
        ) + sampler.metric("agent_sampler_late_spans", verdict="keep")
        assert kept == sampler.metric("agent_sampler_exporter_spans_sent")
        rare_spans = [s for s in sink.spans() if s.trace_id == rare]
        # root, a model call and a tool per step, the answer, and the late span
        assert len(rare_spans) == 2 * len(RARE_PATH) + 3
        assert sampler.terminate() == 0
