"""The normalised view of one incoming span: only what grouping, completion, signals and rules
need, read the same way whichever convention the instrumentation follows (OpenTelemetry GenAI
or OpenInference).

Extraction reads the protobuf message once and decodes only the attributes somebody asked for
(session keys, keys named by rules, the conventions' keys below), so the cost per span does not
grow with the number of attributes a span carries. OpenInference's `input.value` (large on LLM
spans: the whole prompt) is decoded only on TOOL spans, where it holds the call's arguments.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping, Sequence
from typing import NamedTuple

from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from sampler.rules.conditions.attribute import AttributeTest
from sampler.rules.conditions.span_name import SpanNameTest
from sampler.rules.facts import SpanTest
from sampler.rules.verdict import (
    ADJUSTED_COUNT_ATTRIBUTE,
    RULE_ATTRIBUTE,
    SIGNALS_ATTRIBUTE,
    VERDICT_ATTRIBUTE,
)
from sampler.signals.errors import ErrorKind

# The attributes the sampler writes on the spans it forwards (DESIGN.md contract).
ANNOTATION_KEYS = frozenset(
    {RULE_ATTRIBUTE, ADJUSTED_COUNT_ATTRIBUTE, SIGNALS_ATTRIBUTE, VERDICT_ATTRIBUTE}
)

STATUS_ERROR = Status.STATUS_CODE_ERROR
EXCEPTION_EVENT = "exception"

# OpenTelemetry GenAI semantic conventions
GEN_AI_OPERATION = "gen_ai.operation.name"
GEN_AI_AGENT_NAME = "gen_ai.agent.name"
GEN_AI_TOOL_NAME = "gen_ai.tool.name"
GEN_AI_TOOL_ARGS = "gen_ai.tool.call.arguments"  # opt-in: often absent
GEN_AI_FINISH_REASONS = "gen_ai.response.finish_reasons"
GEN_AI_INPUT_TOKENS = "gen_ai.usage.input_tokens"
GEN_AI_OUTPUT_TOKENS = "gen_ai.usage.output_tokens"
# OpenInference
OI_SPAN_KIND = "openinference.span.kind"
OI_TOOL_NAME = "tool.name"
OI_INPUT_VALUE = "input.value"  # the call's arguments on TOOL spans (tool.parameters is a schema)
OI_PROMPT_TOKENS = "llm.token_count.prompt"
OI_COMPLETION_TOKENS = "llm.token_count.completion"
# General
ERROR_TYPE = "error.type"
HTTP_STATUS_KEYS = ("http.response.status_code", "http.status_code")

AttrValue = str | bool | int | float | bytes | tuple[object, ...] | None
_INT64_LIMIT = 2**63
# Distinct agent and tool names shared as one str each (``SpanExtractor._shared``); beyond this
# many the table starts over, so a flood of unique names costs nothing lasting.
MAX_SHARED_NAMES = 4096

CONVENTION_KEYS = frozenset({
    GEN_AI_OPERATION, GEN_AI_AGENT_NAME, GEN_AI_TOOL_NAME, GEN_AI_TOOL_ARGS,
    GEN_AI_FINISH_REASONS, GEN_AI_INPUT_TOKENS, GEN_AI_OUTPUT_TOKENS,
    OI_SPAN_KIND, OI_TOOL_NAME, OI_PROMPT_TOKENS, OI_COMPLETION_TOKENS,
    ERROR_TYPE, *HTTP_STATUS_KEYS,
})  # fmt: skip

# ErrorKind bits as plain ints: IntFlag arithmetic runs Python-level enum code on every span.
_STATUS, _EXCEPTION, _ERROR_TYPE, _TOOL = (
    int(ErrorKind.STATUS),
    int(ErrorKind.EXCEPTION),
    int(ErrorKind.ERROR_TYPE),
    int(ErrorKind.TOOL),
)
_LLM_REFUSAL, _LLM_TRUNCATED, _HTTP_5XX = (
    int(ErrorKind.LLM_REFUSAL),
    int(ErrorKind.LLM_TRUNCATED),
    int(ErrorKind.HTTP_5XX),
)

KIND_AGENT, KIND_TOOL, KIND_LLM, KIND_OTHER = "agent", "tool", "llm", "other"
_GEN_AI_KINDS = {
    "invoke_agent": KIND_AGENT, "create_agent": KIND_AGENT, "invoke_workflow": KIND_AGENT,
    "execute_tool": KIND_TOOL,
    "chat": KIND_LLM, "text_completion": KIND_LLM, "generate_content": KIND_LLM,
    "embeddings": KIND_LLM,
}  # fmt: skip
_OI_KINDS = {"AGENT": KIND_AGENT, "TOOL": KIND_TOOL, "LLM": KIND_LLM, "EMBEDDING": KIND_LLM}


def any_value(value: AnyValue) -> AttrValue:
    kind = value.WhichOneof("value")
    if kind == "string_value":
        return value.string_value
    if kind == "int_value":
        return value.int_value
    if kind == "double_value":
        return value.double_value
    if kind == "bool_value":
        return value.bool_value
    if kind == "array_value":
        return tuple(any_value(item) for item in value.array_value.values)
    if kind == "bytes_value":
        return value.bytes_value
    return None  # kvlist or empty: not comparable by rules


def pick_attributes(attributes: Sequence[KeyValue], wanted: frozenset[str]) -> dict[str, AttrValue]:
    picked: dict[str, AttrValue] = {}
    for kv in attributes:
        key = kv.key  # each access builds a str from the message: read it once
        if key in wanted:
            picked[key] = any_value(kv.value)
    return picked


def session_key_of(
    keys: Sequence[str], attrs: Mapping[str, AttrValue], resource: Mapping[str, AttrValue]
) -> str | None:
    """First configured key found on the span, then on its resource; empty values don't count."""
    for source in (attrs, resource):
        for key in keys:
            value = source.get(key)
            if isinstance(value, str | int) and not isinstance(value, bool) and value != "":
                return str(value)
    return None


def args_digest(arguments: AttrValue) -> str:
    """A short digest of a tool call's arguments; JSON is normalised (key order, spacing) so the
    same call made twice digests alike. "" when no arguments were recorded."""
    if arguments is None or arguments == "":
        return ""
    text = arguments if isinstance(arguments, str) else repr(arguments)
    try:
        text = json.dumps(json.loads(text), sort_keys=True, separators=(",", ":"))
    except (ValueError, TypeError, RecursionError):  # not JSON, or nested too deep for it
        pass
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


def _number(value: AttrValue) -> int:
    """A count read from an attribute; 0 unless it is an int64, a finite double or ASCII digits
    within int64 (a NaN, "²" or 5,000 digits must not raise, nor overflow a float later)."""
    if isinstance(value, bool):
        return 0
    if isinstance(value, float):
        value = int(value) if math.isfinite(value) else 0
    elif isinstance(value, str):
        value = int(value) if value.isascii() and value.isdigit() and len(value) <= 19 else 0
    elif not isinstance(value, int):
        return 0
    return value if -_INT64_LIMIT < value < _INT64_LIMIT else 0


class SpanFacts(NamedTuple):
    """One span, normalised. A NamedTuple: built once per span on the hot path, and a tuple is
    constructed in C where a frozen dataclass pays a ``__setattr__`` per field."""

    trace_id: bytes
    session_key: str | None
    is_root: bool
    start_ns: int
    end_ns: int
    test_bits: int  # bit i set when span test i matched
    error_kinds: int = 0  # ErrorKind bits
    annotated: bool = False  # carries agent_sampler.* attributes already
    span_id: bytes = b""
    parent_span_id: bytes = b""
    kind: str = KIND_OTHER  # agent | tool | llm | other
    agent_name: str = ""
    tool_name: str = ""
    tool_args: str = ""  # args_digest of the call's arguments, "" if none recorded
    tokens: int = 0
    links: tuple[bytes, ...] = ()  # span ids this span links to
    trace_state: str = ""  # W3C tracestate as received (may carry an upstream `ot=th:`)

    @property
    def is_error(self) -> bool:
        return bool(self.error_kinds)


_new_facts = tuple.__new__


class SpanExtractor:
    def __init__(self, session_keys: Sequence[str], tests: Sequence[SpanTest]) -> None:
        self.session_keys = tuple(session_keys)
        self._session_key_set = frozenset(self.session_keys)
        self.tests = tuple(tests)
        wanted = set(self.session_keys) | CONVENTION_KEYS | ANNOTATION_KEYS
        for test in self.tests:
            wanted.update(test.keys)
        self.wanted = frozenset(wanted)
        self._names: dict[str, str] = {}

    def resource_attributes(self, attributes: Sequence[KeyValue]) -> dict[str, AttrValue]:
        return pick_attributes(attributes, self.wanted)

    def extract(self, span: Span, resource: Mapping[str, AttrValue]) -> SpanFacts:
        attrs = pick_attributes(span.attributes, self.wanted)
        bits = 0
        if self.tests:
            name = span.name
            for index, test in enumerate(self.tests):
                if evaluate(test, name, attrs, resource):
                    bits |= 1 << index
        errors = _STATUS if span.status.code == STATUS_ERROR else 0
        events = span.events
        if events and any(event.name == EXCEPTION_EVENT for event in events):
            errors |= _EXCEPTION
        kind, agent_name, tool_name, tool_args, tokens = KIND_OTHER, "", "", "", 0
        session_key, annotated = None, False
        if attrs:  # most spans of a trace hold none of the attributes read here
            kind, agent_name, tool_name, tool_args, tokens, errors = self._read_conventions(
                span, attrs, errors
            )
            annotated = not ANNOTATION_KEYS.isdisjoint(attrs)
            if not self._session_key_set.isdisjoint(attrs):
                session_key = session_key_of(self.session_keys, attrs, resource)
        if session_key is None and resource:
            session_key = session_key_of(self.session_keys, attrs, resource)
        parent = span.parent_span_id
        links = span.links
        # positional, through tuple.__new__: a NamedTuple's keyword constructor is Python code
        return _new_facts(
            SpanFacts,
            (
                span.trace_id, session_key, not parent, span.start_time_unix_nano,
                span.end_time_unix_nano, bits, errors, annotated, span.span_id, parent, kind,
                agent_name, tool_name, tool_args, tokens,
                tuple(link.span_id for link in links) if links else (), span.trace_state,
            ),
        )  # fmt: skip

    def _read_conventions(
        self, span: Span, attrs: Mapping[str, AttrValue], errors: int
    ) -> tuple[str, str, str, str, int, int]:
        """Kind, agent name, tool name, arguments digest, tokens and error bits, from the span's
        GenAI or OpenInference attributes."""
        # attribute values are all hashable (tuples for arrays): looked up as they are
        kind = _GEN_AI_KINDS.get(attrs.get(GEN_AI_OPERATION), "")  # type: ignore[arg-type]
        if not kind:
            kind = _OI_KINDS.get(attrs.get(OI_SPAN_KIND), KIND_OTHER)  # type: ignore[arg-type]
        agent_name = tool_name = tool_args = ""
        if kind == KIND_AGENT:
            agent = attrs.get(GEN_AI_AGENT_NAME)
            agent_name = self._shared(agent if isinstance(agent, str) and agent else span.name)
        elif kind == KIND_TOOL:
            tool = attrs.get(GEN_AI_TOOL_NAME) or attrs.get(OI_TOOL_NAME)
            tool_name = self._shared(tool if isinstance(tool, str) and tool else span.name)
            arguments = attrs.get(GEN_AI_TOOL_ARGS)
            if arguments is None and OI_SPAN_KIND in attrs:
                arguments = next((any_value(kv.value) for kv in span.attributes
                                  if kv.key == OI_INPUT_VALUE), None)  # fmt: skip
            tool_args = args_digest(arguments)

        if attrs.get(ERROR_TYPE):
            errors |= _ERROR_TYPE
        if errors and kind == KIND_TOOL:
            errors |= _TOOL
        reasons = attrs.get(GEN_AI_FINISH_REASONS)
        if reasons:
            reasons = reasons if isinstance(reasons, tuple) else (reasons,)
            if "content_filter" in reasons:
                errors |= _LLM_REFUSAL
            if "length" in reasons:
                errors |= _LLM_TRUNCATED
        for key in HTTP_STATUS_KEYS:
            if key in attrs and _number(attrs[key]) >= 500:
                errors |= _HTTP_5XX

        tokens = 0
        if kind == KIND_LLM:
            tokens = _number(attrs.get(GEN_AI_INPUT_TOKENS)) + _number(
                attrs.get(GEN_AI_OUTPUT_TOKENS)
            )
            if not tokens:
                tokens = _number(attrs.get(OI_PROMPT_TOKENS)) + _number(
                    attrs.get(OI_COMPLETION_TOKENS)
                )
        return kind, agent_name, tool_name, tool_args, tokens, errors

    def _shared(self, name: str) -> str:
        """The one str object kept for this agent or tool name. Each span's name is a new str,
        and buffered sessions keep one per agent and tool call: sharing it saves ~60 bytes a
        span there, from a handful of distinct names."""
        names = self._names
        if len(names) >= MAX_SHARED_NAMES:
            names.clear()
        return names.setdefault(name, name)


# --- the span tests as Python evaluated them (moved here from sampler.rules.conditions) --------


def evaluate(
    test: SpanTest, name: str, attrs: Mapping[str, AttrValue], resource: Mapping[str, AttrValue]
) -> bool:
    if isinstance(test, SpanNameTest):
        if test.pattern is not None:
            return re.search(test.pattern, name) is not None
        return name in test.names
    assert isinstance(test, AttributeTest)
    if test.scope != "resource" and test.key in attrs:
        if _value_matches(test, attrs[test.key]):
            return True
    if test.scope != "span" and test.key in resource:
        return _value_matches(test, resource[test.key])
    return False


def _value_matches(test: AttributeTest, value: AttrValue) -> bool:
    if test.exists:
        return True
    if test.equals:
        return any(_scalar_equal(value, expected) for expected in test.equals)
    if test.pattern is not None:
        return _regex_search(value, re.compile(test.pattern))
    return _in_range(value, test.low, test.high)


def _typed(value: AttrValue) -> tuple[str, object] | None:
    if isinstance(value, bool):
        return ("bool", value)
    if isinstance(value, int | float):
        return ("number", float(value))
    if isinstance(value, str):
        return ("str", value)
    return None


def _scalar_equal(value: AttrValue, expected: tuple[str, object]) -> bool:
    if isinstance(value, tuple):
        return any(_scalar_equal(item, expected) for item in value)  # type: ignore[arg-type]
    return _typed(value) == expected


def _in_range(value: AttrValue, low: float | None, high: float | None) -> bool:
    if isinstance(value, tuple):
        return any(_in_range(item, low, high) for item in value)  # type: ignore[arg-type]
    if isinstance(value, bool) or not isinstance(value, int | float):
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                return False
        else:
            return False
    return (low is None or value >= low) and (high is None or value <= high)


def _regex_search(value: AttrValue, pattern: re.Pattern[str]) -> bool:
    if isinstance(value, tuple):
        return any(_regex_search(item, pattern) for item in value)  # type: ignore[arg-type]
    return isinstance(value, str) and pattern.search(value) is not None
