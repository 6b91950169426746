"""The third traffic profile (``benchmarks/quality/conversations.py``): deterministic, labelled
truthfully, and shaped as issue 12 describes it (every turn repeats its agent's workflow, 1 to
12 turns, arguments recorded three ways, the session key on root spans or on every span).

As for the default generator, the ground truth must be visible in the spans of the sessions
that carry a label and in no other, or the benchmark would score the sampler against labels it
could not see.
"""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict
from dataclasses import dataclass, field

import pytest
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from benchmarks.quality import conversations
from benchmarks.quality.conversations import AGENTS, RATES
from benchmarks.quality.generator import (
    ERROR_EXCEPTION_ONLY,
    ERROR_STATUS,
    LLM_REFUSAL,
    ORDINARY,
    RARE_LABELS,
    RARE_PATH,
    TAIL_LATENCY,
    TOOL_ERROR,
    Corpus,
    TrafficSpec,
)
from tests.reference.legacy.spans import any_value

SPEC = TrafficSpec(seed=5, sessions=500)
KEYS = ("gen_ai.conversation.id", "session.id")


@pytest.fixture(scope="module")
def corpus() -> Corpus:
    return conversations.generate(SPEC)


def all_spans(corpus: Corpus) -> list[Span]:
    return [
        span
        for request in corpus.requests
        for resource_spans in request.resource_spans
        for scope_spans in resource_spans.scope_spans
        for span in scope_spans.spans
    ]


@dataclass
class Seen:
    tools: list[tuple[bytes, int, str]] = field(default_factory=list)  # trace, start, tool
    arguments: set[str] = field(default_factory=set)  # how they were recorded
    model_seconds: list[float] = field(default_factory=list)
    tool_seconds: list[float] = field(default_factory=list)
    status_error_outside_tools: bool = False
    exception_with_unset_status: bool = False
    tool_error_type: bool = False
    content_filter: bool = False
    keyed_spans: int = 0
    spans: int = 0  # the framework's


def observe(corpus: Corpus) -> dict[str, Seen]:
    seen: dict[str, Seen] = defaultdict(Seen)
    for span in all_spans(corpus):
        s = seen[corpus.trace_sessions[span.trace_id]]
        attrs = {kv.key: any_value(kv.value) for kv in span.attributes}
        kind = attrs.get("gen_ai.operation.name") or attrs.get("openinference.span.kind")
        seconds = (span.end_time_unix_nano - span.start_time_unix_nano) / 1e9
        if kind is not None:  # the framework's spans (not the HTTP client's)
            s.spans += 1
            s.keyed_spans += any(key in attrs for key in KEYS)
        is_tool = kind in ("execute_tool", "TOOL")
        if is_tool:
            tool = attrs.get("gen_ai.tool.name") or attrs.get("tool.name")
            s.tools.append((span.trace_id, span.start_time_unix_nano, str(tool)))
            s.tool_error_type |= "error.type" in attrs
            s.tool_seconds.append(seconds)
            if "gen_ai.tool.call.arguments" in attrs:
                s.arguments.add("gen_ai.tool.call.arguments")
            elif "input.value" in attrs:
                s.arguments.add("input.value")
            else:
                s.arguments.add("none")
        if kind in ("chat", "LLM") and not span.status.code and not span.events:
            s.model_seconds.append(seconds)
        if span.status.code == Status.STATUS_CODE_ERROR and not is_tool:
            s.status_error_outside_tools = True
        if any(event.name == "exception" for event in span.events) and not span.status.code:
            s.exception_with_unset_status = True
        if attrs.get("gen_ai.response.finish_reasons") == ("content_filter",):
            s.content_filter = True
    return seen


def test_the_same_seed_gives_the_same_bytes_and_labels() -> None:
    spec = TrafficSpec(seed=3, sessions=40)
    first, second = conversations.generate(spec), conversations.generate(spec)
    assert [r.SerializeToString() for r in first.requests] == [
        r.SerializeToString() for r in second.requests
    ]
    assert first.labels == second.labels
    assert conversations.generate(TrafficSpec(seed=4, sessions=40)).labels != first.labels


def test_each_rare_population_has_its_rate(corpus: Corpus) -> None:
    counts = corpus.label_counts()
    for label in RARE_LABELS:
        assert counts[label] == round(RATES[label] * SPEC.sessions), label
    assert counts[ORDINARY] == sum(labels == {ORDINARY} for labels in corpus.labels.values())


def test_labels_are_visible_in_the_spans_of_their_sessions_and_nowhere_else(
    corpus: Corpus,
) -> None:
    seen = observe(corpus)
    agents = {agent.name: agent for agent in AGENTS}
    for key, labels in corpus.labels.items():
        s, agent = seen[key], agents[corpus.session_agents[key]]
        assert s.status_error_outside_tools == (ERROR_STATUS in labels), key
        assert s.exception_with_unset_status == (ERROR_EXCEPTION_ONLY in labels), key
        assert s.tool_error_type == (TOOL_ERROR in labels), key
        assert s.content_filter == (LLM_REFUSAL in labels), key
        rare_tool = any(tool in agent.rare_tools for _, _, tool in s.tools)
        assert rare_tool == (RARE_PATH in labels), key
        slow_model = statistics.median(s.model_seconds) > agent.llm_seconds[1]
        slow_tools = statistics.median(s.tool_seconds) > agent.tool_seconds[1]
        assert (slow_model or slow_tools) == (TAIL_LATENCY in labels), key


def test_every_turn_repeats_its_agents_workflow(corpus: Corpus) -> None:
    """In an ordinary conversation every turn starts the way its agent's workflow starts, and
    conversations run from 1 to 12 turns."""
    first_tools = {
        "pr-reviewer": {"fetch_diff"},
        "helpdesk": {"find_customer"},
        "analyst": {"list_tables", "submit_query"},
        "trip-planner": {"search_flights"},
        "oncall": {"get_alerts"},
    }
    turns: Counter[int] = Counter()
    for key, s in observe(corpus).items():
        by_trace: dict[bytes, list[tuple[int, str]]] = defaultdict(list)
        for trace, start, tool in s.tools:
            by_trace[trace].append((start, tool))
        turns[len(by_trace)] += 1
        if corpus.labels[key] == {ORDINARY}:
            for calls in by_trace.values():
                assert min(calls)[1] in first_tools[corpus.session_agents[key]], key
    assert min(turns) == 1 and max(turns) >= 10 and max(turns) <= 12 + 5  # + retried turns


def test_arguments_and_the_session_key_are_recorded_as_instrumentations_do(
    corpus: Corpus,
) -> None:
    seen = observe(corpus).values()
    assert Counter(frozenset(s.arguments) for s in seen).keys() >= {
        frozenset({"gen_ai.tool.call.arguments"}),
        frozenset({"input.value"}),
        frozenset({"none"}),
    }
    on_every_span = sum(s.keyed_spans == s.spans for s in seen)
    # the rest have it on their root spans only, one per turn
    assert 0.2 * len(seen) < on_every_span < 0.8 * len(seen)
