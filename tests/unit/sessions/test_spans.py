"""SpanExtractor: the normalised view of one span (session key, error, root, span-test bits)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pytest
from opentelemetry.proto.trace.v1.trace_pb2 import Status

from sampler.rules.conditions.attribute import AttributeTest, typed
from sampler.rules.conditions.span_name import SpanNameTest
from sampler.sessions.spans import SpanExtractor
from tests.unit.sessions.builders import Scalar, attributes, span, trace_id

KEYS = ("gen_ai.conversation.id", "session.id")


def _extract(
    span_attrs: Mapping[str, Scalar | Sequence[str]],
    resource_attrs: Mapping[str, Scalar],
    keys: Sequence[str] = KEYS,
    **span_fields: Any,
) -> Any:
    extractor = SpanExtractor(keys, ())
    resource = extractor.resource_attributes(attributes(resource_attrs))
    return extractor.extract(span("t1", 2, attrs=span_attrs, **span_fields), resource)


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
    assert _extract(span_attrs, resource_attrs).session_key == expected


def test_key_attributes_order_is_configurable() -> None:
    attrs = {"gen_ai.conversation.id": "c1", "session.id": "s1"}

    assert _extract(attrs, {}, keys=("session.id", "gen_ai.conversation.id")).session_key == "s1"


@pytest.mark.parametrize(
    ("span_fields", "expected"),
    [
        pytest.param({}, False, id="plain"),
        pytest.param({"error": True}, True, id="status-error"),
        pytest.param({"events": ["exception"]}, True, id="exception-event"),
        pytest.param({"events": ["log", "exception"]}, True, id="exception-among-events"),
        pytest.param({"events": ["retry"]}, False, id="other-event"),
        pytest.param({"attrs": {"error.type": "timeout"}}, True, id="error-type-attribute"),
        pytest.param({"attrs": {"error": "x"}}, False, id="other-attribute"),
    ],
)
def test_error_detection(span_fields: dict[str, Any], expected: bool) -> None:
    extractor = SpanExtractor(KEYS, ())
    assert extractor.extract(span("t1", 2, **span_fields), {}).is_error is expected


@pytest.mark.parametrize(
    ("status_code", "expected"),
    [
        pytest.param(Status.STATUS_CODE_OK, False, id="ok"),
        pytest.param(Status.STATUS_CODE_UNSET, False, id="unset"),
        pytest.param(Status.STATUS_CODE_ERROR, True, id="error"),
    ],
)
def test_error_by_status_code(status_code: int, expected: bool) -> None:
    proto = span("t1", 2)
    proto.status.code = status_code

    assert SpanExtractor(KEYS, ()).extract(proto, {}).is_error is expected


@pytest.mark.parametrize(
    ("parent", "expected"),
    [pytest.param(None, True, id="no-parent-is-root"), pytest.param(1, False, id="child")],
)
def test_root_detection(parent: int | None, expected: bool) -> None:
    facts = SpanExtractor(KEYS, ()).extract(span("t1", 2, parent=parent), {})
    assert facts.is_root is expected


def test_passes_ids_and_timestamps_through() -> None:
    facts = SpanExtractor(KEYS, ()).extract(span("t1", 2, start_ns=5, end_ns=9), {})

    assert (facts.trace_id, facts.start_ns, facts.end_ns) == (trace_id("t1"), 5, 9)


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
    extractor = SpanExtractor(KEYS, TESTS)
    resource = extractor.resource_attributes(attributes(resource_attrs))

    facts = extractor.extract(span("t1", 2, name=name, attrs=span_attrs), resource)

    assert facts.test_bits == expected_bits


def test_extracts_only_wanted_resource_attributes() -> None:
    extractor = SpanExtractor(KEYS, TESTS)
    resource = attributes({"session.id": "s", "host.name": "h", "deployment.environment": "prod"})

    assert extractor.resource_attributes(resource) == {
        "session.id": "s",
        "deployment.environment": "prod",
    }
