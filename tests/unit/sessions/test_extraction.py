"""What the native core reads of a span, seen through the session it lands in: the session key,
errors, roots, span-test bits, the conventions' facts, and the session's latency and duration.

Each case ingests real OTLP spans into a native core and pops the session they make.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import pytest
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from sampler._native import SessionView
from sampler.config.model import SamplerConfig, SessionsConfig
from sampler.rules.conditions.attribute import AttributeTest, typed
from sampler.rules.conditions.span_name import SpanNameTest
from sampler.rules.facts import SpanTest
from sampler.sessions.native import build_core
from sampler.signals.errors import ErrorKind
from tests.unit.sessions.builders import Scalar, native, simple_request, span, trace_id

KEYS = ("gen_ai.conversation.id", "session.id")


def sessions_of(
    *spans: Span,
    resource: Mapping[str, Scalar] | None = None,
    keys: Sequence[str] = KEYS,
    tests: Sequence[SpanTest] = (),
) -> list[SessionView]:
    config = SamplerConfig()
    config = dataclasses.replace(
        config, sessions=dataclasses.replace(SessionsConfig(), key_attributes=tuple(keys))
    )
    core = build_core(config, tests)
    request = native(simple_request(*spans, resource=resource or {"service.name": "agent"}))
    core.ingest(request, 0.0, 4096)
    return core.pop_all()


def session_of(*spans: Span, **kwargs: Any) -> SessionView:
    (session,) = sessions_of(*spans, **kwargs)
    return session


@pytest.mark.parametrize(
    ("span_attrs", "resource_attrs", "expected"),
    [
        pytest.param({"gen_ai.conversation.id": "c1"}, {}, "c1", id="first-key-on-span"),
        pytest.param({"session.id": "s1"}, {}, "s1", id="second-key-on-span"),
        pytest.param({}, {"session.id": "r1"}, "r1", id="key-on-resource"),
        pytest.param(
            {"session.id": "span"},
            {"gen_ai.conversation.id": "resource"},
            "span",
            id="span-before-resource-even-for-a-later-key",
        ),
        pytest.param(
            {"session.id": "s1", "gen_ai.conversation.id": "c1"},
            {},
            "c1",
            id="key-order-not-attribute-order",
        ),
        pytest.param(
            {"gen_ai.conversation.id": "", "session.id": "s1"}, {}, "s1", id="empty-string-ignored"
        ),
        pytest.param(
            {"gen_ai.conversation.id": ""}, {"session.id": "r1"}, "r1", id="empty-falls-to-resource"
        ),
        pytest.param({"gen_ai.conversation.id": 42}, {}, "42", id="int-stringified"),
        pytest.param({"gen_ai.conversation.id": 0}, {}, "0", id="int-zero-is-a-key"),
        pytest.param({"gen_ai.conversation.id": True}, {}, None, id="bool-ignored"),
        pytest.param({"gen_ai.conversation.id": 1.5}, {}, None, id="double-ignored"),
        pytest.param({"gen_ai.conversation.id": ["a", "b"]}, {}, None, id="array-ignored"),
        pytest.param({"langfuse.session.id": "l1"}, {}, None, id="unconfigured-key-ignored"),
        pytest.param({}, {}, None, id="no-key"),
    ],
)
def test_session_key_precedence(
    span_attrs: Mapping[str, Scalar | Sequence[str]],
    resource_attrs: Mapping[str, Scalar],
    expected: str | None,
) -> None:
    session = session_of(span("t1", 2, attrs=span_attrs), resource=resource_attrs or None)
    if expected is None:
        assert (session.keyed, session.key) == (False, trace_id("t1").hex())
    else:
        assert (session.keyed, session.key) == (True, expected)


def test_key_attributes_order_is_configurable() -> None:
    attrs = {"gen_ai.conversation.id": "c1", "session.id": "s1"}
    session = session_of(span("t1", 2, attrs=attrs), keys=("session.id", "gen_ai.conversation.id"))
    assert session.key == "s1"


@pytest.mark.parametrize(
    ("span_fields", "expected"),
    [
        pytest.param({}, 0, id="plain"),
        pytest.param({"error": True}, ErrorKind.STATUS, id="status-error"),
        pytest.param({"events": ["exception"]}, ErrorKind.EXCEPTION, id="exception-event"),
        pytest.param({"events": ["log", "exception"]}, ErrorKind.EXCEPTION, id="among-events"),
        pytest.param({"events": ["retry"]}, 0, id="other-event"),
        pytest.param({"attrs": {"error.type": "timeout"}}, ErrorKind.ERROR_TYPE, id="error-type"),
        pytest.param({"attrs": {"error.type": ""}}, 0, id="empty-error-type"),
        pytest.param({"attrs": {"error": "x"}}, 0, id="other-attribute"),
        pytest.param(
            {"attrs": {"http.response.status_code": 503}}, ErrorKind.HTTP_5XX, id="http-503"
        ),
        pytest.param({"attrs": {"http.status_code": "502"}}, ErrorKind.HTTP_5XX, id="http-text"),
        pytest.param({"attrs": {"http.response.status_code": 404}}, 0, id="http-404"),
        pytest.param(
            {"attrs": {"gen_ai.response.finish_reasons": ["stop", "content_filter"]}},
            ErrorKind.LLM_REFUSAL,
            id="content-filter",
        ),
        pytest.param(
            {"attrs": {"gen_ai.response.finish_reasons": "length"}},
            ErrorKind.LLM_TRUNCATED,
            id="length-as-a-string",
        ),
        pytest.param(
            {"attrs": {"gen_ai.operation.name": "execute_tool", "error.type": "boom"}},
            ErrorKind.ERROR_TYPE | ErrorKind.TOOL,
            id="failed-tool-call",
        ),
    ],
)
def test_error_detection(span_fields: dict[str, Any], expected: int) -> None:
    session = session_of(span("t1", 2, **span_fields))
    assert session.error_kinds == expected
    assert session.error_spans == (1 if expected else 0)


@pytest.mark.parametrize(
    ("status_code", "expected"),
    [
        pytest.param(Status.STATUS_CODE_OK, 0, id="ok"),
        pytest.param(Status.STATUS_CODE_UNSET, 0, id="unset"),
        pytest.param(Status.STATUS_CODE_ERROR, ErrorKind.STATUS, id="error"),
    ],
)
def test_error_by_status_code(status_code: int, expected: int) -> None:
    proto = span("t1", 2)
    proto.status.code = status_code  # type: ignore[assignment]
    assert session_of(proto).error_kinds == expected


@pytest.mark.parametrize(
    ("parent", "rootless"),
    [pytest.param(None, False, id="no-parent-is-root"), pytest.param(1, True, id="child")],
)
def test_root_detection(parent: int | None, rootless: bool) -> None:
    assert session_of(span("t1", 2, parent=parent)).rootless is rootless


def test_passes_ids_and_timestamps_through() -> None:
    session = session_of(span("t1", 2, parent=1, start_ns=5, end_ns=9))
    assert (session.trace_ids, session.first_start_ns, session.last_end_ns) == (
        [trace_id("t1")],
        5,
        9,
    )


TESTS = (
    AttributeTest("gen_ai.agent.name", "any", equals=(typed("billing"),)),
    SpanNameTest(names=frozenset({"checkout"})),
    AttributeTest("deployment.environment", "resource", equals=(typed("prod"),)),
)


@pytest.mark.parametrize(
    ("name", "span_attrs", "resource_attrs", "expected_bits"),
    [
        pytest.param("other", {}, {}, 0b000, id="none"),
        pytest.param("other", {"gen_ai.agent.name": "billing"}, {}, 0b001, id="attribute"),
        pytest.param("other", {"gen_ai.agent.name": "support"}, {}, 0b000, id="attribute-no"),
        pytest.param("checkout", {}, {}, 0b010, id="span-name"),
        pytest.param("other", {}, {"deployment.environment": "prod"}, 0b100, id="resource"),
        pytest.param(
            "other",
            {"deployment.environment": "prod"},
            {},
            0b000,
            id="resource-scoped-test-ignores-span",
        ),
        pytest.param(
            "checkout",
            {"gen_ai.agent.name": "billing"},
            {"deployment.environment": "prod"},
            0b111,
            id="all",
        ),
    ],
)
def test_span_test_bits(
    name: str,
    span_attrs: Mapping[str, Scalar],
    resource_attrs: Mapping[str, Scalar],
    expected_bits: int,
) -> None:
    session = session_of(
        span("t1", 2, name=name, attrs=span_attrs), resource=resource_attrs or None, tests=TESTS
    )
    assert session.test_bits == expected_bits


@pytest.mark.parametrize(
    ("attrs", "kind", "agent", "tool", "tokens"),
    [
        pytest.param(
            {"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "billing"},
            "agent",
            "billing",
            "",
            0,
            id="genai-agent",
        ),
        pytest.param(
            {"gen_ai.operation.name": "invoke_agent"}, "agent", "span-name", "", 0, id="agent-name"
        ),
        pytest.param(
            {"openinference.span.kind": "TOOL", "tool.name": "search"},
            "tool",
            "",
            "search",
            0,
            id="openinference-tool",
        ),
        pytest.param(
            {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": ""},
            "tool",
            "",
            "span-name",
            0,
            id="tool-name-from-the-span",
        ),
        pytest.param(
            {
                "gen_ai.operation.name": "chat",
                "gen_ai.usage.input_tokens": 100,
                "gen_ai.usage.output_tokens": "25",
            },
            "llm",
            "",
            "",
            125,
            id="genai-tokens",
        ),
        pytest.param(
            {
                "openinference.span.kind": "LLM",
                "llm.token_count.prompt": 7.9,
                "llm.token_count.completion": float("nan"),
            },
            "llm",
            "",
            "",
            7,
            id="openinference-tokens",
        ),
        pytest.param(
            {"gen_ai.operation.name": "chat", "gen_ai.usage.input_tokens": "9" * 20},
            "llm",
            "",
            "",
            0,
            id="tokens-too-long-are-none",
        ),
    ],
)
def test_the_conventions(
    attrs: dict[str, Scalar], kind: str, agent: str, tool: str, tokens: int
) -> None:
    session = session_of(span("t1", 2, name="span-name", attrs=attrs))
    assert (session.root_agent, session.tool_path(), session.tokens) == (
        agent,
        (tool,) if kind == "tool" else (),
        tokens,
    )


def test_tool_arguments_digest_alike_when_the_json_is_the_same() -> None:
    def call(number: int, arguments: str, convention: str) -> Span:
        if convention == "genai":
            attrs = {
                "gen_ai.operation.name": "execute_tool",
                "gen_ai.tool.call.arguments": arguments,
            }
        else:
            attrs = {"openinference.span.kind": "TOOL", "input.value": arguments}
        return span("t1", number, parent=1, name="search", attrs=attrs, start_ns=number)

    session = session_of(
        call(2, '{"q": "x", "n": 1}', "genai"),
        call(3, '{"n":1,"q":"x"}', "openinference"),
        call(4, '{"q": "y"}', "genai"),
        call(5, "", "genai"),
    )
    digests = [call[2] for call in sorted(session.tool_calls)]
    assert digests[0] == digests[1] != digests[2]
    assert digests[3] == ""


def s(seconds: float) -> int:
    return int(seconds * 1e9)


@pytest.mark.parametrize(
    ("turns", "latency_s", "duration_s"),
    [
        pytest.param([("a", False, 1, 4)], 0.0, 3.0, id="no-root-no-latency"),
        pytest.param([("a", True, 1, 4)], 3.0, 3.0, id="one-turn"),
        pytest.param(
            [("a", True, 1, 3), ("b", True, 10, 15), ("c", True, 20, 21)],
            5.0,
            20.0,
            id="three-turns-the-longest-counts-think-time-does-not",
        ),
        pytest.param(
            [("a", True, 1, 2), ("a", False, 1, 30)], 1.0, 29.0, id="only-root-spans-are-turns"
        ),
        pytest.param([("a", True, 5, 4)], 0.0, 0.0, id="a-root-ending-before-it-starts"),
    ],
)
def test_latency_is_the_longest_root_span(
    turns: list[tuple[str, bool, float, float]], latency_s: float, duration_s: float
) -> None:
    spans = [
        span(trace, number, parent=None if root else 99, start_ns=s(start), end_ns=s(end),
             attrs={"session.id": "conv"})
        for number, (trace, root, start, end) in enumerate(turns, start=1)
    ]  # fmt: skip
    session = session_of(*spans)
    assert session.latency_s == pytest.approx(latency_s)
    assert session.duration_s == pytest.approx(duration_s)
