"""The quality benchmark's traffic generator: deterministic, labelled truthfully, shaped like a
collector's output (session key on root spans only, spans in end order, both conventions).

The ground-truth test is the important one: every label must be visible in the spans of the
sessions that carry it, and in no other session, or the benchmark would score the sampler
against labels it could not possibly see.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from benchmarks.quality.generator import (
    ERROR_EXCEPTION_ONLY,
    ERROR_STATUS,
    GENAI,
    LLM_REFUSAL,
    OPENINFERENCE,
    ORDINARY,
    RARE_LABELS,
    RARE_PATH,
    SESSION_KEY_ATTRIBUTES,
    TAIL_LATENCY,
    TOOL_ERROR,
    TOOL_LOOP,
    Corpus,
    TrafficSpec,
    generate,
)
from sampler.otlp.json_codec import request_from_json
from tests.reference.legacy.spans import any_value

SPEC = TrafficSpec(seed=7, sessions=400)


@pytest.fixture(scope="module")
def corpus() -> Corpus:
    return generate(SPEC)


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
    """What a reader of the spans can observe about one session."""

    convention: str = ""
    agent: str = ""
    calls: list[tuple[int, str, str]] = field(default_factory=list)  # start, tool, arguments
    llm_seconds: list[float] = field(default_factory=list)
    status_error_outside_tools: bool = False
    exception_with_unset_status: bool = False
    tool_error_type: bool = False
    content_filter: bool = False

    @property
    def tools(self) -> list[str]:
        return [tool for _, tool, _ in sorted(self.calls)]


def observe(corpus: Corpus) -> dict[str, Seen]:
    seen: dict[str, Seen] = defaultdict(Seen)
    for span in all_spans(corpus):
        s = seen[corpus.trace_sessions[span.trace_id]]
        attrs = {kv.key: any_value(kv.value) for kv in span.attributes}
        operation = attrs.get("gen_ai.operation.name") or attrs.get("openinference.span.kind")
        if operation in ("invoke_agent", "AGENT"):
            s.convention = GENAI if operation == "invoke_agent" else OPENINFERENCE
            s.agent = str(attrs.get("gen_ai.agent.name") or attrs.get("agent.name"))
        is_tool = operation in ("execute_tool", "TOOL")
        if is_tool:
            tool = attrs.get("gen_ai.tool.name") or attrs.get("tool.name")
            arguments = attrs.get("gen_ai.tool.call.arguments") or attrs.get("input.value") or ""
            s.calls.append((span.start_time_unix_nano, str(tool), str(arguments)))
            s.tool_error_type |= "error.type" in attrs
        if operation in ("chat", "LLM") and not span.events and not span.status.code:
            s.llm_seconds.append((span.end_time_unix_nano - span.start_time_unix_nano) / 1e9)
        if span.status.code == Status.STATUS_CODE_ERROR and not is_tool:
            s.status_error_outside_tools = True
        if any(event.name == "exception" for event in span.events) and not span.status.code:
            s.exception_with_unset_status = True
        if attrs.get("gen_ai.response.finish_reasons") == ("content_filter",):
            s.content_filter = True
    return seen


def loops(tools: list[str], calls: list[tuple[int, str, str]]) -> bool:
    ordered = [(tool, arguments) for _, tool, arguments in sorted(calls)]
    run = longest_same_call = longest_same_tool = 1
    same_tool = 1
    for previous, current in zip(ordered, ordered[1:], strict=False):
        run = run + 1 if current == previous and current[1] else 1
        same_tool = same_tool + 1 if current[0] == previous[0] else 1
        longest_same_call = max(longest_same_call, run)
        longest_same_tool = max(longest_same_tool, same_tool)
    ping_pong = any(
        tools[i] == tools[i + 2] == tools[i + 4]
        and tools[i + 1] == tools[i + 3] == tools[i + 5]
        and tools[i] != tools[i + 1]
        for i in range(len(tools) - 5)
    )
    return longest_same_call >= 4 or longest_same_tool >= 4 or ping_pong


def test_the_same_seed_gives_the_same_bytes_and_labels() -> None:
    spec = TrafficSpec(seed=3, sessions=60)
    first, second = generate(spec), generate(spec)
    assert [r.SerializeToString() for r in first.requests] == [
        r.SerializeToString() for r in second.requests
    ]
    assert first.labels == second.labels
    assert first.labels_json() == second.labels_json()
    other = generate(TrafficSpec(seed=4, sessions=60))
    assert other.labels.keys() != first.labels.keys()


def test_each_rare_population_has_its_configured_rate(corpus: Corpus) -> None:
    counts = corpus.label_counts()
    for label in RARE_LABELS:
        assert abs(counts[label] - SPEC.rate(label) * SPEC.sessions) <= 1, label
    rare = sum(1 for labels in corpus.labels.values() if labels != {ORDINARY})
    assert counts[ORDINARY] == SPEC.sessions - rare
    assert all(labels and (labels == {ORDINARY} or ORDINARY not in labels)
               for labels in corpus.labels.values())  # fmt: skip


def test_rates_are_parameters() -> None:
    spec = TrafficSpec(seed=5, sessions=200, rates={TOOL_LOOP: 0.2, RARE_PATH: 0.1})
    counts = generate(spec).label_counts()
    assert (counts[TOOL_LOOP], counts[RARE_PATH], counts[ERROR_STATUS]) == (40, 20, 0)
    with pytest.raises(ValueError, match="unknown rare populations"):
        TrafficSpec(rates={"tool_loops": 0.1})


def test_labels_are_visible_in_the_spans_of_their_sessions_and_nowhere_else(
    corpus: Corpus,
) -> None:
    seen = observe(corpus)
    agents = {agent.name: agent for agent in SPEC.agents}
    assert seen.keys() == corpus.labels.keys()
    for key, labels in corpus.labels.items():
        s = seen[key]
        assert s.agent == corpus.session_agents[key]
        agent = agents[s.agent]
        assert s.status_error_outside_tools == (ERROR_STATUS in labels), key
        assert s.exception_with_unset_status == (ERROR_EXCEPTION_ONLY in labels), key
        assert s.tool_error_type == (TOOL_ERROR in labels), key
        assert s.content_filter == (LLM_REFUSAL in labels), key
        assert loops(s.tools, s.calls) == (TOOL_LOOP in labels), key
        if TOOL_LOOP not in labels:
            paths = agent.rare_paths if RARE_PATH in labels else agent.common_paths
            assert tuple(s.tools) in paths, key
        slow = statistics.median(s.llm_seconds) > agent.llm_seconds[1]
        assert slow == (TAIL_LATENCY in labels), key


def test_the_session_key_is_only_on_root_agent_spans(corpus: Corpus) -> None:
    roots_per_session: dict[str, int] = defaultdict(int)
    for span in all_spans(corpus):
        keys = [kv.value.string_value for kv in span.attributes if kv.key in SESSION_KEY_ATTRIBUTES]
        if span.parent_span_id:
            assert keys == []
        else:
            assert keys == [corpus.trace_sessions[span.trace_id]]
            roots_per_session[keys[0]] += 1
    traces_per_session: dict[str, int] = defaultdict(int)
    for session in corpus.trace_sessions.values():
        traces_per_session[session] += 1
    assert roots_per_session == traces_per_session
    assert set(traces_per_session.values()) == {1, 2, 3, 4}  # multi-turn sessions
    for request in corpus.requests:
        for resource_spans in request.resource_spans:
            assert not {kv.key for kv in resource_spans.resource.attributes} & set(
                SESSION_KEY_ATTRIBUTES
            )


def test_spans_arrive_in_end_order_interleaved_and_batched(corpus: Corpus) -> None:
    # Requests follow one another in end order; inside one, spans are grouped by resource and
    # scope (as the collector groups them), each group in end order.
    previous_last_end = 0
    for request in corpus.requests:
        groups = [
            [span.end_time_unix_nano for span in scope_spans.spans]
            for resource_spans in request.resource_spans
            for scope_spans in resource_spans.scope_spans
        ]
        assert all(ends == sorted(ends) for ends in groups)
        assert min(min(ends) for ends in groups) >= previous_last_end
        previous_last_end = max(max(ends) for ends in groups)
    spans = all_spans(corpus)
    assert len(spans) == corpus.span_count == sum(corpus.session_spans.values())
    assert all(span.start_time_unix_nano < span.end_time_unix_nano for span in spans)
    sizes = [sum(len(ss.spans) for rs in r.resource_spans for ss in rs.scope_spans)
             for r in corpus.requests]  # fmt: skip
    assert max(sizes) <= SPEC.batch_spans
    sessions_per_request = [
        len({corpus.trace_sessions[s.trace_id] for rs in r.resource_spans
             for ss in rs.scope_spans for s in ss.spans})
        for r in corpus.requests
    ]  # fmt: skip
    assert max(sessions_per_request) > 1  # concurrently running sessions interleave


def test_both_conventions_and_their_variants_are_present(corpus: Corpus) -> None:
    conventions = {s.convention for s in observe(corpus).values()}
    assert conventions == {GENAI, OPENINFERENCE}
    keys: dict[str, set[str]] = defaultdict(set)
    for span in all_spans(corpus):
        attrs = {kv.key: any_value(kv.value) for kv in span.attributes}
        kind = attrs.get("gen_ai.operation.name") or attrs.get("openinference.span.kind")
        keys[str(kind)].update(attrs)
    assert {"invoke_agent", "execute_tool", "chat", "AGENT", "TOOL", "LLM", "CHAIN"} <= set(keys)
    assert {"gen_ai.provider.name", "gen_ai.system", "gen_ai.usage.input_tokens"} <= keys["chat"]
    assert {"tool.parameters", "input.value"} <= keys["TOOL"]
    assert {"llm.token_count.prompt", "llm.token_count.completion"} <= keys["LLM"]
    tool_spans = [
        span
        for span in all_spans(corpus)
        if any(kv.value.string_value == "execute_tool" for kv in span.attributes)
    ]
    with_arguments = sum(
        any(kv.key == "gen_ai.tool.call.arguments" for kv in span.attributes) for span in tool_spans
    )
    assert 0 < with_arguments < len(tool_spans)  # opt-in: only some sessions record them


def test_json_lines_parse_back_to_the_same_requests(tmp_path: Path) -> None:
    corpus = generate(TrafficSpec(seed=2, sessions=40))
    path = tmp_path / "traffic.jsonl"
    corpus.write_jsonl(path)
    lines = path.read_text(encoding="utf-8").splitlines()
    assert [request_from_json(line) for line in lines] == corpus.requests
