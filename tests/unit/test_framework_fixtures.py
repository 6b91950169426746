"""Traces written by real agent frameworks, through the sampler's default rules.

The fixtures under ``tests/testdata/frameworks/`` were recorded offline from Pydantic AI (its own
instrumentation: OpenTelemetry GenAI spans) and LangGraph (OpenInference's LangChain
instrumentation) driven by scripted fake models; ``tests/fixtures/frameworks/`` holds the
generator and says how to regenerate them. Each file is one agent session. These tests need
none of the framework packages: they replay the recorded OTLP/JSON as ``agent-sampler replay``
would, and read the verdicts from the kept spans, as a backend would see them.

What they pin down is that the sampler's normalised view reads what the frameworks really
write: tool spans and their arguments (a loop of 5 identical calls is only a ``tool_cycle``
when the arguments are read: ``same_tool_repeats`` is 6), raised tool errors, token counts and
session keys.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from sampler.config.model import SamplerConfig
from sampler.config_file import load_config, load_config_text
from sampler.otlp.json_codec import iter_json_lines
from sampler.replay import replay
from sampler.rules.verdict import RULE_ATTRIBUTE, SIGNALS_ATTRIBUTE

DATA = Path(__file__).resolve().parents[1] / "testdata" / "frameworks"
LOOP_REPEATS = 5  # make_fixtures.py: the same tool call, the same arguments, 5 times

# fixture -> (what happened in the run, tool calls made)
LOOPS = {"pydantic_ai_loop": LOOP_REPEATS, "langgraph_loop": LOOP_REPEATS}
TOOL_ERRORS = {
    "pydantic_ai_tool_error": 1,  # the tool raised; the exception reached the caller
    "pydantic_ai_tool_retry": 1,  # the tool raised ModelRetry; the model answered after it
    "langgraph_tool_error": 1,  # the tool raised; the exception reached the caller
    "langgraph_tool_error_handled": 1,  # ToolNode(handle_tool_errors=True): the run went on
}
ORDINARY = {"pydantic_ai_ordinary": 1, "langgraph_ordinary": 1}
ALL = {**LOOPS, **TOOL_ERRORS, **ORDINARY}
FLAGS = frozenset({"error", "tool_error", "tool_cycle"})

# Raw attributes the frameworks wrote for token usage on LLM spans.
TOKEN_KEYS = frozenset({
    "gen_ai.usage.input_tokens", "gen_ai.usage.output_tokens",  # Pydantic AI (GenAI)
    "llm.token_count.prompt", "llm.token_count.completion",  # OpenInference
})  # fmt: skip
LLM_SPAN = {"gen_ai.operation.name": "chat", "openinference.span.kind": "LLM"}


@dataclass(frozen=True, slots=True)
class Replayed:
    """One fixture through the replay: what the rules saw, and what reached the output."""

    sessions: int
    spans_seen: int
    rules_seen: frozenset[str]  # rules that decided a session
    spans_kept: int
    verdicts: frozenset[tuple[str, frozenset[str]]]  # (rule, signals) on the kept spans

    @property
    def signals(self) -> frozenset[str]:
        return frozenset().union(*(signals for _, signals in self.verdicts))


def spans_of(path: Path) -> Iterator[Span]:
    for request in iter_json_lines(path):
        for resource_spans in request.resource_spans:
            for scope_spans in resource_spans.scope_spans:
                yield from scope_spans.spans


def value(any_value: AnyValue) -> object:
    kind = any_value.WhichOneof("value")
    if kind == "array_value":
        return tuple(value(item) for item in any_value.array_value.values)
    return getattr(any_value, kind) if kind else None


def attributes(span: Span) -> dict[str, object]:
    return {kv.key: value(kv.value) for kv in span.attributes}


@functools.cache
def default_config() -> SamplerConfig:
    return load_config()


def run(name: str, config: SamplerConfig, tmp_path: Path) -> Replayed:
    output = tmp_path / f"{name}.kept.jsonl"
    result = replay(config, [str(DATA / f"{name}.jsonl")], str(output))
    tallies = result.stats.by_rule.values()
    verdicts: set[tuple[str, frozenset[str]]] = set()
    spans_kept = 0
    if output.exists():  # the file exporter creates it on the first kept span
        for span in spans_of(output):
            attrs = attributes(span)
            signals = attrs.get(SIGNALS_ATTRIBUTE, ())
            assert isinstance(signals, tuple)
            verdicts.add((str(attrs[RULE_ATTRIBUTE]), frozenset(map(str, signals))))
            spans_kept += 1
    return Replayed(
        sessions=sum(t.sessions_seen for t in tallies),
        spans_seen=sum(t.spans_seen for t in tallies),
        rules_seen=frozenset(rule for rule, t in result.stats.by_rule.items() if t.sessions_seen),
        spans_kept=spans_kept,
        verdicts=frozenset(verdicts),
    )


@pytest.mark.parametrize("name", sorted(ALL))
def test_a_fixture_is_one_session_joined_by_its_key(name: str, tmp_path: Path) -> None:
    """Pydantic AI puts ``gen_ai.conversation.id`` and OpenInference ``session.id`` on every
    span; all of a run's spans are decided together, as one session."""
    replayed = run(name, default_config(), tmp_path)
    assert replayed.sessions == 1
    assert replayed.spans_seen == sum(1 for _ in spans_of(DATA / f"{name}.jsonl"))


@pytest.mark.parametrize("name", sorted(LOOPS))
def test_a_loop_is_kept_whole_as_a_tool_cycle(name: str, tmp_path: Path) -> None:
    replayed = run(name, default_config(), tmp_path)
    assert replayed.spans_kept == replayed.spans_seen
    assert replayed.verdicts == {("tool-loops", frozenset({"tool_cycle"}))}


@pytest.mark.parametrize("name", sorted(TOOL_ERRORS))
def test_a_raised_tool_error_is_kept_whole_as_an_error(name: str, tmp_path: Path) -> None:
    replayed = run(name, default_config(), tmp_path)
    assert replayed.spans_kept == replayed.spans_seen
    assert {rule for rule, _ in replayed.verdicts} == {"errors"}
    assert replayed.signals >= {"error", "tool_error"}
    assert "tool_cycle" not in replayed.signals


@pytest.mark.parametrize("name", sorted(ORDINARY))
def test_an_ordinary_run_raises_no_flag(name: str, tmp_path: Path) -> None:
    """Only the baseline budget decides it (it may keep the session or not); nothing fired."""
    replayed = run(name, default_config(), tmp_path)
    assert replayed.rules_seen == {"baseline"}
    assert not replayed.signals & FLAGS


def recorded_tokens(name: str) -> int:
    """Input plus output tokens of the fixture's LLM spans, read from the raw attributes."""
    total = 0
    for span in spans_of(DATA / f"{name}.jsonl"):
        attrs = attributes(span)
        if any(attrs.get(key) == kind for key, kind in LLM_SPAN.items()):
            total += sum(v for k, v in attrs.items() if k in TOKEN_KEYS and isinstance(v, int))
    return total


def counting_config(tool_calls: int, tokens: int) -> SamplerConfig:
    """Keeps a session exactly when it has these many tool calls and tokens."""
    return load_config_text(
        f"""
rules:
  - name: counted
    when:
      all:
        - tool_calls: {{min: {tool_calls}, max: {tool_calls}}}
        - tokens: {{min: {tokens}, max: {tokens}}}
    action: keep
""",
        "<counting>",
    )


@pytest.mark.parametrize("name", sorted(ALL))
def test_tool_calls_and_tokens_are_counted_as_recorded(name: str, tmp_path: Path) -> None:
    tokens = recorded_tokens(name)
    assert tokens > 0  # both frameworks recorded usage on every model call
    replayed = run(name, counting_config(ALL[name], tokens), tmp_path)
    assert replayed.rules_seen == {"counted"}
