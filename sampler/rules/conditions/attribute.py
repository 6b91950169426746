"""Some span (or its resource) has an attribute that exists, equals a value, is in a set,
matches a regular expression (`re.search`: anchor with `^...$`), or lies in a numeric range.

```yaml
attribute: {key: gen_ai.agent.name, equals: billing}
attribute: {key: gen_ai.usage.output_tokens, min: 4000}            # min and/or max, inclusive
attribute: {key: deployment.environment, in: [prod, staging], scope: resource}
attribute: {key: gen_ai.request.model, regex: "^gpt-4"}
attribute: {key: user.id, exists: true}
```

`scope` is `span`, `resource` or `any` (the default: the span, then its resource). Numbers
compare by value (`1` equals `1.0`), booleans only with booleans; numeric strings count for
`min`/`max`; an array attribute matches when any element does. Write
`not: {attribute: {key: K, exists: true}}` for "no span has K".
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from sampler._native import check_regex
from sampler.config.reader import Node
from sampler.rules.conditions.registry import ParseContext, condition_kind
from sampler.rules.facts import DecisionFacts, SpanTest
from sampler.rules.spec import Condition

Scalar = str | int | float | bool

_OPERATORS = ("exists", "equals", "in", "regex", "min", "max")
_SCOPES = ("span", "resource", "any")


# An expected value tagged with its kind. Python has True == 1 == 1.0 with equal hashes, so
# untagged values would make `equals: true` and `equals: 1` one and the same (deduplicated) test.
Typed = tuple[str, Scalar]


def typed(value: Scalar) -> Typed:
    if isinstance(value, bool):
        return ("bool", value)
    if isinstance(value, int | float):
        return ("number", float(value))
    return ("str", value)


@dataclass(frozen=True, slots=True)
class AttributeTest:
    """Evaluated natively on every span (``native/src/span_tests.rs``): numbers compare by
    value (1 == 1.0), booleans only with booleans, strings only with strings, numeric strings
    count for `min`/`max`, an array matches when any element does."""

    key: str
    scope: str
    exists: bool = False
    equals: tuple[Typed, ...] = ()  # `equals: v` is `in: [v]`
    pattern: str | None = None  # a regular expression, searched
    low: float | None = None
    high: float | None = None

    @property
    def keys(self) -> tuple[str, ...]:
        return (self.key,)

    def native_spec(self) -> tuple[object, ...]:
        if self.exists:
            op: tuple[object, ...] = ("exists", None)
        elif self.equals:
            op = ("in", list(self.equals))
        elif self.pattern is not None:
            op = ("regex", self.pattern)
        else:
            op = ("range", (self.low, self.high))
        return ("attribute", self.key, self.scope, *op)


@dataclass(frozen=True, slots=True)
class AnySpanMatches:
    """True when the test matched at least one span of the session."""

    test: SpanTest

    def span_tests(self) -> Iterable[SpanTest]:
        return (self.test,)

    def matches(self, facts: DecisionFacts) -> bool:
        return self.test in facts.matched_tests


def scalar_list(node: Node, ctx: ParseContext) -> tuple[Scalar, ...] | None:
    items = node.value if isinstance(node.value, list) else None
    if not items:
        ctx.problem(node, f"expected a non-empty list of values, got {node.describe()}")
        return None
    values: list[Scalar] = []
    for item in items:
        if not isinstance(item.value, str | int | float | bool):
            ctx.problem(item, f"expected a string, number or boolean, got {item.describe()}")
            return None
        values.append(item.value)
    return tuple(values)


def compile_regex(node: Node, ctx: ParseContext) -> str | None:
    """A rule's regular expression, checked against the engine that runs it (the native core's:
    Python's syntax for anchors, classes, alternation and repetition; no look-around or
    backreferences)."""
    source = ctx.string(node)
    if source is None:
        return None
    problem = check_regex(source)
    if problem is not None:
        ctx.problem(node, f"invalid regular expression: {problem}")
        return None
    return source


@condition_kind("attribute")
def parse_attribute(node: Node, ctx: ParseContext) -> Condition | None:
    fields = ctx.mapping(node, ("key", "scope", *_OPERATORS), required=("key",))
    if fields is None:
        return None
    key = ctx.at("key").string(fields["key"])
    scope = "any"
    if "scope" in fields:
        scope_node = fields["scope"]
        if scope_node.value not in _SCOPES:
            ctx.at("scope").problem(
                scope_node, f"expected one of {', '.join(_SCOPES)}, got {scope_node.describe()}"
            )
            return None
        scope = str(scope_node.value)
    ops = [op for op in _OPERATORS if op in fields]
    if not ops or (len(ops) > 1 and set(ops) != {"min", "max"}):
        ctx.problem(node, "expected exactly one of exists, equals, in, regex, or min/max")
        return None
    if key is None:
        return None
    op = ops[0]
    test: AttributeTest | None = None
    if op == "exists":
        if fields["exists"].value is not True:
            ctx.at("exists").problem(
                fields["exists"],
                "only `exists: true` is meaningful "
                '("some span has it"); write `not: {attribute: {key: ..., '
                'exists: true}}` for "no span has it"',
            )
            return None
        test = AttributeTest(key, scope, exists=True)
    elif op == "equals":
        value = fields["equals"].value
        if not isinstance(value, str | int | float | bool):
            ctx.at("equals").problem(
                fields["equals"],
                f"expected a string, number or boolean, got {fields['equals'].describe()}",
            )
            return None
        test = AttributeTest(key, scope, equals=(typed(value),))
    elif op == "in":
        values = scalar_list(fields["in"], ctx.at("in"))
        test = AttributeTest(key, scope, equals=tuple(map(typed, values))) if values else None
    elif op == "regex":
        pattern = compile_regex(fields["regex"], ctx.at("regex"))
        test = AttributeTest(key, scope, pattern=pattern) if pattern is not None else None
    else:
        low = ctx.at("min").number(fields["min"]) if "min" in fields else None
        high = ctx.at("max").number(fields["max"]) if "max" in fields else None
        if ("min" in fields and low is None) or ("max" in fields and high is None):
            return None
        if low is not None and high is not None and low > high:
            ctx.problem(node, f"min ({low:g}) is greater than max ({high:g})")
            return None
        test = AttributeTest(key, scope, low=low, high=high)
    return AnySpanMatches(test) if test is not None else None
