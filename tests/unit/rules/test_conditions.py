"""What each condition kind means, from YAML to verdict.

Per-span kinds (attribute, span_name) are tested twice: their SpanTest on one span (name,
attributes, resource attributes), evaluated by the native core as it ingests the span, and a
whole session through RuleEngine, with ``matched_tests`` built the way the pipeline builds it:
the engine's tests that matched any span.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pytest

from sampler.config.model import SamplerConfig
from sampler.config.reader import Problems, parse_yaml
from sampler.rules.conditions import ParseContext, kinds
from sampler.rules.engine import RuleEngine
from sampler.rules.facts import DecisionFacts, SpanTest
from sampler.rules.parse import parse_rules
from sampler.rules.spec import Condition
from sampler.sessions.native import build_core
from sampler.signals.errors import ErrorKind
from tests.unit.sessions.builders import native, simple_request, span

Attrs = Mapping[str, Any]
Span = tuple[str, Attrs, Attrs]  # name, span attributes, resource attributes


def evaluate(test: SpanTest, name: str, attrs: Attrs, resource: Attrs) -> bool:
    """Whether the native core finds that ``test`` matches this span."""
    return 0 in matched_by_native((test,), (name, attrs, resource))


def matched_by_native(tests: Sequence[SpanTest], span_of: Span) -> set[int]:
    """The indexes of the tests the native core finds matching this span."""
    name, attrs, resource = span_of
    core = build_core(SamplerConfig(), tests)
    one = span("t1", 1, name=name, attrs=attrs)
    core.ingest(native(simple_request(one, resource=dict(resource) or {"x": 1})), 0.0, 100)
    (session,) = core.pop_all()
    return {i for i in range(len(tests)) if session.test_bits >> i & 1}


def parse_condition(text: str) -> Condition:
    problems = Problems("test.yaml")
    condition = ParseContext(problems, "when").condition(parse_yaml(text, "test.yaml"))
    assert not problems.found, [str(p) for p in problems.found]
    assert condition is not None
    return condition


def span_test(text: str) -> SpanTest:
    (test,) = parse_condition(text).span_tests()
    return test


def make_facts(
    matched: frozenset[SpanTest] = frozenset(),
    *,
    span_count: int = 1,
    error_spans: int = 0,
    duration_s: float = 1.0,
) -> DecisionFacts:
    return DecisionFacts(
        session_key="s",
        randomness=0,
        span_count=span_count,
        trace_count=1,
        error_spans=error_spans,
        duration_s=duration_s,
        error_kinds=int(ErrorKind.STATUS) if error_spans else 0,
        signals=("error",) if error_spans else (),
        matched_tests=matched,
    )


def session_matches(
    when: str,
    spans: Sequence[Span] = (),
    *,
    span_count: int = 1,
    error_spans: int = 0,
    duration_s: float = 1.0,
) -> bool:
    """Does rule `hit` with this `when` decide the session made of these spans?"""
    problems = Problems("test.yaml")
    rules = parse_rules(parse_yaml(f"[{{name: hit, when: {when}, action: keep}}]", "t"), problems)
    assert not problems.found, [str(p) for p in problems.found]
    engine = RuleEngine.build(rules)
    matched = frozenset(
        t
        for i, t in enumerate(engine.span_tests)
        if any(i in matched_by_native(engine.span_tests, s) for s in spans)
    )
    facts = make_facts(
        matched, span_count=span_count, error_spans=error_spans, duration_s=duration_s
    )
    return engine.decide(facts, now=0.0).rule == "hit"


ATTRIBUTE_CASES = [
    # (id, condition, span attributes, resource attributes, expected)
    ("equals-string", "{key: a, equals: billing}", {"a": "billing"}, {}, True),
    ("equals-other-string", "{key: a, equals: billing}", {"a": "support"}, {}, False),
    ("equals-case-sensitive", "{key: a, equals: billing}", {"a": "Billing"}, {}, False),
    ("equals-int-float-value", "{key: n, equals: 1}", {"n": 1.0}, {}, True),
    ("equals-float-int-value", "{key: n, equals: 1.0}", {"n": 1}, {}, True),
    ("equals-int-not-bool", "{key: n, equals: 1}", {"n": True}, {}, False),
    ("equals-bool-not-int", "{key: n, equals: true}", {"n": 1}, {}, False),
    ("equals-bool", "{key: n, equals: true}", {"n": True}, {}, True),
    ("equals-false-not-zero", "{key: n, equals: false}", {"n": 0}, {}, False),
    ("equals-number-not-string", "{key: n, equals: 12}", {"n": "12"}, {}, False),
    ("equals-string-not-number", "{key: n, equals: '12'}", {"n": 12}, {}, False),
    ("equals-absent", "{key: a, equals: billing}", {"b": "billing"}, {}, False),
    ("in-member", "{key: env, in: [prod, staging]}", {"env": "staging"}, {}, True),
    ("in-not-member", "{key: env, in: [prod, staging]}", {"env": "dev"}, {}, False),
    ("in-mixed-types", "{key: n, in: [1, two]}", {"n": 1.0}, {}, True),
    ("in-bool-not-int", "{key: n, in: [1, 2]}", {"n": True}, {}, False),
    ("regex-searches", "{key: t, regex: tool}", {"t": "call_tool_x"}, {}, True),
    ("regex-anchored", "{key: t, regex: '^tool'}", {"t": "my.tool"}, {}, False),
    ("regex-anchored-match", "{key: t, regex: '^tool'}", {"t": "tool.search"}, {}, True),
    ("regex-not-on-numbers", "{key: t, regex: '12'}", {"t": 123}, {}, False),
    ("min-inclusive", "{key: n, min: 4000}", {"n": 4000}, {}, True),
    ("min-below", "{key: n, min: 4000}", {"n": 3999}, {}, False),
    ("max-inclusive", "{key: n, max: 10}", {"n": 10}, {}, True),
    ("max-above", "{key: n, max: 10}", {"n": 10.5}, {}, False),
    ("range-inside", "{key: n, min: 1, max: 5}", {"n": 3}, {}, True),
    ("range-outside", "{key: n, min: 1, max: 5}", {"n": 6}, {}, False),
    ("min-numeric-string", "{key: n, min: 10}", {"n": "12"}, {}, True),
    ("min-numeric-string-below", "{key: n, min: 10}", {"n": "9.5"}, {}, False),
    ("min-non-numeric-string", "{key: n, min: 0}", {"n": "abc"}, {}, False),
    ("min-not-on-bool", "{key: n, min: 0}", {"n": True}, {}, False),
    ("min-not-on-bytes", "{key: n, min: 0}", {"n": b"1"}, {}, False),
    ("exists-false-value", "{key: k, exists: true}", {"k": False}, {}, True),
    ("exists-empty-string", "{key: k, exists: true}", {"k": ""}, {}, True),
    ("exists-absent", "{key: k, exists: true}", {}, {}, False),
    ("scope-span-on-span", "{key: k, exists: true, scope: span}", {"k": 1}, {}, True),
    ("scope-span-on-resource", "{key: k, exists: true, scope: span}", {}, {"k": 1}, False),
    ("scope-resource-on-span", "{key: k, exists: true, scope: resource}", {"k": 1}, {}, False),
    ("scope-resource-on-resource", "{key: k, exists: true, scope: resource}", {}, {"k": 1}, True),
    ("scope-any-on-resource", "{key: k, exists: true, scope: any}", {}, {"k": 1}, True),
    ("scope-default-is-any", "{key: k, exists: true}", {}, {"k": 1}, True),
    ("scope-any-falls-back", "{key: env, equals: prod}", {"env": "dev"}, {"env": "prod"}, True),
    ("scope-any-neither", "{key: env, equals: prod}", {"env": "dev"}, {"env": "qa"}, False),
    ("array-equals-any-element", "{key: a, equals: b}", {"a": ("a", "b")}, {}, True),
    ("array-equals-no-element", "{key: a, equals: c}", {"a": ("a", "b")}, {}, False),
    ("array-in", "{key: a, in: [x, b]}", {"a": ("a", "b")}, {}, True),
    ("array-regex", "{key: a, regex: '^len'}", {"a": ("stop", "length")}, {}, True),
    ("array-min", "{key: a, min: 4000}", {"a": (1, 5000)}, {}, True),
    ("array-max-none", "{key: a, max: 0}", {"a": (1, 5000)}, {}, False),
    ("array-empty-exists", "{key: a, exists: true}", {"a": ()}, {}, True),
    ("array-empty-equals", "{key: a, equals: b}", {"a": ()}, {}, False),
]


@pytest.mark.parametrize(
    ("condition", "attrs", "resource", "expected"),
    [case[1:] for case in ATTRIBUTE_CASES],
    ids=[case[0] for case in ATTRIBUTE_CASES],
)
def test_attribute_test_on_one_span(
    condition: str, attrs: Attrs, resource: Attrs, expected: bool
) -> None:
    test = span_test(f"{{attribute: {condition}}}")
    assert evaluate(test, "any-name", attrs, resource) is expected


def test_attribute_test_names_the_key_it_reads() -> None:
    """The ingest path extracts only the keys tests name."""
    test = span_test("{attribute: {key: gen_ai.agent.name, exists: true, scope: resource}}")
    assert test.keys == ("gen_ai.agent.name",)


SPAN_NAME_CASES = [
    ("shorthand", "checkout", "checkout", True),
    ("shorthand-exact", "checkout", "checkout.step", False),
    ("equals", "{equals: plan}", "plan", True),
    ("in-member", "{in: [plan, reflect]}", "reflect", True),
    ("in-not-member", "{in: [plan, reflect]}", "act", False),
    ("regex-searches", "{regex: tool}", "execute_tool search", True),
    ("regex-anchored", "{regex: '^tool'}", "execute_tool", False),
]


@pytest.mark.parametrize(
    ("condition", "name", "expected"),
    [case[1:] for case in SPAN_NAME_CASES],
    ids=[case[0] for case in SPAN_NAME_CASES],
)
def test_span_name_test_on_one_span(condition: str, name: str, expected: bool) -> None:
    test = span_test(f"{{span_name: {condition}}}")
    assert evaluate(test, name, {"name": name}, {}) is expected
    assert test.keys == ()


def test_span_name_ignores_attributes() -> None:
    test = span_test("{span_name: checkout}")
    assert not evaluate(test, "other", {"span.name": "checkout"}, {"name": "checkout"})


SESSION_CASES = [
    # (id, when, spans, expected)
    (
        "some-span-has-it",
        "{attribute: {key: agent, equals: billing}}",
        [("a", {"agent": "support"}, {}), ("b", {"agent": "billing"}, {})],
        True,
    ),
    ("no-span-has-it", "{attribute: {key: agent, equals: billing}}", [("a", {}, {})], False),
    ("no-spans", "{span_name: checkout}", [], False),
    (
        "attribute-on-one-span-name-on-another",
        "{attribute: {key: k, exists: true}, span_name: checkout}",
        [("checkout", {}, {}), ("other", {"k": 1}, {})],
        True,
    ),
    (
        "not-attribute-none-has-it",
        "{not: {attribute: {key: k, exists: true}}}",
        [("a", {}, {}), ("b", {"j": 1}, {})],
        True,
    ),
    (
        "not-attribute-one-has-it",
        "{not: {attribute: {key: k, exists: true}}}",
        [("a", {}, {}), ("b", {"k": 1}, {})],
        False,
    ),
    (
        "resource-of-any-span",
        "{attribute: {key: env, equals: prod, scope: resource}}",
        [("a", {}, {"env": "dev"}), ("b", {}, {"env": "prod"})],
        True,
    ),
]


@pytest.mark.parametrize(
    ("when", "spans", "expected"),
    [case[1:] for case in SESSION_CASES],
    ids=[case[0] for case in SESSION_CASES],
)
def test_span_conditions_over_a_session(when: str, spans: list[Span], expected: bool) -> None:
    assert session_matches(when, spans) is expected


FACT_CASES = [
    # (id, when, facts fields, expected)
    ("error-true-with-errors", "{error: true}", {"error_spans": 3}, True),
    ("error-true-without", "{error: true}", {"error_spans": 0}, False),
    ("error-false-without", "{error: false}", {"error_spans": 0}, True),
    ("error-false-with-errors", "{error: false}", {"error_spans": 1}, False),
    ("duration-min-inclusive", "{duration: {min: 2m}}", {"duration_s": 120.0}, True),
    ("duration-min-below", "{duration: {min: 2m}}", {"duration_s": 119.9}, False),
    ("duration-max-inclusive", "{duration: {max: 1s}}", {"duration_s": 1.0}, True),
    ("duration-max-above", "{duration: {max: 1s}}", {"duration_s": 1.001}, False),
    ("duration-range", "{duration: {min: 250ms, max: 1s}}", {"duration_s": 0.5}, True),
    ("duration-range-below", "{duration: {min: 250ms, max: 1s}}", {"duration_s": 0.2}, False),
    ("span-count-min-inclusive", "{span_count: {min: 2000}}", {"span_count": 2000}, True),
    ("span-count-min-below", "{span_count: {min: 2000}}", {"span_count": 1999}, False),
    ("span-count-max-inclusive", "{span_count: {max: 1}}", {"span_count": 1}, True),
    ("span-count-max-above", "{span_count: {max: 1}}", {"span_count": 2}, False),
    (
        "two-kinds-both",
        "{error: true, span_count: {min: 10}}",
        {"error_spans": 1, "span_count": 10},
        True,
    ),
    (
        "two-kinds-one",
        "{error: true, span_count: {min: 10}}",
        {"error_spans": 1, "span_count": 9},
        False,
    ),
    ("all-both", "{all: [{error: true}, {duration: {min: 1s}}]}", {"error_spans": 1}, True),
    ("all-one", "{all: [{error: true}, {duration: {min: 2s}}]}", {"error_spans": 1}, False),
    ("any-one", "{any: [{error: true}, {duration: {min: 2s}}]}", {"error_spans": 1}, True),
    ("any-none", "{any: [{error: true}, {duration: {min: 2s}}]}", {}, False),
    ("not", "{not: {error: true}}", {}, True),
    ("not-not", "{not: {not: {error: true}}}", {}, False),
    (
        "nested",
        "{any: [{all: [{error: false}, {not: {span_count: {max: 1}}}]}, {duration: {min: 1h}}]}",
        {"span_count": 5},
        True,
    ),
    (
        "nested-miss",
        "{any: [{all: [{error: false}, {not: {span_count: {max: 1}}}]}, {duration: {min: 1h}}]}",
        {"span_count": 1},
        False,
    ),
]


@pytest.mark.parametrize(
    ("when", "fields", "expected"),
    [case[1:] for case in FACT_CASES],
    ids=[case[0] for case in FACT_CASES],
)
def test_session_conditions(when: str, fields: dict[str, Any], expected: bool) -> None:
    assert session_matches(when, **fields) is expected


COMBINATOR = "{any: [{span_name: a}, {all: [{span_name: b}, {not: {span_name: c}}]}]}"


@pytest.mark.parametrize(
    ("matched", "expected"),
    [
        ("", False),
        ("a", True),
        ("b", True),
        ("bc", False),
        ("ac", True),
        ("c", False),
        ("abc", True),
    ],
    ids=["none", "a", "b", "b-and-c", "a-and-c", "c", "all"],
)
def test_combinators_over_matched_tests(matched: str, expected: bool) -> None:
    """a or (b and not c), with matched_tests chosen by hand."""
    condition = parse_condition(COMBINATOR)
    tests = dict(zip("abc", condition.span_tests(), strict=True))
    assert condition.matches(make_facts(frozenset(tests[name] for name in matched))) is expected


def test_several_kinds_in_one_mapping_mean_all_of_them() -> None:
    both = parse_condition("{error: true, span_name: checkout}")
    explicit = parse_condition("{all: [{error: true}, {span_name: checkout}]}")
    assert both == explicit


SAMPLES = {
    "all": "{all: [{error: true}]}",
    "any": "{any: [{error: true}]}",
    "attribute": "{attribute: {key: k, exists: true}}",
    "duration": "{duration: {min: 1s}}",
    "error": "{error: true}",
    "not": "{not: {error: true}}",
    "span_count": "{span_count: {min: 1}}",
    "span_name": "{span_name: x}",
    "rare": "{rare: {dimensions: [shape], min_score: 0.9}}",
    "tokens": "{tokens: {min: 1000}}",
    "tool_calls": "{tool_calls: {max: 0}}",
    "tool_cycle": "{tool_cycle: {kinds: [repeated_call]}}",
}


def signal_facts(**fields: object) -> DecisionFacts:
    return make_facts()._replace(**fields)


@pytest.mark.parametrize(
    ("when", "fields", "expected"),
    [
        ("{error: {kinds: [tool_error]}}", {"error_kinds": int(ErrorKind.TOOL)}, True),
        ("{error: {kinds: [tool_error]}}", {"error_kinds": int(ErrorKind.STATUS)}, False),
        ("{error: true}", {"error_kinds": int(ErrorKind.LLM_REFUSAL)}, True),
        (
            "{error: {kinds: [llm_refusal, http_5xx]}}",
            {"error_kinds": int(ErrorKind.HTTP_5XX)},
            True,
        ),
        ("{tool_cycle: true}", {"cycle_kinds": frozenset({"tool_pattern"})}, True),
        ("{tool_cycle: true}", {}, False),
        ("{tool_cycle: false}", {}, True),
        (
            "{tool_cycle: {kinds: [agent_recursion]}}",
            {"cycle_kinds": frozenset({"repeated_call"})},
            False,
        ),
        ("{rare: true}", {"signals": ("rare_shape",)}, True),
        ("{rare: true}", {"rarity": {"shape": 0.9}}, False),
        ("{rare: {dimensions: [latency]}}", {"signals": ("tail_latency",)}, True),
        ("{rare: {dimensions: [duration]}}", {"signals": ("tail_duration",)}, True),
        ("{rare: {dimensions: [duration]}}", {"signals": ("tail_latency",)}, False),
        ("{rare: {dimensions: [latency]}}", {"signals": ("tail_duration",)}, False),
        ("{rare: {dimensions: [tokens]}}", {"signals": ("tail_latency",)}, False),
        ("{rare: {dimensions: [latency], min_score: 0.9}}", {"rarity": {"latency": 0.9}}, True),
        ("{rare: {dimensions: [duration], min_score: 0.9}}", {"rarity": {"latency": 1.0}}, False),
        ("{rare: {dimensions: [shape], min_score: 0.8}}", {"rarity": {"shape": 0.85}}, True),
        ("{rare: {dimensions: [shape], min_score: 0.9}}", {"rarity": {"shape": 0.85}}, False),
        ("{tokens: {min: 1000}}", {"tokens": 1000}, True),
        ("{tokens: {min: 1000}}", {"tokens": 999}, False),
        ("{tool_calls: {max: 0}}", {"tool_calls": 0}, True),
        ("{tool_calls: {min: 5}}", {"tool_calls": 4}, False),
    ],
    ids=[
        "tool-error-kind",
        "status-is-not-tool-error",
        "any-kind-is-an-error",
        "one-of-kinds",
        "any-cycle",
        "no-cycle",
        "cycle-false",
        "other-cycle-kind",
        "rare-signal",
        "score-without-signal-is-not-rare",
        "tail-latency",
        "tail-duration",
        "latency-signal-is-not-duration",
        "duration-signal-is-not-latency",
        "other-dimension",
        "latency-min-score",
        "latency-score-is-not-duration",
        "min-score-met",
        "min-score-missed",
        "tokens-at-min",
        "tokens-below",
        "no-tool-calls",
        "too-few-calls",
    ],
)
def test_signal_conditions(when: str, fields: dict[str, object], expected: bool) -> None:
    assert parse_condition(when).matches(signal_facts(**fields)) is expected


def test_rare_accepts_every_rarity_dimension_and_no_other() -> None:
    everything = (
        "[shape, latency, model_latency, tool_latency, duration, tokens, span_count, tool_calls]"
    )
    condition = parse_condition(f"{{rare: {{dimensions: {everything}}}}}")
    assert condition == parse_condition("{rare: true}")
    problems = Problems("test.yaml")
    refused = ParseContext(problems, "when").condition(
        parse_yaml("{rare: {dimensions: [latancy]}}", "test.yaml")
    )
    assert refused is None
    (problem,) = problems.found
    assert "unknown dimension (did you mean 'latency'?)" in str(problem)


@pytest.mark.parametrize("kind", kinds(), ids=kinds())
def test_every_kind_keeps_the_condition_contract(kind: str) -> None:
    """Parses from its YAML sample, is hashable data, and decides from facts alone."""
    condition = parse_condition(SAMPLES[kind])
    assert condition == parse_condition(SAMPLES[kind])
    assert hash(condition) == hash(parse_condition(SAMPLES[kind]))
    for test in condition.span_tests():
        assert isinstance(test.keys, tuple)
        assert isinstance(evaluate(test, "x", {}, {}), bool)
    assert isinstance(condition.matches(make_facts()), bool)


def test_every_registered_kind_has_a_sample() -> None:
    assert set(kinds()) == set(SAMPLES)


def test_equal_span_tests_from_different_rules_are_evaluated_once() -> None:
    problems = Problems("t")
    rules = parse_rules(
        parse_yaml(
            "[{name: a, when: {span_name: x}, action: keep},"
            " {name: b, when: {not: {span_name: x}}, action: keep}]",
            "t",
        ),
        problems,
    )
    assert len(RuleEngine.build(rules).span_tests) == 1


def test_equals_true_and_equals_one_stay_distinct_tests() -> None:
    problems = Problems("t")
    rules = parse_rules(
        parse_yaml(
            "[{name: flag, when: {attribute: {key: n, equals: true}}, action: drop},"
            " {name: one, when: {attribute: {key: n, equals: 1}}, action: keep}]",
            "t",
        ),
        problems,
    )
    engine = RuleEngine.build(rules)
    span: Span = ("s", {"n": 1}, {})
    matched = frozenset(
        t
        for i, t in enumerate(engine.span_tests)
        if i in matched_by_native(engine.span_tests, span)
    )
    assert engine.decide(make_facts(matched), now=0.0).rule == "one"
